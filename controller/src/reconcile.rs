//! The executor: reads one consistent snapshot of the caches into an [`engine::World`], asks the
//! pure engine for a [`engine::Decision`], and applies it — effects before the status write,
//! the status write with a resourceVersion precondition, effects after it, then Events. Nothing
//! here decides anything about a release.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use triton_core::names::*;
use triton_core::release::{BatchPhase, DeployPhase};

use crate::crd::{DeployFlow, DeployFlowStatus};
use crate::engine::{self, Decision, Effect, Holder, World};
use crate::events::Recorder;
use crate::index::{self, Index};
use crate::metrics::Metrics;
use crate::observe::CloneSetView;
use crate::raw::{RawCloneSet, RawDeployFlow};

/// Field manager of every write.
pub const MANAGER: &str = "triton-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing CloneSet {name}: {source}")]
    PatchCloneSet {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating CloneSet {name}: {source}")]
    CreateCloneSet {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("setting {READY_GATE} on pod {pod}: {source}")]
    FlipGate {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("marking pod {pod} AgentSilent: {source}")]
    MarkSilent {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("writing the spec (pause): {0}")]
    PatchSpec(#[source] kube::Error),
    #[error("aborting DeployFlow {name}: {source}")]
    Abort {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer {RELEASE_FINALIZER}: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("the API server refused the write of CloneSet {name}: {message}")]
    CloneSetRefused { name: String, message: String },
    #[error(
        "the API server refused the cancel's write of CloneSet {name}: {message}; the deleted \
         DeployFlow stays until the cancel is written (retried with backoff; removing its \
         finalizer {RELEASE_FINALIZER} by hand lets it go and leaves the CloneSet as the release left it)"
    )]
    CancelRefused { name: String, message: String },
    #[error("removing finalizer {RELEASE_FINALIZER}: {0}")]
    RemoveFinalizer(#[source] kube::Error),
    #[error("DeployFlow has no namespace")]
    NoNamespace,
    /// A cleanup step that left work for the next one (never reported: it only keeps the
    /// finalizer, which kube's `finalizer` removes after any cleanup that returns `Ok`).
    #[error("the cleanup is not finished")]
    CleanupPending(Requeue),
}

impl Error {
    /// The error a step returned, through the finalizer helper's wrapping.
    fn step(&self) -> &Error {
        match self {
            Error::Finalizer(f) => match f.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.step(),
                _ => self,
            },
            e => e,
        }
    }

    /// The reason of the Warning Event a failed reconcile publishes: a refused cancel has its
    /// own, so that its note (why the DeployFlow stays, the way out) is not folded into an
    /// earlier failure's Event.
    fn reason(&self) -> &'static str {
        match self.step() {
            Error::CancelRefused { .. } => "CancelRefused",
            _ => "Unhealthy",
        }
    }

    /// A bounded label for metrics: what failed inside the step, not the finalizer helper that
    /// wraps every step.
    pub fn category(&self) -> &'static str {
        match self.step() {
            Error::PatchCloneSet { .. }
            | Error::CreateCloneSet { .. }
            | Error::CancelRefused { .. } => "cloneset",
            Error::FlipGate { .. } | Error::MarkSilent { .. } => "pod",
            Error::PatchStatus(_) | Error::PatchSpec(_) | Error::Abort { .. } => "deployflow",
            Error::Finalizer(_) | Error::RemoveFinalizer(_) => "finalizer",
            Error::CloneSetRefused { .. } | Error::NoNamespace | Error::CleanupPending(_) => {
                "state"
            }
        }
    }
}

/// Per-object exponential backoff with jitter for failed reconciles (STYLE §4): 0.5 s doubling
/// to 5 min; reset by a success.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn failed(&self, key: &str) -> Duration {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n, fastrand::f64())
    }
    pub fn succeeded(&self, key: &str) {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(key);
    }
}

/// The delay after `failures` consecutive failures: 0.5 s · 2^(n-1), at most 300 s, scaled by
/// a jitter factor in [0.75, 1.25) from `unit` in [0, 1).
pub fn backoff_delay(failures: u32, unit: f64) -> Duration {
    let base = 0.5 * 2f64.powi(failures.saturating_sub(1).min(20) as i32);
    Duration::from_secs_f64(base.min(300.0) * (0.75 + 0.5 * unit))
}

/// A test hook: `TRITON_CONTROLLER_FAILPOINT=<when>-status-write:<ns>/<name>:<point>` aborts
/// the process at the status write of a step of that DeployFlow that reaches `point` — a batch
/// phase (the current batch enters it) or `podsToDelete` (a batch's finish records the pods it
/// deletes) — either `before` it (the effects before the status write applied, the status not
/// written) or `after` it (written, the effects after it not applied). Used by the crash-window
/// end-to-end tests.
#[derive(Clone, Debug, PartialEq)]
pub struct Failpoint {
    pub before: bool,
    pub namespace: String,
    pub name: String,
    pub point: String,
}

impl Failpoint {
    pub fn parse(s: &str) -> Option<Self> {
        let (before, rest) = if let Some(r) = s.strip_prefix("before-status-write:") {
            (true, r)
        } else {
            (false, s.strip_prefix("after-status-write:")?)
        };
        let (obj, point) = rest.rsplit_once(':')?;
        let (namespace, name) = obj.split_once('/')?;
        Some(Failpoint {
            before,
            namespace: namespace.into(),
            name: name.into(),
            point: point.into(),
        })
    }

    /// Whether the step from `from` to `to` reaches the point.
    pub fn reached(&self, from: &DeployFlowStatus, to: &DeployFlowStatus) -> bool {
        let (Some(old), Some(new)) = (from.current(), to.current()) else {
            return false;
        };
        if self.point == "podsToDelete" {
            return new.pods_to_delete.is_some()
                && !(old.batch == new.batch && old.pods_to_delete.is_some());
        }
        (old.batch, old.phase) != (new.batch, new.phase) && format!("{:?}", new.phase) == self.point
    }
}

pub struct Context {
    pub client: Client,
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub clonesets: Store<RawCloneSet>,
    pub deployflows: Store<RawDeployFlow>,
    /// The caches' objects by namespace and instance (see `index.rs`).
    pub index: Indexes,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub backoff: Backoff,
    /// Whether this replica holds the Lease (only the leader writes).
    pub leading: AtomicBool,
    pub failpoint: Option<Failpoint>,
    /// Undecodable DeployFlow versions already reported (uid@resourceVersion).
    pub reported: Mutex<std::collections::HashSet<String>>,
    /// Pods whose gate this controller set True lately (see `gates::held`).
    pub opened: Mutex<crate::gates::Opened>,
    /// The resourceVersion of this controller's last write of each DeployFlow (see `stale`).
    pub written: Mutex<HashMap<String, u64>>,
    /// When this controller last wrote each DeployFlow (see `reconcile::TELL_EVERY`).
    pub written_at: Mutex<HashMap<String, std::time::Instant>>,
    /// The resourceVersion and time of its last write of each CloneSet (see `cloneset_stale`).
    pub cs_written: Mutex<HashMap<String, (u64, std::time::Instant)>>,
    /// Per cache, a flag that turns true once its first list is in (see `lib.rs::shared`).
    pub synced: Vec<(&'static str, tokio::sync::watch::Receiver<bool>)>,
    /// How long a readiness agent may be silent before its pod is marked AgentSilent.
    pub agent_staleness: Duration,
    /// When this replica began to lead (seconds since the epoch; 0: not leading): silence is
    /// only judged once the agents have had a full window to reach a serving controller.
    pub leading_since: std::sync::atomic::AtomicI64,
}

/// Pods and DeployFlows by namespace and instance; Services and EndpointSlices by namespace.
pub struct Indexes {
    pub pods: Arc<Index>,
    pub deployflows: Arc<Index>,
    pub services: Arc<Index>,
    pub slices: Arc<Index>,
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Decodes a DeployFlow from the watch cache (which holds them untyped, so one object the types
/// cannot read never stops the watch of all the others).
pub fn decode(obj: &RawDeployFlow) -> Result<DeployFlow, serde_json::Error> {
    use serde::Deserialize;
    use serde::de::Error as _;
    // Read from the cached JSON in place: copying it into a new Value first (to_value) made
    // this the controller's largest cost per reconcile (allocations).
    let spec = match obj.data.get("spec") {
        Some(v) => crate::crd::DeployFlowSpec::deserialize(v)?,
        None => return Err(serde_json::Error::missing_field("spec")),
    };
    let status = match obj.data.get("status") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(DeployFlowStatus::deserialize(v)?),
    };
    Ok(DeployFlow {
        metadata: obj.metadata.clone(),
        spec,
        status,
    })
}

impl Context {
    /// Waits until every cache has synced (a reconcile never reads a half-filled cache).
    pub async fn synced(&self) {
        for (cache, rx) in &self.synced {
            let mut rx = rx.clone();
            let _ = rx.wait_for(|synced| *synced).await;
            tracing::trace!(cache, "cache synced");
        }
    }

    /// The decodable DeployFlows of a namespace releasing `instance` (all of the namespace when
    /// `None`).
    pub fn deployflows_of(&self, ns: &str, instance: Option<&str>) -> Vec<DeployFlow> {
        let names = match instance {
            Some(i) => self.index.deployflows.of(ns, i),
            None => self.index.deployflows.in_namespace(ns),
        };
        index::objects(&self.deployflows, ns, names)
            .iter()
            // Finished releases matter no more, but a canceled one's un-baked pods stay held.
            .filter(|o| {
                o.data["status"]["finished"] != json!(true)
                    || o.data["status"]["phase"] == json!("Canceled")
            })
            .filter(|o| {
                instance.is_none_or(|i| o.data["spec"]["application"]["instanceName"] == json!(i))
            })
            .filter_map(|o| decode(o).ok())
            .collect()
    }

    /// Whether the cached DeployFlow is older than this controller's last write of it: a step
    /// decided from it would act on a state that is already gone (its status write would fail
    /// its precondition, but writes before it would already have happened). The watch event of
    /// the newer object triggers the next step. resourceVersions are compared as the etcd
    /// revisions they are; one that does not parse is never called stale.
    pub fn stale(&self, key: &str, rv: Option<&str>) -> bool {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        older_than(rv, written.get(key).copied())
    }

    fn wrote(&self, key: &str, rv: Option<String>) {
        if let Some(rv) = rv.and_then(|r| r.parse::<u64>().ok()) {
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            let e = written.entry(key.to_string()).or_insert(0);
            *e = (*e).max(rv);
        }
        self.written_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), std::time::Instant::now());
    }

    /// How long ago this controller last wrote the DeployFlow (`None`: not since it started).
    fn since_written(&self, key: &str) -> Option<Duration> {
        let at = self.written_at.lock().unwrap_or_else(|e| e.into_inner());
        at.get(key).map(|t| t.elapsed())
    }

    /// Whether the cached CloneSet `ns/name` is older than this controller's last write of it,
    /// or missing within `CLONESET_CATCH_UP` of writing it. Acting on it would repeat the write:
    /// at a thousand releases, stale caches made each release POST its CloneSet 3.4 times on
    /// average, every POST a round trip through Kruise's webhook. The CloneSet's own watch
    /// event triggers the next step. Caught up, the entry is dropped.
    fn cloneset_stale(&self, ns: &str, name: &str) -> bool {
        let key = format!("{ns}/{name}");
        let mut written = self.cs_written.lock().unwrap_or_else(|e| e.into_inner());
        let Some(&(rv, at)) = written.get(&key) else {
            return false;
        };
        let cached = self
            .clonesets
            .get(&ObjectRef::<RawCloneSet>::new(name).within(ns))
            .and_then(|o| o.metadata.resource_version.as_deref()?.parse::<u64>().ok());
        let stale = match cached {
            Some(c) => c < rv,
            // Deleted since (or never seen): wait a little for the write's event only.
            None => at.elapsed() < CLONESET_CATCH_UP,
        };
        if stale && at.elapsed() >= CLONESET_STALE_LIMIT {
            // The CloneSet watch is not delivering (RBAC, the CRD, the API server): say so and
            // go on from the cache, as before this guard, rather than stall the release.
            tracing::warn!(cloneset = %key, written = rv, cached = ?cached, "the CloneSet cache has not shown this controller's write for 60 s; is the CloneSet watch failing? going on from the cache");
            written.remove(&key);
            return false;
        }
        if !stale {
            written.remove(&key);
        }
        stale
    }

    fn wrote_cloneset(&self, ns: &str, name: &str, rv: Option<&str>) {
        if let Some(rv) = rv.and_then(|r| r.parse::<u64>().ok()) {
            self.cs_written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(format!("{ns}/{name}"), (rv, std::time::Instant::now()));
        }
    }

    /// Forgets a DeployFlow that is gone.
    fn forget(&self, key: &str) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.written_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.backoff.succeeded(key);
    }

    fn cloneset(&self, ns: &str, name: &str) -> Option<CloneSetView> {
        let key = ObjectRef::<RawCloneSet>::new(name).within(ns);
        let obj = self.clonesets.get(&key)?;
        CloneSetView::from_raw(&obj).ok()
    }
}

/// How long a CloneSet this controller created may be missing from its cache before a step
/// takes it as gone.
const CLONESET_CATCH_UP: Duration = Duration::from_secs(30);
/// How long a step waits at most for the cache to show a CloneSet write.
const CLONESET_STALE_LIMIT: Duration = Duration::from_secs(60);

/// Whether resourceVersion `cached` is older than `written` (both etcd revisions).
pub fn older_than(cached: Option<&str>, written: Option<u64>) -> bool {
    match (cached.and_then(|r| r.parse::<u64>().ok()), written) {
        (Some(c), Some(w)) => c < w,
        _ => false,
    }
}

pub async fn reconcile(obj: Arc<RawDeployFlow>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    if !ctx.leading.load(Ordering::SeqCst) {
        // A standby: the leader does the work; all objects are reconciled when this one leads.
        return Ok(Requeue::await_change());
    }
    ctx.synced().await;
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let key = format!("{ns}/{}", obj.name_any());
    let df = match decode(&obj) {
        Ok(df) => Arc::new(df),
        Err(error) => {
            report_undecodable(&obj, &error, &ctx).await;
            if obj.metadata.deletion_timestamp.is_some() {
                // Nothing to cancel that we can read; let it go, releasing the CloneSet it holds.
                let instance = obj.data["spec"]["application"]["instanceName"].as_str();
                release_held(&ns, instance, &obj.name_any(), &ctx).await?;
                remove_finalizer(&ctx, &ns, &obj.metadata).await?;
                ctx.forget(&key);
            }
            return Ok(Requeue::await_change());
        }
    };
    if ctx.stale(&key, df.metadata.resource_version.as_deref()) {
        tracing::debug!(deployflow = %key, "cached DeployFlow older than our last write; waiting for it");
        return Ok(Requeue::requeue(Duration::from_millis(500)));
    }
    let finished = df.status.as_ref().is_some_and(|s| s.finished);
    let has_finalizer = df.finalizers().iter().any(|f| f == RELEASE_FINALIZER);
    if finished && !has_finalizer {
        // Finished: nothing to clean up.
        return Ok(Requeue::await_change());
    }
    if finished && df.metadata.deletion_timestamp.is_none() {
        // A finished release has released its CloneSet: its finalizer goes, so that deleting
        // it (or its namespace) never waits for this controller.
        remove_finalizer(&ctx, &ns, &df.metadata).await?;
        ctx.forget(&key);
        return Ok(Requeue::await_change());
    }
    let deleting = df.metadata.deletion_timestamp.is_some();
    let api = Api::<DeployFlow>::namespaced(ctx.client.clone(), &ns);
    let started = std::time::Instant::now();
    let result = finalizer(&api, RELEASE_FINALIZER, df, |event| async {
        match event {
            finalizer::Event::Apply(df) => apply(&df, &ctx, false).await.map(Stepped::requeue),
            finalizer::Event::Cleanup(df) => cleaned(apply(&df, &ctx, true).await?),
        }
    })
    .await;
    let mut pending = false;
    let result = match result {
        // The cleanup waits for a cache or lost a race: the finalizer stays, no error is told.
        Err(finalizer::Error::CleanupFailed(Error::CleanupPending(requeue))) => {
            pending = true;
            Ok(requeue)
        }
        // Gone meanwhile: nothing left to remove the finalizer from.
        Err(finalizer::Error::RemoveFinalizer(kube::Error::Api(e))) if e.code == 404 => {
            Ok(Requeue::await_change())
        }
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    };
    ctx.metrics.reconciled(started.elapsed());
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
        if deleting && !pending {
            ctx.forget(&key);
        }
    }
    result
}

/// Removes our finalizer (the list is replaced whole, so the resourceVersion is a precondition).
async fn remove_finalizer(
    ctx: &Context,
    ns: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(), Error> {
    let rest: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != RELEASE_FINALIZER)
        .collect();
    if rest.len() == meta.finalizers.as_ref().map_or(0, |f| f.len()) {
        return Ok(());
    }
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": meta.resource_version}});
    let api = Api::<DeployFlow>::namespaced(ctx.client.clone(), ns);
    match api
        .patch(
            meta.name.as_deref().unwrap_or_default(),
            &params(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(Error::RemoveFinalizer(e)),
    }
}

/// Releases the CloneSet `instance` (its release annotation removed, unpaused) when the
/// DeployFlow `name` still holds it.
async fn release_held(
    ns: &str,
    instance: Option<&str>,
    name: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let Some(instance) = instance else {
        return Ok(());
    };
    let Some(cs) = ctx.cloneset(ns, instance) else {
        return Ok(());
    };
    if cs.released_by() != Some(name) {
        return Ok(());
    }
    let patch = crate::engine::cloneset::release_patch(&cs, true);
    Api::<RawCloneSet>::namespaced(ctx.client.clone(), ns)
        .patch(instance, &params(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .or_else(|e| match e {
            // Gone, or a write the server will never take: the DeployFlow goes anyway.
            kube::Error::Api(e) if [400, 404, 422].contains(&e.code) => Ok(()),
            source => Err(Error::PatchCloneSet {
                name: instance.to_string(),
                source,
            }),
        })
}

async fn report_undecodable(obj: &RawDeployFlow, error: &serde_json::Error, ctx: &Context) {
    let version = format!(
        "{}@{}",
        obj.metadata.uid.as_deref().unwrap_or_default(),
        obj.metadata.resource_version.as_deref().unwrap_or_default()
    );
    if !ctx
        .reported
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(version)
    {
        return;
    }
    ctx.metrics.undecodable();
    let name = obj.name_any();
    tracing::warn!(deployflow = %name, namespace = ?obj.namespace(), %error, "skipping a DeployFlow that cannot be read");
    let reference = obj.object_ref(&());
    let ev = Event {
        type_: EventType::Warning,
        reason: "Invalid".into(),
        note: Some(format!(
            "triton-controller cannot read this DeployFlow and skips it: {error}"
        )),
        action: "Decode".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&ev, &reference).await {
        tracing::debug!(%error, "publishing an event failed");
    }
}

/// How a step ended: all it decided done, or left to a later step (a stale cache, a write that
/// conflicted), which a cleanup must not take for done.
#[derive(Debug)]
enum Stepped {
    Done(Requeue),
    Retry(Requeue),
}

impl Stepped {
    fn requeue(self) -> Requeue {
        match self {
            Stepped::Done(r) | Stepped::Retry(r) => r,
        }
    }
}

/// A cleanup's outcome for kube's `finalizer`, which removes the finalizer after any `Ok`: a
/// cleanup left to a later step is an error that keeps it.
fn cleaned(step: Stepped) -> Result<Requeue, Error> {
    match step {
        Stepped::Done(r) => Ok(r),
        Stepped::Retry(r) => Err(Error::CleanupPending(r)),
    }
}

/// One step: build the world, decide, execute.
async fn apply(df: &DeployFlow, ctx: &Context, deleting: bool) -> Result<Stepped, Error> {
    let ns = df.namespace().ok_or(Error::NoNamespace)?;
    let instance = &df.spec.application.instance_name;
    if ctx.cloneset_stale(&ns, instance) {
        tracing::debug!(deployflow = %df.name_any(), cloneset = %instance, "cached CloneSet older than our last write; waiting for it");
        return Ok(Stepped::Retry(Requeue::requeue(Duration::from_secs(2))));
    }
    let cloneset = ctx.cloneset(&ns, instance);
    let pods: Vec<Arc<Pod>> = index::objects(&ctx.pods, &ns, ctx.index.pods.of(&ns, instance))
        .into_iter()
        // The index lags its store by one event: check the label the store has.
        .filter(|p| p.labels().get(INSTANCE_LABEL) == Some(instance))
        .collect();
    // Shared with the cache, not copied (a namespace may hold thousands of them).
    let services = index::objects(&ctx.services, &ns, ctx.index.services.in_namespace(&ns));
    let slices = index::objects(&ctx.slices, &ns, ctx.index.slices.in_namespace(&ns));
    let holder = cloneset
        .as_ref()
        .and_then(|cs| cs.released_by())
        .filter(|n| *n != df.name_any())
        .and_then(|n| {
            let key = ObjectRef::<RawDeployFlow>::new(n).within(&ns);
            let other = decode(&*ctx.deployflows.get(&key)?).ok()?;
            let status = other.status.unwrap_or_default();
            Some(Holder {
                name: n.to_string(),
                running: !status.finished,
                paused: status.paused,
            })
        });
    let opened: Vec<String> = {
        let o = ctx.opened.lock().unwrap_or_else(|e| e.into_inner());
        pods.iter()
            .map(|p| p.name_any())
            .filter(|n| o.recently(&format!("{ns}/{n}")))
            .collect()
    };
    let world = World {
        df,
        cloneset: cloneset.as_ref(),
        pods: &pods,
        services: &services,
        slices: &slices,
        holder,
        opened: &opened,
        now: Timestamp::now(),
    };
    let decision = if deleting {
        engine::cleanup(&world)
    } else {
        engine::advance(&world)
    };
    match execute(df, &ns, decision, ctx).await {
        // The cancel of a deleted release: its CloneSet write was refused. Letting the CloneSet
        // go half-cancelled (a new revision's partition in place, nothing holding it) could put
        // that revision into service unapproved, and some refusals clear (Kruise refuses a
        // podsToDelete naming a pod already terminating): the cancel is retried with backoff,
        // its Warning Event saying why the DeployFlow stays and how to let it go.
        Err(Error::CloneSetRefused { name, message }) if deleting => {
            Err(Error::CancelRefused { name, message })
        }
        // A write the API server will refuse every time (an invalid label, a bad template): the
        // release fails with the server's message instead of retrying forever, and lets its
        // CloneSet go (as every failed release does).
        Err(Error::CloneSetRefused { name, message }) => {
            release_held(&ns, Some(instance), &df.name_any(), ctx).await?;
            // No precondition: a status written before the refused write moved the version on,
            // and a terminal Failed is right whatever happened since.
            let patch = json!({
                "status": {"phase": "Failed", "finished": true, "finishedAt": now(), "updatedAt": now(),
                "message": format!("the API server refused Triton's write of CloneSet {name}: {message}")}});
            Api::<DeployFlow>::namespaced(ctx.client.clone(), &ns)
                .patch_status(&df.name_any(), &params(), &Patch::Merge(&patch))
                .await
                .map_err(Error::PatchStatus)?;
            ctx.metrics.transition(DeployPhase::Failed, Duration::ZERO);
            publish(
                ctx,
                df,
                true,
                "Unhealthy",
                format!("CloneSet {name} refused the release's write: {message}"),
            )
            .await;
            Ok(Stepped::Done(Requeue::await_change()))
        }
        other => other,
    }
}

async fn execute(
    df: &DeployFlow,
    ns: &str,
    decision: Decision,
    ctx: &Context,
) -> Result<Stepped, Error> {
    let started = std::time::Instant::now();
    let before = df.status.clone().unwrap_or_default();
    let api = Api::<DeployFlow>::namespaced(ctx.client.clone(), ns);
    let mut rv = df.resource_version();
    for effect in decision.before {
        if !apply_effect(df, ns, effect, &mut rv, ctx).await? {
            return Ok(Stepped::Retry(Requeue::requeue(Duration::from_millis(500))));
        }
    }
    let mut status = decision.status;
    // The statuses the step passed through, then the one it writes: each hop is a transition
    // for the failpoints, the metrics and the Events.
    let hops: Vec<&DeployFlowStatus> = std::iter::once(&before)
        .chain(decision.trail.iter())
        .collect();
    failpoint(ctx, df, ns, &hops, &status, true);
    // A change that only tells (a message, counts, pod phases) is written at most once a
    // second; the timer writes it if nothing else comes first.
    let key = format!("{ns}/{}", df.name_any());
    if decision.after.is_empty()
        && engine::tells_only(&before, &status)
        && let Some(since) = ctx.since_written(&key)
        && since < TELL_EVERY
    {
        let wait = TELL_EVERY - since;
        return Ok(Stepped::Done(Requeue::requeue(
            decision.requeue.map_or(wait, |r| r.min(wait)),
        )));
    }
    if status != before {
        status.updated_at = Some(now());
        status.observed_generation = df.metadata.generation;
        let patch = json!({"metadata": {"resourceVersion": rv}, "status": status});
        match api
            .patch_status(&df.name_any(), &params(), &Patch::Merge(&patch))
            .await
        {
            Ok(obj) => ctx.wrote(&format!("{ns}/{}", df.name_any()), obj.resource_version()),
            // The cached DeployFlow was stale (or someone wrote since): this step's decision is
            // void; the newer object's event runs the next one.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::debug!(deployflow = %df.name_any(), "status write conflicted; the step is retried on the newer object");
                return Ok(Stepped::Retry(Requeue::requeue(Duration::from_millis(500))));
            }
            // Gone meanwhile (deleted with no finalizer left).
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return Ok(Stepped::Done(Requeue::await_change()));
            }
            Err(e) => return Err(Error::PatchStatus(e)),
        }
        failpoint(ctx, df, ns, &hops, &status, false);
        // Told once written, before the writes that act on it (one of them may fail, and the
        // next step starts from the written status).
        let mut from = &before;
        for to in decision.trail.iter().chain(std::iter::once(&status)) {
            record(df, ctx, from, to, started).await;
            from = to;
        }
        for effect in decision.after {
            apply_effect(df, ns, effect, &mut rv, ctx).await?;
        }
    } else {
        for effect in decision.after {
            apply_effect(df, ns, effect, &mut rv, ctx).await?;
        }
    }
    Ok(Stepped::Done(
        decision
            .requeue
            .map_or_else(Requeue::await_change, Requeue::requeue),
    ))
}

/// How often a status change that only tells (see `engine::tells_only`) is written at most.
pub const TELL_EVERY: Duration = Duration::from_secs(1);

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    }
}

/// Aborts the process when a hop of this step (`hops[i]` → `hops[i + 1]`, the last to `to`)
/// reaches the configured failpoint, before or after the status write.
fn failpoint(
    ctx: &Context,
    df: &DeployFlow,
    ns: &str,
    hops: &[&DeployFlowStatus],
    to: &DeployFlowStatus,
    before_write: bool,
) {
    let Some(fp) = &ctx.failpoint else { return };
    let mut pairs = hops.windows(2).map(|w| (w[0], w[1]));
    let last = hops.last().map(|from| (*from, to));
    if fp.before == before_write
        && fp.namespace == ns
        && fp.name == df.name_any()
        && (pairs.any(|(a, b)| fp.reached(a, b)) || last.is_some_and(|(a, b)| fp.reached(a, b)))
    {
        tracing::error!(deployflow = %df.name_any(), ?fp, "failpoint reached: aborting");
        std::process::abort();
    }
}

/// Applies one effect. `Ok(false)` when a DeployFlow write conflicted (the step is void).
async fn apply_effect(
    df: &DeployFlow,
    ns: &str,
    effect: Effect,
    rv: &mut Option<String>,
    ctx: &Context,
) -> Result<bool, Error> {
    let cs_name = df.spec.application.instance_name.clone();
    let clonesets = || Api::<RawCloneSet>::namespaced(ctx.client.clone(), ns);
    let refusal_fails = matches!(effect, Effect::PatchCloneSet(_));
    match effect {
        Effect::CreateCloneSet(manifest) => {
            // `cloneset::manifest` is an object with metadata: it always reads as one.
            let obj: RawCloneSet = serde_json::from_value(manifest).unwrap_or_default();
            let pp = PostParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            };
            match clonesets().create(&pp, &obj).await {
                Ok(cs) => ctx.wrote_cloneset(ns, &cs_name, cs.metadata.resource_version.as_deref()),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(kube::Error::Api(e)) if e.code == 400 || e.code == 422 => {
                    return Err(Error::CloneSetRefused {
                        name: cs_name,
                        message: e.message,
                    });
                }
                Err(source) => {
                    return Err(Error::CreateCloneSet {
                        name: cs_name,
                        source,
                    });
                }
            }
        }
        // A correction of a hand edit is retried when refused (Kruise refuses a podsToDelete
        // naming a pod already terminating, which the cache may not show yet); any other
        // refused write fails the release.
        Effect::PatchCloneSet(patch) | Effect::CorrectCloneSet(patch) => {
            match clonesets()
                .patch(&cs_name, &params(), &Patch::Merge(&patch))
                .await
            {
                Ok(cs) => ctx.wrote_cloneset(ns, &cs_name, cs.metadata.resource_version.as_deref()),
                // Gone: the next step sees it gone and says so.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(kube::Error::Api(e)) if refusal_fails && (e.code == 400 || e.code == 422) => {
                    return Err(Error::CloneSetRefused {
                        name: cs_name,
                        message: e.message,
                    });
                }
                Err(source) => {
                    return Err(Error::PatchCloneSet {
                        name: cs_name,
                        source,
                    });
                }
            }
        }
        Effect::SetGate {
            pod,
            uid,
            ready,
            reason,
        } => {
            set_gate_named(&ctx.client, ns, &pod, uid.as_deref(), ready, reason).await?;
            if ready {
                let key = format!("{ns}/{pod}");
                ctx.opened.lock().unwrap_or_else(|e| e.into_inner()).insert(key);
            }
        }
        Effect::PatchSpec(mut patch) => {
            patch["metadata"] = json!({"resourceVersion": rv});
            let api = Api::<DeployFlow>::namespaced(ctx.client.clone(), ns);
            match api
                .patch(&df.name_any(), &params(), &Patch::Merge(&patch))
                .await
            {
                Ok(obj) => {
                    *rv = obj.resource_version();
                    ctx.wrote(&format!("{ns}/{}", df.name_any()), rv.clone());
                }
                Err(kube::Error::Api(e)) if e.code == 409 => return Ok(false),
                Err(e) => return Err(Error::PatchSpec(e)),
            }
        }
        Effect::Abort { name } => {
            let api = Api::<DeployFlow>::namespaced(ctx.client.clone(), ns);
            let patch = json!({"status": {"phase": "Aborted", "finished": true, "finishedAt": now(),
                "message": format!("aborted by DeployFlow {}", df.name_any())}});
            api.patch_status(&name, &params(), &Patch::Merge(&patch))
                .await
                .map_err(|source| Error::Abort { name, source })?;
        }
        Effect::Event {
            warning,
            reason,
            note,
        } => publish(ctx, df, warning, reason, note).await,
    }
    Ok(true)
}

async fn publish(ctx: &Context, df: &DeployFlow, warning: bool, reason: &str, note: String) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    // Off the step's path: an Event is a write the release does not wait for.
    let (recorder, reference) = (ctx.recorder.clone(), df.object_ref(&()));
    tokio::spawn(async move {
        if let Err(error) = recorder.publish(&ev, &reference).await {
            tracing::debug!(%error, "publishing an event failed");
        }
    });
}

/// Metrics and Events for a phase or batch change.
async fn record(
    df: &DeployFlow,
    ctx: &Context,
    before: &DeployFlowStatus,
    after: &DeployFlowStatus,
    started: std::time::Instant,
) {
    // Events tell what a user follows, not every status write (each Event is a write to the API
    // server: at a thousand releases, 22 per release cost as much as the releases' own
    // writes). Batch progress is told by the batch Events, so BatchStarted/BatchFinished, which
    // alternate with every batch, have none of their own.
    let batch_phase =
        |p: DeployPhase| matches!(p, DeployPhase::BatchStarted | DeployPhase::BatchFinished);
    if after.phase != before.phase {
        ctx.metrics.transition(after.phase, started.elapsed());
    }
    if after.phase != before.phase && !batch_phase(after.phase) {
        let (warning, reason) = match after.phase {
            DeployPhase::Success => (false, "Deployed"),
            DeployPhase::Failed | DeployPhase::Aborted => (true, "Unhealthy"),
            DeployPhase::Canceled => (false, "Canceled"),
            _ => (false, "PhaseChanged"),
        };
        let note = match (&after.phase, &after.message) {
            (DeployPhase::Success, _) => "DeployFlow is finished successfully".to_string(),
            (p, Some(m)) => format!("{} -> {}: {m}", before.phase.as_str(), p.as_str()),
            (p, None) => format!("{} -> {}", before.phase.as_str(), p.as_str()),
        };
        publish(ctx, df, warning, reason, note).await;
    }
    let (b0, b1) = (
        before.current().map(|c| (c.batch, c.phase)),
        after.current().map(|c| (c.batch, c.phase)),
    );
    // A batch's start, its smoke done (where a manual release waits), its end, its failures.
    let told = |p: BatchPhase| {
        p.is_failed()
            || matches!(
                p,
                BatchPhase::Smoking | BatchPhase::Smoked | BatchPhase::Baked
            )
    };
    if b0 != b1
        && let Some((batch, phase)) = b1
        && told(phase)
    {
        let failed = phase.is_failed();
        let note = match &after.message {
            Some(m) if failed => format!("batch {batch} {phase:?}: {m}"),
            _ => format!("batch {batch} {phase:?}"),
        };
        let reason = if failed {
            "BatchFailed"
        } else {
            "BatchPhaseChanged"
        };
        publish(ctx, df, failed, reason, note).await;
    }
}

pub fn error_policy(obj: Arc<RawDeployFlow>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.api_error(error.category());
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let wait = ctx.backoff.failed(&key);
    tracing::warn!(deployflow = %obj.name_any(), namespace = ?obj.namespace(), %error, retry_in = ?wait, "reconcile failed; retrying");
    // A Warning Event on the DeployFlow (the recorder folds repeats into a series).
    let (recorder, reference, note, reason) = (
        ctx.recorder.clone(),
        obj.object_ref(&()),
        error.to_string(),
        error.reason(),
    );
    tokio::spawn(async move {
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish_folded(&ev, &reference).await {
            tracing::debug!(%error, "publishing an event failed");
        }
    });
    Requeue::requeue(wait)
}

/// Sets the readiness-gate condition of one pod: a status patch of that one condition, with
/// the pod's UID as precondition; skipped when it already has that status or has no gate.
pub async fn set_gate(client: &Client, pod: &Pod, ready: bool, reason: &str) -> Result<(), Error> {
    let want = if ready { "True" } else { "False" };
    if crate::observe::condition(pod, READY_GATE) == Some(want) || !crate::observe::has_gate(pod) {
        return Ok(());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    set_gate_named(
        client,
        &ns,
        &pod.name_any(),
        pod.metadata.uid.as_deref(),
        ready,
        reason,
    )
    .await
}

async fn set_gate_named(
    client: &Client,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
    ready: bool,
    reason: &str,
) -> Result<(), Error> {
    let status = if ready { "True" } else { "False" };
    let patch = json!({
        "metadata": {"uid": uid},
        "status": {"conditions": [{"type": READY_GATE, "status": status, "reason": reason, "lastTransitionTime": now()}]}
    });
    match Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(pod, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone or replaced: nothing to flip.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(source) => Err(Error::FlipGate {
            pod: pod.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_to_five_minutes_with_jitter() {
        assert_eq!(backoff_delay(1, 0.5), Duration::from_millis(500));
        assert_eq!(backoff_delay(2, 0.5), Duration::from_secs(1));
        assert_eq!(backoff_delay(5, 0.5), Duration::from_secs(8));
        assert_eq!(backoff_delay(30, 0.5), Duration::from_secs(300));
        assert!(backoff_delay(3, 0.0) >= Duration::from_millis(1500));
        assert!(backoff_delay(3, 0.999) < Duration::from_millis(2500));
    }

    #[test]
    fn a_cached_object_older_than_our_last_write_is_stale() {
        assert!(older_than(Some("119"), Some(120)));
        assert!(!older_than(Some("120"), Some(120)));
        assert!(!older_than(Some("121"), Some(120)));
        assert!(
            !older_than(Some("opaque"), Some(120)),
            "an unparsable version is never stale"
        );
        assert!(!older_than(Some("5"), None), "nothing written yet");
    }

    #[test]
    fn failpoints_parse() {
        assert_eq!(
            Failpoint::parse("after-status-write:ns/df-1:Baking"),
            Some(Failpoint {
                before: false,
                namespace: "ns".into(),
                name: "df-1".into(),
                point: "Baking".into()
            })
        );
        assert!(
            Failpoint::parse("before-status-write:ns/a:podsToDelete")
                .unwrap()
                .before
        );
        assert_eq!(Failpoint::parse("nonsense"), None);
    }

    #[test]
    fn a_failpoint_is_reached_by_the_step_that_records_the_pods_to_delete() {
        let fp = Failpoint::parse("after-status-write:ns/a:podsToDelete").unwrap();
        let status = |pods: Option<Vec<&str>>| -> DeployFlowStatus {
            serde_json::from_value(
                json!({"conditions": [{"batch": 1, "batchSize": 1, "canary": false,
                "phase": "Baking", "startedAt": null, "pulledInAt": null, "finishedAt": null,
                "podsToDelete": pods}], "startedAt": null, "finishedAt": null, "updatedAt": null}),
            )
            .unwrap()
        };
        assert!(fp.reached(&status(None), &status(Some(vec!["p"]))));
        assert!(!fp.reached(&status(Some(vec!["p"])), &status(Some(vec!["p"]))));
        let fp = Failpoint::parse("after-status-write:ns/a:Baked").unwrap();
        assert!(!fp.reached(&status(None), &status(Some(vec!["p"]))));
    }

    #[test]
    fn a_failed_step_is_told_by_what_failed_inside_the_finalizer_helper() {
        let wrap = |e: Error, cleanup: bool| {
            Error::Finalizer(Box::new(if cleanup {
                finalizer::Error::CleanupFailed(e)
            } else {
                finalizer::Error::ApplyFailed(e)
            }))
        };
        let refused = || Error::CancelRefused {
            name: "web".into(),
            message: "denied".into(),
        };
        let e = wrap(refused(), true);
        assert_eq!((e.category(), e.reason()), ("cloneset", "CancelRefused"));
        assert!(e.to_string().contains("by hand"), "{e}");
        let e = wrap(Error::NoNamespace, false);
        assert_eq!((e.category(), e.reason()), ("state", "Unhealthy"));
        let e = Error::Finalizer(Box::new(finalizer::Error::UnnamedObject));
        assert_eq!((e.category(), e.reason()), ("finalizer", "Unhealthy"));
    }

    #[test]
    fn a_cleanup_left_to_a_later_step_keeps_the_finalizer() {
        // kube's `finalizer` removes the finalizer after any Ok: only a finished cleanup is one.
        let wait = Requeue::requeue(Duration::from_secs(2));
        assert!(matches!(cleaned(Stepped::Done(wait.clone())), Ok(r) if r == wait));
        assert!(matches!(
            cleaned(Stepped::Retry(wait.clone())),
            Err(Error::CleanupPending(r)) if r == wait
        ));
    }

    #[test]
    fn an_undecodable_deployflow_is_told_apart_from_good_ones() {
        let bad: RawDeployFlow = serde_json::from_value(json!({
            "apiVersion": "apps.triton.io/v1alpha1", "kind": "DeployFlow",
            "metadata": {"name": "bad", "namespace": "ns"},
            "spec": {"action": "update", "application": {"appID": 1, "groupID": 1, "appName": "a",
                "instanceName": "a", "replicas": 1, "selector": {},
                "template": {"spec": {"containers": [{"name": "c", "env": [{"name": "X", "value": 8080}]}]}}}}
        }))
        .unwrap();
        let err = decode(&bad).unwrap_err().to_string();
        assert!(err.contains("invalid type"), "{err}");
        let mut good = bad.clone();
        good.data["spec"]["application"]["template"]["spec"]["containers"][0]["env"][0]["value"] =
            json!("8080");
        assert!(decode(&good).is_ok());
    }
}
