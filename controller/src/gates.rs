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

/// Whether a running release holds this pod back: only a pod of the current, started batch,
/// before the batch is pulled in (DESIGN §2, decision 2). A batch's start is recorded before the
/// CloneSet write that creates its pods, so no pod of it exists while it is Pending. A pod the batch has not claimed counts as its own
/// while the batch still misses pods; any other pod (a replacement of a baked pod, of an older
/// revision, of an action that does not pull in) is not held.
/// `live` are the names of the instance's pods that exist and are not terminating: a claimed pod
/// that is gone no longer counts, so its replacement is held in its place. The un-baked batch of
/// a canceled release stays held (cancel removes those pods; they never take traffic).
pub fn held(pod: &Pod, deployflows: &[DeployFlow], live: &[String]) -> bool {
    let name = pod.name_any();
    deployflows.iter().any(|df| {
        let status = df.status.clone().unwrap_or_default();
        if !df.spec.pull_in() {
            return false;
        }
        let Some(cur) = status.current() else {
            return false;
        };
        if status.phase == DeployPhase::Canceled {
            return cur.phase != BatchPhase::Baked
                && cur.pods.iter().flatten().any(|p| p.name == name);
        }
        if status.finished || status.phase != DeployPhase::BatchStarted {
            return false;
        }
        let unbaked = matches!(
            cur.phase,
            BatchPhase::Smoking | BatchPhase::Smoked | BatchPhase::SmokeFailed
        );
        if !unbaked || cur.pulled_in_at.is_some() {
            return false;
        }
        if let (Some(update), Some(rev)) = (&status.update_revision, observe::revision(pod))
            && update != rev
        {
            return false;
        }
        let claimed: Vec<&str> = cur
            .pods
            .iter()
            .flatten()
            .map(|p| p.name.as_str())
            .filter(|n| *n == name || live.iter().any(|l| l == n))
            .collect();
        if claimed.contains(&name.as_str()) {
            return true;
        }
        let elsewhere = status.pods.iter().flatten().any(|n| n == &name)
            || status.pods_at_start.iter().flatten().any(|n| n == &name);
        !elsewhere && (claimed.len() as i32) < cur.batch_size
    })
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
    let live: Vec<String> = crate::index::objects(
        &ctx.pods,
        &ns,
        ctx.index.pods.filed(&ns, instance.as_deref()),
    )
    .iter()
    .filter(|p| p.labels().get(INSTANCE_LABEL) == instance.as_ref())
    .filter(|p| !observe::is_terminating(p))
    .map(|p| p.name_any())
    .collect();
    if held(&pod, &dfs, &live) {
        return Ok(Requeue::await_change());
    }
    tracing::info!(pod = %pod.name_any(), namespace = ?pod.namespace(), "pulling in a pod no release holds");
    set_gate(&ctx.client, &pod, true, "NotHeld").await?;
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

    fn live(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
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
            !held(
                &pod("replacement", "rev2"),
                &[df],
                &live(&["canary", "replacement"])
            ),
            "while the canary lives, the batch is full"
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
            !held(&pod("new-1", "rev2"), &[df], &live(&["new-1"])),
            "a batch not started has no pods"
        );
    }

    #[test]
    fn the_replacement_of_a_baked_pod_is_not_held_while_the_release_waits() {
        // Batch 1 baked (new-1 deleted, replaced by new-1b); batch 2 not started yet.
        let df = release(
            "update",
            json!([
                batch(1, "Baked", 1, &["new-1"], true),
                batch(2, "Pending", 1, &[], false)
            ]),
            &["new-1"],
        );
        assert!(!held(
            &pod("new-1b", "rev2"),
            std::slice::from_ref(&df),
            &live(&["new-1b"])
        ));
        // Once batch 2 has its pod, a further new pod is not held either.
        let df = release(
            "update",
            json!([
                batch(1, "Baked", 1, &["new-1"], true),
                batch(2, "Smoking", 1, &["new-2"], false)
            ]),
            &["new-1", "new-2"],
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
}
