//! The release steps, decided without a cluster: fixtures for a DeployFlow, its CloneSet and its
//! pods at a given point of a release, and what the engine decides there.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use triton_core::names::*;
use triton_core::release::{BatchPhase, DeployPhase};

use super::*;
use crate::crd::DeployFlow;
use crate::observe::CloneSetView;

const T0: &str = "2026-11-29T10:00:00Z";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// `secs` after T0.
fn at(secs: i64) -> Timestamp {
    ts(T0) + k8s_openapi::jiff::SignedDuration::from_secs(secs)
}

fn at_str(secs: i64) -> String {
    at(secs).to_string()
}

struct Fixture {
    df: Value,
    cs: Option<Value>,
    pods: Vec<Pod>,
    holder: Option<Holder>,
    /// Pods whose gate the controller has just set (`World::opened`).
    opened: Vec<String>,
    now: Timestamp,
}

fn flow(action: &str, replicas: i32, strategy: Value) -> Fixture {
    let key = if ["create", "update", "rollback"].contains(&action) {
        "updateStrategy"
    } else {
        "nonUpdateStrategy"
    };
    Fixture {
        df: json!({
            "apiVersion": "apps.triton.io/v1alpha1", "kind": "DeployFlow",
            "metadata": {"name": "app-v2", "namespace": "ns", "uid": "df-uid", "resourceVersion": "10", "generation": 1},
            "spec": {"action": action, "application": {"appID": 1, "groupID": 2, "appName": "app",
                "instanceName": "app", "replicas": replicas, "selector": {},
                "template": {"spec": {"containers": [{"name": "main", "image": "nginx:1.26"}]}}},
                key: strategy}
        }),
        cs: None,
        pods: vec![],
        holder: None,
        opened: vec![],
        now: at(0),
    }
}

impl Fixture {
    fn status(mut self, status: Value) -> Self {
        self.df["status"] = status;
        self
    }
    /// A CloneSet held by this release (annotation), caught up, with these counts.
    fn cloneset(mut self, replicas: i32, partition: Option<i32>, ready: i32) -> Self {
        self.cs = Some(json!({
            "metadata": {"name": "app", "namespace": "ns", "generation": 3, "resourceVersion": "7",
                "annotations": {RELEASE_ANNOTATION: "app-v2"}},
            "spec": {"replicas": replicas, "updateStrategy": {"partition": partition},
                "template": {"metadata": {"labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}}}},
            "status": {"observedGeneration": 3, "replicas": replicas, "readyReplicas": ready,
                "updatedReplicas": ready, "updatedReadyReplicas": ready, "updateRevision": "app-rev2"}
        }));
        self
    }
    fn cs_set(mut self, pointer: &str, v: Value) -> Self {
        *self.cs.as_mut().unwrap().pointer_mut(pointer).unwrap() = v;
        self
    }
    fn pod(mut self, p: Pod) -> Self {
        self.pods.push(p);
        self
    }
    fn now(mut self, secs: i64) -> Self {
        self.now = at(secs);
        self
    }
    /// Runs `f` on this snapshot as a [`World`] (with `holder` as the other release).
    fn world<R>(&self, holder: Option<Holder>, f: impl FnOnce(&World) -> R) -> R {
        let df: DeployFlow = serde_json::from_value(self.df.clone()).unwrap();
        let cs: Option<CloneSetView> = self
            .cs
            .clone()
            .map(|v| CloneSetView::from_value(v).unwrap());
        let pods: Vec<std::sync::Arc<Pod>> =
            self.pods.iter().cloned().map(std::sync::Arc::new).collect();
        f(&World {
            df: &df,
            cloneset: cs.as_ref(),
            pods: &pods,
            services: &[],
            slices: &[],
            holder,
            opened: &self.opened,
            now: self.now,
        })
    }
    fn decide(&self) -> Decision {
        self.world(self.holder.clone(), step)
    }
    /// [`super::advance`]: the steps one reconcile takes on this snapshot.
    fn advance(&self) -> Decision {
        self.world(self.holder.clone(), super::advance)
    }
    fn cleanup(&self) -> Decision {
        self.world(None, super::cleanup)
    }
}

/// A pod of the instance: revision, conditions, restarts, created at T0 + `created` seconds.
fn pod(name: &str, revision: &str, conds: &[(&str, &str)], restarts: i32, created: i64) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "creationTimestamp": at_str(created),
            "labels": {INSTANCE_LABEL: "app", REVISION_LABEL: revision}},
        "spec": {"containers": [{"name": "main", "image": "i"}], "readinessGates": [{"conditionType": READY_GATE}]},
        "status": {"phase": "Running", "podIP": "10.244.0.9",
            "conditions": conds.iter().map(|(t, s)| json!({"type": t, "status": s})).collect::<Vec<_>>(),
            "containerStatuses": [{"name": "main", "image": "i", "imageID": "", "ready": restarts == 0, "restartCount": restarts}]}
    }))
    .unwrap()
}

fn ready_pod(name: &str, created: i64) -> Pod {
    pod(name, "app-rev2", &[("ContainersReady", "True")], 0, created)
}

fn batch(n: i32, phase: &str, pods: &[&str], extra: Value) -> Value {
    let mut b = json!({"batch": n, "batchSize": pods.len().max(1), "canary": false, "phase": phase,
        "startedAt": at_str(0), "pulledInAt": null, "finishedAt": null,
        "pods": pods.iter().map(|p| json!({"name": p, "ip": "", "port": 0, "phase": "ContainersReady", "pullInStatus": ""})).collect::<Vec<_>>()});
    if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    b
}

fn running(batches: Vec<Value>, extra: Value) -> Value {
    let mut s = json!({"phase": "BatchStarted", "replicasToProcess": 3, "batches": 3,
        "replicasAtStart": 3, "updatedAtStart": 0, "conditions": batches,
        "startedAt": at_str(0), "finishedAt": null, "updatedAt": null, "message": null});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        s.extend(extra.clone());
    }
    s
}

fn current(d: &Decision) -> &crate::crd::BatchCondition {
    d.status.current().expect("a current batch")
}

fn spec_pauses(effects: &[Effect]) -> bool {
    effects.iter().any(|e| {
        matches!(e, Effect::PatchSpec(p) if p.pointer("/spec/updateStrategy/paused") == Some(&json!(true))
            || p.pointer("/spec/nonUpdateStrategy/paused") == Some(&json!(true)))
    })
}

fn cloneset_patches(effects: &[Effect]) -> Vec<&Value> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::PatchCloneSet(p) | Effect::CorrectCloneSet(p) => Some(p),
            _ => None,
        })
        .collect()
}

// ---- item 3: failure pauses are written into the spec and hold -------------------------------

#[test]
fn a_failing_pod_fails_the_batch_and_writes_the_pause_into_the_spec_before_the_status() {
    let d = flow(
        "update",
        3,
        json!({"batchSize": 1, "mode": "auto", "paused": false}),
    )
    .status(running(
        vec![batch(1, "Smoking", &[], json!({}))],
        json!({}),
    ))
    .cloneset(4, Some(3), 3)
    .pod(pod(
        "new-1",
        "app-rev2",
        &[("ContainersReady", "False")],
        3,
        1,
    ))
    .decide();
    assert_eq!(current(&d).phase, BatchPhase::SmokeFailed);
    assert!(d.status.paused);
    assert!(
        spec_pauses(&d.before),
        "the pause goes into the spec: {:?}",
        d.before
    );
    assert!(
        !spec_pauses(&d.after),
        "and before the status write, not after"
    );
    let msg = d.status.message.clone().unwrap();
    assert!(msg.contains("new-1") && msg.contains("restarting"), "{msg}");
    assert!(
        cloneset_patches(&d.before)
            .iter()
            .any(|p| p.pointer("/spec/updateStrategy/paused") == Some(&json!(true))),
        "the CloneSet is paused too"
    );
}

#[test]
fn a_failure_pause_holds_while_the_spec_says_paused_even_when_the_pod_recovers() {
    let d = flow(
        "update",
        3,
        json!({"batchSize": 1, "mode": "auto", "paused": true}),
    )
    .status(running(
        vec![batch(1, "SmokeFailed", &["new-1"], json!({}))],
        json!({"paused": true, "message": "batch 1 failed"}),
    ))
    .cloneset(4, Some(3), 3)
    .pod(ready_pod("new-1", 1))
    .decide();
    assert_eq!(current(&d).phase, BatchPhase::SmokeFailed);
    assert!(d.status.paused);
    assert!(d.before.is_empty() && d.after.is_empty(), "{d:?}");
}

#[test]
fn resuming_a_failed_batch_whose_pod_still_fails_is_refused_and_the_spec_paused_again() {
    let d = flow(
        "update",
        3,
        json!({"batchSize": 1, "mode": "auto", "paused": false}),
    )
    .status(running(
        vec![batch(1, "SmokeFailed", &["new-1"], json!({}))],
        json!({"paused": true}),
    ))
    .cloneset(4, Some(3), 3)
    .pod(pod(
        "new-1",
        "app-rev2",
        &[("ContainersReady", "False")],
        4,
        1,
    ))
    .decide();
    assert_eq!(current(&d).phase, BatchPhase::SmokeFailed);
    assert!(d.status.paused);
    assert!(spec_pauses(&d.before));
    let msg = d.status.message.clone().unwrap();
    assert!(
        msg.starts_with("resume refused") && msg.contains("new-1"),
        "{msg}"
    );
    assert!(d.after.iter().any(|e| matches!(
        e,
        Effect::Event {
            reason: "ResumeRefused",
            ..
        }
    )));
}

#[test]
fn resuming_a_failed_batch_whose_pods_recovered_smokes_it_again_with_a_fresh_timer() {
    let d = flow(
        "update",
        3,
        json!({"batchSize": 1, "mode": "auto", "paused": false}),
    )
    .status(running(
        vec![batch(1, "SmokeFailed", &["new-1"], json!({}))],
        json!({"paused": true}),
    ))
    .cloneset(4, Some(3), 3)
    .pod(ready_pod("new-1", 1))
    .now(700)
    .decide();
    let c = current(&d);
    assert_eq!(c.phase, BatchPhase::Smoking);
    assert_eq!(c.smoke_started_at.as_ref().map(|t| t.0), Some(at(700)));
    assert!(!d.status.paused);
    assert!(
        cloneset_patches(&d.before)
            .iter()
            .any(|p| p.pointer("/spec/updateStrategy/paused") == Some(&json!(false)))
    );
}

#[test]
fn resuming_a_bake_failed_batch_retries_the_pull_in() {
    let d = flow("create", 1, json!({"mode": "auto", "paused": false}))
        .status(running(
            vec![batch(
                1,
                "BakeFailed",
                &["new-1"],
                json!({"pulledInAt": at_str(5)}),
            )],
            json!({"paused": true}),
        ))
        .cloneset(1, None, 1)
        .pod(ready_pod("new-1", 1))
        .decide();
    assert_eq!(current(&d).phase, BatchPhase::Smoked);
    assert_eq!(current(&d).pulled_in_at, None);
}

// ---- item 4: a batch that cannot start says why, and fails at its smoke timeout ---------------

fn unschedulable(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": at_str(1),
            "labels": {INSTANCE_LABEL: "app", REVISION_LABEL: "app-rev2"}},
        "spec": {"containers": [{"name": "main", "image": "i"}]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available"}]}
    }))
    .unwrap()
}

#[test]
fn a_smoking_batch_says_what_it_waits_for() {
    let d = flow(
        "create",
        1,
        json!({"mode": "auto", "smokeTimeoutSeconds": 60}),
    )
    .status(running(
        vec![batch(1, "Smoking", &[], json!({}))],
        json!({}),
    ))
    .cloneset(1, None, 0)
    .pod(unschedulable("new-1"))
    .now(10)
    .decide();
    assert_eq!(current(&d).phase, BatchPhase::Smoking);
    let msg = d.status.message.clone().unwrap();
    assert!(
        msg.contains("new-1") && msg.contains("Unschedulable"),
        "{msg}"
    );
    let r = d.requeue.expect("a timer for the smoke timeout");
    assert!(
        r > std::time::Duration::from_secs(49) && r < std::time::Duration::from_secs(51),
        "{r:?}"
    );
}

#[test]
fn a_batch_not_ready_within_its_smoke_timeout_fails_naming_the_pods_and_reasons() {
    let d = flow(
        "create",
        1,
        json!({"mode": "auto", "smokeTimeoutSeconds": 60}),
    )
    .status(running(
        vec![batch(1, "Smoking", &[], json!({}))],
        json!({}),
    ))
    .cloneset(1, None, 0)
    .pod(unschedulable("new-1"))
    .now(61)
    .decide();
    assert_eq!(current(&d).phase, BatchPhase::SmokeFailed);
    let msg = d.status.message.clone().unwrap();
    assert!(
        msg.contains("smokeTimeoutSeconds") && msg.contains("new-1 (Unschedulable"),
        "{msg}"
    );
    assert!(spec_pauses(&d.before));
}

#[test]
fn the_smoke_timeout_defaults_to_ten_minutes() {
    let f = || {
        flow("create", 1, json!({"mode": "auto"}))
            .status(running(
                vec![batch(1, "Smoking", &[], json!({}))],
                json!({}),
            ))
            .cloneset(1, None, 0)
            .pod(unschedulable("new-1"))
    };
    assert_eq!(current(&f().now(599).decide()).phase, BatchPhase::Smoking);
    assert_eq!(
        current(&f().now(601).decide()).phase,
        BatchPhase::SmokeFailed
    );
}

#[test]
fn a_terminal_waiting_reason_fails_the_batch_at_once() {
    let mut p = unschedulable("new-1");
    p.status = Some(
        serde_json::from_value(json!({"phase": "Pending", "containerStatuses": [{"name": "main", "image": "i",
        "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "configmap \"cfg\" not found"}}}]}))
        .unwrap(),
    );
    let d = flow("create", 1, json!({"mode": "auto"}))
        .status(running(
            vec![batch(1, "Smoking", &[], json!({}))],
            json!({}),
        ))
        .cloneset(1, None, 0)
        .pod(p)
        .now(2)
        .decide();
    assert_eq!(current(&d).phase, BatchPhase::SmokeFailed);
    assert!(
        d.status
            .message
            .unwrap()
            .contains("CreateContainerConfigError")
    );
}

// ---- item 5: a pod gone during pull-in is replaced within its batch ---------------------------

#[test]
fn a_batch_pod_gone_during_pull_in_is_dropped_and_the_batch_smokes_its_replacement() {
    let d = flow("create", 1, json!({"mode": "auto"}))
        .status(running(
            vec![batch(
                1,
                "Smoked",
                &["gone"],
                json!({"pulledInAt": at_str(3)}),
            )],
            json!({"pods": ["gone"]}),
        ))
        .cloneset(1, None, 0)
        .pod(ready_pod("replacement", 4))
        .now(5)
        .decide();
    let c = current(&d);
    assert_eq!(c.phase, BatchPhase::Smoking);
    assert_eq!(c.pulled_in_at, None);
    assert!(c.pods.as_ref().unwrap().is_empty());
    assert_eq!(d.status.pods.as_deref(), Some(&[][..]));
    let d2 = flow("create", 1, json!({"mode": "auto"}))
        .status(serde_json::to_value(&d.status).unwrap())
        .cloneset(1, None, 0)
        .pod(ready_pod("replacement", 4))
        .now(6)
        .decide();
    let c = current(&d2);
    assert_eq!(c.phase, BatchPhase::Smoked, "{:?}", d2.status.message);
    assert_eq!(c.pods.as_ref().unwrap()[0].name, "replacement");
}

// ---- item 6: decisions recorded before they are acted on --------------------------------------

#[test]
fn a_batch_start_is_recorded_before_the_cloneset_write() {
    let d = flow("update", 3, json!({"batchSize": 1, "mode": "auto"}))
        .status(running(
            vec![batch(1, "Pending", &[], json!({"startedAt": null}))],
            json!({}),
        ))
        .cloneset(3, Some(3), 3)
        .now(4)
        .decide();
    let c = current(&d);
    assert_eq!(c.phase, BatchPhase::Smoking);
    assert_eq!(c.started_at.as_ref().map(|t| t.0), Some(at(4)));
    assert!(cloneset_patches(&d.before).is_empty());
    assert_eq!(
        cloneset_patches(&d.after),
        vec![&json!({"spec": {"replicas": 4, "updateStrategy": {"partition": 3}}})]
    );
}

#[test]
fn a_smoking_batch_rewrites_a_start_target_the_cloneset_does_not_show_and_never_moves_its_start() {
    let d = flow("update", 3, json!({"batchSize": 1, "mode": "auto"}))
        .status(running(
            vec![batch(1, "Smoking", &[], json!({}))],
            json!({}),
        ))
        .cloneset(3, Some(3), 3)
        .now(9)
        .decide();
    assert_eq!(
        cloneset_patches(&d.before),
        vec![&json!({"spec": {"replicas": 4}})]
    );
    assert_eq!(current(&d).started_at.as_ref().map(|t| t.0), Some(at(0)));
}

fn restart_at_baking() -> Fixture {
    flow("restart", 3, json!({"batchSize": 1, "mode": "auto"}))
        .status(running(
            vec![batch(1, "Baking", &["new-1"], json!({}))],
            json!({"podsAtStart": ["old-a", "old-b", "old-c"], "pods": ["new-1"]}),
        ))
        .cloneset(4, None, 4)
        .pod(pod(
            "old-a",
            "r1",
            &[("Ready", "True"), ("ContainersReady", "True")],
            0,
            -100,
        ))
        .pod(pod(
            "old-b",
            "r1",
            &[("Ready", "True"), ("ContainersReady", "True")],
            0,
            -100,
        ))
        .pod(pod(
            "old-c",
            "r1",
            &[("Ready", "True"), ("ContainersReady", "True")],
            0,
            -100,
        ))
        .pod(ready_pod("new-1", 1))
}

#[test]
fn a_batch_finish_records_the_pods_it_deletes_before_the_cloneset_write() {
    let d = restart_at_baking().decide();
    let c = current(&d);
    assert_eq!(
        c.phase,
        BatchPhase::Baking,
        "Baked only once the CloneSet shows the finish"
    );
    assert_eq!(
        c.pods_to_delete.as_deref(),
        Some(&["old-a".to_string()][..])
    );
    assert!(cloneset_patches(&d.before).is_empty());
    assert_eq!(
        cloneset_patches(&d.after),
        vec![&json!({"spec": {"replicas": 3, "scaleStrategy": {"podsToDelete": ["old-a"]}}})]
    );
}

#[test]
fn a_retried_finish_deletes_the_recorded_pods_even_if_the_cache_changed_since() {
    // The controller crashed after recording old-a; old-a is already gone from a fresher cache
    // and old-b is now the first candidate: the retry must not pick old-b.
    let mut f = restart_at_baking();
    f.df["status"]["conditions"][0]["podsToDelete"] = json!(["old-a"]);
    f.pods
        .retain(|p| p.metadata.name.as_deref() != Some("old-a"));
    let d = f.decide();
    let patches = cloneset_patches(&d.before);
    assert_eq!(
        patches,
        vec![&json!({"spec": {"replicas": 3, "scaleStrategy": {"podsToDelete": ["old-a"]}}})],
        "the recorded pod only; old-b is never named"
    );
    assert_eq!(current(&d).phase, BatchPhase::Baking);
}

#[test]
fn a_finish_the_cloneset_shows_marks_the_batch_baked() {
    let mut f = restart_at_baking()
        .cs_set("/spec/replicas", json!(3))
        .cs_set("/spec/updateStrategy", json!({}));
    f.cs.as_mut().unwrap()["spec"]["scaleStrategy"] = json!({"podsToDelete": ["old-a"]});
    f.df["status"]["conditions"][0]["podsToDelete"] = json!(["old-a"]);
    f.now = at(20);
    let d = f.decide();
    assert_eq!(
        current(&d).phase,
        BatchPhase::Baking,
        "not Baked while old-a is still alive (Kruise has not deleted it yet)"
    );
    assert!(d.after.is_empty());
    f.pods
        .retain(|p| p.metadata.name.as_deref() != Some("old-a"));
    let d = f.decide();
    assert_eq!(current(&d).phase, BatchPhase::Baked);
    assert_eq!(d.status.finished_replicas, 1);
    assert!(d.before.is_empty() && d.after.is_empty(), "{d:?}");
}

#[test]
fn a_later_batch_never_picks_a_pod_an_earlier_batch_already_deletes() {
    // scale_in 5 -> 3 naming a and b, batches of 1; batch 1 chose a, which the cache still
    // shows alive (Kruise lags): batch 2 must choose b.
    let mut f = flow("scale_in", 3, json!({"batchSize": 1, "mode": "auto", "podsToDelete": ["a", "b"]}))
        .status(running(
            vec![
                batch(1, "Baked", &[], json!({"podsToDelete": ["a"], "finishedAt": at_str(1)})),
                batch(2, "Baking", &[], json!({})),
            ],
            json!({"replicasAtStart": 5, "replicasToProcess": 2, "finishedReplicas": 1, "finishedBatches": 1}),
        ))
        .cloneset(4, None, 4);
    f.cs.as_mut().unwrap()["spec"]["scaleStrategy"] = json!({"podsToDelete": ["a"]});
    for n in ["a", "b", "c", "d", "e"] {
        f = f.pod(pod(
            n,
            "r1",
            &[("Ready", "True"), ("ContainersReady", "True")],
            0,
            -100,
        ));
    }
    let d = f.now(5).decide();
    assert_eq!(
        current(&d).pods_to_delete.as_deref(),
        Some(&["b".to_string()][..])
    );
    assert_eq!(
        cloneset_patches(&d.after),
        vec![&json!({"spec": {"replicas": 3, "scaleStrategy": {"podsToDelete": ["a", "b"]}}})]
    );
}

// ---- items 7 and 8: a CloneSet gone, scale direction ------------------------------------------

#[test]
fn a_cloneset_deleted_mid_release_fails_the_release_with_a_message() {
    let d = flow("update", 3, json!({"batchSize": 1}))
        .status(running(
            vec![batch(1, "Smoking", &[], json!({}))],
            json!({}),
        ))
        .decide();
    assert_eq!(d.status.phase, DeployPhase::Failed);
    assert!(d.status.finished);
    assert!(
        d.status
            .message
            .unwrap()
            .contains("CloneSet app was deleted")
    );
}

fn existing(replicas: i32) -> Fixture {
    flow("scale_out", 2, json!({"batchSize": 1, "mode": "auto"}))
        .status(json!({"phase": "Pending"}))
        .cloneset(replicas, None, replicas)
        .cs_set("/metadata/annotations", json!({}))
}

#[test]
fn scale_out_to_fewer_replicas_fails_at_once_and_touches_nothing() {
    let d = existing(3).decide();
    assert_eq!(d.status.phase, DeployPhase::Failed);
    assert!(d.status.message.unwrap().contains("use scale_in"));
    assert!(d.before.is_empty() && d.after.is_empty());
    let mut f = existing(1);
    f.df["spec"]["action"] = json!("scale_in");
    let d = f.decide();
    assert_eq!(d.status.phase, DeployPhase::Failed);
    assert!(d.status.message.unwrap().contains("use scale_out"));
}

// ---- item 1: ownership by annotation; deletion cancels ---------------------------------------

#[test]
fn adopting_marks_the_cloneset_with_an_annotation_and_drops_old_deployflow_owner_references() {
    let mut f = existing(1);
    f.cs.as_mut().unwrap()["metadata"]["ownerReferences"] = json!([
        {"apiVersion": "apps.triton.io/v1alpha1", "kind": "DeployFlow", "name": "old", "uid": "u1", "controller": true},
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "u2"}
    ]);
    let d = f.decide();
    assert_eq!(d.status.phase, DeployPhase::Initializing);
    let p = cloneset_patches(&d.before)[0];
    assert_eq!(p["metadata"]["annotations"][RELEASE_ANNOTATION], "app-v2");
    assert_eq!(
        p["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "u2"}])
    );
    assert_eq!(p["metadata"]["resourceVersion"], "7");
}

#[test]
fn a_created_cloneset_has_no_owner_reference() {
    let d = flow("create", 3, json!({}))
        .status(json!({"phase": "Pending"}))
        .decide();
    let Effect::CreateCloneSet(m) = &d.before[0] else {
        panic!("{d:?}")
    };
    assert!(m["metadata"].get("ownerReferences").is_none());
    assert_eq!(m["metadata"]["annotations"][RELEASE_ANNOTATION], "app-v2");
}

#[test]
fn deleting_a_running_release_cancels_it_pulls_its_batch_out_and_releases_the_cloneset() {
    let d = flow("update", 3, json!({"batchSize": 1}))
        .status(running(
            vec![batch(1, "Smoked", &["new-1"], json!({}))],
            json!({"pods": ["new-1"]}),
        ))
        .cloneset(4, Some(3), 3)
        .pod(pod(
            "new-1",
            "app-rev2",
            &[("ContainersReady", "True"), (READY_GATE, "True")],
            0,
            1,
        ))
        .cleanup();
    assert_eq!(d.status.phase, DeployPhase::Canceled);
    assert!(d.status.message.unwrap().contains("deleted"));
    assert!(
        d.before
            .iter()
            .any(|e| matches!(e, Effect::SetGate { pod, ready: false, .. } if pod == "new-1"))
    );
    let p = cloneset_patches(&d.before)[0];
    assert_eq!(
        p["metadata"]["annotations"][RELEASE_ANNOTATION],
        Value::Null
    );
    assert_eq!(p["spec"]["replicas"], 3, "the surge goes");
    assert_eq!(p["spec"]["updateStrategy"]["paused"], false);
    assert!(
        d.after.is_empty(),
        "all cancel writes are idempotent, before the status"
    );
}

#[test]
fn a_release_waits_for_another_running_release_of_its_cloneset() {
    let mut f = existing(2).cs_set(
        "/metadata/annotations",
        json!({RELEASE_ANNOTATION: "other"}),
    );
    f.df["spec"]["action"] = json!("update");
    f.holder = Some(Holder {
        name: "other".into(),
        running: true,
        paused: false,
    });
    let d = f.decide();
    assert_eq!(d.status.phase, DeployPhase::Pending);
    assert!(
        d.status
            .message
            .unwrap()
            .contains("waiting for DeployFlow other")
    );
    assert!(d.before.is_empty());
    f.holder.as_mut().unwrap().paused = true;
    let d = f.decide();
    assert!(matches!(&d.before[0], Effect::Abort { name } if name == "other"));
}

#[test]
fn a_success_whose_status_write_was_lost_completes_although_the_hold_is_already_released() {
    let d = flow("create", 3, json!({"mode": "auto"}))
        .status(running(
            vec![batch(1, "Baked", &["a", "b", "c"], json!({}))],
            json!({"phase": "BatchFinished", "finishedReplicas": 3, "finishedBatches": 1}),
        ))
        .cloneset(3, None, 3)
        .cs_set("/metadata/annotations", json!({}))
        .decide();
    assert_eq!(
        d.status.phase,
        DeployPhase::Success,
        "{:?}",
        d.status.message
    );
}

#[test]
fn a_cloneset_taken_by_another_release_fails_this_one() {
    let d = flow("update", 3, json!({"batchSize": 1}))
        .status(running(
            vec![batch(1, "Smoking", &[], json!({}))],
            json!({}),
        ))
        .cloneset(4, Some(3), 3)
        .cs_set(
            "/metadata/annotations",
            json!({RELEASE_ANNOTATION: "other"}),
        )
        .decide();
    assert_eq!(d.status.phase, DeployPhase::Failed);
    assert!(d.status.message.unwrap().contains("names other"));
}

#[test]
fn restart_or_scale_of_a_cloneset_triton_never_released_is_refused() {
    let d = existing(1)
        .cs_set("/spec/template/metadata/labels", json!({"app": "x"}))
        .decide();
    assert_eq!(d.status.phase, DeployPhase::Failed);
    assert!(
        d.status
            .message
            .unwrap()
            .contains("release it once with action update")
    );
    assert!(d.before.is_empty());
}

#[test]
fn a_removed_paused_field_is_not_a_resume() {
    let d = flow("update", 3, json!({"batchSize": 1, "mode": "auto"}))
        .status(running(
            vec![batch(1, "SmokeFailed", &["new-1"], json!({}))],
            json!({"paused": true}),
        ))
        .cloneset(4, Some(3), 3)
        .pod(ready_pod("new-1", 1))
        .decide();
    assert_eq!(current(&d).phase, BatchPhase::SmokeFailed);
    assert!(d.before.is_empty() && d.after.is_empty());
}

#[test]
fn a_pause_over_a_failing_batch_is_that_failure_when_its_status_was_lost() {
    // The failure's spec write landed (paused: true), its status write did not.
    let d = flow(
        "update",
        3,
        json!({"batchSize": 1, "mode": "auto", "paused": true}),
    )
    .status(running(
        vec![batch(1, "Smoking", &["new-1"], json!({}))],
        json!({"pods": ["new-1"]}),
    ))
    .cloneset(4, Some(3), 3)
    .pod(pod(
        "new-1",
        "app-rev2",
        &[("ContainersReady", "False")],
        3,
        1,
    ))
    .decide();
    assert_eq!(current(&d).phase, BatchPhase::SmokeFailed);
    assert!(d.status.paused);
}

#[test]
fn cancel_names_the_unbaked_pods_so_kruise_removes_exactly_those() {
    let d = flow("update", 3, json!({"batchSize": 1, "canceled": true}))
        .status(running(
            vec![batch(1, "Smoked", &["new-1"], json!({}))],
            json!({"pods": ["new-1"]}),
        ))
        .cloneset(4, Some(3), 3)
        .pod(ready_pod("new-1", 1))
        .decide();
    assert_eq!(d.status.phase, DeployPhase::Canceled);
    let p = cloneset_patches(&d.before)[0];
    assert_eq!(p["spec"]["scaleStrategy"]["podsToDelete"], json!(["new-1"]));
    assert_eq!(p["spec"]["replicas"], 3);
}

#[test]
fn a_pod_the_cloneset_does_not_control_is_never_a_victim() {
    let mut f = restart_at_baking();
    f.cs.as_mut().unwrap()["metadata"]["uid"] = json!("cs-uid");
    for p in f.pods.iter_mut() {
        if p.metadata.name.as_deref() != Some("old-a") {
            p.metadata.owner_references = Some(vec![
                serde_json::from_value(json!({
                    "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "app",
                    "uid": "cs-uid", "controller": true
                }))
                .unwrap(),
            ]);
        }
    }
    let d = f.decide();
    assert_eq!(
        current(&d).pods_to_delete.as_deref(),
        Some(&["old-b".to_string()][..]),
        "old-a (same labels, another controller) is skipped"
    );
}

// ---- the readiness agent (issue 9): healthy gates the smoke, a broken app fails the batch ----

/// A ContainersReady pod running the agent, with its `apps.triton.io/healthy` condition.
fn agent_pod(name: &str, healthy: Option<(&str, &str)>) -> Pod {
    let mut p = ready_pod(name, 1);
    p.metadata.annotations = Some(
        [(
            triton_core::names::AGENT_ANNOTATION.to_string(),
            "http://:8080/healthz".to_string(),
        )]
        .into(),
    );
    if let Some((status, reason)) = healthy {
        let c: k8s_openapi::api::core::v1::PodCondition = serde_json::from_value(json!({
            "type": triton_core::names::HEALTHY_CONDITION, "status": status, "reason": reason,
            "message": "GET http://127.0.0.1:8080/healthz: 500"}))
        .unwrap();
        p.status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(c);
    }
    p
}

/// A pulled-in (gate True) agent pod whose agent reports `reason` (False).
fn pulled_in_agent_pod(reason: &str) -> Pod {
    let mut p = agent_pod("new-1", Some(("False", reason)));
    p.status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()
        .push(serde_json::from_value(json!({"type": READY_GATE, "status": "True"})).unwrap());
    p
}

fn smoking_update(p: Pod) -> Decision {
    flow("update", 3, json!({"batchSize": 1, "mode": "auto"}))
        .status(running(
            vec![batch(1, "Smoking", &[], json!({}))],
            json!({}),
        ))
        .cloneset(4, Some(3), 3)
        .pod(p)
        .decide()
}

#[test]
fn a_pod_with_the_agent_is_smoked_only_once_its_agent_reports_it_healthy() {
    for healthy in [None, Some(("False", crate::agent::STARTING))] {
        let d = smoking_update(agent_pod("new-1", healthy));
        assert_eq!(current(&d).phase, BatchPhase::Smoking, "{healthy:?}");
        let msg = d.status.message.clone().unwrap_or_default();
        assert!(msg.contains("agent: not healthy yet"), "{msg}");
    }
    let d = smoking_update(agent_pod("new-1", Some(("True", "ProbeSucceeded"))));
    assert_eq!(current(&d).phase, BatchPhase::Smoked);
    // Without the annotation the condition is not looked at.
    let d = smoking_update(ready_pod("new-1", 1));
    assert_eq!(current(&d).phase, BatchPhase::Smoked);
}

#[test]
fn an_app_the_agent_reports_broken_fails_the_smoke_and_a_baking_batch_fails_its_bake() {
    let d = smoking_update(agent_pod("new-1", Some(("False", "HTTPStatus"))));
    assert_eq!(current(&d).phase, BatchPhase::SmokeFailed);
    assert!(d.status.paused && spec_pauses(&d.before));
    let msg = d.status.message.clone().unwrap();
    assert!(msg.contains("new-1") && msg.contains("HTTPStatus"), "{msg}");

    let broken = pulled_in_agent_pod(crate::agent::AGENT_SILENT);
    let d = flow("update", 3, json!({"batchSize": 1, "mode": "auto"}))
        .status(running(
            vec![batch(
                1,
                "Baking",
                &["new-1"],
                json!({"pulledInAt": at_str(1)}),
            )],
            json!({}),
        ))
        .cloneset(4, Some(3), 3)
        .pod(broken)
        .decide();
    assert_eq!(current(&d).phase, BatchPhase::BakeFailed);
    assert!(d.status.message.clone().unwrap().contains("AgentSilent"));
}

#[test]
fn a_pod_failing_during_its_batchs_pull_in_fails_the_bake_not_the_smoke() {
    let broken = pulled_in_agent_pod("HTTPStatus");
    let d = flow("update", 3, json!({"batchSize": 1, "mode": "auto"}))
        .status(running(
            vec![batch(
                1,
                "Smoked",
                &["new-1"],
                json!({"pulledInAt": at_str(1)}),
            )],
            json!({}),
        ))
        .cloneset(4, Some(3), 3)
        .pod(broken)
        .decide();
    assert_eq!(current(&d).phase, BatchPhase::BakeFailed);
    assert!(
        d.status
            .message
            .clone()
            .unwrap()
            .contains("failed while baking")
    );
}

// ---- advance: one status write for a run of steps that write nothing else ---------------------

/// An update of 3 in batches of 1 whose batch 1 is finishing: the CloneSet shows its finish
/// target (3 replicas, partition 2), so the batch is baked.
fn update_finishing(interval: i64) -> Fixture {
    flow(
        "update",
        3,
        json!({"batchSize": 1, "mode": "auto", "batchIntervalSeconds": interval}),
    )
    .status(running(
        vec![batch(1, "Baking", &["new-1"], json!({"podsToDelete": []}))],
        json!({}),
    ))
    .cloneset(3, Some(2), 3)
    .pod(ready_pod("new-1", 1))
    .now(20)
}

fn trail(d: &Decision) -> Vec<(i32, BatchPhase)> {
    d.trail
        .iter()
        .map(|s| s.current().map(|c| (c.batch, c.phase)).unwrap())
        .collect()
}

#[test]
fn a_baked_batch_and_the_start_of_the_next_are_one_status_write() {
    let f = update_finishing(0);
    let one = f.decide();
    assert_eq!(current(&one).phase, BatchPhase::Baked, "one step: {one:?}");
    let d = f.advance();
    let c = current(&d);
    assert_eq!((c.batch, c.phase), (2, BatchPhase::Smoking), "{d:?}");
    assert_eq!(
        trail(&d),
        vec![(1, BatchPhase::Baked), (2, BatchPhase::Pending)],
        "the statuses passed through, for the Events"
    );
    assert_eq!(d.status.finished_replicas, 1);
    assert!(d.before.is_empty(), "{:?}", d.before);
    assert_eq!(
        cloneset_patches(&d.after),
        vec![&json!({"spec": {"replicas": 4, "updateStrategy": {"partition": 2}}})],
        "batch 2's start target (one surge pod of the new revision), written after the status that records the start"
    );
}

#[test]
fn a_run_of_steps_stops_where_it_waits_and_keeps_the_timer() {
    let d = update_finishing(30).advance();
    let c = current(&d);
    assert_eq!((c.batch, c.phase), (1, BatchPhase::Baked));
    assert!(
        d.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("batch 2 starts after the batch interval of 30s")),
        "{d:?}"
    );
    let r = d.requeue.expect("the interval's timer");
    assert!(
        r > std::time::Duration::from_secs(29) && r <= std::time::Duration::from_secs(31),
        "{r:?}"
    );
    assert!(d.after.is_empty() && d.before.is_empty(), "{d:?}");
}

#[test]
fn the_last_batch_baked_and_batch_finished_are_one_write_and_the_release_waits_there() {
    let mut f = update_finishing(0).status(running(
        vec![
            batch(1, "Baked", &["new-1"], json!({"podsToDelete": [], "finishedAt": at_str(5)})),
            batch(2, "Baked", &["new-2"], json!({"podsToDelete": [], "finishedAt": at_str(9)})),
            batch(3, "Baking", &["new-3"], json!({"podsToDelete": []})),
        ],
        json!({"finishedReplicas": 2, "finishedBatches": 2}),
    ));
    f = f.cs_set("/spec/updateStrategy/partition", json!(0));
    let d = f.advance();
    assert_eq!(d.status.phase, DeployPhase::BatchFinished, "{d:?}");
    assert_eq!(trail(&d), vec![(3, BatchPhase::Baked)]);
    assert!(
        !d.status.finished,
        "Success is the next reconcile's: it releases the CloneSet first (a write that rests on \
         a written BatchFinished)"
    );
}

#[test]
fn a_terminal_status_ends_the_run() {
    // A CloneSet deleted mid-release: Failed at once, nothing after it.
    let d = update_finishing(0).advance();
    assert!(!d.status.finished);
    let mut f = update_finishing(0);
    f.cs = None;
    let d = f.advance();
    assert_eq!(d.status.phase, DeployPhase::Failed);
    assert!(d.trail.is_empty(), "{d:?}");
}

// ---- a CloneSet edited by hand mid-release --------------------------------------------------

/// An update of 3 in batches of 1, batch 1 baked (new-1 serves), batch 2 waiting for Next; the
/// CloneSet as the release left it: 3 replicas, partition 2.
fn update_waiting_for_batch_2() -> Fixture {
    flow(
        "update",
        3,
        json!({"batchSize": 1, "mode": "manual", "batches": 1}),
    )
    .status(running(
        vec![
            batch(1, "Baked", &["new-1"], json!({"podsToDelete": [], "finishedAt": at_str(5)})),
            batch(2, "Pending", &[], json!({"startedAt": null})),
        ],
        json!({"finishedReplicas": 1, "finishedBatches": 1, "pods": ["new-1"],
            "podsAtStart": ["old-1", "old-2", "old-3"]}),
    ))
    .cloneset(3, Some(2), 3)
    .pod(pod("new-1", "app-rev2", &[("ContainersReady", "True"), (READY_GATE, "True")], 0, 2))
    .pod(pod("old-2", "app-rev1", &[("ContainersReady", "True")], 0, -100))
    .pod(pod("old-3", "app-rev1", &[("ContainersReady", "True")], 0, -100))
    .now(30)
}

#[test]
fn a_release_waiting_for_next_leaves_its_cloneset_alone() {
    let d = update_waiting_for_batch_2().decide();
    assert!(d.before.is_empty() && d.after.is_empty(), "{d:?}");
    assert!(d.status.message.unwrap().contains("batch 2 waits for `batches`"));
}

#[test]
fn a_partition_lowered_by_hand_is_set_back_and_the_pods_it_updated_are_removed() {
    // Someone set partition 0: Kruise replaced old-2 by out-1 (new revision, gate False).
    let mut f = update_waiting_for_batch_2().cs_set("/spec/updateStrategy/partition", json!(0));
    // Batch 1's finish listed old-1, now gone: Kruise refuses a list naming a terminating pod.
    f.cs.as_mut().unwrap()["spec"]["scaleStrategy"] = json!({"podsToDelete": ["old-1"]});
    f.pods.retain(|p| p.metadata.name.as_deref() != Some("old-2"));
    f = f.pod(ready_pod("out-1", 25));
    let d = f.decide();
    assert_eq!(
        cloneset_patches(&d.before),
        vec![&json!({"spec": {"updateStrategy": {"partition": 2},
            "scaleStrategy": {"podsToDelete": ["out-1"]}}})],
        "written before anything else; new-1 (baked, serving) is kept"
    );
    let msg = d.status.message.clone().unwrap();
    assert!(
        msg.contains("edited outside the release") && msg.contains("out-1") && msg.contains("partition is set back to 2"),
        "{msg}"
    );
    assert!(
        d.after.iter().any(|e| matches!(e, Effect::Event { warning: true, reason: "CloneSetEdited", .. })),
        "a Warning Event: {:?}",
        d.after
    );
    assert_eq!(current(&d).phase, BatchPhase::Pending, "the release itself does not move");

    // The CloneSet shows the restore and lists out-1: nothing more to write, the release waits
    // as before (Kruise deletes out-1 and recreates it at the old revision).
    let mut f = f.cs_set("/spec/updateStrategy/partition", json!(2));
    f.cs.as_mut().unwrap()["spec"]["scaleStrategy"] = json!({"podsToDelete": ["out-1"]});
    let d = f.decide();
    assert!(d.before.is_empty(), "{:?}", d.before);
    assert!(d.status.message.unwrap().contains("batch 2 waits for `batches`"));
}

#[test]
fn a_percentage_partition_written_by_hand_is_replaced_by_the_releases_number() {
    let d = update_waiting_for_batch_2()
        .cs_set("/spec/updateStrategy/partition", json!("50%"))
        .decide();
    assert_eq!(
        cloneset_patches(&d.before),
        vec![&json!({"spec": {"updateStrategy": {"partition": 2}}})]
    );
}

#[test]
fn a_started_batch_and_its_surge_are_not_taken_for_an_edit() {
    // Batch 2 started: 4 replicas, partition 2; its pod new-2 is up but not yet claimed.
    let mut f = update_waiting_for_batch_2().cloneset(4, Some(2), 4);
    f.df["status"]["conditions"][1] = batch(2, "Smoking", &[], json!({"startedAt": at_str(20)}));
    f = f.pod(ready_pod("new-2", 21));
    let d = f.decide();
    assert!(
        cloneset_patches(&d.before).is_empty() && !d.after.iter().any(|e| matches!(e, Effect::Event { reason: "CloneSetEdited", .. })),
        "{d:?}"
    );
    assert_eq!(current(&d).phase, BatchPhase::Smoked);
}

#[test]
fn an_evicted_pod_and_its_replacement_are_not_taken_for_an_edit() {
    // new-1 (baked) was evicted: phase Failed, still listed; Kruise replaced it by new-1b.
    let mut f = update_waiting_for_batch_2();
    let evicted = f
        .pods
        .iter_mut()
        .find(|p| p.metadata.name.as_deref() == Some("new-1"))
        .unwrap();
    evicted.status.as_mut().unwrap().phase = Some("Failed".into());
    let d = f.pod(ready_pod("new-1b", 25)).decide();
    assert!(d.before.is_empty() && d.after.is_empty(), "{d:?}");
}

#[test]
fn the_pods_an_edit_released_are_chosen_before_a_started_batchs_own() {
    // Batch 2 started at 20 s (4 replicas, partition 2); an edit at 19 s had released out-1,
    // and the batch's own new-2 (21 s) is not claimed yet. Someone also set partition 0.
    let mut f = update_waiting_for_batch_2()
        .cloneset(4, Some(0), 4)
        .pod(ready_pod("out-1", 19))
        .pod(ready_pod("new-2", 21));
    f.df["status"]["conditions"][1] = batch(2, "Smoking", &[], json!({"startedAt": at_str(20)}));
    let d = f.decide();
    let patches = cloneset_patches(&d.before);
    assert_eq!(
        patches,
        vec![&json!({"spec": {"updateStrategy": {"partition": 2},
            "scaleStrategy": {"podsToDelete": ["out-1"]}}})],
        "out-1, not the batch's new-2"
    );
}

#[test]
fn a_pod_this_controller_just_pulled_in_is_never_a_victim() {
    let mut f = update_waiting_for_batch_2().cs_set("/spec/updateStrategy/partition", json!(0));
    f.pods.retain(|p| p.metadata.name.as_deref() != Some("old-2"));
    f = f.pod(ready_pod("out-1", 25));
    f.opened = vec!["out-1".to_string()];
    let d = f.decide();
    assert_eq!(
        cloneset_patches(&d.before),
        vec![&json!({"spec": {"updateStrategy": {"partition": 2}}})],
        "the partition is set back, out-1 (its gate just set) is left alone"
    );
}

#[test]
fn a_create_whose_replicas_are_raised_by_hand_gets_them_back_and_loses_the_extra_pods() {
    // A create of 3 in batches of 1: batch 1 baked (new-1); someone scaled the CloneSet to 3.
    let f = flow("create", 3, json!({"batchSize": 1, "mode": "manual", "batches": 1}))
        .status(running(
            vec![
                batch(1, "Baked", &["new-1"], json!({"podsToDelete": [], "finishedAt": at_str(5)})),
                batch(2, "Pending", &[], json!({"startedAt": null})),
            ],
            json!({"finishedReplicas": 1, "finishedBatches": 1, "pods": ["new-1"], "replicasAtStart": 0}),
        ))
        .cloneset(3, None, 3)
        .pod(pod("new-1", "app-rev2", &[("ContainersReady", "True"), (READY_GATE, "True")], 0, 2))
        .pod(ready_pod("extra-1", 25))
        .pod(ready_pod("extra-2", 26))
        .now(30);
    let d = f.decide();
    assert_eq!(
        cloneset_patches(&d.before),
        vec![&json!({"spec": {"replicas": 1,
            "scaleStrategy": {"podsToDelete": ["extra-2", "extra-1"]}}})]
    );
    assert!(d.status.message.unwrap().contains("replicas are set back to 1"));
}

#[test]
fn a_batch_found_smoked_opens_its_gates_in_the_same_write() {
    // Update, batch 1 Smoking with its pod recorded; the pod is up, its gate still False.
    let smoking = |pods: &[&str]| {
        flow("update", 3, json!({"batchSize": 1, "mode": "auto"}))
            .status(running(
                vec![batch(1, "Smoking", pods, json!({}))],
                json!({}),
            ))
            .cloneset(4, Some(3), 3)
            .pod(pod("new-1", "app-rev2", &[("ContainersReady", "True"), (READY_GATE, "False")], 0, 1))
            .now(5)
    };
    let d = smoking(&[]).advance();
    assert_eq!(
        d,
        smoking(&[]).decide(),
        "a pod the written status does not name yet: Smoked is written before its gate opens"
    );
    let f = flow("update", 3, json!({"batchSize": 1, "mode": "auto"}))
        .status(running(
            vec![batch(1, "Smoking", &["new-1"], json!({}))],
            json!({}),
        ))
        .cloneset(4, Some(3), 3)
        .pod(pod("new-1", "app-rev2", &[("ContainersReady", "True"), (READY_GATE, "False")], 0, 1))
        .now(5);
    let one = f.decide();
    assert_eq!(current(&one).phase, BatchPhase::Smoked);
    assert!(one.before.is_empty(), "one step records Smoked first: {one:?}");
    let d = f.advance();
    let c = current(&d);
    assert_eq!(c.phase, BatchPhase::Smoked);
    assert!(c.pulled_in_at.is_some(), "the pull-in is recorded: {d:?}");
    assert_eq!(trail(&d), vec![(1, BatchPhase::Smoked)], "Smoked is still told");
    assert!(
        matches!(d.before.as_slice(), [Effect::SetGate { pod, ready: true, .. }] if pod == "new-1"),
        "{:?}",
        d.before
    );
}

#[test]
fn a_status_that_only_tells_is_told_apart_from_one_that_decides() {
    let base: crate::crd::DeployFlowStatus = serde_json::from_value(running(
        vec![batch(1, "Smoking", &["new-1"], json!({}))],
        json!({"message": "waiting", "replicas": 3}),
    ))
    .unwrap();
    let with = |f: &dyn Fn(&mut crate::crd::DeployFlowStatus)| {
        let mut s = base.clone();
        f(&mut s);
        s
    };
    assert!(!tells_only(&base, &base), "no change");
    for (what, s) in [
        ("message", with(&|s| s.message = Some("other".into()))),
        ("counts", with(&|s| s.updated_ready_replicas = 2)),
        ("a pod's phase", with(&|s| s.conditions.as_mut().unwrap()[0].pods.as_mut().unwrap()[0].phase = "Ready".into())),
        ("a pod's IP", with(&|s| s.conditions.as_mut().unwrap()[0].pods.as_mut().unwrap()[0].ip = "10.0.0.1".into())),
    ] {
        assert!(tells_only(&base, &s), "{what} only tells");
    }
    for (what, s) in [
        ("the batch phase", with(&|s| s.conditions.as_mut().unwrap()[0].phase = BatchPhase::Smoked)),
        ("the batch's pods", with(&|s| s.conditions.as_mut().unwrap()[0].pods.as_mut().unwrap()[0].name = "new-2".into())),
        ("a pull-in verdict", with(&|s| s.conditions.as_mut().unwrap()[0].pods.as_mut().unwrap()[0].pull_in_status = "PullInSucceeded".into())),
        ("paused", with(&|s| s.paused = true)),
        ("the phase", with(&|s| s.phase = DeployPhase::Failed)),
    ] {
        assert!(!tells_only(&base, &s), "{what} decides");
    }
}
