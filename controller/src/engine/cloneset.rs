//! The CloneSet as Triton writes it: the manifest of a `create`, the adoption patch, batch
//! targets, pause, and the release of the hold. Every write is a merge patch of only the fields
//! Triton owns (STYLE §3): Kruise and other writers keep theirs.

use serde_json::{Map, Value, json};
use triton_core::names::*;
use triton_core::release::CloneSetTarget;

use crate::crd::DeployFlow;
use crate::observe::CloneSetView;
use kube::ResourceExt;

/// The label set Triton puts on the CloneSet, its selector and its pods (reference §4.4).
pub fn default_labels(df: &DeployFlow) -> Map<String, Value> {
    let app = &df.spec.application;
    let mut m = Map::new();
    m.insert(NAME_LABEL.into(), json!(app.app_name));
    m.insert(INSTANCE_LABEL.into(), json!(app.instance_name));
    m.insert("app".into(), json!(app.app_id.to_string()));
    m.insert("group".into(), json!(app.group_id.to_string()));
    m.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY_VALUE));
    m
}

/// The pod template of the CloneSet: the user's, with the default labels. The readiness gate
/// is not written here: the webhook injects it at pod creation (DESIGN §2, decision 1).
pub fn template(df: &DeployFlow) -> Value {
    let mut t = serde_json::to_value(&df.spec.application.template).unwrap_or_else(|_| json!({}));
    if !t.is_object() {
        t = json!({});
    }
    let labels = &mut t["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    if let Some(labels) = labels.as_object_mut() {
        labels.extend(default_labels(df));
    }
    t
}

/// The CloneSet of a `create` release: no replicas yet (batches grow it), held by the release.
pub fn manifest(df: &DeployFlow, namespace: &str) -> Value {
    let labels = default_labels(df);
    json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": CLONESET_KIND,
        "metadata": {
            "name": df.spec.application.instance_name, "namespace": namespace, "labels": labels,
            "annotations": {RELEASE_ANNOTATION: df.name_any()},
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": template(df),
            "updateStrategy": {"type": "ReCreate", "maxSurge": "60%", "maxUnavailable": 0, "paused": false}
        }
    })
}

/// Takes hold of an existing CloneSet: the release annotation (and no DeployFlow owner
/// reference, which an older Triton wrote); for update/rollback also the new template with every
/// pod held back by the partition.
pub fn adopt_patch(df: &DeployFlow, cs: &CloneSetView) -> Value {
    let mut spec = json!({"updateStrategy": {"paused": false}});
    if df.spec.action.is_revision_changing() {
        let r = df.spec.application.replicas;
        spec = json!({
            "replicas": r,
            "template": template(df),
            "updateStrategy": {"paused": false, "partition": r, "maxSurge": "60%", "maxUnavailable": 0}
        });
    }
    let mut patch = json!({
        "metadata": {"annotations": {RELEASE_ANNOTATION: df.name_any()}},
        "spec": spec
    });
    strip_deployflow_owners(cs, &mut patch);
    patch
}

/// Releases the hold: the annotation goes (and `podsToDelete`, and a pause, when asked).
pub fn release_patch(cs: &CloneSetView, unpause: bool) -> Value {
    let mut patch = json!({"metadata": {"annotations": {RELEASE_ANNOTATION: null}}});
    if unpause {
        patch["spec"] = json!({"updateStrategy": {"paused": false}});
    }
    strip_deployflow_owners(cs, &mut patch);
    patch
}

/// Removes DeployFlow owner references (left by an older Triton), with the CloneSet's
/// resourceVersion as precondition since the list is replaced whole.
fn strip_deployflow_owners(cs: &CloneSetView, patch: &mut Value) {
    if !cs.has_deployflow_owner() {
        return;
    }
    let kept: Vec<Value> = cs
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| !(r.kind == "DeployFlow" && r.api_version.starts_with("apps.triton.io/")))
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect();
    patch["metadata"]["ownerReferences"] = json!(kept);
    patch["metadata"]["resourceVersion"] = json!(cs.metadata.resource_version);
}

/// The patch that brings the CloneSet to `target` (and `podsToDelete`, when given); `None` when
/// the CloneSet already has it.
pub fn target_patch(
    cs: Option<&CloneSetView>,
    target: CloneSetTarget,
    pods_to_delete: Option<&[String]>,
) -> Option<Value> {
    let mut spec = Map::new();
    if let Some(r) = target.replicas
        && cs.is_none_or(|cs| cs.spec.replicas != r)
    {
        spec.insert("replicas".into(), json!(r));
    }
    if let Some(p) = target.partition
        && cs.is_none_or(|cs| cs.partition() != Some(p))
    {
        spec.insert("updateStrategy".into(), json!({"partition": p}));
    }
    if let Some(names) = pods_to_delete.filter(|n| !n.is_empty())
        && cs.is_none_or(|cs| !names.iter().all(|n| cs.pods_to_delete().contains(n)))
    {
        // Kruise deletes the named pods when it scales down; keep names it still lists.
        let mut all: Vec<String> = cs
            .map(|cs| cs.pods_to_delete().to_vec())
            .unwrap_or_default();
        for n in names {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
        spec.insert("scaleStrategy".into(), json!({"podsToDelete": all}));
    }
    (!spec.is_empty()).then(|| json!({"spec": spec}))
}

/// The finish of a batch: every target field (the decision is new, so the cache is not asked
/// whether it is already there), and the pods to delete added to those the CloneSet lists (a
/// merge patch replaces the list: an earlier batch's pod not yet deleted must stay in it).
pub fn finish_patch(
    cs: &CloneSetView,
    target: CloneSetTarget,
    victims: &[String],
) -> Option<Value> {
    let mut patch = target_patch(None, target, None).unwrap_or_else(|| json!({"spec": {}}));
    if !victims.is_empty() {
        let mut all = cs.pods_to_delete().to_vec();
        for n in victims {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
        patch["spec"]["scaleStrategy"] = json!({"podsToDelete": all});
    }
    (patch["spec"].as_object().is_some_and(|m| !m.is_empty())).then_some(patch)
}

/// Whether the CloneSet (as cached) has carried out a finish: its spec shows `target`, Kruise
/// has observed that spec, and every pod to delete is terminating or gone (`live` are the
/// names of the pods not terminating).
pub fn reached(
    cs: &CloneSetView,
    target: CloneSetTarget,
    pods_to_delete: &[String],
    live: &[String],
) -> bool {
    target.replicas.is_none_or(|r| cs.spec.replicas == r)
        && target.partition.is_none_or(|p| cs.partition() == Some(p))
        && cs.caught_up()
        && pods_to_delete.iter().all(|n| !live.contains(n))
}

/// Pauses or unpauses the CloneSet's update.
pub fn pause_patch(paused: bool) -> Value {
    json!({"spec": {"updateStrategy": {"paused": paused}}})
}
