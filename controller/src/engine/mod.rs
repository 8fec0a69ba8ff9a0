//! The release engine as pure functions: each step reads a snapshot of the cluster (a
//! [`World`]: the DeployFlow, its CloneSet, its pods, Services and EndpointSlices, the time) and
//! returns a [`Decision`]: the new status and the effects that carry it out. The executor
//! (`crate::reconcile`) applies it; nothing here talks to a server, so every decision is
//! unit-tested with fixtures (`tests.rs`).
//!
//! Effects come in two lists, and the order is the safety argument:
//! * `before` the status write: idempotent writes computed from the spec and the recorded status
//!   (create or adopt the CloneSet, set gates, cancel, release, pause in the spec). Repeating
//!   them after a crash or a stale read changes nothing. (One exception, see [`advance`]: the
//!   gates of a batch found smoked in the same run, its pods named by the recorded status.)
//! * `after` the status write: writes that act on a decision just recorded in the status (the
//!   pods a batch's finish deletes, a batch's start). The status write carries a
//!   resourceVersion precondition, so a step computed from a stale cache loses the write and
//!   never acts; a step that crashed after the write is completed by the next one from the
//!   recorded decision, never re-decided.
//!
//! Submodules follow the release's seams: [`cloneset`] (the CloneSet manifest and patches),
//! [`acquire`] (Pending and Initializing), [`batch`] (a batch's steps), [`interrupts`] (cancel,
//! pause, resume, deletion).

pub mod acquire;
pub mod batch;
pub mod cloneset;
pub mod interrupts;
#[cfg(test)]
mod tests;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::Value;
use triton_core::release::{CurrentBatch, DeployPhase, Desired};

use crate::crd::{DeployFlow, DeployFlowSpec, DeployFlowStatus};
use crate::observe::CloneSetView;

/// Another DeployFlow that holds the CloneSet (named by its release annotation).
#[derive(Clone, Debug, PartialEq)]
pub struct Holder {
    pub name: String,
    /// Not finished.
    pub running: bool,
    pub paused: bool,
}

/// What a step sees: one consistent read of the caches, and the time.
pub struct World<'a> {
    pub df: &'a DeployFlow,
    /// The CloneSet `spec.application.instanceName`, from the watch cache.
    pub cloneset: Option<&'a CloneSetView>,
    /// The pods of that instance (label `app.kubernetes.io/instance`) in the namespace.
    /// Shared with the cache (a step never copies a pod).
    pub pods: &'a [std::sync::Arc<Pod>],
    /// Services and EndpointSlices of the namespace.
    pub services: &'a [std::sync::Arc<Service>],
    pub slices: &'a [std::sync::Arc<EndpointSlice>],
    /// The other DeployFlow named by the CloneSet's release annotation, if any and not this one.
    pub holder: Option<Holder>,
    /// Pods whose gate this controller set True moments ago (the cache may not show it yet).
    pub opened: &'a [String],
    pub now: Timestamp,
}

/// A write the executor performs.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Create the CloneSet from this manifest (AlreadyExists counts as done).
    CreateCloneSet(Value),
    /// Merge-patch the CloneSet.
    PatchCloneSet(Value),
    /// Merge-patch the CloneSet to undo a hand edit: a refusal is retried (Kruise refuses a
    /// `podsToDelete` naming a pod already terminating, which the cache may not show yet), never
    /// the release's failure.
    CorrectCloneSet(Value),
    /// Set the readiness-gate condition of a pod (UID precondition; a gone pod is skipped).
    SetGate {
        pod: String,
        uid: Option<String>,
        ready: bool,
        reason: &'static str,
    },
    /// Merge-patch the DeployFlow itself (its spec), with a resourceVersion precondition.
    PatchSpec(Value),
    /// Mark another, paused DeployFlow of the same CloneSet `Aborted`.
    Abort { name: String },
    /// An Event on the DeployFlow.
    Event {
        warning: bool,
        reason: &'static str,
        note: String,
    },
}

/// The outcome of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub before: Vec<Effect>,
    pub status: DeployFlowStatus,
    pub after: Vec<Effect>,
    /// Run again after this long even without an event (timers: intervals, timeouts).
    pub requeue: Option<Duration>,
    /// The statuses [`advance`] passed through on the way to `status`, oldest first (not
    /// written; their Events, metrics and failpoints are the executor's to tell).
    pub trail: Vec<DeployFlowStatus>,
}

/// One release step of a DeployFlow that is not being deleted.
pub fn step(w: &World) -> Decision {
    let mut s = Step::new(w);
    if !s.status.finished {
        s.run();
    }
    s.decision()
}

/// Steps taken at most in one reconcile by [`advance`].
pub const MAX_HOPS: usize = 8;

/// Steps on one snapshot for as long as a step only moves the status: one status write for a
/// run of decisions that write nothing else (a batch baked, the next planned and started is one
/// write instead of four; each write costs a watch event, a reconcile and a gate check per pod).
///
/// The safety argument of [`Decision`] holds: a hop is what the next reconcile would decide on
/// the same snapshot; `before` effects come from the first hop, or, ending the run, from a hop
/// that only opens the gates of a batch it found smoked, pods the written status names (a hop
/// whose `before` writes anything else is left to the next reconcile, which decides it from the
/// recorded status); `after`
/// effects come only from the last hop, whose status is the one written. A hop that changes
/// nothing ends the run (its timer is kept).
pub fn advance(w: &World) -> Decision {
    let mut d = step(w);
    let mut from = w.df.status.clone().unwrap_or_default();
    for _ in 1..MAX_HOPS {
        if d.status == from || d.status.finished || !writes_nothing(&d.before) || !writes_nothing(&d.after) {
            break;
        }
        let mut df = w.df.clone();
        df.status = Some(d.status.clone());
        let next = step(&World {
            df: &df,
            cloneset: w.cloneset,
            pods: w.pods,
            services: w.services,
            slices: w.slices,
            holder: w.holder.clone(),
            opened: w.opened,
            now: w.now,
        });
        if next.status == d.status {
            // Waiting here: its timer counts (an interval, a timeout).
            d.requeue = match (d.requeue, next.requeue) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            break;
        }
        // A later hop's `before` writes would rest on a status not written yet: it is left to
        // the next reconcile, except gates opened for a batch the hop just found smoked whose
        // pods the written status already names (a cancel then closes them whatever happens
        // to this write; the run ends there).
        let named: Vec<&str> = w
            .df
            .status
            .as_ref()
            .and_then(|s| s.current())
            .and_then(|c| c.pods.as_ref())
            .into_iter()
            .flatten()
            .map(|p| p.name.as_str())
            .collect();
        let opens_gates = !next.before.is_empty()
            && next
                .before
                .iter()
                .all(|e| matches!(e, Effect::SetGate { ready: true, pod, .. } if named.contains(&pod.as_str())));
        if !writes_nothing(&next.before) && !opens_gates {
            break;
        }
        let Decision {
            before,
            status,
            after,
            requeue,
            trail: _,
        } = next;
        from = std::mem::replace(&mut d.status, status);
        d.trail.push(from.clone());
        d.before.extend(before);
        d.after.extend(after);
        d.requeue = requeue;
        if opens_gates {
            break;
        }
    }
    d
}

/// Whether `to` differs from `from` only in what a status tells and decides nothing: the
/// message, the CloneSet's counts, and the addresses and phases of the batch's pods. The
/// executor writes such a change at most once a second after its last write of the DeployFlow
/// (`reconcile::TELL_EVERY`): a pod going through its phases no longer costs a status write
/// each.
pub fn tells_only(from: &DeployFlowStatus, to: &DeployFlowStatus) -> bool {
    fn decisions(s: &DeployFlowStatus) -> DeployFlowStatus {
        let mut s = s.clone();
        s.message = None;
        s.updated_at = None;
        s.replicas = 0;
        s.available_replicas = 0;
        s.updated_replicas = 0;
        s.updated_ready_replicas = 0;
        for c in s.conditions.iter_mut().flatten() {
            for p in c.pods.iter_mut().flatten() {
                p.ip.clear();
                p.port = 0;
                p.phase.clear();
            }
        }
        s
    }
    from != to && decisions(from) == decisions(to)
}

/// Whether these effects are only Events.
fn writes_nothing(effects: &[Effect]) -> bool {
    effects.iter().all(|e| matches!(e, Effect::Event { .. }))
}

/// The step of a DeployFlow being deleted: a running release is cancelled and the CloneSet
/// released; the executor then removes the finalizer.
pub fn cleanup(w: &World) -> Decision {
    let mut s = Step::new(w);
    if !s.status.finished && s.status.phase != DeployPhase::New {
        s.cancel("the DeployFlow was deleted");
    } else if s.owned().is_some() {
        let patch = cloneset::release_patch(s.owned().unwrap(), false);
        s.before.push(Effect::PatchCloneSet(patch));
    }
    s.decision()
}

/// The state of a step in progress: the status being built and the effects so far.
pub(crate) struct Step<'w, 'a> {
    pub w: &'w World<'a>,
    pub status: DeployFlowStatus,
    pub before: Vec<Effect>,
    pub after: Vec<Effect>,
    pub requeue: Option<Duration>,
}

impl<'w, 'a> Step<'w, 'a> {
    fn new(w: &'w World<'a>) -> Self {
        Step {
            w,
            status: w.df.status.clone().unwrap_or_default(),
            before: Vec::new(),
            after: Vec::new(),
            requeue: None,
        }
    }

    fn decision(self) -> Decision {
        Decision {
            before: self.before,
            status: self.status,
            after: self.after,
            requeue: self.requeue,
            trail: Vec::new(),
        }
    }

    pub fn spec(&self) -> &'a DeployFlowSpec {
        &self.w.df.spec
    }

    pub fn cs_name(&self) -> &'a str {
        &self.w.df.spec.application.instance_name
    }

    pub fn now(&self) -> Time {
        Time(self.w.now)
    }

    /// Time since `t` (zero if `t` is in the future).
    pub fn since(&self, t: &Time) -> Duration {
        let d = self.w.now.duration_since(t.0);
        Duration::from_secs_f64(d.as_secs_f64().max(0.0))
    }

    /// Asks to run again after `d` at the latest.
    pub fn requeue_after(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    /// The CloneSet, if this release holds it (its release annotation names this DeployFlow).
    pub fn owned(&self) -> Option<&'a CloneSetView> {
        self.w
            .cloneset
            .filter(|cs| cs.released_by() == Some(self.w.df.name_any().as_str()))
    }

    pub fn set_phase(&mut self, phase: DeployPhase, message: Option<String>) {
        self.status.phase = phase;
        self.status.message = message;
        if phase.is_terminal() {
            self.status.finished = true;
            self.status.finished_at = Some(self.now());
        }
    }

    pub fn wait(&mut self, message: String) {
        self.status.message = Some(message);
    }

    pub fn event(&mut self, warning: bool, reason: &'static str, note: String) {
        self.after.push(Effect::Event {
            warning,
            reason,
            note,
        });
    }

    pub fn current(&self) -> Option<CurrentBatch> {
        self.status.current().map(|c| CurrentBatch {
            batch: c.batch,
            phase: c.phase,
            canary: c.canary,
        })
    }

    pub fn desired(&self) -> Desired {
        Desired {
            stage: self.spec().stage(),
            batches: self.spec().base().batches,
            auto: self.spec().auto(),
            canary_enabled: self.spec().canary() > 0,
        }
    }

    /// The release's counts at its start (see `StartCounts`).
    pub fn start_counts(&self) -> StartCounts {
        StartCounts::from_status(&self.status, self.spec().application.replicas)
    }

    fn run(&mut self) {
        if self.status.phase.weight() < DeployPhase::BatchFinished.weight() && self.interrupts() {
            return;
        }
        match self.status.phase {
            DeployPhase::New => self.set_phase(DeployPhase::Pending, None),
            DeployPhase::Pending if self.status.paused => {
                self.wait("paused before the release started".into())
            }
            DeployPhase::Pending => self.pending(),
            DeployPhase::Initializing => self.initializing(),
            DeployPhase::BatchStarted if self.status.paused => {}
            DeployPhase::BatchStarted => self.batch_started(),
            DeployPhase::BatchFinished => self.batch_finished(),
            _ => {}
        }
    }

    /// The release fails, naming why; the CloneSet is released when this release still holds it.
    pub fn fail(&mut self, message: String) {
        if let Some(cs) = self.owned() {
            self.before
                .push(Effect::PatchCloneSet(cloneset::release_patch(cs, true)));
        }
        self.set_phase(DeployPhase::Failed, Some(message));
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
