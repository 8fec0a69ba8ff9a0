//! A batch's steps: prepared (Pending) → started (Smoking, the CloneSet target written after the
//! start is recorded) → Smoked (its pods ready) → pulled in (gates True, verified in the
//! EndpointSlices) → Baking → finished (the pods to delete recorded, then the CloneSet write) →
//! Baked. Then BatchFinished waits for the CloneSet to settle, and Success.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use triton_core::names::READY_GATE;
use triton_core::release::{
    self, Action, BatchPhase, BatchStep, CloneSetTarget, DeployPhase, PodObservation, SmokeVerdict,
    some_of,
};

use super::{Effect, Step, cloneset};
use crate::crd::{BatchCondition, PodInfo};
use crate::observe::{self, CloneSetView, PULL_IN_FAILED, PULL_IN_SUCCEEDED};

impl<'a> Step<'_, 'a> {
    pub fn batch_step(&self, size: i32) -> BatchStep {
        let start = self.start_counts();
        BatchStep {
            action: self.spec().action,
            replicas: self.spec().application.replicas,
            size,
            updated_at_start: start.updated_at_start,
            finished: self.status.finished_replicas,
            replicas_at_start: start.replicas_at_start,
        }
    }

    /// Live (not terminating) pods by name.
    pub fn live_pod(&self, name: &str) -> Option<&Pod> {
        self.w
            .pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name) && !observe::is_terminating(p))
            .map(|p| &**p)
    }

    /// Live pods attributed to the current batch.
    pub fn batch_pods(&self) -> Vec<&Pod> {
        self.status
            .current()
            .and_then(|c| c.pods.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| self.live_pod(&p.name))
            .collect()
    }

    /// The live batch pods that fail, each as "name (why)".
    pub fn failing_batch_pods(&self) -> Vec<String> {
        self.batch_pods()
            .into_iter()
            .filter(|p| observe::is_failing(p))
            .map(observe::describe)
            .collect()
    }

    /// The CloneSet held by this release; `None` after failing the release when it is gone or
    /// held by another.
    fn held_cloneset(&mut self) -> Option<&'a CloneSetView> {
        let Some(cs) = self.w.cloneset else {
            self.fail(format!(
                "CloneSet {} was deleted during the release",
                self.cs_name()
            ));
            return None;
        };
        if self.owned().is_none() {
            let by = cs.released_by().unwrap_or("nobody");
            self.set_phase(
                DeployPhase::Failed,
                Some(format!(
                    "CloneSet {} is no longer held by this release (its {} annotation names {by})",
                    self.cs_name(),
                    triton_core::names::RELEASE_ANNOTATION
                )),
            );
            return None;
        }
        Some(cs)
    }

    pub(super) fn batch_started(&mut self) {
        let Some(cs) = self.held_cloneset() else {
            return;
        };
        self.refresh(cs);
        let Some(cur) = self.status.current().cloned() else {
            self.prepare_batch(None);
            return;
        };
        if self.out_of_turn(cs, &cur) {
            return;
        }
        match cur.phase {
            BatchPhase::Baked => self.prepare_batch(Some(&cur)),
            BatchPhase::Pending => self.start_batch(&cur),
            BatchPhase::Smoking => self.smoking(cs, &cur),
            BatchPhase::Smoked => self.smoked(&cur),
            BatchPhase::Baking => self.baking(cs, &cur),
            // Held by the pause the failure wrote into the spec (see interrupts).
            BatchPhase::SmokeFailed | BatchPhase::BakeFailed => {}
        }
    }

    /// How many pods of the new revision this release has released: those updated before it,
    /// the baked batches, and the current batch once started.
    fn released(&self, cur: &BatchCondition) -> i32 {
        let started = !matches!(cur.phase, BatchPhase::Pending | BatchPhase::Baked);
        self.start_counts()
            .updated_at_start
            .saturating_add(self.status.finished_replicas)
            .saturating_add(if started { cur.batch_size } else { 0 })
    }

    /// A CloneSet edited by hand to release more pods than the release has (its partition
    /// lowered, its replicas raised): the release writes its partition back, so Kruise updates
    /// no further pod, and removes the pods updated out of turn that do not serve (the gate
    /// controller holds them, see `gates::held`; Kruise recreates them at the old revision).
    /// The edit is told in the status message and a Warning Event. True when it wrote
    /// something: the step ends there, the next one sees the CloneSet as the release left it.
    /// A paused release does not step, so this waits for the resume.
    fn out_of_turn(&mut self, cs: &CloneSetView, cur: &BatchCondition) -> bool {
        let action = self.spec().action;
        if !action.is_revision_changing() {
            return false;
        }
        let allowed = self.released(cur);
        let replicas = cs.spec.replicas;
        // A create's CloneSet has one revision: only its replicas release pods. An update's
        // partition that is no number (a percentage written by hand) is not the release's.
        let partition = cs.partition();
        let (by_cs, restore) = if action == Action::Create {
            (replicas, (replicas > allowed).then(|| serde_json::json!({"replicas": allowed})))
        } else {
            let by_cs = replicas.saturating_sub(partition.unwrap_or(0)).max(0);
            let odd = partition.is_none() && cs.spec.update_strategy.partition.is_some();
            let p = replicas.saturating_sub(allowed).max(0);
            (
                by_cs,
                (odd || by_cs > allowed)
                    .then(|| serde_json::json!({"updateStrategy": {"partition": p}})),
            )
        };
        let Some(update) = cs.status.update_revision.as_deref() else {
            return false;
        };
        let claimed = |n: &String| {
            self.status.pods.iter().flatten().any(|p| p == n)
                || self.status.pods_at_start.iter().flatten().any(|p| p == n)
        };
        let cs_uid = cs.metadata.uid.as_ref();
        let mut new: Vec<&Pod> = self
            .w
            .pods
            .iter()
            .map(|p| &**p)
            .filter(|p| observe::is_active(p) && observe::revision(p) == Some(update))
            .filter(|p| {
                cs_uid.is_none()
                    || p.metadata.owner_references.iter().flatten().any(|r| {
                        r.controller == Some(true) && Some(&r.uid) == cs_uid
                    })
            })
            .collect();
        let excess = (new.len() as i32).saturating_sub(allowed).max(0) as usize;
        // Pods a started batch may still claim (created at or after its start) last, then the
        // newest first: an edit's pods are never taken for the batch's own.
        let started = (!matches!(cur.phase, BatchPhase::Pending | BatchPhase::Baked))
            .then(|| cur.started_at.as_ref().map(|t| t.0.as_second()))
            .flatten();
        new.sort_by_key(|p| {
            let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let batch_may_claim = started
                .is_some_and(|s| created.is_none_or(|c| c.as_second() >= s));
            (batch_may_claim, std::cmp::Reverse(created))
        });
        let serving = |p: &Pod| {
            observe::is_true(p, READY_GATE) || self.w.opened.contains(&p.name_any())
        };
        let victims: Vec<String> = new
            .iter()
            .filter(|p| !claimed(&p.name_any()) && !serving(p))
            .map(|p| p.name_any())
            .take(excess)
            .collect();
        let listed = cs.pods_to_delete();
        let to_list: Vec<String> = victims
            .iter()
            .filter(|v| !listed.contains(v))
            .cloned()
            .collect();
        if restore.is_none() && to_list.is_empty() {
            return false;
        }
        let mut spec = serde_json::Map::new();
        let mut told = Vec::new();
        if let Some(restore) = restore {
            let what = match (&restore["replicas"], &restore["updateStrategy"]["partition"]) {
                (serde_json::Value::Null, p) => format!("its partition is set back to {p}"),
                (r, _) => format!("its replicas are set back to {r}"),
            };
            if let serde_json::Value::Object(m) = restore {
                spec.extend(m);
            }
            told.push(format!(
                "it would run {by_cs} pod(s) of the new revision, the release has released {allowed}; {what}"
            ));
        }
        if !to_list.is_empty() {
            // Kruise refuses a list naming a pod that is already terminating: keep only the
            // listed pods still alive (a gone or terminating one is already on its way out).
            let mut all: Vec<String> = listed
                .iter()
                .filter(|n| self.live_pod(n).is_some())
                .cloned()
                .collect();
            all.extend(to_list.iter().cloned());
            spec.insert(
                "scaleStrategy".into(),
                serde_json::json!({"podsToDelete": all}),
            );
            let recreated = if action == Action::Create {
                "never recreated: the replicas are the release's"
            } else {
                "Kruise recreates them at the old revision"
            };
            told.push(format!(
                "pod(s) {} released out of turn are removed, never having served ({recreated})",
                some_of(&to_list, ", ")
            ));
        }
        self.before
            .push(Effect::CorrectCloneSet(serde_json::json!({"spec": spec})));
        let note = format!(
            "CloneSet {} was edited outside the release: {}",
            self.cs_name(),
            told.join("; ")
        );
        self.event(true, "CloneSetEdited", note.clone());
        self.wait(note);
        true
    }

    fn prepare_batch(&mut self, last: Option<&BatchCondition>) {
        let spec = self.spec();
        if self.status.finished_replicas >= self.status.replicas_to_process {
            self.set_phase(DeployPhase::BatchFinished, None);
            return;
        }
        if let Some(last) = last
            && let Some(done) = &last.finished_at
            && let Some(wait) = release::interval_wait(
                spec.batch_interval(),
                self.since(done),
                spec.auto(),
                last.canary,
            )
        {
            self.wait(format!(
                "batch {} starts after the batch interval of {}s",
                last.batch + 1,
                spec.batch_interval().as_secs()
            ));
            self.requeue_after(wait);
            return;
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
            return;
        };
        self.status.batches = plan.batches;
        self.status.message = None;
        let batch = self.status.finished_batches.saturating_add(1);
        self.status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(BatchCondition {
                batch,
                batch_size: plan.size,
                canary: plan.canary,
                phase: BatchPhase::Pending,
                ..Default::default()
            });
    }

    /// Pending → Smoking: the start is recorded first, the CloneSet target written after.
    fn start_batch(&mut self, cur: &BatchCondition) {
        if cur.batch > 1 && !release::move_forward(self.current(), false, self.desired()) {
            self.wait(format!(
                "batch {} waits for `batches` >= {} (now {})",
                cur.batch,
                cur.batch,
                self.spec().base().batches
            ));
            return;
        }
        let target = release::batch_start_target(self.batch_step(cur.batch_size));
        if let Some(patch) = cloneset::target_patch(None, target, None) {
            self.after.push(Effect::PatchCloneSet(patch));
        }
        let now = self.now();
        let c = self.status.current_mut().expect("a current batch");
        c.phase = BatchPhase::Smoking;
        c.started_at = Some(now.clone());
        c.smoke_started_at = Some(now);
        self.status.message = None;
    }

    fn smoking(&mut self, cs: &CloneSetView, cur: &BatchCondition) {
        // The start target was written after the start was recorded: write it again if the
        // CloneSet does not show it (a crash in between, or a stale read: same values).
        let target = release::batch_start_target(self.batch_step(cur.batch_size));
        if let Some(patch) = cloneset::target_patch(Some(cs), target, None) {
            self.before.push(Effect::PatchCloneSet(patch));
        }
        if self.spec().action == Action::ScaleIn {
            self.status.current_mut().expect("a current batch").phase = BatchPhase::Smoked;
            return;
        }
        let others: Vec<String> = {
            let mine: Vec<&str> = cur.pods.iter().flatten().map(|p| p.name.as_str()).collect();
            self.status
                .pods
                .iter()
                .flatten()
                .filter(|n| !mine.contains(&n.as_str()))
                .chain(self.status.pods_at_start.iter().flatten())
                // Pods on their way out (an edit's out-of-turn pods): never a batch's.
                .chain(cs.pods_to_delete())
                .cloned()
                .collect()
        };
        let revision = cs.status.update_revision.as_deref();
        let picked = observe::attribute_batch(
            self.w.pods.iter().map(|p| &**p),
            revision,
            cur.started_at.as_ref(),
            &others,
            cur.batch_size.max(0) as usize,
        );
        let infos: Vec<PodInfo> = picked.iter().map(|p| pod_info(p, "")).collect();
        let observed: Vec<PodObservation> = picked
            .iter()
            .map(|p| PodObservation {
                name: p.name_any(),
                smoked: observe::is_smoked(p),
                failing: observe::is_failing(p),
            })
            .collect();
        let verdict = release::smoke_verdict(cur.batch_size, &observed);
        let all = self.status.pods.get_or_insert_with(Vec::new);
        for p in &infos {
            if !all.contains(&p.name) {
                all.push(p.name.clone());
            }
        }
        all.sort();
        let smoke_since = cur.smoke_started_at.as_ref().or(cur.started_at.as_ref());
        let elapsed = smoke_since.map(|t| self.since(t)).unwrap_or_default();
        let timeout = self.spec().smoke_timeout();
        // Why each pod that is not up yet is not: for the waiting message and the failure.
        let not_ready: Vec<String> = picked
            .iter()
            .filter(|p| !observe::is_smoked(p) || observe::is_failing(p))
            .map(|p| observe::describe(p))
            .collect();
        let missing = (cur.batch_size.max(0) as usize).saturating_sub(picked.len());
        let c = self.status.current_mut().expect("a current batch");
        c.pods = Some(infos);
        match verdict {
            SmokeVerdict::Failed(failing) => {
                let n = failing.len() as i32;
                let why = format!(
                    "batch {} failed its smoke test: {}",
                    cur.batch,
                    some_of(&not_ready, ", ")
                );
                self.fail_batch(BatchPhase::SmokeFailed, n, why);
            }
            SmokeVerdict::Smoked => {
                c.failed_replicas = 0;
                c.phase = BatchPhase::Smoked;
                self.status.message = None;
            }
            SmokeVerdict::Waiting if elapsed >= timeout => {
                let mut why = not_ready.clone();
                if missing > 0 {
                    why.push(format!("{missing} pod(s) not created"));
                }
                let n = (not_ready.len() + missing) as i32;
                let msg = format!(
                    "batch {} was not ready within smokeTimeoutSeconds ({}s): {}",
                    cur.batch,
                    timeout.as_secs(),
                    some_of(&why, ", ")
                );
                self.fail_batch(BatchPhase::SmokeFailed, n, msg);
            }
            SmokeVerdict::Waiting => {
                c.failed_replicas = 0;
                let mut what = not_ready;
                if missing > 0 {
                    what.push(format!("{missing} pod(s) not created yet"));
                }
                self.wait(format!(
                    "batch {} smoking: waiting for its pods to be ready: {}",
                    cur.batch,
                    some_of(&what, ", ")
                ));
                self.requeue_after(timeout.saturating_sub(elapsed) + Duration::from_millis(100));
            }
        }
    }

    /// A failed batch pauses the release, and the pause is written into the spec (before the
    /// status), so that resuming is a change the user makes (DESIGN §2, decision 4).
    /// Fails the batch (`phase`) when an agent reports a batch pod's app broken; true if so.
    fn fail_on_agent(&mut self, cur: &BatchCondition, phase: BatchPhase) -> bool {
        let broken: Vec<String> = self
            .batch_pods()
            .into_iter()
            .filter_map(|p| {
                observe::agent_failure(p).map(|why| format!("{} ({why})", p.name_any()))
            })
            .collect();
        if broken.is_empty() {
            return false;
        }
        let msg = format!(
            "batch {} {}: the readiness agent reports its app unhealthy: {}",
            cur.batch,
            if phase == BatchPhase::BakeFailed {
                "failed while baking"
            } else {
                "failed its smoke test"
            },
            some_of(&broken, "; ")
        );
        self.fail_batch(phase, broken.len() as i32, msg);
        true
    }

    pub fn fail_batch(&mut self, phase: BatchPhase, failed: i32, message: String) {
        let c = self.status.current_mut().expect("a current batch");
        c.phase = phase;
        c.failed_replicas = failed;
        self.status.paused = true;
        self.status.message = Some(format!(
            "{message}; the release is paused until the cause is fixed and it is resumed"
        ));
        self.before.push(Effect::PatchSpec(self.spec_pause_patch()));
        if self.owned().is_some() {
            self.before
                .push(Effect::PatchCloneSet(cloneset::pause_patch(true)));
        }
    }

    /// `spec.<strategy>.paused: true`; an absent strategy keeps its meaning (batches 0).
    pub fn spec_pause_patch(&self) -> serde_json::Value {
        let mut strategy = serde_json::json!({"paused": true});
        if !self.spec().has_strategy() {
            strategy["batches"] = serde_json::json!(0);
        }
        serde_json::json!({"spec": {self.spec().strategy_key(): strategy}})
    }

    fn smoked(&mut self, cur: &BatchCondition) {
        // A batch pod that is gone (deleted, evicted) is replaced by Kruise: smoke again with
        // the replacement instead of waiting for a pod that will never come back.
        let gone: Vec<String> = cur
            .pods
            .iter()
            .flatten()
            .filter(|p| self.live_pod(&p.name).is_none())
            .map(|p| p.name.clone())
            .collect();
        if !gone.is_empty() {
            let now = self.now();
            let c = self.status.current_mut().expect("a current batch");
            c.pods
                .get_or_insert_with(Vec::new)
                .retain(|p| !gone.contains(&p.name));
            c.phase = BatchPhase::Smoking;
            c.pulled_in_at = None;
            c.smoke_started_at = Some(now);
            if let Some(all) = self.status.pods.as_mut() {
                all.retain(|n| !gone.contains(n));
            }
            self.wait(format!(
                "batch {}: pod(s) {} gone; smoking their replacements",
                cur.batch,
                some_of(&gone, ", ")
            ));
            return;
        }
        // The app of a smoked pod broke (its agent says so, or fell silent): before the pull-in
        // a smoke failure, during it a bake failure. A scale-in has no pods to smoke.
        let phase = if cur.pulled_in_at.is_some() {
            BatchPhase::BakeFailed
        } else {
            BatchPhase::SmokeFailed
        };
        if self.spec().action != Action::ScaleIn && self.fail_on_agent(cur, phase) {
            return;
        }
        if cur.canary && !release::move_forward(self.current(), false, self.desired()) {
            self.wait(format!(
                "canary batch {} is Smoked; waiting for Next (stage Baking)",
                cur.batch
            ));
            return;
        }
        if self.spec().action == Action::ScaleIn {
            self.status.current_mut().expect("a current batch").phase = BatchPhase::Baking;
            return;
        }
        let pods: Vec<Pod> = self.batch_pods().into_iter().cloned().collect();
        for pod in &pods {
            if !observe::is_true(pod, READY_GATE) && observe::has_gate(pod) {
                self.before.push(gate(pod, true, "Baked"));
            }
        }
        let Some(pulled_in_at) = cur.pulled_in_at.clone() else {
            let now = self.now();
            self.status
                .current_mut()
                .expect("a current batch")
                .pulled_in_at = Some(now);
            self.wait(format!("batch {}: pulling in its pods", cur.batch));
            self.requeue_after(self.spec().pull_in_timeout());
            return;
        };
        // Verify the pull-in: Ready, and a ready endpoint of every Service selecting the pod.
        let timeout = self.spec().pull_in_timeout();
        let elapsed = self.since(&pulled_in_at);
        let timed_out = elapsed >= timeout;
        let mut waiting = Vec::new();
        let mut infos = cur.pods.clone().unwrap_or_default();
        for info in infos.iter_mut() {
            let Some(pod) = pods.iter().find(|p| p.name_any() == info.name) else {
                continue;
            };
            let status = std::mem::take(&mut info.pull_in_status);
            *info = pod_info(pod, &status);
            if info.pull_in_status == PULL_IN_SUCCEEDED {
                continue;
            }
            let check = if observe::is_true(pod, "Ready") {
                observe::pulled_in(pod, self.w.services, self.w.slices)
            } else {
                Err("not Ready".into())
            };
            match check {
                Ok(()) => info.pull_in_status = PULL_IN_SUCCEEDED.into(),
                Err(why) => {
                    if timed_out {
                        info.pull_in_status = PULL_IN_FAILED.into();
                    }
                    waiting.push(format!("{}: {why}", info.name));
                }
            }
        }
        let c = self.status.current_mut().expect("a current batch");
        c.pods = Some(infos);
        if waiting.is_empty() {
            c.phase = BatchPhase::Baking;
            self.status.message = None;
        } else if timed_out {
            let n = waiting.len() as i32;
            let msg = format!(
                "batch {} pull-in failed: not a ready endpoint within pullInTimeoutSeconds ({}s): {}",
                cur.batch,
                timeout.as_secs(),
                some_of(&waiting, "; ")
            );
            self.fail_batch(BatchPhase::BakeFailed, n, msg);
        } else {
            self.wait(format!(
                "batch {} pulling in: {}",
                cur.batch,
                some_of(&waiting, "; ")
            ));
            self.requeue_after(timeout.saturating_sub(elapsed) + Duration::from_millis(100));
        }
    }

    /// Baking → Baked. The pods the finish deletes are decided once and recorded in the batch
    /// (`podsToDelete`) before the CloneSet write; the batch is Baked once the CloneSet shows it.
    fn baking(&mut self, cs: &CloneSetView, cur: &BatchCondition) {
        if cur.pods_to_delete.is_none() && self.fail_on_agent(cur, BatchPhase::BakeFailed) {
            return;
        }
        if cur.canary && !release::move_forward(self.current(), false, self.desired()) {
            self.wait(format!(
                "canary batch {} is Baking; waiting for Next (stage Baked)",
                cur.batch
            ));
            return;
        }
        let target = release::batch_finish_target(self.batch_step(cur.batch_size));
        let live: Vec<String> = self
            .w
            .pods
            .iter()
            .filter(|p| !observe::is_terminating(p))
            .map(|p| p.name_any())
            .collect();
        match &cur.pods_to_delete {
            None => {
                let victims = self.victims(cur, cs);
                if target == CloneSetTarget::default() && victims.is_empty() {
                    self.mark_baked(cur);
                    return;
                }
                if let Some(patch) = cloneset::finish_patch(cs, target, &victims) {
                    self.after.push(Effect::PatchCloneSet(patch));
                }
                let c = self.status.current_mut().expect("a current batch");
                c.pods_to_delete = Some(victims);
                self.wait(format!("batch {}: finishing", cur.batch));
            }
            Some(victims) if cloneset::reached(cs, target, victims, &live) => self.mark_baked(cur),
            Some(victims) => {
                if let Some(patch) = cloneset::target_patch(Some(cs), target, Some(victims)) {
                    self.before.push(Effect::PatchCloneSet(patch));
                }
                self.wait(format!("batch {}: finishing", cur.batch));
            }
        }
    }

    fn mark_baked(&mut self, cur: &BatchCondition) {
        let now = self.now();
        self.status.finished_batches = self.status.finished_batches.saturating_add(1);
        self.status.finished_replicas =
            self.status.finished_replicas.saturating_add(cur.batch_size);
        self.status.failed_replicas = self
            .status
            .failed_replicas
            .saturating_add(cur.failed_replicas);
        self.status.message = None;
        let c = self.status.current_mut().expect("a current batch");
        c.phase = BatchPhase::Baked;
        c.finished_at = Some(now);
    }

    /// The pods this batch's finish deletes: scale_in, the named pods first (exactly them), as
    /// many as the batch removes; restart, as many old pods as the batch brought up (the named
    /// ones, else any pod that existed when the release started), not-Ready first.
    fn victims(&self, cur: &BatchCondition, cs: &CloneSetView) -> Vec<String> {
        let size = cur.batch_size.max(0) as usize;
        let named = self.spec().pods_to_delete();
        // Never a pod an earlier batch (or the CloneSet) already has on its way out: the cache
        // may still show it alive while Kruise catches up.
        let chosen: Vec<&String> = self
            .status
            .conditions
            .iter()
            .flatten()
            .flat_map(|c| c.pods_to_delete.iter().flatten())
            .chain(cs.pods_to_delete())
            .collect();
        // Only pods this CloneSet controls: Kruise deletes no other, and a finish would wait for
        // ever on one it never deletes.
        let cs_uid = &cs.metadata.uid;
        let chosen = &chosen;
        let live =
            || {
                self.w
                    .pods
                    .iter()
                    .filter(|p| !observe::is_terminating(p))
                    .filter(move |p| !chosen.contains(&&p.name_any()))
                    .filter(move |p| {
                        cs_uid.is_none()
                            || p.metadata.owner_references.iter().flatten().any(|r| {
                                r.controller == Some(true) && Some(&r.uid) == cs_uid.as_ref()
                            })
                    })
            };
        match self.spec().action {
            Action::ScaleIn => {
                let existing: Vec<String> = live().map(|p| p.name_any()).collect();
                named
                    .into_iter()
                    .filter(|n| existing.contains(n))
                    .take(size)
                    .collect()
            }
            Action::Restart => {
                let at_start = self.status.pods_at_start.clone().unwrap_or_default();
                let mut old: Vec<&Pod> = live()
                    .filter(|p| at_start.contains(&p.name_any()))
                    .filter(|p| named.is_empty() || named.contains(&p.name_any()))
                    .map(|p| &**p)
                    .collect();
                old.sort_by_key(|p| (observe::is_true(p, "Ready"), p.name_any()));
                old.iter().take(size).map(|p| p.name_any()).collect()
            }
            _ => Vec::new(),
        }
    }

    pub(super) fn batch_finished(&mut self) {
        // The hold is released just before the Success status is written; if that write was
        // lost (a conflict, a crash), the CloneSet shows no hold now: that is this release's.
        let released_by_us = self.w.cloneset.is_some_and(|cs| cs.released_by().is_none());
        let cs = if released_by_us {
            self.w.cloneset
        } else {
            self.held_cloneset()
        };
        let Some(cs) = cs else {
            return;
        };
        self.refresh(cs);
        let r = self.spec().application.replicas;
        let settled = cs.caught_up()
            && cs.spec.replicas == r
            && cs.status.replicas == r
            && cs.status.updated_replicas == r
            && cs.status.ready_replicas == r;
        if !settled {
            self.wait(format!(
                "waiting for CloneSet {} to settle at {r}: replicas {}, updated {}, ready {}",
                self.cs_name(),
                cs.status.replicas,
                cs.status.updated_replicas,
                cs.status.ready_replicas
            ));
            return;
        }
        let mut patch = cloneset::release_patch(cs, false);
        if !cs.pods_to_delete().is_empty() {
            patch["spec"] = serde_json::json!({"scaleStrategy": {"podsToDelete": null}});
        }
        self.before.push(Effect::PatchCloneSet(patch));
        self.set_phase(DeployPhase::Success, None);
    }
}

pub fn gate(pod: &Pod, ready: bool, reason: &'static str) -> Effect {
    Effect::SetGate {
        pod: pod.name_any(),
        uid: pod.metadata.uid.clone(),
        ready,
        reason,
    }
}

fn pod_info(p: &Pod, pull_in_status: &str) -> PodInfo {
    PodInfo {
        name: p.name_any(),
        ip: p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        port: observe::app_port(p),
        phase: observe::pod_phase(p),
        pull_in_status: pull_in_status.to_string(),
    }
}
