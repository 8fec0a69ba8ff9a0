//! The DeployFlow reconciler: one step of the release state machine per call, all progress in
//! the DeployFlow's status (so a restart resumes where it stopped). The arithmetic lives in
//! `triton_core::release`; this module reads the cluster and writes the steps' effects.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use triton_core::names::*;
use triton_core::release::{
    self, Action, BatchPhase, BatchStep, CloneSetTarget, CurrentBatch, DeployPhase, Desired,
    PodObservation, SmokeVerdict,
};

use crate::crd::{BatchCondition, DeployFlow, DeployFlowStatus, PodInfo};
use crate::metrics::Metrics;
use crate::observe::{self, CloneSetView, PULL_IN_FAILED, PULL_IN_SUCCEEDED};

/// Field manager of every write.
pub const MANAGER: &str = "triton-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading CloneSet {name}: {source}")]
    GetCloneSet {
        name: String,
        #[source]
        source: kube::Error,
    },
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
    #[error("writing the status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("CloneSet {0} is not controlled by this DeployFlow")]
    NotOwned(String),
    #[error("DeployFlow has no namespace")]
    NoNamespace,
}

impl Error {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::GetCloneSet { .. }
            | Error::PatchCloneSet { .. }
            | Error::CreateCloneSet { .. } => "cloneset",
            Error::FlipGate { .. } => "pod",
            Error::PatchStatus(_) => "status",
            Error::NotOwned(_) | Error::NoNamespace => "state",
        }
    }
}

pub struct Context {
    pub client: Client,
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub deployflows: std::sync::OnceLock<Store<DeployFlow>>,
    pub recorder: Recorder,
    pub metrics: Metrics,
}

pub fn cloneset_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(KRUISE_GROUP, "v1alpha1", CLONESET_KIND),
        "clonesets",
    )
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn since(t: &Time) -> Duration {
    let d = Timestamp::now().duration_since(t.0);
    Duration::from_secs_f64(d.as_secs_f64().max(0.0))
}

/// The label set Triton puts on the CloneSet, its selector and its pods (reference §4.4).
pub fn default_labels(df: &DeployFlow) -> serde_json::Map<String, Value> {
    let app = &df.spec.application;
    let mut m = serde_json::Map::new();
    m.insert("app.kubernetes.io/name".into(), json!(app.app_name));
    m.insert(
        "app.kubernetes.io/instance".into(),
        json!(app.instance_name),
    );
    m.insert("app".into(), json!(app.app_id.to_string()));
    m.insert("group".into(), json!(app.group_id.to_string()));
    m.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY_VALUE));
    m
}

fn owner_ref(df: &DeployFlow) -> Value {
    json!({
        "apiVersion": "apps.triton.io/v1alpha1", "kind": "DeployFlow",
        "name": df.name_any(), "uid": df.uid().unwrap_or_default(),
        "controller": true, "blockOwnerDeletion": true
    })
}

/// The pod template of the CloneSet: the user's, with the default labels. The readiness gate
/// is not written here: the webhook injects it at pod creation (DESIGN §2, decision 1).
fn template(df: &DeployFlow) -> Value {
    let mut t = serde_json::to_value(&df.spec.application.template).unwrap_or_else(|_| json!({}));
    if !t.is_object() {
        t = json!({});
    }
    let meta = t
        .as_object_mut()
        .unwrap()
        .entry("metadata")
        .or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    let labels = meta
        .as_object_mut()
        .unwrap()
        .entry("labels")
        .or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    for (k, v) in default_labels(df) {
        labels.as_object_mut().unwrap().insert(k, v);
    }
    t
}

struct Step<'a> {
    df: &'a DeployFlow,
    ns: String,
    cs_name: String,
    ctx: &'a Context,
    status: DeployFlowStatus,
}

pub async fn reconcile(df: Arc<DeployFlow>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let ns = df.namespace().ok_or(Error::NoNamespace)?;
    let before = df.status.clone().unwrap_or_default();
    if before.finished {
        return Ok(Requeue::await_change());
    }
    let mut step = Step {
        df: &df,
        ns,
        cs_name: df.spec.application.instance_name.clone(),
        ctx: &ctx,
        status: before.clone(),
    };
    let result = step.run().await;
    if step.status != before {
        step.status.updated_at = Some(now());
        step.status.observed_generation = df.metadata.generation;
        let patch = json!({"status": step.status});
        Api::<DeployFlow>::namespaced(ctx.client.clone(), &step.ns)
            .patch_status(
                &df.name_any(),
                &PatchParams::apply(MANAGER),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(Error::PatchStatus)?;
        if step.status.phase != before.phase {
            ctx.metrics.transition(step.status.phase, started.elapsed());
            let (type_, reason) = match step.status.phase {
                DeployPhase::Success => (EventType::Normal, "Deployed"),
                DeployPhase::Failed | DeployPhase::Aborted => (EventType::Warning, "Unhealthy"),
                _ => (EventType::Normal, "PhaseChanged"),
            };
            let note = match (&step.status.phase, &step.status.message) {
                (DeployPhase::Success, _) => "DeployFlow is finished successfully".to_string(),
                (p, Some(m)) => format!("{} -> {}: {m}", before.phase.as_str(), p.as_str()),
                (p, None) => format!("{} -> {}", before.phase.as_str(), p.as_str()),
            };
            step.event(type_, reason, &note).await;
        }
        let (b0, b1) = (
            before.current().map(|c| (c.batch, c.phase)),
            step.status.current().map(|c| (c.batch, c.phase)),
        );
        if b0 != b1
            && let Some((batch, phase)) = b1
        {
            let type_ = if phase.is_failed() {
                EventType::Warning
            } else {
                EventType::Normal
            };
            let note = match &step.status.message {
                Some(m) if phase.is_failed() => format!("batch {batch} {phase:?}: {m}"),
                _ => format!("batch {batch} {phase:?}"),
            };
            step.event(
                type_,
                if phase.is_failed() {
                    "BatchFailed"
                } else {
                    "BatchPhaseChanged"
                },
                &note,
            )
            .await;
        }
    }
    ctx.metrics.reconciled(started.elapsed());
    result
}

pub fn error_policy(df: Arc<DeployFlow>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.api_error(error.category());
    tracing::warn!(deployflow = %df.name_any(), namespace = ?df.namespace(), %error, "reconcile failed; retrying");
    // A Warning Event on the DeployFlow for every failure (the recorder folds repeats into a series).
    let (recorder, reference, note) = (ctx.recorder.clone(), df.object_ref(&()), error.to_string());
    tokio::spawn(async move {
        let ev = Event {
            type_: EventType::Warning,
            reason: "Unhealthy".into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&ev, &reference).await {
            tracing::debug!(%error, "publishing an event failed");
        }
    });
    Requeue::requeue(Duration::from_secs(2))
}

impl Step<'_> {
    fn spec(&self) -> &crate::crd::DeployFlowSpec {
        &self.df.spec
    }

    async fn event(&self, type_: EventType, reason: &str, note: &str) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self
            .ctx
            .recorder
            .publish(&ev, &self.df.object_ref(&()))
            .await
        {
            tracing::debug!(%error, "publishing an event failed");
        }
    }

    fn clonesets(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.ctx.client.clone(), &self.ns, &cloneset_resource())
    }

    async fn cloneset(&self) -> Result<Option<(CloneSetView, Value)>, Error> {
        let obj = self
            .clonesets()
            .get_opt(&self.cs_name)
            .await
            .map_err(|source| Error::GetCloneSet {
                name: self.cs_name.clone(),
                source,
            })?;
        Ok(obj.map(|o| {
            let v = serde_json::to_value(&o).unwrap_or_default();
            (CloneSetView::from_value(v.clone()).unwrap_or_default(), v)
        }))
    }

    fn owns(&self, cs: &CloneSetView) -> bool {
        cs.controller_deployflow()
            .is_some_and(|(_, uid)| Some(uid) == self.df.uid().as_deref())
    }

    async fn owned_cloneset(&self) -> Result<CloneSetView, Error> {
        match self.cloneset().await? {
            Some((cs, _)) if self.owns(&cs) => Ok(cs),
            _ => Err(Error::NotOwned(self.cs_name.clone())),
        }
    }

    async fn patch_cloneset(&self, patch: Value) -> Result<(), Error> {
        self.clonesets()
            .patch(
                &self.cs_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|source| Error::PatchCloneSet {
                name: self.cs_name.clone(),
                source,
            })?;
        Ok(())
    }

    async fn apply_target(&self, t: CloneSetTarget, extra: Value) -> Result<(), Error> {
        let mut spec = extra;
        if let Some(r) = t.replicas {
            spec["replicas"] = json!(r);
        }
        if let Some(p) = t.partition {
            spec["updateStrategy"]["partition"] = json!(p);
        }
        if spec.as_object().is_some_and(|m| m.is_empty()) {
            return Ok(());
        }
        self.patch_cloneset(json!({"spec": spec})).await
    }

    fn batch_step(&self, size: i32) -> BatchStep {
        let extra = self.extra();
        BatchStep {
            action: self.spec().action,
            replicas: self.spec().application.replicas,
            size,
            updated_at_start: extra.updated_at_start,
            finished: self.status.finished_replicas,
            replicas_at_start: extra.replicas_at_start,
        }
    }

    /// The CloneSet's counts when the release started (see `StartCounts`).
    fn extra(&self) -> StartCounts {
        StartCounts::from_status(&self.status, self.spec().application.replicas)
    }

    fn refresh(&mut self, cs: &CloneSetView) {
        self.status.replicas = cs.status.replicas;
        self.status.available_replicas = cs.status.available_replicas;
        self.status.updated_replicas = cs.status.updated_replicas;
        self.status.updated_ready_replicas = cs.status.updated_ready_replicas;
        self.status.update_revision = cs.status.update_revision.clone();
    }

    fn set_phase(&mut self, phase: DeployPhase, message: Option<String>) {
        self.status.phase = phase;
        self.status.message = message;
        if phase.is_terminal() {
            self.status.finished = true;
            self.status.finished_at = Some(now());
        }
    }

    fn current(&self) -> Option<CurrentBatch> {
        self.status.current().map(|c| CurrentBatch {
            batch: c.batch,
            phase: c.phase,
            canary: c.canary,
        })
    }

    fn desired(&self) -> Desired {
        Desired {
            stage: self.spec().stage(),
            batches: self.spec().base().batches,
            auto: self.spec().auto(),
            canary_enabled: self.spec().canary() > 0,
        }
    }

    fn pods(&self) -> Vec<Pod> {
        let instance = &self.spec().application.instance_name;
        self.ctx
            .pods
            .state()
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(&self.ns))
            .filter(|p| p.labels().get("app.kubernetes.io/instance") == Some(instance))
            .map(|p| (**p).clone())
            .collect()
    }

    async fn run(&mut self) -> Result<Requeue, Error> {
        if self.status.phase.weight() < DeployPhase::BatchFinished.weight()
            && let Some(requeue) = self.interrupts().await?
        {
            return Ok(requeue);
        }
        match self.status.phase {
            DeployPhase::New => {
                self.set_phase(DeployPhase::Pending, None);
                Ok(Requeue::await_change())
            }
            DeployPhase::Pending if !self.status.paused => self.pending().await,
            DeployPhase::Initializing => self.initializing().await,
            DeployPhase::BatchStarted if !self.status.paused => self.batch_started().await,
            DeployPhase::BatchFinished => self.batch_finished().await,
            _ => Ok(Requeue::await_change()),
        }
    }

    /// Cancel, pause and resume (reference §2.8, DESIGN §2 decisions 4 and 5).
    async fn interrupts(&mut self) -> Result<Option<Requeue>, Error> {
        let base = self.spec().base();
        if base.canceled {
            self.cancel().await?;
            return Ok(Some(Requeue::await_change()));
        }
        let Some(want) = base.paused else {
            return Ok(None);
        };
        if want == self.status.paused {
            return Ok(None);
        }
        if !want && self.status.current().is_some_and(|c| c.phase.is_failed()) {
            // Resume only once the failure cleared.
            let failing: Vec<String> = self
                .batch_pods()
                .iter()
                .filter(|p| observe::is_failing(p))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            let unpulled = self
                .status
                .current()
                .is_some_and(|c| c.phase == BatchPhase::BakeFailed);
            if !failing.is_empty() {
                let msg = format!("resume refused: pods still failing: {}", failing.join(", "));
                if self.status.message.as_deref() != Some(&msg) {
                    self.event(EventType::Warning, "ResumeRefused", &msg).await;
                    self.status.message = Some(msg);
                }
                return Ok(Some(Requeue::await_change()));
            }
            let cur = self.status.current_mut().unwrap();
            cur.phase = if unpulled {
                BatchPhase::Smoked
            } else {
                BatchPhase::Smoking
            };
            cur.failed_replicas = 0;
            cur.pulled_in_at = None;
            self.status.message = None;
        }
        if self.cloneset().await?.is_some_and(|(cs, _)| self.owns(&cs)) {
            self.patch_cloneset(json!({"spec": {"updateStrategy": {"paused": want}}}))
                .await?;
        }
        self.status.paused = want;
        Ok(Some(Requeue::await_change()))
    }

    async fn cancel(&mut self) -> Result<(), Error> {
        let size = self
            .status
            .current()
            .filter(|c| c.phase != BatchPhase::Baked)
            .map_or(0, |c| c.batch_size);
        if let Some((cs, _)) = self.cloneset().await?
            && self.owns(&cs)
        {
            // Pull the un-baked batch out of the Services, then remove the surge / the batch.
            let names: Vec<String> = self
                .status
                .current()
                .filter(|c| c.phase != BatchPhase::Baked)
                .and_then(|c| c.pods.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.name)
                .collect();
            for pod in self
                .pods()
                .iter()
                .filter(|p| p.metadata.name.as_ref().is_some_and(|n| names.contains(n)))
            {
                self.set_gate(pod, "False", "Canceled").await?;
            }
            let step = self.batch_step(size);
            self.apply_target(release::cancel_target(step), json!({"updateStrategy": {"paused": false}, "scaleStrategy": {"podsToDelete": null}})).await?;
            self.release_ownership().await?;
        }
        let at = self
            .status
            .current()
            .map(|c| format!("batch {} ({:?})", c.batch, c.phase))
            .unwrap_or_else(|| "before the first batch".into());
        self.set_phase(DeployPhase::Canceled, Some(format!("canceled at {at}")));
        Ok(())
    }

    async fn release_ownership(&self) -> Result<(), Error> {
        let Some((cs, raw)) = self.cloneset().await? else {
            return Ok(());
        };
        if !self.owns(&cs) {
            return Ok(());
        }
        let uid = self.df.uid().unwrap_or_default();
        let remaining: Vec<Value> = raw["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["uid"] != json!(uid))
            .collect();
        let rv = raw["metadata"]["resourceVersion"].clone();
        self.patch_cloneset(
            json!({"metadata": {"ownerReferences": remaining, "resourceVersion": rv}}),
        )
        .await
    }

    async fn pending(&mut self) -> Result<Requeue, Error> {
        let action = self.spec().action;
        let existing = self.cloneset().await?;
        // The CloneSet's size before we touch it: the base of scale targets and of cancel.
        self.status.replicas_at_start =
            Some(existing.as_ref().map_or(0, |(cs, _)| cs.spec.replicas));
        match (action, existing) {
            (Action::Create, None) => self.create_cloneset().await?,
            (Action::Create, Some((cs, _))) if self.owns(&cs) => {}
            (Action::Create, Some(_)) => {
                self.set_phase(
                    DeployPhase::Failed,
                    Some(format!(
                        "CloneSet {} already exists; use action update",
                        self.cs_name
                    )),
                );
                return Ok(Requeue::await_change());
            }
            (_, None) => {
                self.set_phase(
                    DeployPhase::Failed,
                    Some(format!(
                        "CloneSet {} not found; use action create",
                        self.cs_name
                    )),
                );
                return Ok(Requeue::await_change());
            }
            (_, Some((cs, raw))) => {
                if !self.owns(&cs)
                    && let Some((name, uid)) = cs.controller_deployflow()
                {
                    let other = self.ctx.deployflows.get().and_then(|s| {
                        s.state()
                            .into_iter()
                            .find(|d| d.uid().as_deref() == Some(uid) && d.name_any() == name)
                    });
                    if let Some(other) =
                        other.filter(|d| !d.status.as_ref().is_some_and(|s| s.finished))
                    {
                        let other_paused = other.status.as_ref().is_some_and(|s| s.paused);
                        if !(other_paused && action.is_revision_changing()) {
                            self.status.message = Some(format!(
                                "waiting for DeployFlow {name}, which is still releasing this CloneSet"
                            ));
                            return Ok(Requeue::requeue(Duration::from_secs(5)));
                        }
                        self.abort(&other).await?;
                    }
                }
                self.adopt(&cs, &raw).await?;
            }
        }
        if !action.is_revision_changing() {
            let mut names: Vec<String> = self
                .pods()
                .iter()
                .filter(|p| !observe::is_terminating(p))
                .map(|p| p.name_any())
                .collect();
            names.sort();
            self.status.pods_at_start = Some(names);
        }
        self.status.started_at = Some(now());
        self.set_phase(DeployPhase::Initializing, None);
        Ok(Requeue::await_change())
    }

    async fn abort(&self, other: &DeployFlow) -> Result<(), Error> {
        let api = Api::<DeployFlow>::namespaced(self.ctx.client.clone(), &self.ns);
        let patch = json!({"status": {"phase": "Aborted", "finished": true, "finishedAt": now(),
            "message": format!("aborted by DeployFlow {}", self.df.name_any())}});
        api.patch_status(
            &other.name_any(),
            &PatchParams::apply(MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::PatchStatus)?;
        Ok(())
    }

    async fn create_cloneset(&self) -> Result<(), Error> {
        let labels = default_labels(self.df);
        let cs = json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": self.cs_name, "namespace": self.ns, "labels": labels, "ownerReferences": [owner_ref(self.df)]},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": template(self.df),
                "updateStrategy": {"type": "ReCreate", "maxSurge": "60%", "maxUnavailable": 0, "paused": false}
            }
        });
        let obj: DynamicObject = serde_json::from_value(cs).expect("a CloneSet manifest");
        self.clonesets()
            .create(
                &PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                },
                &obj,
            )
            .await
            .map_err(|source| Error::CreateCloneSet {
                name: self.cs_name.clone(),
                source,
            })?;
        Ok(())
    }

    /// Takes control of an existing CloneSet, keeping other writers' owner references; for
    /// update/rollback also writes the new template with every pod held back by the partition.
    async fn adopt(&self, cs: &CloneSetView, raw: &Value) -> Result<(), Error> {
        let uid = self.df.uid().unwrap_or_default();
        let mut refs: Vec<Value> = raw["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["controller"] != json!(true) && r["uid"] != json!(uid))
            .collect();
        refs.push(owner_ref(self.df));
        let mut spec = json!({"updateStrategy": {"paused": false}});
        if self.spec().action.is_revision_changing() {
            let r = self.spec().application.replicas;
            spec = json!({
                "replicas": r,
                "template": template(self.df),
                "updateStrategy": {"paused": false, "partition": r, "maxSurge": "60%", "maxUnavailable": 0}
            });
        }
        let _ = cs;
        self.patch_cloneset(json!({
            "metadata": {"ownerReferences": refs, "resourceVersion": raw["metadata"]["resourceVersion"]},
            "spec": spec
        }))
        .await
    }

    async fn initializing(&mut self) -> Result<Requeue, Error> {
        let cs = self.owned_cloneset().await?;
        if !cs.caught_up() {
            return Ok(Requeue::requeue(Duration::from_secs(2)));
        }
        self.refresh(&cs);
        // Pods already on the (new) update revision, once Kruise has seen the new template.
        self.status.updated_at_start = Some(if self.spec().action.is_revision_changing() {
            cs.status.updated_replicas
        } else {
            0
        });
        let spec = self.spec();
        let extra = self.extra();
        self.status.replicas_to_process = release::replicas_to_process(
            spec.action,
            spec.application.replicas,
            extra.updated_at_start,
            extra.replicas_at_start,
            spec.pods_to_delete().len(),
        );
        self.set_phase(DeployPhase::BatchStarted, None);
        Ok(Requeue::await_change())
    }

    /// Live pods attributed to the current batch.
    fn batch_pods(&self) -> Vec<Pod> {
        let names: Vec<String> = self
            .status
            .current()
            .and_then(|c| c.pods.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.name)
            .collect();
        self.pods()
            .into_iter()
            .filter(|p| {
                p.metadata.name.as_ref().is_some_and(|n| names.contains(n))
                    && !observe::is_terminating(p)
            })
            .collect()
    }

    async fn batch_started(&mut self) -> Result<Requeue, Error> {
        let was_paused = self.status.paused;
        let requeue = self.advance_batch().await?;
        if self.status.paused && !was_paused {
            // A failed batch pauses the release: the CloneSet stops updating too.
            self.patch_cloneset(json!({"spec": {"updateStrategy": {"paused": true}}}))
                .await?;
        }
        Ok(requeue)
    }

    async fn advance_batch(&mut self) -> Result<Requeue, Error> {
        let cs = self.owned_cloneset().await?;
        self.refresh(&cs);
        let Some(cur) = self.status.current().cloned() else {
            return self.prepare_batch(None);
        };
        match cur.phase {
            BatchPhase::Baked => self.prepare_batch(Some(&cur)),
            BatchPhase::Pending => {
                if cur.batch > 1
                    && !release::move_forward(self.current(), self.status.paused, self.desired())
                {
                    self.status.message = Some(format!(
                        "batch {} waits for batches >= {}",
                        cur.batch, cur.batch
                    ));
                    return Ok(Requeue::await_change());
                }
                self.apply_target(
                    release::batch_start_target(self.batch_step(cur.batch_size)),
                    json!({}),
                )
                .await?;
                let c = self.status.current_mut().unwrap();
                c.phase = BatchPhase::Smoking;
                c.started_at = Some(now());
                self.status.message = None;
                Ok(Requeue::await_change())
            }
            BatchPhase::Smoking => self.smoking(&cs, &cur),
            BatchPhase::Smoked => self.smoked(&cur).await,
            BatchPhase::Baking => {
                if cur.canary
                    && !release::move_forward(self.current(), self.status.paused, self.desired())
                {
                    return Ok(Requeue::await_change());
                }
                self.finish_batch(&cur).await
            }
            BatchPhase::SmokeFailed | BatchPhase::BakeFailed => Ok(Requeue::await_change()),
        }
    }

    fn prepare_batch(&mut self, last: Option<&BatchCondition>) -> Result<Requeue, Error> {
        let spec = self.spec().clone();
        if self.status.finished_replicas >= self.status.replicas_to_process {
            self.set_phase(DeployPhase::BatchFinished, None);
            return Ok(Requeue::await_change());
        }
        if let Some(last) = last
            && let Some(done) = &last.finished_at
            && let Some(wait) =
                release::interval_wait(spec.batch_interval(), since(done), spec.auto(), last.canary)
        {
            return Ok(Requeue::requeue(wait));
        }
        let Some(plan) = release::plan_next_batch(
            spec.application.replicas,
            self.status.replicas_to_process,
            self.status.finished_replicas,
            self.status.finished_batches,
            spec.batch_size(),
            spec.canary(),
        ) else {
            self.set_phase(DeployPhase::BatchFinished, None);
            return Ok(Requeue::await_change());
        };
        self.status.batches = plan.batches;
        let conds = self.status.conditions.get_or_insert_with(Vec::new);
        conds.push(BatchCondition {
            batch: self.status.finished_batches + 1,
            batch_size: plan.size,
            canary: plan.canary,
            phase: BatchPhase::Pending,
            ..Default::default()
        });
        Ok(Requeue::await_change())
    }

    fn smoking(&mut self, cs: &CloneSetView, cur: &BatchCondition) -> Result<Requeue, Error> {
        let action = self.spec().action;
        if action == Action::ScaleIn {
            self.status.current_mut().unwrap().phase = BatchPhase::Smoked;
            return Ok(Requeue::await_change());
        }
        let others: Vec<String> = {
            let mine: Vec<String> = cur.pods.iter().flatten().map(|p| p.name.clone()).collect();
            let earlier = self
                .status
                .pods
                .iter()
                .flatten()
                .filter(|n| !mine.contains(n))
                .cloned();
            earlier
                .chain(self.status.pods_at_start.iter().flatten().cloned())
                .collect()
        };
        let pods = self.pods();
        let revision = cs.status.update_revision.as_deref();
        let picked = observe::attribute_batch(
            &pods,
            revision,
            cur.started_at.as_ref(),
            &others,
            cur.batch_size.max(0) as usize,
        );
        let infos: Vec<PodInfo> = picked
            .iter()
            .map(|p| PodInfo {
                name: p.name_any(),
                ip: p
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default(),
                port: observe::app_port(p),
                phase: observe::pod_phase(p),
                pull_in_status: String::new(),
            })
            .collect();
        let observed: Vec<PodObservation> = picked
            .iter()
            .map(|p| PodObservation {
                name: p.name_any(),
                smoked: observe::is_smoked(p),
                failing: observe::is_failing(p),
            })
            .collect();
        let verdict = release::smoke_verdict(cur.batch_size, &observed);
        let names: Vec<String> = infos.iter().map(|p| p.name.clone()).collect();
        let all = self.status.pods.get_or_insert_with(Vec::new);
        for n in &names {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
        all.sort();
        let c = self.status.current_mut().unwrap();
        c.pods = Some(infos);
        match verdict {
            SmokeVerdict::Failed(failing) => {
                c.failed_replicas = failing.len() as i32;
                c.phase = BatchPhase::SmokeFailed;
                self.status.paused = true;
                self.status.message = Some(format!(
                    "batch {} failed its smoke test: pod(s) {} restarting and not ready; the release is paused until they recover and it is resumed",
                    cur.batch,
                    failing.join(", ")
                ));
            }
            SmokeVerdict::Smoked => {
                c.failed_replicas = 0;
                c.phase = BatchPhase::Smoked;
            }
            SmokeVerdict::Waiting => c.failed_replicas = 0,
        }
        Ok(Requeue::await_change())
    }

    async fn smoked(&mut self, cur: &BatchCondition) -> Result<Requeue, Error> {
        if cur.canary && !release::move_forward(self.current(), self.status.paused, self.desired())
        {
            return Ok(Requeue::await_change());
        }
        if self.spec().action == Action::ScaleIn {
            self.status.current_mut().unwrap().phase = BatchPhase::Baking;
            return Ok(Requeue::await_change());
        }
        let pods = self.batch_pods();
        if cur.pulled_in_at.is_none() {
            for pod in &pods {
                self.set_gate(pod, "True", "Baked").await?;
            }
            self.status.current_mut().unwrap().pulled_in_at = Some(now());
            return Ok(Requeue::requeue(self.spec().pull_in_timeout()));
        }
        // Verify the pull-in: Ready, and a ready endpoint of every Service selecting the pod.
        let services: Vec<Service> = self
            .ctx
            .services
            .state()
            .iter()
            .map(|s| (**s).clone())
            .collect();
        let slices: Vec<EndpointSlice> = self
            .ctx
            .slices
            .state()
            .iter()
            .map(|s| (**s).clone())
            .collect();
        let timed_out = cur
            .pulled_in_at
            .as_ref()
            .is_some_and(|t| since(t) >= self.spec().pull_in_timeout());
        let mut waiting = Vec::new();
        let mut infos = cur.pods.clone().unwrap_or_default();
        for info in infos.iter_mut() {
            let Some(pod) = pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(&info.name))
            else {
                info.phase = "Outdated".into();
                continue;
            };
            info.phase = observe::pod_phase(pod);
            info.ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            if info.pull_in_status == PULL_IN_SUCCEEDED {
                continue;
            }
            if !observe::is_true(pod, READY_GATE) {
                self.set_gate(pod, "True", "Baked").await?;
            }
            let check = if observe::is_true(pod, "Ready") {
                observe::pulled_in(pod, &services, &slices)
            } else {
                Err("not Ready".into())
            };
            match check {
                Ok(()) => info.pull_in_status = PULL_IN_SUCCEEDED.into(),
                Err(why) if timed_out => {
                    info.pull_in_status = PULL_IN_FAILED.into();
                    waiting.push(format!("{}: {why}", info.name));
                }
                Err(why) => waiting.push(format!("{}: {why}", info.name)),
            }
        }
        let c = self.status.current_mut().unwrap();
        c.pods = Some(infos);
        if waiting.is_empty() {
            c.phase = BatchPhase::Baking;
            self.status.message = None;
        } else if timed_out {
            c.phase = BatchPhase::BakeFailed;
            c.failed_replicas = waiting.len() as i32;
            self.status.paused = true;
            self.status.message = Some(format!(
                "pull-in failed after {:?}: {}; the release is paused",
                self.spec().pull_in_timeout(),
                waiting.join("; ")
            ));
        } else {
            self.status.message = Some(format!("pulling in: {}", waiting.join("; ")));
        }
        Ok(Requeue::await_change())
    }

    async fn finish_batch(&mut self, cur: &BatchCondition) -> Result<Requeue, Error> {
        let step = self.batch_step(cur.batch_size);
        let mut extra = json!({});
        match self.spec().action {
            Action::ScaleIn => {
                // Named pods first (exactly them), as many as this batch removes.
                let existing: Vec<String> = self
                    .pods()
                    .iter()
                    .filter(|p| !observe::is_terminating(p))
                    .map(|p| p.name_any())
                    .collect();
                let named: Vec<String> = self
                    .spec()
                    .pods_to_delete()
                    .into_iter()
                    .filter(|n| existing.contains(n))
                    .take(cur.batch_size as usize)
                    .collect();
                if !named.is_empty() {
                    extra = json!({"scaleStrategy": {"podsToDelete": named}});
                }
            }
            Action::Restart => {
                // Retire as many old pods as the batch brought up: the named ones, else any pod
                // that existed when the release started; not-Ready first.
                let at_start = self.status.pods_at_start.clone().unwrap_or_default();
                let named = self.spec().pods_to_delete();
                let mut old: Vec<Pod> = self
                    .pods()
                    .into_iter()
                    .filter(|p| !observe::is_terminating(p) && at_start.contains(&p.name_any()))
                    .filter(|p| named.is_empty() || named.contains(&p.name_any()))
                    .collect();
                old.sort_by_key(|p| (observe::is_true(p, "Ready"), p.name_any()));
                let victims: Vec<String> = old
                    .iter()
                    .take(cur.batch_size as usize)
                    .map(|p| p.name_any())
                    .collect();
                extra = json!({"scaleStrategy": {"podsToDelete": victims}});
            }
            _ => {}
        }
        self.apply_target(release::batch_finish_target(step), extra)
            .await?;
        self.status.finished_batches += 1;
        self.status.finished_replicas += cur.batch_size;
        self.status.failed_replicas += cur.failed_replicas;
        let c = self.status.current_mut().unwrap();
        c.phase = BatchPhase::Baked;
        c.finished_at = Some(now());
        Ok(Requeue::await_change())
    }

    async fn batch_finished(&mut self) -> Result<Requeue, Error> {
        let cs = self.owned_cloneset().await?;
        self.refresh(&cs);
        let r = self.spec().application.replicas;
        let settled = cs.caught_up()
            && cs.spec.replicas == r
            && cs.status.replicas == r
            && cs.status.updated_replicas == r
            && cs.status.ready_replicas == r;
        if !settled {
            self.status.message = Some(format!(
                "waiting for CloneSet {} to settle at {r}: replicas {}, updated {}, ready {}",
                self.cs_name,
                cs.status.replicas,
                cs.status.updated_replicas,
                cs.status.ready_replicas
            ));
            return Ok(Requeue::requeue(Duration::from_secs(2)));
        }
        if self.spec().action == Action::Restart || self.spec().action == Action::ScaleIn {
            self.patch_cloneset(json!({"spec": {"scaleStrategy": {"podsToDelete": null}}}))
                .await?;
        }
        self.release_ownership().await?;
        self.set_phase(DeployPhase::Success, None);
        Ok(Requeue::await_change())
    }

    /// Sets the readiness-gate condition of one pod: a status patch of that one condition, with
    /// the pod's UID as precondition; skipped when it already has that status.
    async fn set_gate(&self, pod: &Pod, status: &str, reason: &str) -> Result<(), Error> {
        set_gate(&self.ctx.client, pod, status, reason).await
    }
}

pub async fn set_gate(client: &Client, pod: &Pod, status: &str, reason: &str) -> Result<(), Error> {
    if observe::condition(pod, READY_GATE) == Some(status) || !observe::has_gate(pod) {
        return Ok(());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let patch = json!({
        "metadata": {"uid": pod.metadata.uid},
        "status": {"conditions": [{"type": READY_GATE, "status": status, "reason": reason, "lastTransitionTime": now()}]}
    });
    match Api::<Pod>::namespaced(client.clone(), &ns)
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone or replaced: nothing to flip.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(source) => Err(Error::FlipGate {
            pod: pod.name_any(),
            source,
        }),
    }
}

/// The CloneSet's counts when the release started, kept in the status (`replicasAtStart`,
/// `updatedAtStart`) so a restarted controller resumes with the same batch targets.
#[derive(Clone, Copy, Debug)]
pub struct StartCounts {
    pub replicas_at_start: i32,
    pub updated_at_start: i32,
}

impl StartCounts {
    fn from_status(status: &DeployFlowStatus, replicas: i32) -> Self {
        Self {
            replicas_at_start: status.replicas_at_start.unwrap_or(replicas),
            updated_at_start: status.updated_at_start.unwrap_or(0),
        }
    }
}
