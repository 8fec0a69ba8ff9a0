//! The verbs: each runs the API's own operation (so the refusals and messages are the API's),
//! prints what it did and the resulting state, and with `--wait` follows the release until the
//! state it asked for, printing each change.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use tokio::sync::broadcast;
use triton_controller::api::ops::{self, Interrupt, NonUpdate};
use triton_controller::api::{ApiContext, Change};
use triton_controller::crd::DeployFlow;
use triton_controller::raw::RawDeployFlow;
use triton_controller::reconcile::decode;
use triton_core::api::watch_done;
use triton_core::release::{BatchPhase, DeployPhase};
use triton_proto::deployflow as pb;

use crate::cluster::{Cluster, Failure, Scope, api_context, from_api, from_kube};
use crate::view::summary;

/// How `--wait` behaves.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    pub wait: bool,
    pub timeout: Duration,
}

/// What a wait waits for.
#[derive(Clone, Copy, Debug)]
enum Goal {
    /// The spec's own target (Next, and new releases: their first waiting point or the end).
    Spec,
    /// A requested target (Continue).
    Target(Option<BatchPhase>, i32),
    /// The end of the release (a new release in auto mode).
    End,
}

fn key_of(ns: &str, name: &str) -> ObjectRef<RawDeployFlow> {
    ObjectRef::new(name).within(ns)
}

/// The DeployFlow as the API server has it now (at least the version a write just made).
async fn live(c: &Cluster, name: &str) -> Result<DeployFlow, Failure> {
    Api::<DeployFlow>::namespaced(c.client.clone(), &c.namespace)
        .get(name)
        .await
        .map_err(|e| from_kube(&format!("reading deployflow {}/{name}", c.namespace), &e))
}

fn rv(df: &DeployFlow) -> u64 {
    df.resource_version()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn stamp() -> String {
    jiff::Zoned::now().strftime("%H:%M:%S").to_string()
}

/// Prints `line` to stderr when it differs from the last one printed.
fn progress(last: &mut String, line: String) {
    if *last != line {
        eprintln!("  {}  {line}", stamp());
        let _ = std::io::stderr().flush();
        *last = line;
    }
}

/// Follows `name` from version `floor` on (older cached copies are ignored) until `goal`.
async fn follow(
    ctx: &ApiContext,
    ns: &str,
    name: &str,
    mut sub: broadcast::Receiver<Change>,
    floor: u64,
    goal: Goal,
    timeout: Duration,
) -> Result<DeployFlow, Failure> {
    let key = key_of(ns, name);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let current = ctx
            .deployflows
            .get(&key)
            .and_then(|raw| decode(&raw).ok())
            .filter(|df| rv(df) >= floor);
        if let Some(df) = current {
            progress(&mut last, summary(&df));
            if df.metadata.deletion_timestamp.is_some() {
                return Err(Failure::new(format!(
                    "deployflow {ns}/{name} is being deleted"
                )));
            }
            let st = df.status.clone().unwrap_or_default();
            let reached = match goal {
                Goal::Spec => watch_done(&ops::release_state(&df), None),
                Goal::Target(stage, batches) => {
                    watch_done(&ops::release_state(&df), Some((stage, batches)))
                }
                Goal::End => st.finished,
            };
            if reached {
                if st.finished && st.phase != DeployPhase::Success {
                    return Err(Failure::new(format!(
                        "release {ns}/{name} ended {:?}{}",
                        st.phase,
                        st.message.map(|m| format!(": {m}")).unwrap_or_default()
                    )));
                }
                return Ok(df);
            }
            if let Some(c) = st.conditions.as_ref().and_then(|c| c.last())
                && c.phase.is_failed()
                && st.paused
            {
                return Err(Failure::new(format!(
                    "release {ns}/{name} paused: batch {} {:?}{}",
                    c.batch,
                    c.phase,
                    st.message.map(|m| format!(": {m}")).unwrap_or_default()
                )));
            }
        } else if ctx.deployflows.get(&key).is_none() && floor > 0 {
            return Err(Failure::new(format!("deployflow {ns}/{name} was deleted")));
        }
        // The next change of this DeployFlow (the cache holds it by then).
        loop {
            let r = tokio::time::timeout_at(deadline, sub.recv()).await;
            match r {
                Err(_) => {
                    return Err(Failure::new(format!(
                        "timed out after {}s waiting for {ns}/{name} (last: {last})",
                        timeout.as_secs()
                    )));
                }
                Ok(Ok(c)) if c.obj.name_any() == name => break,
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(Failure::new("the watch of DeployFlows ended"));
                }
            }
        }
    }
}

fn done(what: String, df: &DeployFlow) {
    println!("{what}");
    println!("state: {}", summary(df));
}

fn target_text(df: &DeployFlow) -> String {
    let batches = df.spec.base().batches;
    match df.spec.stage() {
        Some(p) => format!("batch {batches} {p:?}"),
        None => format!("batch {batches}"),
    }
}

/// next, continue.
pub async fn next(
    c: &Cluster,
    name: &str,
    target: Option<pb::TargetState>,
    w: Wait,
) -> Result<(), Failure> {
    let ns = c.namespace.clone();
    let ctx = api_context(c, Scope::Release(name)).await?;
    let sub = ctx.changes.subscribe();
    let (verb, goal) = match &target {
        None => {
            ctx.next(&ns, name).await.map_err(from_api)?;
            ("next", Goal::Spec)
        }
        Some(t) => {
            ctx.continue_(&ns, name, Some(t)).await.map_err(from_api)?;
            let stage = BatchPhase::parse(&t.stage);
            ("continue", Goal::Target(stage, t.batches))
        }
    };
    let df = live(c, name).await?;
    let what = format!(
        "deployflow {ns}/{name}: {verb} → {}",
        match goal {
            Goal::Spec | Goal::End => target_text(&df),
            Goal::Target(s, b) => match s {
                Some(s) => format!("batch {b} {s:?}"),
                None if b > 0 => format!("batch {b}"),
                None => target_text(&df),
            },
        }
    );
    if !w.wait {
        done(what, &df);
        return Ok(());
    }
    println!("{what}");
    let goal = match goal {
        // Continue with only a stage waits for that stage of the spec's batch.
        Goal::Target(s, 0) => Goal::Target(s, df.spec.base().batches),
        g => g,
    };
    let df = follow(&ctx, &ns, name, sub, rv(&df), goal, w.timeout).await?;
    println!("state: {}", summary(&df));
    Ok(())
}

/// pause, resume, cancel.
pub async fn interrupt(c: &Cluster, name: &str, what: Interrupt, w: Wait) -> Result<(), Failure> {
    let ns = c.namespace.clone();
    let ctx = api_context(c, Scope::Release(name)).await?;
    let verb = match what {
        Interrupt::Pause => "pause",
        Interrupt::Resume => "resume",
        Interrupt::Cancel => "cancel",
    };
    let line = format!("deployflow {ns}/{name}: {verb} requested");
    if !w.wait {
        let body = match what {
            Interrupt::Pause => serde_json::json!({"paused": true}),
            Interrupt::Resume => serde_json::json!({"paused": false}),
            Interrupt::Cancel => serde_json::json!({"canceled": true}),
        };
        ctx.patch_fields(&ns, name, body).await.map_err(from_api)?;
        done(line, &live(c, name).await?);
        return Ok(());
    }
    // The API's stream: it ends when the release shows the effect, with the API's refusal when
    // the controller refuses a resume.
    let mut stream = ctx.interrupt(&ns, name, what).await.map_err(from_api)?;
    println!("{line}");
    let key = key_of(&ns, name);
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + w.timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err(Failure::new(format!(
                    "timed out after {}s waiting for the {verb} to take effect (last: {last})",
                    w.timeout.as_secs()
                )));
            }
            Ok(None) => break,
            Ok(Some(Ok(_))) => {
                if let Some(df) = ctx.deployflows.get(&key).and_then(|r| decode(&r).ok()) {
                    progress(&mut last, summary(&df));
                }
            }
            Ok(Some(Err(status))) => return Err(Failure::new(status.message().to_string())),
        }
    }
    println!("state: {}", summary(&live(c, name).await?));
    Ok(())
}

/// The batching flags of restart, scale and rollback.
#[derive(Clone, Debug, clap::Args)]
pub struct Batching {
    /// Pods per batch: a number or a percentage of the replicas ("50%").
    #[arg(long, default_value = "1")]
    pub batch_size: String,
    /// manual: stop after --batches batches until `next`; auto: run every batch.
    #[arg(long, default_value = "auto", value_parser = ["auto", "manual"])]
    pub mode: String,
    /// In manual mode, the batches to run before waiting for `next`.
    #[arg(long, default_value_t = 1)]
    pub batches: i32,
    /// Seconds between batches.
    #[arg(long, default_value_t = 0)]
    pub interval: i32,
}

/// restart, scale.
pub async fn non_update(
    c: &Cluster,
    app: &str,
    action: NonUpdate,
    delete: Vec<String>,
    b: &Batching,
    w: Wait,
) -> Result<(), Failure> {
    let ns = c.namespace.clone();
    let ctx = api_context(c, Scope::Application(app)).await?;
    let sub = ctx.changes.subscribe();
    let strategy = pb::NonUpdateStrategy {
        batch_size: b.batch_size.clone(),
        pods_to_delete: delete,
        batches: b.batches,
        batch_interval_seconds: b.interval,
        mode: b.mode.clone(),
    };
    let verb = match action {
        NonUpdate::Restart => "restart".to_string(),
        NonUpdate::Scale(r) => format!("scale to {r} replicas"),
    };
    let created = ctx
        .start_non_update(&ns, app, action, Some(&strategy))
        .await
        .map_err(from_api)?;
    started(c, &ctx, app, &created, verb, sub, w).await
}

/// rollback.
pub async fn rollback(
    c: &Cluster,
    app: &str,
    to: Option<String>,
    canary: i32,
    b: &Batching,
    w: Wait,
) -> Result<(), Failure> {
    let ns = c.namespace.clone();
    let ctx = api_context(c, Scope::Application(app)).await?;
    let sub = ctx.changes.subscribe();
    let strategy = pb::UpdateStrategy {
        canary,
        batch_size: b.batch_size.clone(),
        no_pull_in: false,
        stage: String::new(),
        batches: b.batches,
        batch_interval_seconds: b.interval,
        mode: b.mode.clone(),
    };
    let (created, target) = ctx
        .rollback(&ns, app, to.as_deref().unwrap_or(""), Some(&strategy))
        .await
        .map_err(from_api)?;
    started(c, &ctx, app, &created, format!("rollback to {target}"), sub, w).await
}

async fn started(
    c: &Cluster,
    ctx: &Arc<ApiContext>,
    app: &str,
    created: &str,
    verb: String,
    sub: broadcast::Receiver<Change>,
    w: Wait,
) -> Result<(), Failure> {
    let ns = c.namespace.clone();
    let line = format!("application {ns}/{app}: {verb}: deployflow {created} created");
    let df = live(c, created).await?;
    if !w.wait {
        done(line, &df);
        return Ok(());
    }
    println!("{line}");
    // Auto mode runs to the end; manual mode stops at the spec's first waiting point.
    let goal = if df.spec.auto() { Goal::End } else { Goal::Spec };
    let df = follow(ctx, &ns, created, sub, rv(&df), goal, w.timeout).await?;
    println!("state: {}", summary(&df));
    Ok(())
}
