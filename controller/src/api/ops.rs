//! The API's operations, shared by gRPC and REST. Reads come from the watch caches; writes are
//! merge patches of a DeployFlow's strategy (with the resourceVersion read as precondition) or
//! creations of DeployFlows; streams follow the DeployFlow watch, never a timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use triton_core::api::{self as core, FieldError, Holder, Refusal, ReleaseState};
use triton_core::names::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NAME_LABEL};
use triton_core::release::{Action, CurrentBatch};
use triton_proto::{application as app, deployflow as pb, pod as podpb};

use super::convert::{self, APP_LABEL, GROUP_LABEL};
use super::{ApiContext, ApiError, Change, Result};
use crate::crd::DeployFlow;
use crate::observe::CloneSetView;
use crate::raw::{RawCloneSet, RawDeployFlow};
use crate::reconcile::decode;

/// The field manager of the API's writes.
pub const FIELD_MANAGER: &str = "triton-api";
/// How long a create or delete waits for the cache to show it (as the original: 5 s).
const CACHE_WAIT: Duration = Duration::from_secs(5);
/// Replies buffered per stream.
const STREAM_BUFFER: usize = 16;

pub type DeployStream = ReceiverStream<std::result::Result<pb::DeployReply, tonic::Status>>;
pub type DeploysStream = ReceiverStream<std::result::Result<pb::DeploysReply, tonic::Status>>;

/// Validates a `DeployMeta`-like (namespace, name) under `prefix` (e.g. `deploy`).
pub fn meta<'a>(prefix: &str, m: Option<(&'a str, &'a str)>) -> Result<(&'a str, &'a str)> {
    let (ns, name) =
        m.ok_or_else(|| FieldError::new(prefix, "must be set (namespace and name)"))?;
    core::namespace(&format!("{prefix}.namespace"), ns, false)?;
    core::object_name(&format!("{prefix}.name"), name)?;
    Ok((ns, name))
}

/// What `Next` and `Watch` read of a release.
pub fn release_state(df: &DeployFlow) -> ReleaseState {
    let st = df.status.clone().unwrap_or_default();
    ReleaseState {
        current: st
            .conditions
            .as_ref()
            .and_then(|c| c.last())
            .map(|c| CurrentBatch {
                batch: c.batch,
                phase: c.phase,
                canary: c.canary,
            }),
        total_batches: st.batches,
        finished: st.finished,
        auto: df.spec.auto(),
        stage: df.spec.stage(),
        batches: df.spec.base().batches,
    }
}

fn phase(df: &DeployFlow) -> String {
    df.status
        .as_ref()
        .map(|s| s.phase.as_str().to_string())
        .unwrap_or_default()
}

fn finished(df: &DeployFlow) -> bool {
    df.status.as_ref().is_some_and(|s| s.finished)
}

/// The resourceVersion as a number, to tell newer from older (etcd's are numbers).
fn rv(o: &impl ResourceExt) -> u64 {
    o.resource_version()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn unreadable(ns: &str, name: &str, e: serde_json::Error) -> ApiError {
    ApiError::Refused(Refusal::Other(format!(
        "DeployFlow {ns}/{name} cannot be read by this controller: {e}"
    )))
}

/// One (namespace, name) filter shared by Watch and the write streams.
#[derive(Clone)]
struct Key {
    ns: String,
    name: String,
}

impl Key {
    fn is(&self, o: &RawDeployFlow) -> bool {
        o.metadata.name.as_deref() == Some(&self.name)
            && o.metadata.namespace.as_deref() == Some(&self.ns)
    }
}

/// Counts an open stream while alive.
struct StreamGuard(Arc<ApiContext>);

impl StreamGuard {
    /// Counts a new stream, or refuses it at `--api-max-streams`.
    fn new(ctx: &Arc<ApiContext>) -> Result<Self> {
        let open = ctx.streams.fetch_add(1, Ordering::Relaxed) + 1;
        let guard = StreamGuard(ctx.clone());
        if open > ctx.max_streams {
            return Err(ApiError::Exhausted(format!(
                "{} streams are open, the most this replica serves (--api-max-streams); retry later",
                ctx.max_streams
            )));
        }
        Ok(guard)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What ends a stream of one DeployFlow.
type Until = Box<dyn Fn(&DeployFlow, u64) -> Option<std::result::Result<(), ApiError>> + Send>;

impl ApiContext {
    fn cached_df(&self, ns: &str, name: &str) -> Option<Arc<RawDeployFlow>> {
        self.deployflows.get(&ObjectRef::new(name).within(ns))
    }

    fn cached_cs(&self, ns: &str, name: &str) -> Option<Arc<RawCloneSet>> {
        self.clonesets.get(&ObjectRef::new(name).within(ns))
    }

    fn df_api(&self, ns: &str) -> Api<DeployFlow> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn cached_typed(&self, ns: &str, name: &str) -> Result<DeployFlow> {
        let raw = self
            .cached_df(ns, name)
            .ok_or_else(|| ApiError::NotFound(format!("deploy {ns}/{name} not found")))?;
        decode(&raw).map_err(|e| unreadable(ns, name, e))
    }

    // ---- DeployFlow -------------------------------------------------------------------------

    pub async fn get(&self, ns: &str, name: &str) -> Result<pb::Deploy> {
        Ok(convert::deploy(&self.fresh_typed(ns, name).await?))
    }

    /// The DeployFlow as the API server has it (`None` when it does not exist).
    async fn live(&self, ns: &str, name: &str) -> Result<Option<DeployFlow>> {
        match self.df_api(ns).get(name).await {
            Ok(df) => Ok(Some(df)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(kube::Error::SerdeError(e)) => Err(unreadable(ns, name, e)),
            Err(e) => Err(ApiError::kube(format!("reading deploy {ns}/{name}"), e)),
        }
    }

    /// From the cache, or, when this replica's cache has not seen it yet (created a moment ago
    /// through another replica), from the API server.
    async fn fresh_typed(&self, ns: &str, name: &str) -> Result<DeployFlow> {
        match self.cached_typed(ns, name) {
            Err(ApiError::NotFound(why)) => {
                self.live(ns, name).await?.ok_or(ApiError::NotFound(why))
            }
            other => other,
        }
    }

    /// Gets (reference §4.3, defects fixed: the instanceName and action filters work, a page
    /// size of 0 means 10).
    pub fn gets(&self, filter: &pb::DeployFilter) -> Result<Vec<pb::Deploy>> {
        Ok(self.page_of(filter)?.iter().map(convert::deploy).collect())
    }

    /// One page of the filtered DeployFlows, newest first, from one cache snapshot.
    fn page_of(&self, filter: &pb::DeployFilter) -> Result<Vec<DeployFlow>> {
        let f = Filter::new(filter, "filter.")?;
        let page = core::page("filter.", filter.start, filter.page_size)?;
        let items: Vec<Listed> = self
            .deployflows
            .state()
            .iter()
            .filter(|raw| f.in_namespace(raw))
            .filter_map(|raw| decode(raw).ok())
            .filter(|df| f.matches(df))
            .map(Listed)
            .collect();
        Ok(core::paginate(items, page)
            .into_iter()
            .map(|l| l.0)
            .collect())
    }

    /// Merge-patches the applicable strategy with what `body` computes from the live object,
    /// with its resourceVersion as precondition (retried on a conflict). Refused on a finished
    /// release.
    async fn patch_strategy(
        &self,
        ns: &str,
        name: &str,
        body: impl Fn(&DeployFlow) -> Result<Value>,
    ) -> Result<DeployFlow> {
        let api = self.df_api(ns);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The cache first (one API call per verb); the resourceVersion precondition refuses
            // a stale copy, and the retry reads the object from the API server.
            let cached = (attempt == 1)
                .then(|| self.cached_df(ns, name))
                .flatten()
                .and_then(|raw| decode(&raw).ok());
            let from_cache = cached.is_some();
            let live = match cached {
                Some(df) => df,
                None => self
                    .live(ns, name)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("deploy {ns}/{name} not found")))?,
            };
            // A refusal is decided on the API server's copy, never on a cache that may lag.
            if finished(&live) {
                if from_cache {
                    continue;
                }
                return Err(Refusal::Finished {
                    phase: phase(&live),
                }
                .into());
            }
            let fields = match body(&live) {
                Ok(f) => f,
                Err(ApiError::Refused(_)) if from_cache => continue,
                Err(e) => return Err(e),
            };
            let patch = json!({
                "metadata": {"resourceVersion": live.resource_version()},
                "spec": {live.spec.strategy_key(): fields},
            });
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match api.patch(name, &pp, &Patch::Merge(&patch)).await {
                Ok(df) => return Ok(df),
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
                Err(e) => return Err(ApiError::kube(format!("patching deploy {ns}/{name}"), e)),
            }
        }
    }

    /// Next (reference §3.5): refused on a finished release and until the spec's own target is
    /// reached.
    pub async fn next(&self, ns: &str, name: &str) -> Result<DeployFlow> {
        self
            .patch_strategy(ns, name, |df| {
                let (batches, stage) = core::next(&release_state(df), &phase(df))?;
                Ok(json!({"batches": batches, "stage": format!("{stage:?}")}))
            })
            .await
    }

    /// Continue: sets `stage` and `batches` (empty or 0 values left out, as the original).
    pub async fn continue_(
        &self,
        ns: &str,
        name: &str,
        target: Option<&pb::TargetState>,
    ) -> Result<DeployFlow> {
        let t = target
            .ok_or_else(|| FieldError::new("target", "must be set (stage and/or batches)"))?;
        core::stage("target.stage", &t.stage)?;
        core::bounded("target.batches", t.batches, 100_000)?;
        if t.stage.is_empty() && t.batches == 0 {
            return Err(FieldError::new("target", "empty target: set stage and/or batches").into());
        }
        let mut body = serde_json::Map::new();
        if !t.stage.is_empty() {
            body.insert("stage".into(), json!(t.stage));
        }
        if t.batches > 0 {
            body.insert("batches".into(), json!(t.batches));
        }
        let body = Value::Object(body);
        self.patch_strategy(ns, name, |live| {
                fields_fit(live, &body).map_err(|e| match e {
                    ApiError::Invalid(f) => {
                        FieldError::new(format!("target.{}", f.field), f.reason).into()
                    }
                    other => other,
                })?;
                Ok(body.clone())
            })
            .await
    }

    /// Merges `fields` into the applicable strategy (REST's PATCH, and its one-shot pause,
    /// resume and cancel).
    pub async fn patch_fields(&self, ns: &str, name: &str, fields: Value) -> Result<DeployFlow> {
        self.patch_strategy(ns, name, |_| Ok(fields.clone())).await
    }

    /// Pause, Resume and Cancel: the patch, then the DeployFlow on every change until the
    /// release shows the effect (or finishes).
    pub async fn interrupt(
        self: &Arc<Self>,
        ns: &str,
        name: &str,
        what: Interrupt,
    ) -> Result<DeployStream> {
        let guard = StreamGuard::new(self)?;
        let sub = self.changes.subscribe();
        let body = match what {
            Interrupt::Pause => json!({"paused": true}),
            Interrupt::Resume => json!({"paused": false}),
            Interrupt::Cancel => json!({"canceled": true}),
        };
        let patched = self.patch_strategy(ns, name, |_| Ok(body.clone())).await?;
        let ours = rv(&patched);
        let until: Until = match what {
            Interrupt::Pause => Box::new(|df, _| {
                (finished(df) || df.status.as_ref().is_some_and(|s| s.paused)).then_some(Ok(()))
            }),
            Interrupt::Resume => Box::new(move |df, version| {
                if finished(df) || df.status.as_ref().is_some_and(|s| !s.paused) {
                    return Some(Ok(()));
                }
                // The controller set `paused` again after our resume: it refused it.
                let repaused = version > ours && df.spec.base().paused == Some(true);
                repaused.then(|| {
                    let why = df
                        .status
                        .as_ref()
                        .and_then(|s| s.message.clone())
                        .unwrap_or_else(|| "the controller paused it again".into());
                    Err(Refusal::Other(format!("resume refused: {why}")).into())
                })
            }),
            Interrupt::Cancel => Box::new(|df, _| (finished(df)).then_some(Ok(()))),
        };
        Ok(self.follow(
            guard,
            Key {
                ns: ns.into(),
                name: name.into(),
            },
            sub,
            Some(patched),
            until,
        ))
    }

    /// Watch: the DeployFlow now and on every change, until the target (the request's, else
    /// the spec's) is reached, the release finishes or the DeployFlow is deleted.
    pub async fn watch(
        self: &Arc<Self>,
        ns: &str,
        name: &str,
        target: Option<&pb::TargetState>,
    ) -> Result<DeployStream> {
        let target = match target {
            Some(t) if !(t.stage.is_empty() && t.batches == 0) => Some((
                core::stage("target.stage", &t.stage)?,
                core::bounded("target.batches", t.batches, 100_000)?,
            )),
            _ => None,
        };
        let guard = StreamGuard::new(self)?;
        let sub = self.changes.subscribe();
        let first = self.fresh_typed(ns, name).await?;
        Ok(self.follow(
            guard,
            Key {
                ns: ns.into(),
                name: name.into(),
            },
            sub,
            Some(first),
            Box::new(move |df, _| core::watch_done(&release_state(df), target).then_some(Ok(()))),
        ))
    }

    /// Streams one DeployFlow: `first`, then each newer version, until `until` says so, the
    /// DeployFlow is deleted, or the client goes away (which ends the task at once).
    fn follow(
        self: &Arc<Self>,
        guard: StreamGuard,
        key: Key,
        mut sub: broadcast::Receiver<Change>,
        first: Option<DeployFlow>,
        until: Until,
    ) -> DeployStream {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let ctx = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let mut last = 0u64;
            let send = |df: DeployFlow, last: &mut u64| {
                let version = rv(&df);
                let fresh = version > *last;
                if fresh {
                    *last = version;
                }
                (fresh, df, version)
            };
            let mut pending = first;
            loop {
                if let Some(df) = pending.take() {
                    let (fresh, df, version) = send(df, &mut last);
                    if fresh {
                        let reply = pb::DeployReply {
                            deploy: Some(convert::deploy(&df)),
                        };
                        if tx.send(Ok(reply)).await.is_err() {
                            return;
                        }
                        if df.metadata.deletion_timestamp.is_some() {
                            // Being deleted: no target will be reached.
                            return;
                        }
                        match until(&df, version) {
                            Some(Ok(())) => return,
                            Some(Err(e)) => {
                                let _ = tx.send(Err(e.into())).await;
                                return;
                            }
                            None => {}
                        }
                    }
                }
                let change = tokio::select! {
                    c = sub.recv() => c,
                    _ = tx.closed() => return,
                };
                match change {
                    Ok(c) if key.is(&c.obj) => {
                        if c.deleted {
                            return;
                        }
                        pending = c.typed.as_deref().cloned();
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Fell behind: the cache has the latest.
                        match ctx.cached_df(&key.ns, &key.name) {
                            Some(raw) => pending = decode(&raw).ok(),
                            None => return,
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        ReceiverStream::new(rx)
    }

    /// ListAndWatch: the filtered, paged list, then every change of a matching DeployFlow
    /// (deletions included) as a one-element reply, until the client goes away.
    pub fn list_and_watch(self: &Arc<Self>, filter: &pb::DeployFilter) -> Result<DeploysStream> {
        let f = Filter::new(filter, "filter.")?;
        let guard = StreamGuard::new(self)?;
        let mut sub = self.changes.subscribe();
        // Subscribed first, then listed: a change after the snapshot arrives as an event.
        let first = self.page_of(filter)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let ctx = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            // The version sent per object (from the same snapshot as the list), so a relist or
            // a lag re-read sends only changes.
            let mut sent: HashMap<(String, String), u64> = first
                .iter()
                .map(|df| ((df.namespace().unwrap_or_default(), df.name_any()), rv(df)))
                .collect();
            let deploys = first.iter().map(convert::deploy).collect();
            if tx.send(Ok(pb::DeploysReply { deploys })).await.is_err() {
                return;
            }
            loop {
                let changes: Vec<Change> = tokio::select! {
                    c = sub.recv() => match c {
                        Ok(c) => vec![c],
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // Fell behind: compare the cache with what was sent.
                            let now = ctx.deployflows.state();
                            let live: std::collections::HashSet<_> = now.iter()
                                .map(|o| (o.namespace().unwrap_or_default(), o.name_any())).collect();
                            let mut cs: Vec<Change> = now.into_iter()
                                .map(|obj| Change::new(obj, false)).collect();
                            cs.extend(sent.keys().filter(|k| !live.contains(*k)).map(|(ns, n)| {
                                let mut o = RawDeployFlow::default();
                                o.metadata.namespace = Some(ns.clone());
                                o.metadata.name = Some(n.clone());
                                Change::new(Arc::new(o), true)
                            }));
                            cs
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tx.closed() => return,
                };
                for c in changes {
                    let k = (c.obj.namespace().unwrap_or_default(), c.obj.name_any());
                    let reply = if c.deleted {
                        if sent.remove(&k).is_none() {
                            continue;
                        }
                        let mut d = match c.typed.as_deref() {
                            Some(df) => convert::deploy(df),
                            None => pb::Deploy {
                                namespace: k.0.clone(),
                                name: k.1.clone(),
                                ..Default::default()
                            },
                        };
                        d.deleted = true;
                        d
                    } else {
                        if !f.in_namespace(&c.obj) {
                            continue;
                        }
                        let Some(df) = c.typed.as_deref() else {
                            continue;
                        };
                        if !f.matches(df) {
                            continue;
                        }
                        let version = rv(df);
                        if sent.get(&k).is_some_and(|v| *v >= version && version > 0) {
                            continue;
                        }
                        sent.insert(k, version);
                        convert::deploy(df)
                    };
                    if tx
                        .send(Ok(pb::DeploysReply {
                            deploys: vec![reply],
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// Delete: refused for a release that has not finished; a missing one counts as deleted.
    pub async fn delete(&self, ns: &str, name: &str) -> Result<()> {
        let mut sub = self.changes.subscribe();
        let api = self.df_api(ns);
        let Some(df) = self.live(ns, name).await? else {
            return Ok(());
        };
        if !finished(&df) {
            return Err(Refusal::Unfinished { phase: phase(&df) }.into());
        }
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(ApiError::kube(format!("deleting deploy {ns}/{name}"), e)),
        }
        let key = Key {
            ns: ns.into(),
            name: name.into(),
        };
        let gone = async {
            while self.cached_df(ns, name).is_some() {
                match sub.recv().await {
                    Ok(c) if c.deleted && key.is(&c.obj) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        };
        let _ = tokio::time::timeout(CACHE_WAIT, gone).await;
        Ok(())
    }

    /// Creates a DeployFlow and waits (≤ 5 s) until the cache has it, so that a Get right after
    /// the reply finds it on this replica.
    async fn create(&self, ns: &str, manifest: Value) -> Result<String> {
        let mut sub = self.changes.subscribe();
        let raw: RawDeployFlow = serde_json::from_value(manifest)
            .map_err(|e| ApiError::Rejected(format!("building the DeployFlow: {e}")))?;
        let created = Api::<RawDeployFlow>::namespaced(self.client.clone(), ns)
            .create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &raw,
            )
            .await
            .map_err(|e| ApiError::kube(format!("creating a DeployFlow in {ns}"), e))?;
        let name = created.name_any();
        let key = Key {
            ns: ns.into(),
            name: name.clone(),
        };
        let seen = async {
            while self.cached_df(ns, &name).is_none() {
                match sub.recv().await {
                    Ok(c) if key.is(&c.obj) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        };
        if tokio::time::timeout(CACHE_WAIT, seen).await.is_err() {
            tracing::warn!(deployflow = %format!("{ns}/{name}"), "created, but not yet in the cache after 5 s");
        }
        Ok(name)
    }

    /// The running release holding a CloneSet: the one its annotation names, else any
    /// unfinished DeployFlow of the instance (one just created that has not taken hold yet).
    fn holder(&self, ns: &str, instance: &str, cs: Option<&CloneSetView>) -> Option<Holder> {
        let running = |df: &DeployFlow| !finished(df);
        let holder = |df: &DeployFlow| Holder {
            name: df.name_any(),
            paused: df.status.as_ref().is_some_and(|s| s.paused)
                || df.spec.base().paused == Some(true),
        };
        if let Some(name) = cs.and_then(|c| c.released_by())
            && let Ok(df) = self.cached_typed(ns, name)
            && running(&df)
        {
            return Some(holder(&df));
        }
        self.deployflows
            .state()
            .iter()
            .filter(|r| r.namespace().as_deref() == Some(ns))
            .filter_map(|r| decode(r).ok())
            .filter(|df| df.spec.application.instance_name == instance && running(df))
            .max_by_key(|df| df.metadata.creation_timestamp.clone().map(|t| t.0))
            .map(|df| holder(&df))
    }

    /// Marks `instance` as having a release started by this replica until the guard drops, so
    /// two concurrent requests do not both pass the holder check (Busy for the second).
    fn starting(&self, ns: &str, instance: &str) -> Result<StartingGuard<'_>> {
        let key = (ns.to_string(), instance.to_string());
        if !self.starting.lock().expect("lock").insert(key.clone()) {
            return Err(Refusal::Other(format!(
                "another request is starting a release of {ns}/{instance}; try again"
            ))
            .into());
        }
        Ok(StartingGuard { ctx: self, key })
    }

    // ---- Application ------------------------------------------------------------------------

    fn cloneset(&self, ns: &str, name: &str) -> Result<(Arc<RawCloneSet>, CloneSetView)> {
        let cs = self
            .cached_cs(ns, name)
            .ok_or_else(|| ApiError::NotFound(format!("application {ns}/{name} not found")))?;
        let view = CloneSetView::from_raw(&cs)
            .map_err(|e| Refusal::Other(format!("CloneSet {ns}/{name} cannot be read: {e}")))?;
        Ok((cs, view))
    }

    pub fn app_get(&self, ns: &str, name: &str) -> Result<app::Instance> {
        Ok(convert::instance(&self.cloneset(ns, name)?.0))
    }

    /// Every CloneSet of the namespace (each one, not N copies of the last: §9 item 13).
    pub fn app_gets(&self, ns: &str) -> Result<Vec<app::Instance>> {
        core::namespace("filter.namespace", ns, true)?;
        let mut v: Vec<_> = self
            .clonesets
            .state()
            .iter()
            .filter(|c| ns.is_empty() || c.namespace().as_deref() == Some(ns))
            .map(|c| convert::instance(c))
            .collect();
        v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(v)
    }

    /// Restart and Scale: a non-revision-changing release of an existing CloneSet.
    pub async fn start_non_update(
        &self,
        ns: &str,
        name: &str,
        action: NonUpdate,
        strategy: Option<&pb::NonUpdateStrategy>,
    ) -> Result<String> {
        let s = strategy.ok_or_else(|| {
            FieldError::new(
                "strategy",
                "must be set (batchSize, batches, batchIntervalSeconds, mode)",
            )
        })?;
        let mut body = non_update_strategy(s)?;
        let (cs, view) = self.cloneset(ns, name)?;
        let current = view.spec.replicas;
        let (action, replicas, removable) = match action {
            NonUpdate::Restart => (Action::Restart, current, current),
            NonUpdate::Scale(r) => {
                core::bounded("replicas", r, 100_000)?;
                let action = core::scale_action(r, current);
                if !s.pods_to_delete.is_empty() && action != Action::ScaleIn {
                    return Err(FieldError::new(
                        "strategy.podsToDelete",
                        format!(
                            "only a scale in deletes pods ({current} → {r} replicas is a scale out)"
                        ),
                    )
                    .into());
                }
                (action, r, current - r)
            }
        };
        if !s.pods_to_delete.is_empty() && s.pods_to_delete.len() as i64 > removable.max(0) as i64 {
            return Err(FieldError::new(
                "strategy.podsToDelete",
                format!(
                    "{} pods named, but this release replaces or removes at most {removable}",
                    s.pods_to_delete.len()
                ),
            )
            .into());
        }
        for (i, p) in s.pods_to_delete.iter().enumerate() {
            let field = format!("strategy.podsToDelete[{i}]");
            core::object_name(&field, p)?;
            let pod = self.pods.get(&ObjectRef::<Pod>::new(p).within(ns));
            let ours = pod.as_ref().is_some_and(|pod| {
                pod.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(name)
            });
            if !ours {
                return Err(FieldError::new(
                    field,
                    format!("{p} is not a pod of application {ns}/{name}"),
                )
                .into());
            }
        }
        let labels = view.template_labels().clone();
        if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE) {
            return Err(Refusal::Other(format!(
                "CloneSet {ns}/{name} was not released by Triton (its pods lack the label {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}); release it once with an update"
            )).into());
        }
        let _starting = self.starting(ns, name)?;
        core::may_start(self.holder(ns, name, Some(&view)).as_ref(), action)?;
        let (app_id, group_id, app_name) = convert::app_identity(&labels);
        if let Some(obj) = body.as_object_mut() {
            obj.retain(|_, v| !v.is_null());
        }
        let manifest = generated(
            ns,
            Identity {
                app_id,
                group_id,
                app_name,
                instance: name.to_string(),
            },
            action,
            replicas,
            cs.data["spec"]["template"].clone(),
            ("nonUpdateStrategy", body),
        );
        self.create(ns, manifest).await
    }

    /// Rollback: to the template of DeployFlow `deploy_name`, or, without one, to the
    /// CloneSet's previous revision. Returns (new DeployFlow, what it rolls back to).
    pub async fn rollback(
        &self,
        ns: &str,
        name: &str,
        deploy_name: &str,
        strategy: Option<&pb::UpdateStrategy>,
    ) -> Result<(String, String)> {
        let s = strategy.ok_or_else(|| {
            FieldError::new(
                "strategy",
                "must be set (batchSize, batches, batchIntervalSeconds, mode, canary)",
            )
        })?;
        let body = update_strategy(s)?;
        let (cs, view) = self.cloneset(ns, name)?;
        let (template, identity, to) = if deploy_name.is_empty() {
            let (template, revision) = self.previous_template(ns, name, &cs).await?;
            let (app_id, group_id, app_name) = convert::app_identity(view.template_labels());
            (
                template,
                Identity {
                    app_id,
                    group_id,
                    app_name,
                    instance: name.into(),
                },
                revision,
            )
        } else {
            core::object_name("deployName", deploy_name)?;
            let old = self.cached_typed(ns, deploy_name)?;
            let a = &old.spec.application;
            if a.instance_name != name {
                return Err(FieldError::new(
                    "deployName",
                    format!(
                        "DeployFlow {deploy_name} releases instance {}, not {name}",
                        a.instance_name
                    ),
                )
                .into());
            }
            let template = serde_json::to_value(&a.template).unwrap_or_default();
            let id = Identity {
                app_id: a.app_id,
                group_id: a.group_id,
                app_name: a.app_name.clone(),
                instance: name.into(),
            };
            (template, id, deploy_name.to_string())
        };
        let _starting = self.starting(ns, name)?;
        core::may_start(
            self.holder(ns, name, Some(&view)).as_ref(),
            Action::Rollback,
        )?;
        let manifest = generated(
            ns,
            identity,
            Action::Rollback,
            view.spec.replicas,
            template,
            ("updateStrategy", body),
        );
        let created = self.create(ns, manifest).await?;
        Ok((created, to))
    }

    /// The pod template of the CloneSet's revision before its update revision, and that
    /// revision's name.
    async fn previous_template(
        &self,
        ns: &str,
        name: &str,
        cs: &RawCloneSet,
    ) -> Result<(Value, String)> {
        let uid = cs.metadata.uid.clone().unwrap_or_default();
        let current = cs.data["status"]["updateRevision"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // Kruise labels a CloneSet's revisions with its selector's labels.
        let selector = cs.data["spec"]["selector"]["matchLabels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let revs = Api::<ControllerRevision>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| ApiError::kube(format!("listing the revisions of {ns}/{name}"), e))?;
        let mut owned: Vec<&ControllerRevision> = revs
            .items
            .iter()
            .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
            .collect();
        owned.sort_by_key(|r| std::cmp::Reverse(r.revision));
        let current_number = owned
            .iter()
            .find(|r| r.name_any() == current)
            .map(|r| r.revision);
        let previous = owned
            .iter()
            .find(|r| r.name_any() != current && current_number.is_none_or(|n| r.revision < n))
            .ok_or_else(|| {
                Refusal::Other(format!(
                    "application {ns}/{name} has no previous revision to roll back to"
                ))
            })?;
        let mut template = previous
            .data
            .as_ref()
            .map(|d| d.0["spec"]["template"].clone())
            .unwrap_or(Value::Null);
        if let Some(t) = template.as_object_mut() {
            t.remove("$patch");
        }
        if !template.is_object() {
            return Err(Refusal::Other(format!(
                "revision {} of {ns}/{name} holds no pod template",
                previous.name_any()
            ))
            .into());
        }
        Ok((template, previous.name_any()))
    }

    /// Delete an application: refused while a running release holds it; a missing one counts
    /// as deleted.
    pub async fn app_delete(&self, ns: &str, name: &str) -> Result<()> {
        let view = self
            .cached_cs(ns, name)
            .map(|cs| CloneSetView::from_raw(&cs).unwrap_or_default());
        if let Some(h) = self.holder(ns, name, view.as_ref()) {
            return Err(Refusal::Held { holder: h.name }.into());
        }
        // Deleted also when this replica's cache has not seen it (404 counts as deleted).
        match Api::<RawCloneSet>::namespaced(self.client.clone(), ns)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(ApiError::kube(
                format!("deleting application {ns}/{name}"),
                e,
            )),
        }
    }

    /// Apply (not in the original's gRPC): a create (no CloneSet yet) or update release of an
    /// application from its spec.
    pub async fn apply(&self, req: ApplyRequest) -> Result<pb::Deploy> {
        let ns = req.namespace.as_str();
        core::namespace("namespace", ns, false)?;
        core::dns_label("applicationSpec.instanceName", &req.instance)?;
        label_value("applicationSpec.appName", &req.app_name)?;
        core::bounded("applicationSpec.appID", req.app_id, i32::MAX)?;
        core::bounded("applicationSpec.groupID", req.group_id, i32::MAX)?;
        if let Some(r) = req.replicas {
            core::bounded("applicationSpec.replicas", r, 100_000)?;
        }
        let s = req.strategy.as_ref().ok_or_else(|| {
            FieldError::new(
                "strategy",
                "must be set (batchSize, batches, batchIntervalSeconds, mode, canary)",
            )
        })?;
        let body = update_strategy(s)?;
        if let Some(t) = &req.template {
            // In place: see `convert::instance`.
            <PodTemplateSpec as serde::Deserialize>::deserialize(t).map_err(|e| {
                FieldError::new(
                    "applicationSpec.template",
                    format!("not a pod template: {e}"),
                )
            })?;
            if t["spec"]["containers"]
                .as_array()
                .is_none_or(|c| c.is_empty())
            {
                return Err(FieldError::new(
                    "applicationSpec.template.spec.containers",
                    "must name at least one container",
                )
                .into());
            }
        }
        let _starting = self.starting(ns, &req.instance)?;
        let existing = self.cached_cs(ns, &req.instance);
        let mut id = Identity {
            app_id: req.app_id as i64,
            group_id: req.group_id as i64,
            app_name: req.app_name.clone(),
            instance: req.instance.clone(),
        };
        let (action, template, replicas) = match &existing {
            None => (
                Action::Create,
                req.template.clone().ok_or_else(|| {
                    FieldError::new(
                        "applicationSpec.template",
                        format!(
                            "must be set: application {ns}/{} does not exist yet",
                            req.instance
                        ),
                    )
                })?,
                req.replicas.unwrap_or(1),
            ),
            Some(cs) => {
                let view = CloneSetView::from_raw(cs).unwrap_or_default();
                id = identity_for_update(id, view.template_labels())?;
                core::may_start(
                    self.holder(ns, &req.instance, Some(&view)).as_ref(),
                    Action::Update,
                )?;
                (
                    Action::Update,
                    req.template
                        .clone()
                        .unwrap_or_else(|| cs.data["spec"]["template"].clone()),
                    req.replicas.unwrap_or(view.spec.replicas),
                )
            }
        };
        if existing.is_none() {
            core::may_start(
                self.holder(ns, &req.instance, None).as_ref(),
                Action::Create,
            )?;
        }
        let mut manifest = generated(ns, id, action, replicas, template, ("updateStrategy", body));
        manifest["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!(req.last_applied.to_string());
        let name = self.create(ns, manifest).await?;
        self.get(ns, &name).await.or_else(|_| {
            Ok(pb::Deploy {
                namespace: ns.into(),
                name,
                ..Default::default()
            })
        })
    }

    // ---- Pods -------------------------------------------------------------------------------

    pub fn pod_get(&self, ns: &str, name: &str) -> Result<podpb::PodInfo> {
        let p = self
            .pods
            .get(&ObjectRef::new(name).within(ns))
            .ok_or_else(|| ApiError::NotFound(format!("pod {ns}/{name} not found (the API serves pods labelled {MANAGED_BY_LABEL}={MANAGED_BY_VALUE})")))?;
        Ok(convert::pod(&p))
    }

    /// Pods of a namespace (every namespace for ""), of one instance, of one IP; newest first
    /// unless `no_sort` (§9 item 3: the original's list was always empty).
    pub fn pod_gets(&self, f: &podpb::PodFilter, no_sort: bool) -> Result<Vec<podpb::PodInfo>> {
        core::namespace("filter.namespace", &f.namespace, true)?;
        if !f.instance_name.is_empty() {
            core::dns_label("filter.instanceName", &f.instance_name)?;
        }
        let mut pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| f.namespace.is_empty() || p.namespace().as_deref() == Some(&f.namespace))
            .filter(|p| {
                f.instance_name.is_empty()
                    || p.labels().get(INSTANCE_LABEL) == Some(&f.instance_name)
            })
            .filter(|p| {
                f.ip.is_empty()
                    || p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(&f.ip)
            })
            .collect();
        if !no_sort {
            pods.sort_by(|a, b| {
                b.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&a.metadata.creation_timestamp.as_ref().map(|t| t.0))
                    .then_with(|| a.name_any().cmp(&b.name_any()))
            });
        }
        Ok(pods.iter().map(|p| convert::pod(p)).collect())
    }
}

struct StartingGuard<'a> {
    ctx: &'a ApiContext,
    key: (String, String),
}

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        self.ctx.starting.lock().expect("lock").remove(&self.key);
    }
}

/// Pause, Resume or Cancel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    Pause,
    Resume,
    Cancel,
}

/// Restart, or Scale to a number of replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonUpdate {
    Restart,
    Scale(i32),
}

/// An Apply request, from gRPC's CreateRequest or REST's body.
#[derive(Clone, Debug, Default)]
pub struct ApplyRequest {
    pub namespace: String,
    pub app_id: i32,
    pub group_id: i32,
    pub app_name: String,
    pub instance: String,
    pub replicas: Option<i32>,
    pub template: Option<Value>,
    pub strategy: Option<pb::UpdateStrategy>,
    /// The request's application spec, kept in the last-applied annotation as the original.
    pub last_applied: Value,
}

/// The DeployFlow list filter (reference §4.3).
struct Filter {
    namespace: String,
    instance: String,
    action: Option<Action>,
    after: Option<i64>,
}

impl Filter {
    fn new(f: &pb::DeployFilter, prefix: &str) -> Result<Self> {
        core::namespace(&format!("{prefix}namespace"), &f.namespace, true)?;
        if !f.instance_name.is_empty() {
            core::dns_label(&format!("{prefix}instanceName"), &f.instance_name)?;
        }
        let action = core::action(&format!("{prefix}action"), &f.action)?;
        core::page(prefix, f.start, f.page_size)?;
        Ok(Filter {
            namespace: f.namespace.clone(),
            instance: f.instance_name.clone(),
            action,
            after: f.after.as_ref().map(|t| t.seconds),
        })
    }

    /// The namespace test on the raw object (before decoding it).
    fn in_namespace(&self, raw: &RawDeployFlow) -> bool {
        self.namespace.is_empty() || raw.metadata.namespace.as_deref() == Some(&self.namespace)
    }

    fn matches(&self, df: &DeployFlow) -> bool {
        if !self.namespace.is_empty() && df.namespace().as_deref() != Some(&self.namespace) {
            return false;
        }
        if !self.instance.is_empty() && df.spec.application.instance_name != self.instance {
            return false;
        }
        if self.action.is_some_and(|a| a != df.spec.action) {
            return false;
        }
        if let Some(after) = self.after {
            let t = df
                .status
                .as_ref()
                .and_then(|s| s.updated_at.as_ref())
                .or(df.metadata.creation_timestamp.as_ref())
                .map_or(0, |t| t.0.as_second());
            if t < after {
                return false;
            }
        }
        true
    }
}

struct Listed(DeployFlow);

impl core::Listed for Listed {
    fn created(&self) -> i64 {
        self.0
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second())
    }
    fn name(&self) -> &str {
        self.0.metadata.name.as_deref().unwrap_or("")
    }
}

/// Strategy fields that fit the release's action: stages and canaries belong to create, update
/// and rollback; podsToDelete to restart and scale, and only before the release has started
/// (its work is sized at the start).
fn fields_fit(live: &DeployFlow, fields: &Value) -> Result<()> {
    let has = |k: &str| fields.get(k).is_some();
    let action = convert::action_str(live);
    if live.spec.action.is_revision_changing() {
        if has("podsToDelete") {
            return Err(FieldError::new(
                "podsToDelete",
                format!("a {action} release deletes no named pods"),
            )
            .into());
        }
    } else {
        for k in ["stage", "canary", "noPullIn"] {
            if has(k) {
                return Err(FieldError::new(k, format!("a {action} release has no {k}")).into());
            }
        }
        let phase = phase(live);
        if has("podsToDelete") && !(phase.is_empty() || phase == "Pending") {
            return Err(Refusal::Other(format!(
                "podsToDelete cannot change once the release has started (phase {phase})"
            ))
            .into());
        }
    }
    Ok(())
}

/// A label value (an appName is the label `app.kubernetes.io/name`).
fn label_value(field: &str, s: &str) -> Result<(), FieldError> {
    let ok = s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && (s.is_empty()
            || (s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{s:?} is not a label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
            ),
        ))
    }
}

/// A batch size as the CRD stores it: a number when the request gave digits, else a percent.
fn batch_size_json(field: &str, s: &str) -> Result<Value> {
    Ok(match core::batch_size(field, s)? {
        None => Value::Null,
        Some(triton_core::release::BatchSize::Count(n)) => json!(n),
        Some(triton_core::release::BatchSize::Percent(_)) => json!(s),
    })
}

/// A NonUpdateStrategy request as the DeployFlow's `nonUpdateStrategy`.
pub fn non_update_strategy(s: &pb::NonUpdateStrategy) -> Result<Value> {
    core::mode("strategy.mode", &s.mode)?;
    let mut v = json!({
        "batchSize": batch_size_json("strategy.batchSize", &s.batch_size)?,
        "batches": core::bounded("strategy.batches", s.batches, 100_000)?,
        "batchIntervalSeconds": core::bounded("strategy.batchIntervalSeconds", s.batch_interval_seconds, 604_800)?,
    });
    if !s.mode.is_empty() {
        v["mode"] = json!(s.mode);
    }
    if !s.pods_to_delete.is_empty() {
        for (i, p) in s.pods_to_delete.iter().enumerate() {
            core::object_name(&format!("strategy.podsToDelete[{i}]"), p)?;
        }
        v["podsToDelete"] = json!(s.pods_to_delete);
    }
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    Ok(v)
}

/// An UpdateStrategy request as the DeployFlow's `updateStrategy`.
pub fn update_strategy(s: &pb::UpdateStrategy) -> Result<Value> {
    core::mode("strategy.mode", &s.mode)?;
    core::stage("strategy.stage", &s.stage)?;
    let mut v = json!({
        "batchSize": batch_size_json("strategy.batchSize", &s.batch_size)?,
        "batches": core::bounded("strategy.batches", s.batches, 100_000)?,
        "batchIntervalSeconds": core::bounded("strategy.batchIntervalSeconds", s.batch_interval_seconds, 604_800)?,
        "canary": core::bounded("strategy.canary", s.canary, 100_000)?,
        "noPullIn": s.no_pull_in,
    });
    if !s.mode.is_empty() {
        v["mode"] = json!(s.mode);
    }
    if !s.stage.is_empty() {
        v["stage"] = json!(s.stage);
    }
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    Ok(v)
}

/// The identity of an update: the request's, with what it leaves out (0, "") taken from the
/// CloneSet's pod labels; a value that differs from them is refused (the labels are in the
/// CloneSet's selector, which cannot change).
fn identity_for_update(
    mut id: Identity,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<Identity> {
    let (app, group, name) = convert::app_identity(labels);
    for (field, given, have, label) in [
        ("applicationSpec.appID", &mut id.app_id, app, APP_LABEL),
        (
            "applicationSpec.groupID",
            &mut id.group_id,
            group,
            GROUP_LABEL,
        ),
    ] {
        if *given == 0 {
            *given = have;
        } else if labels.contains_key(label) && *given != have {
            return Err(FieldError::new(
                field,
                format!("{given} differs from the application's label {label}={have}; an update cannot change it"),
            )
            .into());
        }
    }
    if id.app_name.is_empty() {
        id.app_name = name;
    } else if labels.contains_key(NAME_LABEL) && id.app_name != name {
        return Err(FieldError::new(
            "applicationSpec.appName",
            format!("{:?} differs from the application's label {NAME_LABEL}={name}; an update cannot change it", id.app_name),
        )
        .into());
    }
    Ok(id)
}

struct Identity {
    app_id: i64,
    group_id: i64,
    app_name: String,
    instance: String,
}

/// A DeployFlow the API creates (reference §3.1): `generateName` `<instance>-`, the default
/// labels, the application with the given template and replicas, and the strategy.
fn generated(
    ns: &str,
    id: Identity,
    action: Action,
    replicas: i32,
    template: Value,
    (key, strategy): (&str, Value),
) -> Value {
    let labels = json!({
        NAME_LABEL: id.app_name,
        INSTANCE_LABEL: id.instance,
        APP_LABEL: id.app_id.to_string(),
        GROUP_LABEL: id.group_id.to_string(),
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
    });
    let app_spec = json!({
        "appID": id.app_id, "groupID": id.group_id, "appName": id.app_name,
        "instanceName": id.instance, "replicas": replicas,
    });
    let mut application = app_spec.clone();
    application["selector"] = json!({"matchLabels": labels});
    application["template"] = template;
    json!({
        "apiVersion": "apps.triton.io/v1alpha1",
        "kind": "DeployFlow",
        "metadata": {
            "generateName": format!("{}-", id.instance),
            "namespace": ns,
            "labels": labels,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": app_spec.to_string()},
        },
        "spec": {
            "action": action,
            "application": application,
            key: strategy,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use triton_core::release::BatchPhase;

    #[test]
    fn strategies_are_validated_field_by_field() {
        let bad = pb::NonUpdateStrategy {
            batch_size: "x".into(),
            ..Default::default()
        };
        let e = non_update_strategy(&bad).unwrap_err();
        assert!(e.to_string().starts_with("strategy.batchSize:"), "{e}");
        let bad = pb::NonUpdateStrategy {
            batches: -1,
            ..Default::default()
        };
        assert!(
            non_update_strategy(&bad)
                .unwrap_err()
                .to_string()
                .starts_with("strategy.batches:")
        );
        let bad = pb::UpdateStrategy {
            stage: "Smoking".into(),
            ..Default::default()
        };
        assert!(
            update_strategy(&bad)
                .unwrap_err()
                .to_string()
                .starts_with("strategy.stage:")
        );
        let ok = pb::NonUpdateStrategy {
            batch_size: "1".into(),
            batches: 1,
            batch_interval_seconds: 10,
            pods_to_delete: vec!["p-1".into()],
            ..Default::default()
        };
        assert_eq!(
            non_update_strategy(&ok).unwrap(),
            json!({"batchSize": 1, "batches": 1, "batchIntervalSeconds": 10, "podsToDelete": ["p-1"]})
        );
        let pct = pb::UpdateStrategy {
            batch_size: "50%".into(),
            mode: "auto".into(),
            ..Default::default()
        };
        assert_eq!(update_strategy(&pct).unwrap()["batchSize"], json!("50%"));
    }

    #[test]
    fn a_generated_deployflow_carries_the_default_labels_and_decodes() {
        let m = generated(
            "ns",
            Identity {
                app_id: 12122,
                group_id: 10010,
                app_name: "sample".into(),
                instance: "i".into(),
            },
            Action::ScaleIn,
            2,
            json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
            ("nonUpdateStrategy", json!({"batchSize": 1})),
        );
        assert_eq!(m["metadata"]["generateName"], "i-");
        assert_eq!(m["metadata"]["labels"]["app"], "12122");
        assert_eq!(m["spec"]["action"], "scale_in");
        let mut named = m.clone();
        named["metadata"]["name"] = json!("i-x");
        let df: DeployFlow = serde_json::from_value(named).expect("a DeployFlow");
        assert_eq!(
            df.spec.application.selector.match_labels.unwrap()["group"],
            "10010"
        );
    }

    fn typed(action: &str, phase: &str) -> DeployFlow {
        serde_json::from_value(json!({"metadata": {"name": "d", "namespace": "n"},
            "spec": {"action": action, "application": {"appID": 1, "groupID": 1, "appName": "a",
                "instanceName": "i", "selector": {}, "template": {}, "replicas": 3}},
            "status": {"phase": phase}}))
        .unwrap()
    }

    #[test]
    fn strategy_fields_must_fit_the_action() {
        let e = fields_fit(
            &typed("restart", "BatchStarted"),
            &json!({"stage": "Baked"}),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("stage:"), "{e}");
        let e = fields_fit(
            &typed("update", "BatchStarted"),
            &json!({"podsToDelete": ["p"]}),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("podsToDelete:"), "{e}");
        let e = fields_fit(
            &typed("scale_in", "BatchStarted"),
            &json!({"podsToDelete": ["p"]}),
        )
        .unwrap_err();
        assert!(matches!(e, ApiError::Refused(_)), "{e}");
        assert!(
            fields_fit(
                &typed("scale_in", "Pending"),
                &json!({"podsToDelete": ["p"]})
            )
            .is_ok()
        );
        assert!(
            fields_fit(
                &typed("update", "BatchStarted"),
                &json!({"stage": "Baked", "paused": true})
            )
            .is_ok()
        );
    }

    #[test]
    fn an_update_takes_the_identity_it_leaves_out_from_the_cloneset_and_refuses_another() {
        let labels: std::collections::BTreeMap<String, String> = [
            ("app".to_string(), "7".to_string()),
            ("group".to_string(), "8".to_string()),
            (NAME_LABEL.to_string(), "web".to_string()),
        ]
        .into();
        let id = |app_id, app_name: &str| Identity {
            app_id,
            group_id: 0,
            app_name: app_name.into(),
            instance: "i".into(),
        };
        let got = identity_for_update(id(0, ""), &labels).unwrap();
        assert_eq!(
            (got.app_id, got.group_id, got.app_name.as_str()),
            (7, 8, "web")
        );
        let e = identity_for_update(id(9, ""), &labels).err().unwrap();
        assert!(e.to_string().starts_with("applicationSpec.appID:"), "{e}");
        let e = identity_for_update(id(7, "other"), &labels).err().unwrap();
        assert!(e.to_string().starts_with("applicationSpec.appName:"), "{e}");
        let big = identity_for_update(
            id(3_000_000_000, ""),
            &[("app".to_string(), "3000000000".to_string())].into(),
        )
        .unwrap();
        assert_eq!(big.app_id, 3_000_000_000, "appIDs beyond i32 survive");
    }

    #[test]
    fn label_values() {
        assert!(label_value("f", "").is_ok());
        assert!(label_value("f", "sample_app.v1").is_ok());
        assert!(label_value("f", "-x").is_err());
        assert!(label_value("f", "a b").is_err());
    }

    #[test]
    fn meta_names_the_missing_field() {
        assert_eq!(
            meta("deploy", None).unwrap_err().to_string(),
            "deploy: must be set (namespace and name)"
        );
        assert!(
            meta("deploy", Some(("default", "")))
                .unwrap_err()
                .to_string()
                .starts_with("deploy.name:")
        );
        assert!(
            meta("deploy", Some(("", "x")))
                .unwrap_err()
                .to_string()
                .starts_with("deploy.namespace:")
        );
    }

    #[test]
    fn release_state_reads_the_last_batch_and_the_spec_target() {
        let df: DeployFlow = serde_json::from_value(json!({"metadata": {"name": "d", "namespace": "n"},
            "spec": {"action": "create", "application": {"appID": 1, "groupID": 1, "appName": "a", "instanceName": "i",
                "selector": {}, "template": {}, "replicas": 3},
                "updateStrategy": {"stage": "Baking", "batches": 1, "mode": "auto"}},
            "status": {"batches": 3, "conditions": [
                {"batch": 1, "batchSize": 1, "canary": true, "phase": "Baked"},
                {"batch": 2, "batchSize": 1, "canary": false, "phase": "Smoking"}]}})).unwrap();
        let s = release_state(&df);
        assert_eq!(s.current.unwrap().batch, 2);
        assert_eq!(s.stage, Some(BatchPhase::Baking));
        assert!(s.auto);
        assert_eq!(s.total_batches, 3);
    }
}
