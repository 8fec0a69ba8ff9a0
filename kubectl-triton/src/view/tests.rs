use super::*;
use serde_json::{Value, json};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const NOW: &str = "2026-11-29T12:00:30Z";

fn df(strategy: Value, status: Value) -> DeployFlow {
    crate::fixtures::update_release(
        json!({"creationTimestamp": "2026-11-29T12:00:00Z"}),
        strategy,
        status,
    )
}

fn pod(name: &str, conditions: Value, restarts: i32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop", "labels": {"app.kubernetes.io/instance": "web"}},
        "spec": {"containers": [{"name": "main"}], "readinessGates": [{"conditionType": "apps.triton.io/ready"}]},
        "status": {"phase": "Running", "conditions": conditions,
            "containerStatuses": [{"name": "main", "image": "x", "imageID": "", "ready": restarts == 0,
                "restartCount": restarts,
                "state": if restarts > 0 { json!({"waiting": {"reason": "CrashLoopBackOff"}}) } else { json!({"running": {}}) }}]},
    }))
    .unwrap()
}

fn smoked(name: &str) -> Pod {
    pod(
        name,
        json!([{"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "False"},
               {"type": "apps.triton.io/ready", "status": "False"}]),
        0,
    )
}

fn ready(name: &str) -> Pod {
    pod(
        name,
        json!([{"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "True"},
               {"type": "apps.triton.io/ready", "status": "True"}]),
        0,
    )
}

fn slice(service: &str, pods: &[(&str, bool)]) -> EndpointSlice {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|(p, r)| json!({"addresses": ["10.244.0.1"], "conditions": {"ready": r}, "targetRef": {"kind": "Pod", "name": p}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-abc"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "endpoints": endpoints,
    }))
    .unwrap()
}

fn cloneset() -> CloneSetView {
    CloneSetView::from_value(json!({
        "spec": {"replicas": 3},
        "status": {"updatedReplicas": 1, "readyReplicas": 3, "updateRevision": "web-7c9d5"},
    }))
    .unwrap()
}

fn text(s: &Snapshot, seen: &Seen) -> String {
    render(&tree(s, ts(NOW), seen), false)
}

fn canary_smoked() -> DeployFlow {
    df(
        json!({"canary": 1, "batchSize": 1, "mode": "auto", "batches": 1, "stage": "Smoked", "batchIntervalSeconds": 10}),
        json!({"phase": "BatchStarted", "batches": 3, "startedAt": "2026-11-29T12:00:00Z",
            "conditions": [{"batch": 1, "batchSize": 1, "canary": true, "phase": "Smoked",
                "startedAt": "2026-11-29T12:00:01Z",
                "pods": [{"name": "web-a", "ip": "10.244.0.1", "port": 80, "phase": "ContainersReady", "pullInStatus": ""}]}]}),
    )
}

#[test]
fn a_smoked_canary_shows_its_pod_outside_the_endpoints_and_the_batches_to_come() {
    let s = Snapshot {
        df: canary_smoked(),
        cloneset: Ok(Some(cloneset())),
        pods: Ok(vec![smoked("web-a"), ready("web-old1"), ready("web-old2")]),
        slices: Ok(vec![slice("web-svc", &[("web-old1", true), ("web-old2", true)])]),
    };
    let mut seen = Seen::new();
    seen.insert((1, BatchPhase::Smoked), ts("2026-11-29T12:00:25Z"));
    let t = text(&s, &seen);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "DeployFlow shop/web-v2  update · auto · ◷ BatchStarted", "{t}");
    assert!(lines[1].contains("batch 1/3 · 0/3 replicas finished · running 30s · target: batch 1 Smoked"), "{t}");
    assert!(t.contains("CloneSet web: 3 replicas · 1 updated · 3 ready · revision 7c9d5"), "{t}");
    assert!(t.contains("├─ ◷ batch 1 (canary) Smoked  1 pod  Smoked for 5s"), "elapsed in the phase: {t}");
    let pod = t.lines().find(|l| l.contains("pod web-a")).unwrap();
    assert!(pod.starts_with("  │  └─ ◑ pod web-a  ContainersReady  gate closed  in no endpoints"), "{pod}");
    assert!(t.contains("├─ ○ batch 2 Pending"), "{t}");
    assert!(t.contains("○ batch 3 Pending"), "{t}");
    // The old pods, serving, under their own node.
    assert!(t.contains("└─ pods outside this release's batches: 2"), "{t}");
    assert!(t.contains("✔ pod web-old1  Ready  gate open  in svc/web-svc"), "{t}");
    assert!(!t.contains("paused"), "{t}");
}

#[test]
fn a_paused_smoke_failed_release_shows_the_reason_and_the_failing_pod() {
    let d = df(
        json!({"batchSize": 1, "mode": "auto"}),
        json!({"phase": "BatchStarted", "batches": 3, "paused": true,
            "message": "batch 1 smoke failed: web-a (restarting (2 restarts))",
            "conditions": [{"batch": 1, "batchSize": 1, "canary": false, "phase": "SmokeFailed", "failedReplicas": 1,
                "pods": [{"name": "web-a", "ip": "", "port": 80, "phase": "Failed", "pullInStatus": ""}]}]}),
    );
    let crashing = pod(
        "web-a",
        json!([{"type": "ContainersReady", "status": "False"}, {"type": "Ready", "status": "False"}]),
        2,
    );
    let s = Snapshot {
        df: d,
        cloneset: Ok(Some(cloneset())),
        pods: Ok(vec![crashing]),
        slices: Ok(vec![]),
    };
    let t = text(&s, &Seen::new());
    assert!(t.contains("  ⏸ paused: batch 1 smoke failed: web-a (restarting (2 restarts))"), "{t}");
    assert!(t.contains("✖ batch 1 SmokeFailed  1 pod  1 failed"), "{t}");
    let pod = t.lines().find(|l| l.contains("pod web-a")).unwrap();
    assert!(pod.contains("✖ pod web-a  Failed"), "{pod}");
    assert!(pod.contains("2 restarts"), "{pod}");
    assert!(pod.contains("(CrashLoopBackOff)"), "the reason: {pod}");
}

#[test]
fn a_baked_batch_counts_down_the_interval_to_the_next_in_auto_mode() {
    let d = df(
        json!({"batchSize": 1, "mode": "auto", "batchIntervalSeconds": 10}),
        json!({"phase": "BatchFinished", "batches": 3,
            "conditions": [{"batch": 1, "batchSize": 1, "canary": false, "phase": "Baked",
                "startedAt": "2026-11-29T12:00:20Z", "finishedAt": "2026-11-29T12:00:27Z",
                "pods": [{"name": "web-a", "ip": "", "port": 80, "phase": "Ready", "pullInStatus": "PullInSucceeded"}]}]}),
    );
    let s = Snapshot {
        df: d,
        cloneset: Ok(None),
        pods: Ok(vec![ready("web-a")]),
        slices: Ok(vec![slice("web-svc", &[("web-a", true)]), slice("admin", &[("web-a", false)])]),
    };
    let t = text(&s, &Seen::new());
    assert!(t.contains("✔ batch 1 Baked  1 pod  took 7s"), "{t}");
    // interval 10 s + 1 s of timestamp resolution, 3 s gone.
    assert!(t.contains("○ batch 2 Pending  starts in 8s"), "{t}");
    assert!(!t.contains("batch 3 Pending  starts"), "only the next batch counts down: {t}");
    assert!(t.contains("PullInSucceeded  in svc/web-svc  not ready in svc/admin"), "{t}");
    assert!(t.contains("CloneSet web: not found"), "{t}");
}

#[test]
fn what_the_user_may_not_read_is_a_note_not_an_error() {
    let s = Snapshot {
        df: canary_smoked(),
        cloneset: Err("Error from server (Forbidden): clonesets is forbidden".into()),
        pods: Err("Error from server (Forbidden): pods is forbidden".into()),
        slices: Err("Error from server (Forbidden): endpointslices is forbidden".into()),
    };
    let t = text(&s, &Seen::new());
    assert!(t.contains("CloneSet web: Error from server (Forbidden): clonesets is forbidden"), "{t}");
    assert!(t.contains("(pods not shown: Error from server (Forbidden): pods is forbidden)"), "{t}");
    assert!(t.contains("(endpoints not shown:"), "{t}");
    // The batch's pod is still listed from the status, not claimed gone.
    let pod = t.lines().find(|l| l.contains("pod web-a")).unwrap();
    assert!(pod.ends_with("· pod web-a  ContainersReady"), "{pod}");
}

#[test]
fn a_finished_release_shows_its_duration_and_no_target() {
    let d = df(
        json!({"batchSize": 3, "mode": "auto"}),
        json!({"phase": "Success", "finished": true, "batches": 1, "finishedReplicas": 3,
            "startedAt": "2026-11-29T11:58:00Z", "finishedAt": "2026-11-29T11:59:05Z",
            "conditions": [{"batch": 1, "batchSize": 3, "canary": false, "phase": "Baked"}]}),
    );
    let s = Snapshot {
        df: d.clone(),
        cloneset: Ok(Some(cloneset())),
        pods: Ok(vec![]),
        slices: Ok(vec![]),
    };
    let t = text(&s, &Seen::new());
    assert!(t.starts_with("DeployFlow shop/web-v2  update · auto · ✔ Success\n"), "{t}");
    assert!(t.contains("batch 1/1 · 3/3 replicas finished · running 1m5s\n"), "{t}");
    assert!(!t.contains("target"), "{t}");
    assert_eq!(summary(&d), "Success, batch 1/1 Baked, 3/3 replicas finished");
}

#[test]
fn colour_only_when_asked_and_symbols_either_way() {
    let s = Snapshot {
        df: canary_smoked(),
        cloneset: Ok(None),
        pods: Ok(vec![]),
        slices: Ok(vec![]),
    };
    let lines = tree(&s, ts(NOW), &Seen::new());
    let plain = render(&lines, false);
    let coloured = render(&lines, true);
    assert!(!plain.contains('\x1b'));
    assert!(coloured.contains("\x1b["));
    assert!(plain.contains("◷ BatchStarted") && coloured.contains("◷ BatchStarted"));
}

#[test]
fn a_pod_of_the_status_gone_from_the_cluster_says_so() {
    let s = Snapshot {
        df: canary_smoked(),
        cloneset: Ok(None),
        pods: Ok(vec![]),
        slices: Ok(vec![]),
    };
    let t = text(&s, &Seen::new());
    let pod = t.lines().find(|l| l.contains("pod web-a")).unwrap();
    assert!(pod.ends_with("· pod web-a  ContainersReady  (gone)"), "{pod}");
}

#[test]
fn text_from_the_cluster_cannot_break_a_line_or_reach_the_terminal() {
    let mut d = canary_smoked();
    d.status.as_mut().unwrap().message = Some("line one\nline two\x1b[2Jtab\there".into());
    let s = Snapshot {
        df: d,
        cloneset: Ok(None),
        pods: Ok(vec![]),
        slices: Ok(vec![]),
    };
    let lines = tree(&s, ts(NOW), &Seen::new());
    let out = render(&lines, false);
    assert_eq!(out.lines().count(), lines.len(), "one printed line per line: {out}");
    assert!(!out.contains('\x1b'), "{out}");
    assert!(out.contains("message: line one line two [2Jtab here"), "{out}");
}

#[test]
fn fit_counts_terminal_columns_not_characters() {
    let line = vec![plain("日本語"), plain("ab")];
    assert_eq!(width("日本語ab"), 8);
    assert_eq!(fit(&line, 8), line);
    let cut = fit(&line, 5);
    assert_eq!(render(&[cut.clone()], false), "日本…\n");
    assert!(cut.iter().map(|s| width(&s.text)).sum::<usize>() <= 5);
}

#[test]
fn fit_cuts_lines_to_the_terminal_width() {
    let line = vec![plain("abc"), styled(GREEN, "défgh"), plain("ij")];
    let w = |l: &Line| l.iter().map(|s| s.text.chars().count()).sum::<usize>();
    assert_eq!(fit(&line, 100), line);
    assert_eq!(fit(&line, 10), line, "exactly the width");
    let cut = fit(&line, 6);
    assert_eq!(render(&[cut.clone()], false), "abcdé…\n");
    assert_eq!(w(&cut), 6);
    assert_eq!(cut[1].style, GREEN, "styles are kept");
    for width in 0..12 {
        assert!(w(&fit(&line, width)) <= width.max(0), "width {width}");
    }
}

#[test]
fn ages_read_like_kubectls() {
    let s = SignedDuration::from_secs;
    assert_eq!(age(s(0)), "0s");
    assert_eq!(age(s(59)), "59s");
    assert_eq!(age(s(61)), "1m1s");
    assert_eq!(age(s(3 * 3600 + 300)), "3h5m");
    assert_eq!(age(s(2 * 86400 + 7200)), "2d2h");
    assert_eq!(age(s(-5)), "0s", "clock skew is not negative");
}

#[test]
fn list_has_a_row_per_release_and_a_namespace_column_with_all_namespaces() {
    let a = canary_smoked();
    let mut b = df(
        json!({"batchSize": 1, "mode": "manual", "paused": true}),
        json!({"phase": "BatchStarted", "batches": 3, "paused": true, "finishedReplicas": 1,
            "conditions": [{"batch": 2, "batchSize": 1, "canary": false, "phase": "Smoked"}]}),
    );
    b.metadata.name = Some("api-v7".into());
    b.metadata.namespace = Some("team-b".into());
    let t = list(&[a.clone(), b.clone()], false, ts(NOW));
    let rows: Vec<&str> = t.lines().collect();
    assert_eq!(rows.len(), 3, "{t}");
    assert!(rows[0].starts_with("NAME "), "{t}");
    assert!(!rows[0].contains("NAMESPACE"), "{t}");
    let cells = |r: &str| r.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        cells(rows[1]),
        ["web-v2", "update", "web", "BatchStarted", "1/3", "Smoked", "0/3", "-", "30s"]
    );
    assert_eq!(cells(rows[2])[7], "yes", "paused: {t}");
    let t = list(&[a, b], true, ts(NOW));
    assert!(t.starts_with("NAMESPACE "), "{t}");
    assert!(t.lines().nth(2).unwrap().starts_with("team-b "), "{t}");
}
