//! Pulls in every gated pod that no release holds back (DESIGN §2, decision 2): pods of a
//! restart or scale-out, of a `noPullIn` update, pods re-created after the release ended. Only
//! the pods of a running release's not-yet-pulled-in batch wait for that release.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use triton_core::names::{INSTANCE_LABEL, READY_GATE};
use triton_core::release::{BatchPhase, DeployPhase};

use crate::crd::DeployFlow;
use crate::observe;
use crate::reconcile::{Context, Error, set_gate};

/// A live (not terminating) pod of the instance, as [`held`] reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    pub name: String,
    pub revision: Option<String>,
    /// Its gate is True (or this controller has just set it).
    pub serving: bool,
}

/// Whether a running release holds this pod back (DESIGN §2, decision 2):
/// * a pod of the current, started batch, before the batch is pulled in. A batch's start is
///   recorded before the CloneSet write that creates its pods, so no pod of it exists while it
///   is Pending. A pod the batch has not claimed counts as its own while the batch still misses
///   pods. The un-baked batch of a canceled release stays held (cancel removes those pods; they
///   never take traffic).
/// * a pod of the update revision that no batch claims (and that was not there at the start),
///   while the release's pods of that revision in service already number what it released: the
///   baked batches, the pulled-in current one, and those updated before the release. Such a pod
///   replaces a baked pod that is gone (then it is not held: fewer serve than were released) or
///   was released out of turn by a hand edit of the CloneSet (then it is held, and the release
///   removes it; see `engine::batch::out_of_turn`).
///
/// `live` are the instance's active pods (not terminating, not ended): a claimed pod that is gone
/// no longer counts, so its replacement is held in its place.
pub fn held(pod: &Pod, deployflows: &[DeployFlow], live: &[Live]) -> bool {
    hold(pod, deployflows, live) != Hold::Free
}

/// Why a pod is held (see [`held`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    Free,
    /// By its batch, until the batch is pulled in (a DeployFlow change wakes it).
    Batch,
    /// By a release's budget: it frees up when a serving pod goes, which is another pod's
    /// event, so the pod is looked at again periodically.
    Budget,
}

pub fn hold(pod: &Pod, deployflows: &[DeployFlow], live: &[Live]) -> Hold {
    let name = pod.name_any();
    let mut why = Hold::Free;
    for df in deployflows {
        match hold_by(df, &name, pod, live) {
            Hold::Batch => return Hold::Batch,
            Hold::Budget => why = Hold::Budget,
            Hold::Free => {}
        }
    }
    why
}

fn hold_by(df: &DeployFlow, name: &str, pod: &Pod, live: &[Live]) -> Hold {
    let held = |b: bool, h: Hold| if b { h } else { Hold::Free };
    {
        let status = df.status.clone().unwrap_or_default();
        if !df.spec.pull_in() {
            return Hold::Free;
        }
        let Some(cur) = status.current() else {
            return Hold::Free;
        };
        if status.phase == DeployPhase::Canceled {
            return held(
                cur.phase != BatchPhase::Baked && cur.pods.iter().flatten().any(|p| p.name == name),
                Hold::Batch,
            );
        }
        if status.finished || status.phase != DeployPhase::BatchStarted {
            return Hold::Free;
        }
        let update = status.update_revision.as_deref();
        if let (Some(update), Some(rev)) = (update, observe::revision(pod))
            && update != rev
        {
            return Hold::Free;
        }
        let unbaked = matches!(
            cur.phase,
            BatchPhase::Smoking | BatchPhase::Smoked | BatchPhase::SmokeFailed
        );
        let elsewhere = status.pods.iter().flatten().any(|n| n == name)
            || status.pods_at_start.iter().flatten().any(|n| n == name);
        if unbaked && cur.pulled_in_at.is_none() {
            let claimed: Vec<&str> = cur
                .pods
                .iter()
                .flatten()
                .map(|p| p.name.as_str())
                .filter(|n| *n == name || live.iter().any(|l| l.name == *n))
                .collect();
            if claimed.contains(&name) {
                return Hold::Batch;
            }
            if !elsewhere && (claimed.len() as i32) < cur.batch_size {
                return Hold::Batch;
            }
        }
        let Some(update) = update else {
            return Hold::Free;
        };
        if elsewhere {
            return Hold::Free;
        }
        let pulled_in = cur.pulled_in_at.is_some() && cur.phase != BatchPhase::Baked;
        let released = status.updated_at_start.unwrap_or(0)
            + status.finished_replicas
            + if pulled_in { cur.batch_size } else { 0 };
        let serving = live
            .iter()
            .filter(|l| l.serving && l.name != name && l.revision.as_deref() == Some(update))
            .count() as i32;
        held(serving >= released, Hold::Budget)
    }
}

/// The pods whose gate this controller set True in the last [`Opened::TTL`] (by `ns/name`): the
/// cache may not show the write yet, and [`held`] counts them as serving.
#[derive(Default)]
pub struct Opened(std::collections::HashMap<String, std::time::Instant>);

impl Opened {
    pub const TTL: Duration = Duration::from_secs(30);

    pub fn insert(&mut self, key: String) {
        let now = std::time::Instant::now();
        if self.0.len() >= 1024 {
            self.0.retain(|_, t| now.duration_since(*t) < Self::TTL);
        }
        self.0.insert(key, now);
    }

    pub fn remove(&mut self, key: &str) {
        self.0.remove(key);
    }

    pub fn recently(&self, key: &str) -> bool {
        self.0
            .get(key)
            .is_some_and(|t| t.elapsed() < Self::TTL)
    }
}

/// How often a pod a budget holds is looked at again.
pub const BUDGET_RECHECK: Duration = Duration::from_secs(5);

/// The field of a DeployFlow's trigger that carries [`hold_digest`] (absent: deleted).
pub const DIGEST_FIELD: &str = "holdDigest";

/// A digest of what [`held`] and `Context::deployflows_of` read of a DeployFlow: the action and
/// `noPullIn`, the instance, the phase, `finished`, the update revision, the release's pods and
/// those at its start, the replicas finished and updated at the start, and the current batch's number, phase, size, pods and whether it is
/// pulled in. A status write that changes none of them (a message, a pod's IP) holds back the
/// same pods as before.
pub fn hold_digest(df: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let (spec, status) = (&df["spec"], &df["status"]);
    let cur = status["conditions"]
        .as_array()
        .and_then(|c| c.last())
        .unwrap_or(&serde_json::Value::Null);
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|p| p["name"].to_string())
            .collect()
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for v in [
        &spec["action"],
        &spec["updateStrategy"]["noPullIn"],
        &spec["application"]["instanceName"],
        &status["phase"],
        &status["finished"],
        &status["updateRevision"],
        &status["pods"],
        &status["podsAtStart"],
        &status["finishedReplicas"],
        &status["updatedAtStart"],
        &cur["batch"],
        &cur["phase"],
        &cur["batchSize"],
    ] {
        v.to_string().hash(&mut h);
    }
    cur["pulledInAt"].is_null().hash(&mut h);
    names(&cur["pods"]).hash(&mut h);
    h.finish()
}

/// Remembers each DeployFlow's last [`hold_digest`] seen in its trigger.
#[derive(Default)]
pub struct GateFilter(std::sync::Mutex<std::collections::HashMap<(String, String), u64>>);

impl GateFilter {
    /// Whether this trigger (a thin DeployFlow) changes what the release holds back: its first
    /// sight, a new digest, or its deletion.
    pub fn changed(&self, df: &crate::raw::RawDeployFlow) -> bool {
        let key = (df.namespace().unwrap_or_default(), df.name_any());
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match df.data[DIGEST_FIELD].as_str().and_then(|d| d.parse().ok()) {
            None => {
                seen.remove(&key);
                true
            }
            Some(d) => seen.insert(key, d) != Some(d),
        }
    }
}

pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    if !ctx.leading.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(Requeue::await_change());
    }
    ctx.synced().await;
    ctx.metrics.gate_reconciled();
    // The Lease holder marks pods whose readiness agent went silent, and looks again when the
    // last heartbeat would become stale.
    let mut check_in = None;
    if observe::has_agent(&pod) && !observe::is_terminating(&pod) {
        // Silence is judged only after this replica has led a full window plus the agents'
        // longest retry: an outage of the controllers or the API server is not the agents'.
        let now = jiff::Timestamp::now();
        let led = now.as_second() - ctx.leading_since.load(std::sync::atomic::Ordering::SeqCst);
        let grace = ctx.agent_staleness + crate::agent::AGENT_MAX_BACKOFF;
        let silence = if (led.max(0) as u64) < grace.as_secs() {
            crate::agent::Silence::CheckIn(Duration::from_secs(grace.as_secs() - led.max(0) as u64))
        } else {
            crate::agent::silence(&pod, now, ctx.agent_staleness)
        };
        match silence {
            crate::agent::Silence::Silent(age) => {
                tracing::info!(pod = %pod.name_any(), silent_for = ?age, "readiness agent silent; pod marked AgentSilent");
                return crate::agent::mark_silent(&ctx.client, &pod, age)
                    .await
                    .map(|()| Requeue::await_change())
                    .map_err(|source| Error::MarkSilent {
                        pod: pod.name_any(),
                        source,
                    });
            }
            crate::agent::Silence::CheckIn(d) => check_in = Some(d + Duration::from_millis(200)),
            crate::agent::Silence::Unknown => {}
        }
    }
    let r = pull_in(pod, ctx).await?;
    Ok(match check_in {
        Some(d) if r == Requeue::await_change() => Requeue::requeue(d),
        _ => r,
    })
}

/// Sets the gate True on a pod no running release holds back, once it is ready (and healthy).
async fn pull_in(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    if !observe::has_gate(&pod)
        || observe::is_true(&pod, READY_GATE)
        || observe::is_terminating(&pod)
    {
        return Ok(Requeue::await_change());
    }
    if !observe::is_true(&pod, "ContainersReady")
        || observe::is_failing(&pod)
        || !observe::agent_healthy(&pod)
    {
        return Ok(Requeue::await_change());
    }
    if observe::condition_reason(&pod, READY_GATE) == Some("Canceled") {
        // Pulled out by a cancel: the release removes it; it never takes traffic again.
        return Ok(Requeue::await_change());
    }
    let ns = pod.namespace().unwrap_or_default();
    let instance = pod.labels().get(INSTANCE_LABEL).cloned();
    let dfs = ctx.deployflows_of(&ns, instance.as_deref());
    // A DeployFlow cached from before our own last write of it (a batch just started, say)
    // could show this pod as free: wait for the newer object.
    if dfs.iter().any(|d| {
        ctx.stale(
            &format!("{ns}/{}", d.name_any()),
            d.metadata.resource_version.as_deref(),
        )
    }) {
        return Ok(Requeue::requeue(std::time::Duration::from_millis(500)));
    }
    let key = format!("{ns}/{}", pod.name_any());
    {
        // Decided and recorded under one lock: two pods checked at once never both take the
        // last place of a release's budget (see `held`), nor does a pod whose gate this
        // controller has just set but the cache does not show yet go uncounted.
        let mut opened = ctx.opened.lock().unwrap_or_else(|e| e.into_inner());
        let live: Vec<Live> = crate::index::objects(
            &ctx.pods,
            &ns,
            ctx.index.pods.filed(&ns, instance.as_deref()),
        )
        .iter()
        .filter(|p| p.labels().get(INSTANCE_LABEL) == instance.as_ref())
        .filter(|p| observe::is_active(p))
        .map(|p| Live {
            name: p.name_any(),
            revision: observe::revision(p).map(str::to_string),
            serving: observe::is_true(p, READY_GATE)
                || opened.recently(&format!("{ns}/{}", p.name_any())),
        })
        .collect();
        match hold(&pod, &dfs, &live) {
            Hold::Free => {}
            Hold::Batch => return Ok(Requeue::await_change()),
            Hold::Budget => return Ok(Requeue::requeue(BUDGET_RECHECK)),
        }
        opened.insert(key.clone());
    }
    tracing::info!(pod = %pod.name_any(), namespace = ?pod.namespace(), "pulling in a pod no release holds");
    if let Err(e) = set_gate(&ctx.client, &pod, true, "NotHeld").await {
        ctx.opened.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        return Err(e);
    }
    ctx.backoff.succeeded(&format!(
        "pod/{}/{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    ));
    Ok(Requeue::await_change())
}

pub fn error_policy(pod: Arc<Pod>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.api_error(error.category());
    let wait = ctx.backoff.failed(&format!(
        "pod/{}/{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    ));
    tracing::warn!(pod = %pod.name_any(), %error, retry_in = ?wait, "pulling in a pod failed; retrying");
    Requeue::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use triton_core::names::REVISION_LABEL;

    fn pod(name: &str, rev: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
            "labels": {INSTANCE_LABEL: "app", REVISION_LABEL: rev}}}))
        .unwrap()
    }

    fn release(action: &str, batches: Value, pods: &[&str]) -> DeployFlow {
        serde_json::from_value(json!({
            "apiVersion": "apps.triton.io/v1alpha1", "kind": "DeployFlow",
            "metadata": {"name": "app-v2", "namespace": "ns"},
            "spec": {"action": action, "application": {"appID": 1, "groupID": 2, "appName": "app",
                "instanceName": "app", "replicas": 3, "selector": {}, "template": {}}},
            "status": {"phase": "BatchStarted", "updateRevision": "rev2", "conditions": batches, "pods": pods,
                "startedAt": null, "finishedAt": null, "updatedAt": null}
        }))
        .unwrap()
    }

    fn batch(n: i32, phase: &str, size: i32, pods: &[&str], pulled_in: bool) -> Value {
        json!({"batch": n, "batchSize": size, "canary": false, "phase": phase,
            "startedAt": null, "finishedAt": null,
            "pulledInAt": if pulled_in { json!("2026-11-29T10:00:00Z") } else { Value::Null },
            "pods": pods.iter().map(|p| json!({"name": p, "ip": "", "port": 0, "phase": ""})).collect::<Vec<_>>()})
    }

    #[test]
    fn a_pod_of_the_current_unbaked_batch_is_held() {
        let df = release(
            "update",
            json!([batch(1, "Smoking", 1, &["new-1"], false)]),
            &["new-1"],
        );
        assert!(held(&pod("new-1", "rev2"), &[df], &live(&["new-1"])));
    }

    /// Live pods of the update revision, not serving.
    fn live(names: &[&str]) -> Vec<Live> {
        names
            .iter()
            .map(|n| Live {
                name: n.to_string(),
                revision: Some("rev2".into()),
                serving: false,
            })
            .collect()
    }

    fn serving(name: &str, revision: &str) -> Live {
        Live {
            name: name.into(),
            revision: Some(revision.into()),
            serving: true,
        }
    }

    /// An update whose batch 1 is baked (new-1) and batch 2 not started.
    fn waiting_for_batch_2() -> DeployFlow {
        finished(
            release(
                "update",
                json!([
                    batch(1, "Baked", 1, &["new-1"], true),
                    batch(2, "Pending", 1, &[], false)
                ]),
                &["new-1"],
            ),
            1,
        )
    }

    fn finished(mut df: DeployFlow, replicas: i32) -> DeployFlow {
        df.status.as_mut().unwrap().finished_replicas = replicas;
        df
    }

    #[test]
    fn the_replacement_of_an_evicted_canary_is_held_in_its_place() {
        let df = release(
            "update",
            json!([batch(1, "Smoked", 1, &["canary"], false)]),
            &["canary"],
        );
        assert!(held(
            &pod("replacement", "rev2"),
            std::slice::from_ref(&df),
            &live(&["replacement"])
        ));
        assert!(
            held(
                &pod("replacement", "rev2"),
                &[df],
                &live(&["canary", "replacement"])
            ),
            "while the canary lives, the batch is full: a further new pod is out of turn"
        );
    }

    #[test]
    fn the_unbaked_pods_of_a_canceled_release_stay_held() {
        let mut df = release(
            "update",
            json!([batch(1, "Smoked", 1, &["new-1"], false)]),
            &["new-1"],
        );
        let s = df.status.as_mut().unwrap();
        s.phase = DeployPhase::Canceled;
        s.finished = true;
        assert!(held(&pod("new-1", "rev2"), &[df], &live(&["new-1"])));
    }

    #[test]
    fn a_new_pod_the_batch_has_not_claimed_yet_is_held_while_the_batch_misses_pods() {
        let df = release("update", json!([batch(1, "Smoking", 1, &[], false)]), &[]);
        assert!(held(&pod("new-1", "rev2"), &[df], &live(&["new-1"])));
        let df = release("update", json!([batch(1, "Pending", 1, &[], false)]), &[]);
        assert!(
            held(&pod("new-1", "rev2"), &[df], &live(&["new-1"])),
            "a batch not started has no pods: a new one is out of turn"
        );
    }

    #[test]
    fn the_replacement_of_a_baked_pod_is_not_held_while_the_release_waits() {
        // Batch 1 baked (new-1 deleted, replaced by new-1b); batch 2 not started yet.
        let df = waiting_for_batch_2();
        assert!(!held(
            &pod("new-1b", "rev2"),
            std::slice::from_ref(&df),
            &live(&["new-1b"])
        ));
        // Once batch 2 has its pod, a further new pod is not held either.
        let df = finished(
            release(
                "update",
                json!([
                    batch(1, "Baked", 1, &["new-1"], true),
                    batch(2, "Smoking", 1, &["new-2"], false)
                ]),
                &["new-1", "new-2"],
            ),
            1,
        );
        let l = live(&["new-1b", "new-2"]);
        assert!(held(&pod("new-2", "rev2"), std::slice::from_ref(&df), &l));
        assert!(!held(&pod("new-1b", "rev2"), &[df], &l));
    }

    #[test]
    fn pods_of_an_older_revision_a_pulled_in_batch_or_a_restart_are_not_held() {
        let df = release("update", json!([batch(1, "Smoking", 1, &[], false)]), &[]);
        let l = live(&["old-1", "new-1"]);
        assert!(!held(&pod("old-1", "rev1"), &[df], &l));
        let df = release(
            "update",
            json!([batch(1, "Smoked", 1, &["new-1"], true)]),
            &["new-1"],
        );
        assert!(
            !held(&pod("new-1", "rev2"), &[df], &l),
            "the engine sets its gate itself"
        );
        let df = release("restart", json!([batch(1, "Smoking", 1, &[], false)]), &[]);
        assert!(!held(&pod("new-1", "rev2"), &[df], &l));
    }

    #[test]
    fn the_hold_digest_changes_with_what_decides_the_hold_and_only_with_that() {
        let base = json!({
            "spec": {"action": "update", "application": {"instanceName": "app"}},
            "status": {"phase": "BatchStarted", "finished": false, "updateRevision": "rev2",
                "pods": ["a"], "podsAtStart": ["o"], "message": "waiting",
                "conditions": [{"batch": 1, "phase": "Smoking", "batchSize": 1, "pulledInAt": null,
                    "pods": [{"name": "a", "ip": "10.0.0.1", "phase": "Pending"}]}]}
        });
        let d0 = hold_digest(&base);
        let with = |pointer: &str, v: Value| {
            let mut o = base.clone();
            match o.pointer_mut(pointer) {
                Some(slot) => *slot = v,
                None => {
                    let (parent, key) = pointer.rsplit_once('/').unwrap();
                    o.pointer_mut(parent).unwrap()[key] = v;
                }
            }
            hold_digest(&o)
        };
        for (pointer, v) in [
            ("/status/message", json!("another message")),
            ("/status/conditions/0/pods/0/ip", json!("10.0.0.2")),
            ("/status/conditions/0/pods/0/phase", json!("Running")),
            ("/status/updatedAt", json!("2026-11-29T10:00:00Z")),
        ] {
            assert_eq!(with(pointer, v), d0, "{pointer} does not decide the hold");
        }
        for (pointer, v) in [
            ("/spec/action", json!("restart")),
            ("/spec/updateStrategy", json!({"noPullIn": true})),
            ("/spec/application/instanceName", json!("other")),
            ("/status/phase", json!("Canceled")),
            ("/status/finished", json!(true)),
            ("/status/updateRevision", json!("rev3")),
            ("/status/pods", json!(["a", "b"])),
            ("/status/podsAtStart", json!([])),
            ("/status/finishedReplicas", json!(1)),
            ("/status/updatedAtStart", json!(1)),
            ("/status/conditions/0/batch", json!(2)),
            ("/status/conditions/0/phase", json!("Smoked")),
            ("/status/conditions/0/batchSize", json!(2)),
            ("/status/conditions/0/pulledInAt", json!("2026-11-29T10:00:00Z")),
            ("/status/conditions/0/pods/0/name", json!("b")),
        ] {
            assert_ne!(with(pointer, v), d0, "{pointer} decides the hold");
        }
        let mut next = base.clone();
        next["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"batch": 2, "phase": "Pending", "batchSize": 1}));
        assert_ne!(hold_digest(&next), d0, "a new current batch");
    }

    #[test]
    fn the_gate_filter_passes_a_first_sight_a_new_digest_and_a_deletion() {
        let trigger = |digest: Option<u64>| -> crate::raw::RawDeployFlow {
            serde_json::from_value(json!({
                "apiVersion": "apps.triton.io/v1alpha1", "kind": "DeployFlow",
                "metadata": {"name": "d", "namespace": "ns"},
                "spec": {"application": {"instanceName": "app"}},
                DIGEST_FIELD: digest.map(|d| d.to_string())
            }))
            .unwrap()
        };
        let f = GateFilter::default();
        assert!(f.changed(&trigger(Some(1))), "first sight");
        assert!(!f.changed(&trigger(Some(1))), "same digest");
        assert!(f.changed(&trigger(Some(2))), "new digest");
        assert!(f.changed(&trigger(None)), "deleted");
        assert!(f.changed(&trigger(Some(2))), "re-created after a deletion");
    }

    #[test]
    fn a_pod_released_out_of_turn_is_held_while_the_released_pods_all_serve() {
        // Batch 1 baked (new-1 serves), batch 2 waits for Next; a hand edit of the partition
        // made Kruise update old-2 into out-1.
        let df = waiting_for_batch_2();
        let mut l = vec![serving("new-1", "rev2"), serving("old-3", "rev1")];
        l.extend(live(&["out-1"]));
        assert!(held(&pod("out-1", "rev2"), std::slice::from_ref(&df), &l));
        // new-1 evicted: out-1 is now as good as its replacement.
        let l: Vec<Live> = l.into_iter().filter(|p| p.name != "new-1").collect();
        assert!(!held(&pod("out-1", "rev2"), &[df], &l));
    }

    #[test]
    fn the_budget_counts_the_pulled_in_batch_and_the_pods_updated_before_the_release() {
        let mut df = finished(
            release(
                "update",
                json!([
                    batch(1, "Baked", 1, &["new-1"], true),
                    batch(2, "Smoked", 1, &["new-2"], true)
                ]),
                &["new-1", "new-2"],
            ),
            1,
        );
        let l = vec![
            serving("new-1", "rev2"),
            serving("new-2", "rev2"),
            live(&["out-1"]).remove(0),
        ];
        assert!(held(&pod("out-1", "rev2"), std::slice::from_ref(&df), &l));
        let s = df.status.as_mut().unwrap();
        s.updated_at_start = Some(1);
        s.pods_at_start = Some(vec!["pre-1".into()]);
        let l = vec![
            serving("pre-1", "rev2"),
            serving("new-1", "rev2"),
            live(&["out-1"]).remove(0),
        ];
        assert!(
            !held(&pod("out-1", "rev2"), std::slice::from_ref(&df), &l),
            "released: 1 before, 1 baked, 1 pulled in; serving 2 (new-2 gone)"
        );
        assert!(
            !held(&pod("pre-1", "rev2"), &[df], &l),
            "a pod from before the release is not held"
        );
    }

    #[test]
    fn a_budget_hold_is_told_apart_from_a_batch_hold() {
        let df = finished(
            release(
                "update",
                json!([
                    batch(1, "Baked", 1, &["new-1"], true),
                    batch(2, "Smoking", 1, &["new-2"], false)
                ]),
                &["new-1", "new-2"],
            ),
            1,
        );
        let mut l = vec![serving("new-1", "rev2")];
        l.extend(live(&["new-2", "out-1"]));
        let dfs = std::slice::from_ref(&df);
        assert_eq!(hold(&pod("new-2", "rev2"), dfs, &l), Hold::Batch);
        assert_eq!(hold(&pod("out-1", "rev2"), dfs, &l), Hold::Budget);
        assert_eq!(hold(&pod("old-3", "rev1"), dfs, &l), Hold::Free);
    }
}
