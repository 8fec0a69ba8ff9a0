//! Pending and Initializing: the release takes hold of its CloneSet (creating it for `create`),
//! refuses what it cannot do, and fixes its work size.

use std::time::Duration;

use kube::ResourceExt;
use triton_core::names::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use triton_core::release::{self, Action, DeployPhase};

use super::{Effect, Step, cloneset};
use crate::observe;

impl Step<'_, '_> {
    pub(super) fn pending(&mut self) {
        let action = self.spec().action;
        let r = self.spec().application.replicas;
        let cs = self.w.cloneset;
        match (action, cs) {
            (Action::Create, None) => {
                self.before.push(Effect::CreateCloneSet(cloneset::manifest(
                    self.w.df,
                    &self.w.df.namespace().unwrap_or_default(),
                )));
            }
            (Action::Create, Some(_)) if self.owned().is_some() => {}
            (Action::Create, Some(_)) => {
                let msg = format!(
                    "CloneSet {} already exists; use action update",
                    self.cs_name()
                );
                self.set_phase(DeployPhase::Failed, Some(msg));
                return;
            }
            (_, None) => {
                let msg = format!("CloneSet {} not found; use action create", self.cs_name());
                self.set_phase(DeployPhase::Failed, Some(msg));
                return;
            }
            (_, Some(cs)) => {
                // Scale direction: only the controller knows the current size.
                let current = cs.spec.replicas;
                let wrong = match action {
                    Action::ScaleOut if r < current => Some("scale_in"),
                    Action::ScaleIn if r > current => Some("scale_out"),
                    _ => None,
                };
                let template_labels = cs.template_labels();
                if !action.is_revision_changing()
                    && template_labels.get(MANAGED_BY_LABEL).map(String::as_str)
                        != Some(MANAGED_BY_VALUE)
                {
                    let msg = format!(
                        "CloneSet {} was not released by Triton: its pods lack the label {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}, so {} cannot see them; release it once with action update",
                        self.cs_name(),
                        serde_json::to_value(action)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    );
                    self.fail(msg);
                    return;
                }
                if let Some(use_instead) = wrong {
                    let msg = format!(
                        "{} to {r} replicas, but CloneSet {} has {current}; use {use_instead}",
                        if action == Action::ScaleOut {
                            "scale_out"
                        } else {
                            "scale_in"
                        },
                        self.cs_name()
                    );
                    self.set_phase(DeployPhase::Failed, Some(msg));
                    return;
                }
                if self.owned().is_none()
                    && let Some(holder) = self.w.holder.clone().filter(|h| h.running)
                {
                    if !(holder.paused && action.is_revision_changing()) {
                        self.wait(format!(
                            "waiting for DeployFlow {}, which is still releasing CloneSet {}",
                            holder.name,
                            self.cs_name()
                        ));
                        // The holder's progress wakes this one (DeployFlow watch); a timer too.
                        self.requeue_after(Duration::from_secs(30));
                        return;
                    }
                    self.before.push(Effect::Abort { name: holder.name });
                }
                self.before
                    .push(Effect::PatchCloneSet(cloneset::adopt_patch(self.w.df, cs)));
            }
        }
        // The CloneSet's size before we touch it: the base of scale targets and of cancel.
        self.status.replicas_at_start = Some(cs.map_or(0, |cs| cs.spec.replicas));
        if !action.is_revision_changing() {
            let mut names: Vec<String> = self
                .w
                .pods
                .iter()
                .filter(|p| !observe::is_terminating(p))
                .map(|p| p.name_any())
                .collect();
            names.sort();
            self.status.pods_at_start = Some(names);
        }
        self.status.started_at = Some(self.now());
        self.set_phase(DeployPhase::Initializing, None);
    }

    pub(super) fn initializing(&mut self) {
        let Some(cs) = self.w.cloneset else {
            if self.spec().action == Action::Create {
                // Created before the status write; the cache has not seen it yet, or it was
                // deleted at once: create it (again).
                self.before.push(Effect::CreateCloneSet(cloneset::manifest(
                    self.w.df,
                    &self.w.df.namespace().unwrap_or_default(),
                )));
                self.wait(format!("waiting for CloneSet {} to appear", self.cs_name()));
                return;
            }
            self.fail(format!(
                "CloneSet {} was deleted during the release",
                self.cs_name()
            ));
            return;
        };
        if self.owned().is_none() {
            match cs.released_by() {
                // Another running release holds it: it adopted it at the same moment.
                Some(other) if self.w.holder.as_ref().is_some_and(|h| h.running) => {
                    let msg = format!(
                        "CloneSet {} is held by DeployFlow {other}, which took it at the same time",
                        self.cs_name()
                    );
                    self.set_phase(DeployPhase::Failed, Some(msg));
                }
                None if self.spec().action == Action::Create => {
                    let msg = format!(
                        "CloneSet {} already exists (created by someone else); use action update",
                        self.cs_name()
                    );
                    self.set_phase(DeployPhase::Failed, Some(msg));
                }
                // No hold, or the hold of a release that is over (one this release aborted): the
                // cache has not caught up with this release's adoption before its status write.
                // Adopting again is harmless and ends the wait if the write was lost.
                _ => {
                    self.before
                        .push(Effect::PatchCloneSet(cloneset::adopt_patch(self.w.df, cs)));
                    self.wait(format!(
                        "waiting for CloneSet {} to show this release's hold",
                        self.cs_name()
                    ));
                    self.requeue_after(Duration::from_secs(5));
                }
            }
            return;
        }
        if !cs.caught_up() {
            self.wait(format!(
                "waiting for Kruise to observe CloneSet {} (generation {})",
                self.cs_name(),
                cs.metadata.generation.unwrap_or(0)
            ));
            return;
        }
        self.refresh(cs);
        // Pods already on the (new) update revision, once Kruise has seen the new template.
        self.status.updated_at_start = Some(if self.spec().action.is_revision_changing() {
            cs.status.updated_replicas
        } else {
            0
        });
        let spec = self.spec();
        let start = self.start_counts();
        self.status.replicas_to_process = release::replicas_to_process(
            spec.action,
            spec.application.replicas,
            start.updated_at_start,
            start.replicas_at_start,
            spec.pods_to_delete().len(),
        );
        self.set_phase(DeployPhase::BatchStarted, None);
    }

    pub(super) fn refresh(&mut self, cs: &crate::observe::CloneSetView) {
        self.status.replicas = cs.status.replicas;
        self.status.available_replicas = cs.status.available_replicas;
        self.status.updated_replicas = cs.status.updated_replicas;
        self.status.updated_ready_replicas = cs.status.updated_ready_replicas;
        self.status.update_revision = cs.status.update_revision.clone();
    }
}
