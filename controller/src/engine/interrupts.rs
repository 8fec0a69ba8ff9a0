//! Cancel, pause and resume (reference §2.8; DESIGN §2 decisions 4 and 5), and what deleting a
//! running release does (cancel it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use triton_core::release::{self, Action, BatchPhase, DeployPhase, some_of};

use super::batch::gate;
use super::{Effect, Step, cloneset};
use crate::observe;

impl Step<'_, '_> {
    /// Applies `canceled` and `paused` from the spec. True when the step ends here.
    pub(super) fn interrupts(&mut self) -> bool {
        let base = self.spec().base();
        if base.canceled {
            self.cancel("canceled");
            return true;
        }
        let failed = self.status.current().is_some_and(|c| c.phase.is_failed());
        if failed {
            // The failure wrote `paused: true` into the spec before its status (see
            // `fail_batch`), so `paused: false` in the same object is the user's resume. A
            // `paused` removed altogether is not: a resume is an explicit `false`.
            if base.paused == Some(false) {
                self.resume_failed();
            }
            return true;
        }
        let Some(want) = base.paused else {
            return false;
        };
        if want == self.status.paused {
            if want {
                self.wait("paused".into());
            }
            return false;
        }
        if self.owned().is_some() {
            self.before
                .push(Effect::PatchCloneSet(cloneset::pause_patch(want)));
        }
        self.status.paused = want;
        self.status.message = want.then(|| "paused".to_string());
        if want {
            // A failure's spec write may have landed without its status (a crash, a conflict):
            // a pause over a failing batch is that failure.
            self.refail_if_failing();
        } else if let Some(c) = self.status.current_mut()
            && c.phase == BatchPhase::Smoking
        {
            // The smoke timer does not run while paused.
            c.smoke_started_at = Some(Time(self.w.now));
        }
        true
    }

    fn refail_if_failing(&mut self) {
        let Some(cur) = self.status.current().cloned() else {
            return;
        };
        if !matches!(cur.phase, BatchPhase::Smoking | BatchPhase::Smoked) {
            return;
        }
        let failing = self.failing_batch_pods();
        if !failing.is_empty() {
            let n = failing.len() as i32;
            // Once its pull-in began, a batch fails its bake (a resume then pulls it in again).
            let (phase, what) = if cur.phase == BatchPhase::Smoked && cur.pulled_in_at.is_some() {
                (BatchPhase::BakeFailed, "failed while baking")
            } else {
                (BatchPhase::SmokeFailed, "failed its smoke test")
            };
            let msg = format!("batch {} {what}: {}", cur.batch, some_of(&failing, ", "));
            self.fail_batch(phase, n, msg);
        }
    }

    /// A resume of a failed batch: refused while its pods still fail (the spec is paused again),
    /// else the batch is retried: smoked again (SmokeFailed) or pulled in again (BakeFailed).
    fn resume_failed(&mut self) {
        let failing = self.failing_batch_pods();
        if !failing.is_empty() {
            let msg = format!(
                "resume refused: pods still failing: {}; fix them, then resume again",
                some_of(&failing, ", ")
            );
            self.before.push(Effect::PatchSpec(self.spec_pause_patch()));
            self.event(true, "ResumeRefused", msg.clone());
            self.status.message = Some(msg);
            return;
        }
        let now = self.now();
        let c = self.status.current_mut().expect("a failed batch");
        let bake_failed = c.phase == BatchPhase::BakeFailed;
        c.phase = if bake_failed {
            BatchPhase::Smoked
        } else {
            BatchPhase::Smoking
        };
        c.failed_replicas = 0;
        c.pulled_in_at = None;
        if !bake_failed {
            c.smoke_started_at = Some(now);
        }
        for p in c.pods.iter_mut().flatten() {
            if p.pull_in_status == observe::PULL_IN_FAILED {
                p.pull_in_status.clear();
            }
        }
        if self.owned().is_some() {
            self.before
                .push(Effect::PatchCloneSet(cloneset::pause_patch(false)));
        }
        self.status.paused = false;
        self.status.message = None;
        self.event(false, "Resumed", "the failed batch is retried".into());
    }

    /// Cancel: the un-baked batch is pulled out of the Services (gate False), the surge or the
    /// un-baked pods are removed (`release::cancel_target`), the CloneSet is unpaused and
    /// released. All before the status write: each of these writes is idempotent.
    pub(super) fn cancel(&mut self, why: &str) {
        let unbaked = self
            .status
            .current()
            .filter(|c| c.phase != BatchPhase::Baked)
            .cloned();
        if let Some(cs) = self.owned() {
            if let Some(cur) = &unbaked {
                let pods: Vec<_> = cur
                    .pods
                    .iter()
                    .flatten()
                    .filter_map(|p| self.live_pod(&p.name))
                    .filter(|p| observe::has_gate(p))
                    .filter(|p| {
                        observe::condition(p, triton_core::names::READY_GATE) != Some("False")
                    })
                    .map(|p| gate(p, false, "Canceled"))
                    .collect();
                self.before.extend(pods);
            }
            let size = unbaked.as_ref().map_or(0, |c| c.batch_size);
            let started = self.status.phase.weight() >= DeployPhase::BatchStarted.weight();
            let mut patch = cloneset::release_patch(cs, true);
            if started {
                let target = release::cancel_target(self.batch_step(size));
                if let Some(t) = cloneset::target_patch(Some(cs), target, None) {
                    merge(&mut patch, t);
                }
            }
            // The un-baked batch's pods are the ones the lower target removes: name them, so
            // Kruise deletes exactly those (older lists are dropped).
            let unbaked_pods: Vec<String> = unbaked
                .iter()
                .filter(|_| started && self.spec().action != Action::ScaleIn)
                .flat_map(|c| c.pods.iter().flatten())
                .filter(|p| self.live_pod(&p.name).is_some())
                .map(|p| p.name.clone())
                .collect();
            if !unbaked_pods.is_empty() {
                merge(
                    &mut patch,
                    serde_json::json!({"spec": {"scaleStrategy": {"podsToDelete": unbaked_pods}}}),
                );
            } else if !cs.pods_to_delete().is_empty() {
                merge(
                    &mut patch,
                    serde_json::json!({"spec": {"scaleStrategy": {"podsToDelete": null}}}),
                );
            }
            self.before.push(Effect::PatchCloneSet(patch));
        }
        let at = self
            .status
            .current()
            .map(|c| format!("batch {} ({:?})", c.batch, c.phase))
            .unwrap_or_else(|| "before the first batch".into());
        self.set_phase(DeployPhase::Canceled, Some(format!("{why} at {at}")));
    }
}

/// Merges JSON object `b` into `a` (objects recursively; other values replaced).
pub fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}
