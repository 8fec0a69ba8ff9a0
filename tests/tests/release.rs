//! Releases driven by triton-controller against the real control plane
//! (tests/cluster/run --triton): the tutorial, a manual update, scale in with podsToDelete.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};
use triton_e2e::deployflow::{Flow, flow, released, seconds_between, tutorial, tutorial_service};
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(90);

async fn create_service(client: &kube::Client, ns: &str, manifest: Value) {
    let svc: Service = serde_json::from_value(manifest).unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
}

fn batch(status: &Value, n: usize) -> Value {
    status["conditions"][n - 1].clone()
}

/// Batches ran one after another: `conditions` are batches 1..=n in order, each Baked, and each
/// batch started no earlier than the previous one finished (timestamps are whole seconds, so
/// equal seconds pass).
fn assert_batch_by_batch(status: &Value, n: usize) {
    let conds = status["conditions"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        (conds.len(), status["batches"].clone()),
        (n, json!(n)),
        "expected {n} batches in the status: {}",
        triton_e2e::deployflow::summary(status)
    );
    for (i, c) in conds.iter().enumerate() {
        assert_eq!(
            c["batch"],
            json!(i + 1),
            "expected conditions[{i}] to be batch {}: {c}",
            i + 1
        );
        assert_eq!(c["phase"], "Baked", "expected batch {} Baked: {c}", i + 1);
    }
    for w in conds.windows(2) {
        let gap = seconds_between(&w[0]["finishedAt"], &w[1]["startedAt"]);
        assert!(
            gap >= 0.0,
            "expected batch {} to start ({}) no earlier than batch {} finished ({})",
            w[1]["batch"],
            w[1]["startedAt"],
            w[0]["batch"],
            w[0]["finishedAt"]
        );
        let own = seconds_between(&w[0]["startedAt"], &w[0]["finishedAt"]);
        assert!(
            own >= 0.0,
            "expected batch {} to finish after it started: {}",
            w[0]["batch"],
            w[0]
        );
    }
}

#[tokio::test]
async fn tutorial_release_canary_waits_at_smoked_then_next_patches_release_it_to_success() {
    let client = client().await;
    let ns = namespace(&client, "tutorial").await;
    let mut svc = tutorial_service();
    svc["metadata"]["namespace"] = json!(ns);
    create_service(&client, &ns, svc).await;
    let df = Flow::create(&client, &ns, tutorial()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let svc_name = "sample-12122-svc";

    // The canary stops at Smoked: ContainersReady, not Ready, not a ready endpoint.
    let s = df.wait_batch(1, "Smoked", LONG).await;
    assert_eq!(s["batches"], 3);
    assert_eq!(batch(&s, 1)["canary"], true);
    let canary = batch(&s, 1)["pods"][0]["name"]
        .as_str()
        .expect("the canary pod")
        .to_string();
    let pod = pods.get(&canary).await.unwrap();
    assert!(is_true(&pod, "ContainersReady"));
    assert_ne!(
        condition(&pod, "Ready"),
        Some("True"),
        "the canary is not Ready before Next"
    );
    holds_for(
        "the canary staying Smoked and out of the ready endpoints",
        Duration::from_secs(3),
        || async {
            let eps = service_endpoints(&client, &ns, svc_name).await;
            let st = df.status().await;
            if !eps.ready.is_empty() {
                return Err(format!("ready endpoints {:?}", eps.ready));
            }
            if batch(&st, 1)["phase"] != "Smoked" {
                return Err(format!("batch 1 moved on: {}", batch(&st, 1)["phase"]));
            }
            Ok(())
        },
    )
    .await;

    // Next #1: pulled in.
    df.patch_strategy("updateStrategy", json!({"batches": 1, "stage": "Baking"}))
        .await;
    let s = df.wait_batch(1, "Baking", LONG).await;
    assert_eq!(batch(&s, 1)["pods"][0]["pullInStatus"], "PullInSucceeded");
    assert!(is_true(&pods.get(&canary).await.unwrap(), "Ready"));
    let ip = batch(&s, 1)["pods"][0]["ip"].as_str().unwrap().to_string();
    assert_eq!(
        service_endpoints(&client, &ns, svc_name).await.ready,
        vec![ip],
        "PullInSucceeded means a ready endpoint"
    );

    // Next #2: the canary is baked; batch 2 waits for the user.
    df.patch_strategy("updateStrategy", json!({"stage": "Baked"}))
        .await;
    let s = df.wait_batch(2, "Pending", LONG).await;
    assert_eq!(batch(&s, 1)["phase"], "Baked");

    // Next #3: batches 2 and 3 run, batchIntervalSeconds (10) apart, to Success.
    df.patch_strategy("updateStrategy", json!({"batches": 3, "stage": "Baked"}))
        .await;
    let s = df.wait_phase("Success", LONG).await;
    assert_eq!(s["finished"], true);
    assert_eq!(s["finishedReplicas"], 3);
    let gap = seconds_between(&batch(&s, 2)["finishedAt"], &batch(&s, 3)["startedAt"]);
    assert!(
        gap >= 10.0,
        "batch 3 started {gap} s after batch 2 finished, want >= 10"
    );
    for b in 1..=3 {
        assert_eq!(
            batch(&s, b)["pods"][0]["pullInStatus"],
            "PullInSucceeded",
            "batch {b}"
        );
    }
    let cs = dynamic_api(&client, &ns, "apps.kruise.io", "v1alpha1", "CloneSet")
        .get("12122-sample-10010")
        .await
        .unwrap();
    let cs = serde_json::to_value(cs).unwrap();
    assert_eq!(
        (
            cs["spec"]["replicas"].clone(),
            cs["status"]["readyReplicas"].clone()
        ),
        (json!(3), json!(3))
    );
    assert!(
        cs["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.iter().all(|o| o["kind"] != "DeployFlow")),
        "ownership is released after Success: {}",
        cs["metadata"]["ownerReferences"]
    );
    let eps = wait_ready_endpoints(&client, &ns, svc_name, 3, Duration::from_secs(30)).await;
    assert!(eps.not_ready.is_empty(), "{eps:?}");

    // After Success: a deleted pod is re-created by Kruise, gated, and pulled in without a release.
    let before: Vec<String> = triton_e2e::pods(&pods, "app=12122")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    pods.delete(&canary, &DeleteParams::default())
        .await
        .unwrap();
    let replacement = eventually(
        "a replacement pod, Ready",
        Duration::from_secs(30),
        || async {
            let all = triton_e2e::pods(&pods, "app=12122").await;
            let live: Vec<&Pod> = all
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            match live
                .iter()
                .find(|p| !before.contains(p.metadata.name.as_ref().unwrap()))
            {
                Some(p) if live.len() == 3 && is_true(p, "Ready") => Ok((*p).clone()),
                Some(p) => Err(format!("replacement {:?} not Ready yet", p.metadata.name)),
                None => Err(format!("{} live pods, no replacement yet", live.len())),
            }
        },
    )
    .await;
    assert!(
        replacement
            .spec
            .unwrap()
            .readiness_gates
            .unwrap()
            .iter()
            .any(|g| g.condition_type == "apps.triton.io/ready"),
        "the replacement carries the gate"
    );
    wait_ready_endpoints(&client, &ns, svc_name, 3, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn manual_update_in_batches_of_two_keeps_four_ready_endpoints_throughout() {
    let client = client().await;
    let ns = namespace(&client, "update").await;
    let labels = json!({"app.kubernetes.io/instance": "web"});
    create_service(
        &client,
        &ns,
        json!({"metadata": {"name": "web"}, "spec": {"selector": labels, "ports": [{"port": 80}]}}),
    )
    .await;
    released(&client, &ns, "web", 4, "nginx:1.25").await;
    wait_ready_endpoints(&client, &ns, "web", 4, Duration::from_secs(30)).await;

    // Watch the Service for the whole update.
    let (stop, min_ready) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(usize::MAX)),
    );
    let watcher = {
        let (stop, min_ready, client, ns) =
            (stop.clone(), min_ready.clone(), client.clone(), ns.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = service_endpoints(&client, &ns, "web").await.ready.len();
                min_ready.fetch_min(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let update = Flow::create(
        &client,
        &ns,
        flow(
            "web-v2",
            "web",
            "update",
            4,
            "nginx:1.26",
            json!({"batchSize": 2, "mode": "manual"}),
        ),
    )
    .await;
    let s = update.wait_batch(2, "Pending", LONG).await;
    assert_eq!(batch(&s, 1)["phase"], "Baked");
    holds_for(
        "batch 2 waiting for batches: 2",
        Duration::from_secs(3),
        || async {
            let st = update.status().await;
            if batch(&st, 2)["phase"] == "Pending" {
                Ok(())
            } else {
                Err(format!("batch 2 is {}", batch(&st, 2)["phase"]))
            }
        },
    )
    .await;
    update
        .patch_strategy("updateStrategy", json!({"batches": 2}))
        .await;
    let s = update.wait_phase("Success", LONG).await;
    stop.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    assert_eq!(s["updatedReplicas"], 4);
    let min = min_ready.load(Ordering::SeqCst);
    assert!(
        min >= 4,
        "the Service had only {min} ready endpoints during the update"
    );
    let pods = triton_e2e::pods(
        &Api::namespaced(client.clone(), &ns),
        "app.kubernetes.io/instance=web",
    )
    .await;
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(live.len(), 4);
    for p in live {
        let image = p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap();
        assert_eq!(
            image, "nginx:1.26",
            "{:?} runs the new image",
            p.metadata.name
        );
    }
}

#[tokio::test]
async fn scale_in_with_pods_to_delete_removes_exactly_the_named_pods() {
    let client = client().await;
    let ns = namespace(&client, "scale-in").await;
    released(&client, &ns, "app", 4, "nginx:1.25").await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut names: Vec<String> = triton_e2e::pods(&pods_api, "app.kubernetes.io/instance=app")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    let victims = vec![names[0].clone(), names[2].clone()];

    let scale = Flow::create(
        &client,
        &ns,
        flow(
            "app-in",
            "app",
            "scale_in",
            2,
            "nginx:1.25",
            json!({"batchSize": 1, "mode": "auto", "podsToDelete": victims}),
        ),
    )
    .await;
    scale.wait_phase("Success", LONG).await;
    let mut left: Vec<String> = triton_e2e::pods(&pods_api, "app.kubernetes.io/instance=app")
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    left.sort();
    let expected: Vec<String> = names
        .iter()
        .filter(|n| !victims.contains(n))
        .cloned()
        .collect();
    assert_eq!(left, expected, "exactly the named pods were removed");
}

#[tokio::test]
async fn restart_replaces_every_pod_batch_by_batch_and_all_end_ready() {
    let client = client().await;
    let ns = namespace(&client, "restart").await;
    released(&client, &ns, "app", 2, "nginx:1.25").await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let before = live_names(&triton_e2e::pods(&pods_api, "app.kubernetes.io/instance=app").await);
    assert_eq!(before.len(), 2);

    let restart = Flow::create(
        &client,
        &ns,
        flow(
            "app-restart",
            "app",
            "restart",
            2,
            "nginx:1.25",
            json!({"batchSize": 1, "mode": "auto"}),
        ),
    )
    .await;
    let s = restart.wait_phase("Success", LONG).await;
    assert_eq!(s["finishedReplicas"], 2);
    assert_batch_by_batch(&s, 2);
    let after = eventually("2 new pods, Ready, none of the old ones", LONG, || async {
        let pods = triton_e2e::pods(&pods_api, "app.kubernetes.io/instance=app").await;
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let names = live_names(&pods);
        if live.len() == 2
            && live.iter().all(|p| is_true(p, "Ready"))
            && names.iter().all(|n| !before.contains(n))
        {
            Ok(names)
        } else {
            Err(names)
        }
    })
    .await;
    assert_eq!(after.len(), 2);
}

#[tokio::test]
async fn rollback_to_an_earlier_template_brings_the_old_image_back() {
    let client = client().await;
    let ns = namespace(&client, "rollback").await;
    let v1 = flow(
        "app-v1",
        "app",
        "create",
        2,
        "nginx:1.25",
        json!({"mode": "auto"}),
    );
    Flow::create(&client, &ns, v1.clone())
        .await
        .wait_phase("Success", LONG)
        .await;
    Flow::create(
        &client,
        &ns,
        flow(
            "app-v2",
            "app",
            "update",
            2,
            "nginx:1.26",
            json!({"mode": "auto"}),
        ),
    )
    .await
    .wait_phase("Success", LONG)
    .await;

    // A rollback DeployFlow carries the earlier DeployFlow's application (what gRPC Rollback copies).
    let mut rollback = v1;
    rollback["metadata"]["name"] = json!("app-rollback");
    rollback["spec"]["action"] = json!("rollback");
    rollback["spec"]["updateStrategy"] = json!({"batchSize": 1, "mode": "auto"});
    let s = Flow::create(&client, &ns, rollback)
        .await
        .wait_phase("Success", LONG)
        .await;
    assert_eq!(s["updatedReplicas"], 2);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually("2 pods on nginx:1.25 again", LONG, || async {
        let pods = triton_e2e::pods(&pods_api, "app.kubernetes.io/instance=app").await;
        let images: Vec<String> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                p.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap()
            })
            .collect();
        if images == ["nginx:1.25", "nginx:1.25"] {
            Ok(())
        } else {
            Err(images)
        }
    })
    .await;
}

#[tokio::test]
async fn scale_out_adds_pods_batch_by_batch_keeping_the_old_ones() {
    let client = client().await;
    let ns = namespace(&client, "scale-out").await;
    released(&client, &ns, "app", 2, "nginx:1.25").await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let before = live_names(&triton_e2e::pods(&pods_api, "app.kubernetes.io/instance=app").await);
    let s = Flow::create(
        &client,
        &ns,
        flow(
            "app-out",
            "app",
            "scale_out",
            4,
            "nginx:1.25",
            json!({"batchSize": 1, "mode": "auto"}),
        ),
    )
    .await
    .wait_phase("Success", LONG)
    .await;
    assert_eq!(
        (s["batches"].clone(), s["finishedReplicas"].clone()),
        (json!(2), json!(2))
    );
    assert_batch_by_batch(&s, 2);
    let pods = triton_e2e::pods(&pods_api, "app.kubernetes.io/instance=app").await;
    let after = live_names(&pods);
    assert_eq!(after.len(), 4);
    assert!(
        before.iter().all(|n| after.contains(n)),
        "the old pods stay: {before:?} in {after:?}"
    );
    assert!(
        pods.iter().all(|p| is_true(p, "Ready")),
        "every pod Ready (new ones pulled in)"
    );
}

/// The value of the sample `series` (name and labels exactly as exported) in a Prometheus text
/// exposition, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn controller_metrics() -> String {
    let admin = testenv_var("TRITON_CONTROLLER_ADMIN");
    let out = tokio::process::Command::new("curl")
        .args(["-fsS", &format!("http://{admin}/metrics")])
        .output()
        .await
        .expect("run curl");
    assert!(
        out.status.success(),
        "expected GET http://{admin}/metrics to answer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_controller_exports_releases_by_phase_and_transition_latency() {
    let client = client().await;
    let ns = namespace(&client, "metrics").await;
    // A release of this test's own to Success, so the series below must have counted something.
    released(&client, &ns, "app", 1, "nginx:1.25").await;
    let text = eventually(
        "the metrics to count the release that reached Success",
        Duration::from_secs(30),
        || async {
            let text = controller_metrics().await;
            let success = sample(
                &text,
                "triton_controller_phase_transitions_total{phase=\"Success\"}",
            );
            let releases = sample(&text, "triton_controller_releases{phase=\"Success\"}");
            if success.is_some_and(|v| v >= 1.0) && releases.is_some_and(|v| v >= 1.0) {
                Ok(text)
            } else {
                Err(format!(
                    "transitions to Success {success:?}, releases in Success {releases:?}"
                ))
            }
        },
    )
    .await;
    for series in [
        "triton_controller_transition_latency_seconds_count",
        "triton_controller_reconcile_duration_seconds_count",
    ] {
        let n = sample(&text, series);
        assert!(
            n.is_some_and(|v| v > 0.0),
            "expected {series} > 0 after a release, got {n:?} in:\n{text}"
        );
    }
    let sum = sample(&text, "triton_controller_transition_latency_seconds_sum");
    assert!(
        sum.is_some_and(|v| v > 0.0),
        "expected a positive total transition latency, got {sum:?}"
    );
}
