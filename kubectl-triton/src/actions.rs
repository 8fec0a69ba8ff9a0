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
use triton_controller::api::{ApiContext, ApiError, Change};
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
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// The spec's own target (Next, and a new release in manual mode: its first stop).
    Spec,
    /// A requested target (Continue).
    Target(Option<BatchPhase>, i32),
    /// The end of the release (a new release in auto mode).
    End,
}

/// The release a wait follows: its identity, and the version the command's write made.
#[derive(Clone, Debug)]
pub struct Followed {
    pub uid: String,
    pub floor: u64,
}

/// What a wait makes of the copy of the DeployFlow it has (`None`: none in the cache).
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Keep waiting (the copy is older than the write, or the goal is not reached).
    Wait,
    Done,
    Failed(String),
}

/// The decision of `--wait`, a pure function of the copy at hand.
pub fn verdict(df: Option<&DeployFlow>, f: &Followed, goal: Goal) -> Verdict {
    let Some(df) = df else {
        return Verdict::Failed("it was deleted".into());
    };
    if df.metadata.uid.as_deref() != Some(f.uid.as_str()) {
        return Verdict::Failed("it was deleted and created again".into());
    }
    if rv(df) < f.floor {
        return Verdict::Wait;
    }
    if df.metadata.deletion_timestamp.is_some() {
        return Verdict::Failed("it is being deleted".into());
    }
    let st = df.status.clone().unwrap_or_default();
    let why = || st.message.clone().map(|m| format!(": {m}")).unwrap_or_default();
    let reached = match goal {
        Goal::Spec => watch_done(&ops::release_state(df), None),
        Goal::Target(stage, batches) => watch_done(&ops::release_state(df), Some((stage, batches))),
        Goal::End => st.finished,
    };
    if reached {
        if st.finished && st.phase != DeployPhase::Success {
            return Verdict::Failed(format!("it ended {:?}{}", st.phase, why()));
        }
        return Verdict::Done;
    }
    if let Some(c) = st.conditions.as_ref().and_then(|c| c.last())
        && c.phase.is_failed()
        && st.paused
    {
        return Verdict::Failed(format!("it paused: batch {} {:?}{}", c.batch, c.phase, why()));
    }
    Verdict::Wait
}

fn key_of(ns: &str, name: &str) -> ObjectRef<RawDeployFlow> {
    ObjectRef::new(name).within(ns)
}

/// The DeployFlow as the API server has it now.
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

fn followed(df: &DeployFlow) -> Followed {
    Followed {
        uid: df.metadata.uid.clone().unwrap_or_default(),
        floor: rv(df),
    }
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

/// How often a wait re-reads its cache without a change event (a relist delivers no deletion
/// event); nothing is read from the API server.
const RECHECK: Duration = Duration::from_secs(5);

/// Follows `name` until `goal`, printing each change.
async fn follow(
    ctx: &ApiContext,
    ns: &str,
    name: &str,
    mut sub: broadcast::Receiver<Change>,
    f: &Followed,
    goal: Goal,
    timeout: Duration,
) -> Result<DeployFlow, Failure> {
    let key = key_of(ns, name);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let current = ctx.deployflows.get(&key).and_then(|raw| decode(&raw).ok());
        if let Some(df) = current.as_ref().filter(|df| rv(df) >= f.floor) {
            progress(&mut last, summary(df));
        }
        match verdict(current.as_ref(), f, goal) {
            Verdict::Done => return Ok(current.expect("done on a copy")),
            Verdict::Failed(why) => {
                return Err(Failure::new(format!("release {ns}/{name}: {why}")));
            }
            Verdict::Wait => {}
        }
        // The next change of this DeployFlow (the cache holds it by then).
        let recheck = tokio::time::Instant::now() + RECHECK;
        loop {
            let r = tokio::time::timeout_at(deadline.min(recheck), sub.recv()).await;
            match r {
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(Failure {
                        message: format!(
                            "timed out after {}s waiting for {ns}/{name} (last: {last})",
                            timeout.as_secs()
                        ),
                        code: TIMEOUT,
                    });
                }
                Err(_) => break,
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

/// The exit code of a `--wait` that timed out (a refusal or a failed release exits 1).
pub const TIMEOUT: i32 = 2;

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

/// Whether a refused Next is worth another try: the canary is baked and the controller is
/// planning batch 2 (the API's "try again"), a state that lasts one reconcile.
fn transient(df: Option<&DeployFlow>) -> bool {
    df.and_then(|df| df.status.as_ref())
        .filter(|st| !st.finished)
        .and_then(|st| st.conditions.as_ref()?.last())
        .is_some_and(|c| c.canary && c.phase == BatchPhase::Baked)
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
    let (verb, goal, df) = match &target {
        None => {
            let mut changes = ctx.changes.subscribe();
            let deadline = tokio::time::Instant::now() + w.timeout.min(Duration::from_secs(60));
            let df = loop {
                match ctx.next(&ns, name).await {
                    Ok(df) => break df,
                    Err(ApiError::Refused(r)) => {
                        let cached = ctx
                            .deployflows
                            .get(&key_of(&ns, name))
                            .and_then(|raw| decode(&raw).ok());
                        if !transient(cached.as_ref()) {
                            return Err(from_api(ApiError::Refused(r)));
                        }
                        // Retried on the next change of the release (or in a second).
                        let wait = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
                        if tokio::time::Instant::now() >= deadline {
                            return Err(from_api(ApiError::Refused(r)));
                        }
                        let _ = tokio::time::timeout_at(wait, changes.recv()).await;
                    }
                    Err(e) => return Err(from_api(e)),
                }
            };
            ("next", Goal::Spec, df)
        }
        Some(t) => {
            let df = ctx.continue_(&ns, name, Some(t)).await.map_err(from_api)?;
            let stage = BatchPhase::parse(&t.stage);
            ("continue", Goal::Target(stage, t.batches), df)
        }
    };
    let what = format!(
        "deployflow {ns}/{name}: {verb} → {}",
        match goal {
            Goal::Target(Some(s), b) if b > 0 => format!("batch {b} {s:?}"),
            Goal::Target(None, b) if b > 0 => format!("batch {b}"),
            _ => target_text(&df),
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
    let df = follow(&ctx, &ns, name, sub, &followed(&df), goal, w.timeout).await?;
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
        let df = ctx.patch_fields(&ns, name, body).await.map_err(from_api)?;
        done(line, &df);
        return Ok(());
    }
    // The API's stream: it ends when the release shows the effect, with the API's refusal when
    // the controller refuses a resume.
    let mut stream = ctx.interrupt(&ns, name, what).await.map_err(from_api)?;
    println!("{line}");
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + w.timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err(Failure {
                    message: format!(
                        "timed out after {}s waiting for the {verb} to take effect (last: {last})",
                        w.timeout.as_secs()
                    ),
                    code: TIMEOUT,
                });
            }
            Ok(None) => break,
            Ok(Some(Ok(reply))) => {
                if let Some(d) = reply.deploy.as_ref() {
                    progress(&mut last, reply_summary(d));
                }
            }
            Ok(Some(Err(status))) => return Err(Failure::new(status.message().to_string())),
        }
    }
    // The stream also ends when the DeployFlow is deleted: that is no success.
    let df = live(c, name).await?;
    if df.metadata.deletion_timestamp.is_some() {
        return Err(Failure::new(format!("release {ns}/{name} is being deleted")));
    }
    println!("state: {}", summary(&df));
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
    // The API's create waits (≤ 5 s) until the cache has the new DeployFlow.
    let df = match ctx.deployflows.get(&key_of(&ns, created)).and_then(|r| decode(&r).ok()) {
        Some(df) => df,
        None => live(c, created).await?,
    };
    if !w.wait {
        done(line, &df);
        return Ok(());
    }
    println!("{line}");
    // Auto mode runs to the end; manual mode stops at the spec's first waiting point.
    let goal = if df.spec.auto() { Goal::End } else { Goal::Spec };
    let f = Followed {
        uid: df.metadata.uid.clone().unwrap_or_default(),
        floor: 0,
    };
    let df = follow(ctx, &ns, created, sub, &f, goal, w.timeout).await?;
    println!("state: {}", summary(&df));
    Ok(())
}

/// The one-line state of an API reply (the Pause/Resume/Cancel stream's).
fn reply_summary(d: &pb::Deploy) -> String {
    let mut s = d.phase.clone();
    if let Some(c) = d.conditions.last() {
        let canary = if c.canary { " (canary)" } else { "" };
        s.push_str(&format!(", batch {}/{}{canary} {}", c.batch, d.batches, c.phase));
    }
    if d.paused && !d.finished {
        s.push_str(", paused");
    }
    s
}

#[cfg(test)]
mod tests;
