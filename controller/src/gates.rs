//! Pulls in every gated pod that no release holds back (DESIGN §2, decision 2): pods of a
//! restart or scale-out, of a `noPullIn` update, pods re-created after the release ended. Only
//! the pods of a running release's not-yet-pulled-in batch wait for that release.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use triton_core::names::READY_GATE;
use triton_core::release::{BatchPhase, DeployPhase};

use crate::crd::DeployFlow;
use crate::observe;
use crate::reconcile::{Context, Error, set_gate};

/// Whether a running release holds this pod back.
pub fn held(pod: &Pod, deployflows: &[Arc<DeployFlow>]) -> bool {
    let ns = pod.namespace();
    let instance = pod.labels().get("app.kubernetes.io/instance").cloned();
    let name = pod.name_any();
    deployflows.iter().any(|df| {
        let status = df.status.clone().unwrap_or_default();
        let running =
            !status.finished && status.phase.weight() < DeployPhase::BatchFinished.weight();
        if df.namespace() != ns
            || Some(&df.spec.application.instance_name) != instance.as_ref()
            || !running
            || !df.spec.pull_in()
        {
            return false;
        }
        // Pods already pulled in by this release are not held; nor are pods of an older revision.
        let pulled: Vec<String> = status
            .conditions
            .iter()
            .flatten()
            .filter(|c| c.pulled_in_at.is_some() || c.phase == BatchPhase::Baked)
            .flat_map(|c| c.pods.iter().flatten().map(|p| p.name.clone()))
            .collect();
        if pulled.contains(&name) {
            return false;
        }
        match (&status.update_revision, observe::revision(pod)) {
            (Some(update), Some(rev)) => update == rev,
            _ => true,
        }
    })
}

pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    if !observe::has_gate(&pod)
        || observe::is_true(&pod, READY_GATE)
        || observe::is_terminating(&pod)
    {
        return Ok(Requeue::await_change());
    }
    if !observe::is_true(&pod, "ContainersReady") || observe::is_failing(&pod) {
        return Ok(Requeue::await_change());
    }
    let dfs = ctx.deployflows.get().map(|s| s.state()).unwrap_or_default();
    if held(&pod, &dfs) {
        return Ok(Requeue::await_change());
    }
    tracing::info!(pod = %pod.name_any(), namespace = ?pod.namespace(), "pulling in a pod no release holds");
    set_gate(&ctx.client, &pod, "True", "NotHeld").await?;
    Ok(Requeue::await_change())
}

pub fn error_policy(pod: Arc<Pod>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.api_error(error.category());
    tracing::warn!(pod = %pod.name_any(), %error, "pulling in a pod failed; retrying");
    Requeue::requeue(Duration::from_secs(2))
}
