//! Reading pods, CloneSets and EndpointSlices: pod phases, batch attribution, pull-in checks.
//! Pure functions over Kubernetes objects (no client), unit-tested with fixtures.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;
use serde_json::Value;
use triton_core::names::{
    AGENT_ANNOTATION, HEALTHY_CONDITION, READY_GATE, RELEASE_ANNOTATION, REVISION_LABEL,
};

/// Pull-in statuses (reference §4.4).
pub const PULL_IN_SUCCEEDED: &str = "PullInSucceeded";
pub const PULL_IN_FAILED: &str = "PullInFailed";

/// The CloneSet fields the controller reads.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetView {
    #[serde(default)]
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default)]
    pub spec: CloneSetSpecView,
    #[serde(default)]
    pub status: CloneSetStatusView,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetSpecView {
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub update_strategy: UpdateStrategyView,
    #[serde(default)]
    pub scale_strategy: ScaleStrategyView,
    #[serde(default)]
    pub template: TemplateView,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct TemplateView {
    #[serde(default)]
    pub metadata: TemplateMetaView,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct TemplateMetaView {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategyView {
    /// An int or a percentage; Triton only writes ints.
    #[serde(default)]
    pub partition: Option<Value>,
    #[serde(default)]
    pub paused: bool,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStrategyView {
    #[serde(default)]
    pub pods_to_delete: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetStatusView {
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub available_replicas: i32,
    #[serde(default)]
    pub updated_replicas: i32,
    #[serde(default)]
    pub updated_ready_replicas: i32,
    #[serde(default)]
    pub update_revision: Option<String>,
}

impl CloneSetView {
    pub fn from_value(v: Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(v)
    }
    /// From the cache's untyped CloneSet, read in place (no copy of its JSON).
    pub fn from_raw(cs: &crate::raw::RawCloneSet) -> Result<Self, serde_json::Error> {
        fn part<T: serde::de::DeserializeOwned + Default>(
            v: Option<&Value>,
        ) -> Result<T, serde_json::Error> {
            match v {
                None | Some(Value::Null) => Ok(T::default()),
                Some(v) => T::deserialize(v),
            }
        }
        Ok(CloneSetView {
            metadata: cs.metadata.clone(),
            spec: part(cs.data.get("spec"))?,
            status: part(cs.data.get("status"))?,
        })
    }
    /// Whether Kruise has observed the latest spec.
    pub fn caught_up(&self) -> bool {
        self.metadata.generation.unwrap_or(0) == self.status.observed_generation
    }
    /// The DeployFlow releasing this CloneSet (annotation `apps.triton.io/deployflow`).
    pub fn released_by(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(RELEASE_ANNOTATION)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
    /// Whether an older Triton left a DeployFlow owner reference (which lets the garbage
    /// collector delete the CloneSet with the DeployFlow).
    pub fn has_deployflow_owner(&self) -> bool {
        self.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.kind == "DeployFlow" && r.api_version.starts_with("apps.triton.io/"))
    }
    /// `spec.updateStrategy.partition` when it is a number.
    pub fn partition(&self) -> Option<i32> {
        match self.spec.update_strategy.partition.as_ref()? {
            Value::Number(n) => n.as_i64().map(|n| n as i32),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
    /// The labels of the pods the CloneSet creates.
    pub fn template_labels(&self) -> &BTreeMap<String, String> {
        &self.spec.template.metadata.labels
    }
    pub fn pods_to_delete(&self) -> &[String] {
        self.spec
            .scale_strategy
            .pods_to_delete
            .as_deref()
            .unwrap_or(&[])
    }
}

pub fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// The reason of the pod condition `type_`, if the pod has it.
pub fn condition_reason<'a>(pod: &'a Pod, type_: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?
        .reason
        .as_deref()
}

pub fn is_true(pod: &Pod, type_: &str) -> bool {
    condition(pod, type_) == Some("True")
}

pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// The pod phase string of a PodInfo (reference §2.9).
pub fn pod_phase(pod: &Pod) -> String {
    if is_true(pod, "Ready") {
        "Ready".into()
    } else if is_true(pod, "ContainersReady") {
        "ContainersReady".into()
    } else if restarts(pod) > 0 {
        "Failed".into()
    } else {
        pod.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into())
    }
}

/// A pod is failing when a container restarted and it is not ContainersReady now, its phase is
/// Failed (the reference ignored ContainersReady, §9 item 9), or a container waits for a reason
/// that does not clear by itself ([`TERMINAL_WAITING_REASONS`]).
pub fn is_failing(pod: &Pod) -> bool {
    let phase_failed = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed");
    phase_failed
        || (restarts(pod) > 0 && !is_true(pod, "ContainersReady"))
        || terminal_reason(pod).is_some()
        || agent_failure(pod).is_some()
}

/// Whether the pod runs the readiness agent (annotation `apps.triton.io/agent`).
pub fn has_agent(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(AGENT_ANNOTATION))
}

/// A pod without the agent is healthy; one with it, when its agent says so (condition
/// `apps.triton.io/healthy` True).
pub fn agent_healthy(pod: &Pod) -> bool {
    !has_agent(pod) || is_true(pod, HEALTHY_CONDITION)
}

/// Why the agent says the app failed: the condition False for a reason other than `Starting`
/// (the app not healthy yet, which the smoke timeout bounds). `AgentSilent` is a failure.
pub fn agent_failure(pod: &Pod) -> Option<String> {
    if !has_agent(pod) || condition(pod, HEALTHY_CONDITION) != Some("False") {
        return None;
    }
    let reason = condition_reason(pod, HEALTHY_CONDITION).unwrap_or("");
    if reason.is_empty() || reason == crate::agent::STARTING {
        return None;
    }
    let message = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == HEALTHY_CONDITION))
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    Some(format!("agent: {reason} {message}").trim().to_string())
}

/// Container waiting reasons that do not clear without a change to the pod's spec or config:
/// a pod in one of them fails its batch at once instead of at the smoke timeout.
pub const TERMINAL_WAITING_REASONS: [&str; 5] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RunContainerError",
];

/// Why a pod is not ready, for status messages: a container's waiting or terminated reason,
/// the scheduler's verdict, or the pod phase.
pub fn not_ready_reason(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let containers = status.into_iter().flat_map(|s| {
        s.init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
    });
    for c in containers {
        let Some(state) = c.state.as_ref() else {
            continue;
        };
        if let Some(w) = state.waiting.as_ref().filter(|_| !c.ready)
            && let Some(reason) = w.reason.as_deref()
        {
            return match w.message.as_deref().filter(|m| !m.is_empty()) {
                Some(m) => format!("{reason}: {}", truncate(m, 120)),
                None => reason.to_string(),
            };
        }
    }
    if let Some(c) = status.and_then(|s| s.conditions.as_ref()).and_then(|cs| {
        cs.iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    }) {
        let reason = c.reason.as_deref().unwrap_or("not scheduled");
        return match c.message.as_deref().filter(|m| !m.is_empty()) {
            Some(m) => format!("{reason}: {}", truncate(m, 120)),
            None => reason.to_string(),
        };
    }
    if restarts(pod) > 0 && !is_true(pod, "ContainersReady") {
        return format!("restarting ({} restarts)", restarts(pod));
    }
    if let Some(why) = agent_failure(pod) {
        return why;
    }
    if is_true(pod, "ContainersReady") && !agent_healthy(pod) {
        let why = condition_reason(pod, HEALTHY_CONDITION).unwrap_or("no report yet");
        return format!("agent: not healthy yet ({why})");
    }
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    format!("{phase}, containers not ready")
}

/// "name (why it is not ready)", for status messages.
pub fn describe(pod: &Pod) -> String {
    format!(
        "{} ({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        not_ready_reason(pod)
    )
}

/// A waiting reason that will not clear by itself (see [`TERMINAL_WAITING_REASONS`]).
pub fn terminal_reason(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .find(|r| TERMINAL_WAITING_REASONS.contains(&r.as_str()))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Whether a pod has passed its smoke test: containers ready (or fully Ready).
pub fn is_smoked(pod: &Pod) -> bool {
    (is_true(pod, "ContainersReady") || is_true(pod, "Ready")) && agent_healthy(pod)
}

pub fn has_gate(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.condition_type == READY_GATE))
}

pub fn revision(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Neither terminating nor ended (phase Failed or Succeeded: an evicted pod stays until garbage
/// collected, and its controller has already replaced it).
pub fn is_active(pod: &Pod) -> bool {
    !is_terminating(pod)
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Failed" | "Succeeded")
        )
}

/// The app port: the first port of the first container named "" or `app-port`, else the first.
pub fn app_port(pod: &Pod) -> i32 {
    let ports = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten());
    let all: Vec<_> = ports.collect();
    all.iter()
        .find(|p| {
            p.name
                .as_deref()
                .is_none_or(|n| n.is_empty() || n == "app-port")
        })
        .or(all.first())
        .map_or(0, |p| p.container_port)
}

/// Picks the pods of a batch that started at `started_at`: pods on `revision` (when given),
/// created at or after the batch start (second resolution), not terminating, not attributed to
/// another batch; oldest first, at most `size`.
pub fn attribute_batch<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    revision_filter: Option<&str>,
    started_at: Option<&Time>,
    other_batches: &[String],
    size: usize,
) -> Vec<&'a Pod> {
    let start_secs = started_at.map(|t| t.0.as_second());
    let mut picked: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| !is_terminating(p))
        .filter(|p| revision_filter.is_none_or(|r| revision(p) == Some(r)))
        .filter(|p| {
            let created = p
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second());
            match (start_secs, created) {
                (Some(s), Some(c)) => c >= s,
                _ => true,
            }
        })
        .filter(|p| {
            !other_batches
                .iter()
                .any(|n| Some(n) == p.metadata.name.as_ref())
        })
        .collect();
    picked.sort_by(|a, b| {
        let key = |p: &Pod| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    picked.truncate(size);
    picked
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether the pod is listed `ready` in the EndpointSlices of every Service that selects it
/// (a pod no Service selects is pulled in at once). `Err` names the first Service where it is not.
pub fn pulled_in<S, E>(pod: &Pod, services: &[S], slices: &[E]) -> Result<(), String>
where
    S: std::borrow::Borrow<Service>,
    E: std::borrow::Borrow<EndpointSlice>,
{
    let ns = pod.metadata.namespace.as_deref();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    for svc in services
        .iter()
        .map(|s| s.borrow())
        .filter(|s| s.metadata.namespace.as_deref() == ns)
    {
        let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        if !selects(selector, &labels) {
            continue;
        }
        let svc_name = svc.metadata.name.as_deref().unwrap_or_default();
        let ready = slices
            .iter()
            .map(|s| s.borrow())
            .filter(|s| s.metadata.namespace.as_deref() == ns)
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .map(String::as_str)
                    == Some(svc_name)
            })
            .flat_map(|s| s.endpoints.iter().flatten())
            .any(|ep| {
                ep.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && ep.conditions.as_ref().and_then(|c| c.ready) == Some(true)
            });
        if !ready {
            return Err(format!("not yet a ready endpoint of Service {svc_name}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, created: &str, conds: &[(&str, &str)], restarts: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created,
                "labels": {"app": "a", "controller-revision-hash": "r1"}},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}],
                "readinessGates": [{"conditionType": READY_GATE}]},
            "status": {"phase": "Running",
                "conditions": conds.iter().map(|(t, s)| json!({"type": t, "status": s})).collect::<Vec<_>>(),
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": restarts}]}
        }))
        .unwrap()
    }

    #[test]
    fn phases_follow_the_original_order() {
        assert_eq!(
            pod_phase(&pod(
                "a",
                "2026-01-01T00:00:00Z",
                &[("Ready", "True"), ("ContainersReady", "True")],
                0
            )),
            "Ready"
        );
        assert_eq!(
            pod_phase(&pod(
                "a",
                "2026-01-01T00:00:00Z",
                &[("ContainersReady", "True")],
                0
            )),
            "ContainersReady"
        );
        assert_eq!(
            pod_phase(&pod("a", "2026-01-01T00:00:00Z", &[], 2)),
            "Failed"
        );
        assert_eq!(
            pod_phase(&pod("a", "2026-01-01T00:00:00Z", &[], 0)),
            "Running"
        );
    }

    #[test]
    fn a_restarted_pod_that_recovered_is_not_failing() {
        assert!(is_failing(&pod(
            "a",
            "2026-01-01T00:00:00Z",
            &[("ContainersReady", "False")],
            1
        )));
        assert!(!is_failing(&pod(
            "a",
            "2026-01-01T00:00:00Z",
            &[("ContainersReady", "True")],
            1
        )));
    }

    #[test]
    fn a_pod_that_is_ready_counts_as_smoked() {
        assert!(is_smoked(&pod(
            "a",
            "2026-01-01T00:00:00Z",
            &[("Ready", "True")],
            0
        )));
    }

    #[test]
    fn batch_attribution_skips_older_and_other_batch_pods() {
        let pods = vec![
            pod("old", "2026-01-01T00:00:00Z", &[], 0),
            pod("b1", "2026-01-01T00:01:00Z", &[], 0),
            pod("new2", "2026-01-01T00:02:01Z", &[], 0),
            pod("new1", "2026-01-01T00:02:00Z", &[], 0),
        ];
        let start: Time = serde_json::from_value(json!("2026-01-01T00:00:30Z")).unwrap();
        let got = attribute_batch(&pods[..], Some("r1"), Some(&start), &["b1".into()], 1);
        assert_eq!(
            got.iter()
                .map(|p| p.metadata.name.clone().unwrap())
                .collect::<Vec<_>>(),
            vec!["new1"]
        );
    }

    #[test]
    fn pull_in_needs_a_ready_endpoint_in_every_selecting_service() {
        let p = pod("p1", "2026-01-01T00:00:00Z", &[], 0);
        let svc = |name: &str, sel: Value| -> Service {
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {"selector": sel}}),
            )
            .unwrap()
        };
        let slice = |svc: &str, ready: bool| -> EndpointSlice {
            serde_json::from_value(json!({"metadata": {"name": format!("{svc}-x"), "namespace": "ns", "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.1.1"], "conditions": {"ready": ready}, "targetRef": {"kind": "Pod", "name": "p1"}}]}))
            .unwrap()
        };
        assert!(
            pulled_in::<Service, EndpointSlice>(&p, &[], &[]).is_ok(),
            "no Service selects it"
        );
        let services = vec![
            svc("a", json!({"app": "a"})),
            svc("other", json!({"app": "zzz"})),
        ];
        assert!(pulled_in(&p, &services, &[slice("a", false)]).is_err());
        assert!(pulled_in(&p, &services, &[slice("a", true)]).is_ok());
        let two = vec![svc("a", json!({"app": "a"})), svc("b", json!({"app": "a"}))];
        let err = pulled_in(&p, &two, &[slice("a", true)]).unwrap_err();
        assert!(err.contains("Service b"), "{err}");
    }
}
