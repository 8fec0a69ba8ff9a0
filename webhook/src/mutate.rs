//! The mutation itself: a pure function from a pod (and the injection settings) to a JSON Patch.
//!
//! A pod gets the readiness gate [`READY_GATE`] when it is labelled `managed-by=triton-io` and
//! owned by an OpenKruise CloneSet. If it also carries the annotation [`AGENT_ANNOTATION`], the
//! readiness-agent sidecar, its projected token volume and its environment are injected too —
//! unless the agent is disabled (`--enable-agent=false`), when such a pod is refused with
//! [`MutateError::AgentUnavailable`].
//! Everything is idempotent: a pod that already has what we add gets nothing twice, so the API
//! server's reinvocation (`reinvocationPolicy: IfNeeded`) is harmless.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodReadinessGate,
    ProjectedVolumeSource, ResourceRequirements, SecurityContext, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;
use triton_core::names::*;

/// How the readiness-agent sidecar is injected (from the webhook's flags).
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSettings {
    pub image: String,
    /// Address of the controller's agent API the agent reports to.
    pub controller_address: String,
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
    /// Lifetime of the projected token (the kubelet refreshes it before expiry).
    pub token_expiration_seconds: i64,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/triton-io/triton-agent:0.1.0".into(),
            controller_address: "http://triton-api.triton-system.svc:8097".into(),
            cpu_request: "5m".into(),
            memory_request: "8Mi".into(),
            cpu_limit: "50m".into(),
            memory_limit: "32Mi".into(),
            token_expiration_seconds: 3600,
        }
    }
}

/// Why a pod is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MutateError {
    #[error("annotation {AGENT_ANNOTATION}: {0}")]
    BadAgentAnnotation(String),
    /// The pod asks for the agent sidecar, and this webhook runs with `--enable-agent=false`.
    #[error(
        "the annotation {AGENT_ANNOTATION} asks for the {AGENT_CONTAINER} readiness sidecar, which this cluster's Triton does not inject (--enable-agent=false); remove the annotation"
    )]
    AgentUnavailable,
}

/// What the webhook decided for one pod.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Not a Triton-managed CloneSet pod: allowed untouched.
    NotManaged,
    /// Managed, and already carries everything: allowed untouched.
    UpToDate,
    /// Managed: allowed with this patch.
    Patch(Patch),
}

/// A parsed probe target of the agent annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    Http {
        host: String,
        port: u16,
        path: String,
    },
    Tcp {
        host: String,
        port: u16,
    },
}

/// Parses `http://[host]:port[/path]` or `tcp://[host]:port` (host empty means the pod itself).
pub fn parse_probe_target(value: &str) -> Result<ProbeTarget, MutateError> {
    let bad = |why: &str| {
        MutateError::BadAgentAnnotation(format!(
            "{why} (got {value:?}; expected http://[host]:port[/path] or tcp://[host]:port, e.g. http://:8080/healthz)"
        ))
    };
    let (scheme, rest) = value
        .split_once("://")
        .ok_or_else(|| bad("missing scheme"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| bad("missing port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("port is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(bad("port is not a number from 1 to 65535"));
    }
    let host_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    if !host_ok {
        return Err(bad("host has characters a host name cannot have"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("path has white space or control characters"));
    }
    match scheme {
        "http" => Ok(ProbeTarget::Http {
            host: host.into(),
            port,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
        }),
        "tcp" if path.is_empty() || path == "/" => Ok(ProbeTarget::Tcp {
            host: host.into(),
            port,
        }),
        "tcp" => Err(bad("a tcp target has no path")),
        _ => Err(bad("scheme must be http or tcp")),
    }
}

/// Whether the pod is one Triton manages: labelled `managed-by=triton-io` and owned by a CloneSet.
pub fn is_managed(pod: &Pod) -> bool {
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE);
    let owned = pod.metadata.owner_references.as_ref().is_some_and(|refs| {
        refs.iter().any(|r| {
            r.kind == CLONESET_KIND && r.api_version.split('/').next() == Some(KRUISE_GROUP)
        })
    });
    labelled && owned
}

/// Decides what to do with a pod at creation. `agent` is `None` when the readiness agent is not
/// available (the default): a managed pod asking for it is then refused.
pub fn mutate(pod: &Pod, agent: Option<&AgentSettings>) -> Result<Decision, MutateError> {
    if !is_managed(pod) {
        return Ok(Decision::NotManaged);
    }
    let mut ops = Vec::new();
    let spec = pod.spec.clone().unwrap_or_default();

    let gates = spec.readiness_gates.as_deref().unwrap_or_default();
    if !gates.iter().any(|g| g.condition_type == READY_GATE) {
        let gate = to_value(PodReadinessGate {
            condition_type: READY_GATE.into(),
        });
        if spec.readiness_gates.is_none() {
            ops.push(add(&["spec", "readinessGates"], Value::Array(vec![gate])));
        } else {
            ops.push(add(&["spec", "readinessGates", "-"], gate));
        }
    }

    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(AGENT_ANNOTATION));
    if let Some(target) = annotation {
        let Some(agent) = agent else {
            return Err(MutateError::AgentUnavailable);
        };
        parse_probe_target(target)?;
        if !spec.containers.iter().any(|c| c.name == AGENT_CONTAINER) {
            ops.push(add(
                &["spec", "containers", "-"],
                to_value(agent_container(agent, target)),
            ));
        }
        let volumes = spec.volumes.as_deref().unwrap_or_default();
        if !volumes.iter().any(|v| v.name == AGENT_TOKEN_VOLUME) {
            let volume = to_value(token_volume(agent));
            if spec.volumes.is_none() {
                ops.push(add(&["spec", "volumes"], Value::Array(vec![volume])));
            } else {
                ops.push(add(&["spec", "volumes", "-"], volume));
            }
        }
    }

    Ok(if ops.is_empty() {
        Decision::UpToDate
    } else {
        Decision::Patch(Patch(ops))
    })
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("k8s-openapi types serialize")
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
        value: None,
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The readiness-agent sidecar.
pub fn agent_container(agent: &AgentSettings, target: &str) -> Container {
    let quantities = |cpu: &str, mem: &str| {
        [
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(mem.into())),
        ]
        .into()
    };
    Container {
        name: AGENT_CONTAINER.into(),
        image: Some(agent.image.clone()),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("POD_UID", "metadata.uid"),
            plain_env("TRITON_AGENT_TARGET", target),
            plain_env("TRITON_AGENT_CONTROLLER", &agent.controller_address),
            plain_env(
                "TRITON_AGENT_TOKEN_FILE",
                &format!("{AGENT_TOKEN_DIR}/token"),
            ),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&agent.cpu_request, &agent.memory_request)),
            limits: Some(quantities(&agent.cpu_limit, &agent.memory_limit)),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: AGENT_TOKEN_VOLUME.into(),
            mount_path: AGENT_TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The projected service-account token the agent presents to the controller.
pub fn token_volume(agent: &AgentSettings) -> Volume {
    Volume {
        name: AGENT_TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(AGENT_AUDIENCE.into()),
                    expiration_seconds: Some(agent.token_expiration_seconds),
                    path: "token".into(),
                }),
                ..Default::default()
            }]),
            default_mode: Some(0o444),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Builder for fixture pods.
    struct PodFixture(Value);

    impl PodFixture {
        fn cloneset_pod() -> Self {
            Self(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "generateName": "sample-", "namespace": "default",
                    "labels": {"app": "12122", "managed-by": "triton-io"},
                    "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                        "name": "sample", "uid": "5f0c", "controller": true}]
                },
                "spec": {
                    "containers": [{"name": "app", "image": "nginx"}],
                    "readinessGates": [{"conditionType": "InPlaceUpdateReady"}]
                }
            }))
        }
        fn set(mut self, pointer: &str, value: Value) -> Self {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            self.0
                .pointer_mut(parent)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert(key.into(), value);
            self
        }
        fn remove(mut self, pointer: &str) -> Self {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            self.0
                .pointer_mut(parent)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(key);
            self
        }
        fn agent(self, target: &str) -> Self {
            self.set("/metadata/annotations", json!({AGENT_ANNOTATION: target}))
        }
        fn pod(&self) -> Pod {
            serde_json::from_value(self.0.clone()).unwrap()
        }
    }

    /// The webhook with `--enable-agent`.
    fn with_agent(pod: &Pod) -> Result<Decision, MutateError> {
        mutate(pod, Some(&AgentSettings::default()))
    }

    /// The webhook as it runs by default: no agent.
    fn without_agent(pod: &Pod) -> Result<Decision, MutateError> {
        mutate(pod, None)
    }

    /// Applies the decision's patch to the fixture, as the API server would (agent enabled).
    fn admit(fixture: &PodFixture) -> Pod {
        let mut doc = fixture.0.clone();
        if let Decision::Patch(patch) = with_agent(&fixture.pod()).unwrap() {
            json_patch::patch(&mut doc, &patch).expect("the patch applies to the pod");
        }
        serde_json::from_value(doc).unwrap()
    }

    fn gates(pod: &Pod) -> Vec<String> {
        pod.spec
            .as_ref()
            .unwrap()
            .readiness_gates
            .iter()
            .flatten()
            .map(|g| g.condition_type.clone())
            .collect()
    }

    #[test]
    fn managed_cloneset_pod_gets_the_gate_and_keeps_kruise_gates() {
        let pod = admit(&PodFixture::cloneset_pod());
        assert_eq!(gates(&pod), vec!["InPlaceUpdateReady", READY_GATE]);
    }

    #[test]
    fn pod_without_readiness_gates_gets_a_list_with_the_gate() {
        let pod = admit(&PodFixture::cloneset_pod().remove("/spec/readinessGates"));
        assert_eq!(gates(&pod), vec![READY_GATE]);
    }

    #[test]
    fn both_kruise_gates_are_kept() {
        let fixture = PodFixture::cloneset_pod().set(
            "/spec/readinessGates",
            json!([{"conditionType": "InPlaceUpdateReady"}, {"conditionType": "KruisePodReady"}]),
        );
        assert_eq!(
            gates(&admit(&fixture)),
            vec!["InPlaceUpdateReady", "KruisePodReady", READY_GATE]
        );
    }

    #[test]
    fn reinvocation_adds_nothing_twice() {
        let once = admit(&PodFixture::cloneset_pod().agent("http://:8080/healthz"));
        let decision = with_agent(&once).unwrap();
        assert_eq!(decision, Decision::UpToDate);
    }

    #[test]
    fn unlabelled_pod_is_not_touched() {
        let fixture = PodFixture::cloneset_pod().remove("/metadata/labels/managed-by");
        assert_eq!(with_agent(&fixture.pod()).unwrap(), Decision::NotManaged);
    }

    #[test]
    fn pod_with_other_managed_by_value_is_not_touched() {
        let fixture = PodFixture::cloneset_pod().set("/metadata/labels/managed-by", json!("helm"));
        assert_eq!(with_agent(&fixture.pod()).unwrap(), Decision::NotManaged);
    }

    #[test]
    fn labelled_pod_not_owned_by_a_cloneset_is_not_touched() {
        for owner in [
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "1"}]),
            json!([{"apiVersion": "example.com/v1", "kind": "CloneSet", "name": "x", "uid": "1"}]),
            json!([]),
        ] {
            let fixture =
                PodFixture::cloneset_pod().set("/metadata/ownerReferences", owner.clone());
            assert_eq!(
                with_agent(&fixture.pod()).unwrap(),
                Decision::NotManaged,
                "{owner}"
            );
        }
    }

    #[test]
    fn cloneset_of_any_kruise_version_counts() {
        let fixture = PodFixture::cloneset_pod().set(
            "/metadata/ownerReferences",
            json!([{"apiVersion": "apps.kruise.io/v1beta1", "kind": "CloneSet", "name": "x", "uid": "1"}]),
        );
        assert_eq!(
            gates(&admit(&fixture)),
            vec!["InPlaceUpdateReady", READY_GATE]
        );
    }

    #[test]
    fn annotated_pod_gets_agent_sidecar_token_volume_and_environment() {
        let pod = admit(&PodFixture::cloneset_pod().agent("http://:8080/healthz"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.containers.len(), 2);
        let agent = spec
            .containers
            .iter()
            .find(|c| c.name == AGENT_CONTAINER)
            .expect("agent container");
        let env: Vec<(String, Option<String>, Option<String>)> = agent
            .env
            .iter()
            .flatten()
            .map(|e| {
                let field = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .map(|f| f.field_path.clone());
                (e.name.clone(), e.value.clone(), field)
            })
            .collect();
        assert!(env.contains(&("POD_NAME".into(), None, Some("metadata.name".into()))));
        assert!(env.contains(&(
            "POD_NAMESPACE".into(),
            None,
            Some("metadata.namespace".into())
        )));
        assert!(env.contains(&("POD_UID".into(), None, Some("metadata.uid".into()))));
        assert!(env.contains(&(
            "TRITON_AGENT_TARGET".into(),
            Some("http://:8080/healthz".into()),
            None
        )));
        let mount = &agent.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (
                mount.name.as_str(),
                mount.mount_path.as_str(),
                mount.read_only
            ),
            (AGENT_TOKEN_VOLUME, AGENT_TOKEN_DIR, Some(true))
        );
        let resources = agent.resources.as_ref().unwrap();
        assert_eq!(
            resources.limits.as_ref().unwrap()["memory"],
            Quantity("32Mi".into())
        );

        let volume = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == AGENT_TOKEN_VOLUME)
            .expect("token volume");
        let token = volume.projected.unwrap().sources.unwrap()[0]
            .service_account_token
            .clone()
            .unwrap();
        assert_eq!(token.audience.as_deref(), Some(AGENT_AUDIENCE));
        assert_eq!(token.path, "token");
    }

    #[test]
    fn agent_volume_is_appended_to_existing_volumes() {
        let fixture = PodFixture::cloneset_pod()
            .agent("tcp://:5432")
            .set("/spec/volumes", json!([{"name": "data", "emptyDir": {}}]));
        let names: Vec<String> = admit(&fixture)
            .spec
            .unwrap()
            .volumes
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, vec!["data", AGENT_TOKEN_VOLUME]);
    }

    #[test]
    fn agent_annotation_on_unmanaged_pod_is_ignored() {
        let fixture = PodFixture::cloneset_pod()
            .agent("nonsense")
            .remove("/metadata/labels/managed-by");
        assert_eq!(with_agent(&fixture.pod()).unwrap(), Decision::NotManaged);
    }

    #[test]
    fn bad_agent_annotation_is_refused_naming_the_annotation() {
        for bad in [
            "",
            "8080",
            "ftp://:21",
            "http://:notaport/",
            "http://:0/",
            "http://:70000/",
            "tcp://:5432/path",
            "http://a b:80/",
        ] {
            let fixture = PodFixture::cloneset_pod().agent(bad);
            let err = with_agent(&fixture.pod()).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("annotation {AGENT_ANNOTATION}:")),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn probe_targets_parse() {
        assert_eq!(
            parse_probe_target("http://:8080/healthz"),
            Ok(ProbeTarget::Http {
                host: "".into(),
                port: 8080,
                path: "/healthz".into()
            })
        );
        assert_eq!(
            parse_probe_target("http://localhost:80"),
            Ok(ProbeTarget::Http {
                host: "localhost".into(),
                port: 80,
                path: "/".into()
            })
        );
        assert_eq!(
            parse_probe_target("tcp://:5432"),
            Ok(ProbeTarget::Tcp {
                host: "".into(),
                port: 5432
            })
        );
    }

    const UNAVAILABLE: &str = "the annotation apps.triton.io/agent asks for the triton-agent readiness sidecar, which this cluster's Triton does not inject (--enable-agent=false); remove the annotation";

    #[test]
    fn without_the_agent_an_annotated_managed_pod_is_refused_saying_the_agent_is_not_available() {
        for target in ["http://:8080/healthz", "tcp://:5432"] {
            let fixture = PodFixture::cloneset_pod().agent(target);
            let err = without_agent(&fixture.pod()).unwrap_err();
            assert_eq!(err, MutateError::AgentUnavailable, "{target}");
            assert_eq!(err.to_string(), UNAVAILABLE);
        }
    }

    #[test]
    fn without_the_agent_a_bad_annotation_is_refused_as_unavailable_too() {
        // Fixing the value would not help: the refusal says what would.
        for bad in ["", "gopher://x", "http://:0/"] {
            let fixture = PodFixture::cloneset_pod().agent(bad);
            assert_eq!(
                without_agent(&fixture.pod()),
                Err(MutateError::AgentUnavailable),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn without_the_agent_a_managed_pod_without_the_annotation_gets_only_the_gate() {
        let Decision::Patch(patch) = without_agent(&PodFixture::cloneset_pod().pod()).unwrap()
        else {
            panic!("a managed pod is patched");
        };
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([{"op": "add", "path": "/spec/readinessGates/-", "value": {"conditionType": READY_GATE}}])
        );
    }

    #[test]
    fn without_the_agent_an_annotated_unmanaged_pod_is_still_allowed_untouched() {
        let fixture = PodFixture::cloneset_pod()
            .agent("http://:8080/healthz")
            .remove("/metadata/labels/managed-by");
        assert_eq!(without_agent(&fixture.pod()), Ok(Decision::NotManaged));
    }
}
