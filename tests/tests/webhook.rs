//! triton-webhook behind the real API server (tests/cluster/run --triton): pods of managed
//! CloneSets are born with the gate (once) and stay out of Ready; unmanaged pods are untouched;
//! the agent sidecar is injected on request and a bad request is refused with a message.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use triton_e2e::cloneset::CloneSetSpec;
use triton_e2e::*;

const READY_GATE: &str = "apps.triton.io/ready";

fn gate_count(pod: &Pod) -> usize {
    pod.spec
        .as_ref()
        .unwrap()
        .readiness_gates
        .iter()
        .flatten()
        .filter(|g| g.condition_type == READY_GATE)
        .count()
}

/// Checks, over every version of one pod in watch order, that Ready was never True while the
/// gate condition was not, and that the gate became True in an earlier version than Ready.
fn ready_only_through_the_gate(versions: &[Pod]) -> Result<(), String> {
    let name = versions
        .first()
        .and_then(|p| p.metadata.name.clone())
        .unwrap_or_default();
    for p in versions {
        if is_true(p, "Ready") && !is_true(p, READY_GATE) {
            return Err(format!(
                "{name} was Ready in resourceVersion {:?} while its gate was {:?}",
                p.metadata.resource_version,
                condition(p, READY_GATE)
            ));
        }
    }
    let first_gate = versions.iter().position(|p| is_true(p, READY_GATE));
    let first_ready = versions.iter().position(|p| is_true(p, "Ready"));
    match (first_gate, first_ready) {
        (Some(g), Some(r)) if g < r => Ok(()),
        (g, r) => Err(format!(
            "{name}: first version with the gate True #{g:?}, first Ready #{r:?} (of {} versions)",
            versions.len()
        )),
    }
}

/// With triton-controller running, a managed pod no release holds is pulled in as soon as it is
/// ContainersReady (DESIGN §2, decision 2), so "not Ready" is checked as: Ready only ever came
/// after the gate condition was set True, by the controller.
#[tokio::test]
async fn managed_cloneset_pods_carry_the_gate_once_and_become_ready_only_through_it_while_unmanaged_pods_carry_none()
 {
    let client = client().await;
    let ns = namespace(&client, "webhook-gate").await;
    // Every version of every pod, in the order the API server wrote them.
    let history = History::start(
        Api::<Pod>::namespaced(client.clone(), &ns),
        kube::runtime::watcher::Config::default().labels("app=managed"),
    )
    .await;
    let managed = CloneSetSpec::new("managed", 2)
        .pod_label("managed-by", "triton-io")
        .create(&client, &ns)
        .await;
    let plain = CloneSetSpec::new("plain", 2).create(&client, &ns).await;

    let pods = managed.wait_ready(2).await;
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap();
        assert_eq!(
            gate_count(pod),
            1,
            "exactly one {READY_GATE} gate on {name}"
        );
        let gates: Vec<_> = pod
            .spec
            .as_ref()
            .unwrap()
            .readiness_gates
            .iter()
            .flatten()
            .map(|g| g.condition_type.clone())
            .collect();
        assert!(
            gates.contains(&"InPlaceUpdateReady".to_string()),
            "Kruise's gate kept: {gates:?}"
        );
        let gate = pod
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == READY_GATE)
            .expect("the gate condition");
        assert_eq!(
            (gate.status.as_str(), gate.reason.as_deref()),
            ("True", Some("NotHeld")),
            "{name}: set by triton-controller"
        );
        let uid = pod.metadata.uid.clone();
        eventually(
            &format!("{name}'s history: Ready only after its gate was True"),
            Duration::from_secs(30),
            || async {
                let versions: Vec<Pod> = history
                    .versions()
                    .into_iter()
                    .filter(|p| p.metadata.uid == uid)
                    .collect();
                ready_only_through_the_gate(&versions)
            },
        )
        .await;
    }

    let plain_pods = plain.wait_ready(2).await;
    for pod in &plain_pods {
        assert_eq!(
            gate_count(pod),
            0,
            "unmanaged pod {:?} untouched",
            pod.metadata.name
        );
    }
}

/// A managed pod owned by a CloneSet, carrying the agent annotation `value`: the created pod,
/// or the create's error.
async fn create_annotated_pod(client: &kube::Client, ns: &str, value: &str) -> Result<Pod, String> {
    let owner = CloneSetSpec::new("owner", 0)
        .pod_label("managed-by", "triton-io")
        .create(client, ns)
        .await;
    let uid = owner.get().await["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "agented",
            "labels": {"managed-by": "triton-io", "app": "owner"},
            "annotations": {"apps.triton.io/agent": value},
            "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "owner", "uid": uid}]
        },
        "spec": {"containers": [{"name": "main", "image": "nginx"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .map_err(|e| e.to_string())
}

// A pod asking for the readiness agent gets the sidecar: its probe target, the controller's
// agent address, the pod's identity, and a projected token for audience triton-agent.
#[tokio::test]
async fn a_pod_asking_for_the_agent_gets_the_sidecar_with_its_target_and_a_pod_bound_token() {
    let client = client().await;
    let ns = namespace(&client, "webhook-agent").await;
    let pod = create_annotated_pod(&client, &ns, "http://:8080/healthz")
        .await
        .unwrap_or_else(|e| panic!("the annotated pod is admitted: {e}"));
    let spec = pod.spec.clone().unwrap();
    let agent = spec
        .containers
        .iter()
        .find(|c| c.name == "triton-agent")
        .unwrap_or_else(|| panic!("a triton-agent sidecar: {:?}", spec.containers));
    let env: std::collections::BTreeMap<String, String> = agent
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect();
    assert_eq!(
        env.get("TRITON_AGENT_TARGET").map(String::as_str),
        Some("http://:8080/healthz")
    );
    assert!(env.contains_key("TRITON_AGENT_CONTROLLER"), "{env:?}");
    let names: Vec<&str> = agent
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    for n in ["POD_NAME", "POD_NAMESPACE", "POD_UID"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let token = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "triton-agent-token")
        .and_then(|v| v.projected.as_ref())
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s.iter().find_map(|s| s.service_account_token.clone()))
        .expect("a projected service-account token");
    assert_eq!(token.audience.as_deref(), Some("triton-agent"));
}

#[tokio::test]
async fn a_bad_agent_annotation_is_refused_with_a_message_naming_it() {
    let client = client().await;
    let ns = namespace(&client, "webhook-bad-agent").await;
    let msg = create_annotated_pod(&client, &ns, "gopher://:70")
        .await
        .expect_err("the webhook refuses the pod");
    assert!(
        msg.contains("pods.webhook.apps.triton.io"),
        "the error names the webhook: {msg}"
    );
    assert!(
        msg.contains("apps.triton.io/agent"),
        "the error names the annotation: {msg}"
    );
}

#[tokio::test]
async fn deploy_manifests_pass_a_server_side_dry_run() {
    let client = client().await;
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "triton-system"}})).unwrap();
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create namespace triton-system: {e}"),
    }
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let out = tokio::process::Command::new("kubectl")
        .args(["apply", "--dry-run=server", "-k", deploy])
        .output()
        .await
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl apply --dry-run=server -k deploy/ failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in [
        "customresourcedefinition.apiextensions.k8s.io/deployflows.apps.triton.io",
        "deployment.apps/triton-controller",
        "clusterrole.rbac.authorization.k8s.io/triton-controller",
        "deployment.apps/triton-webhook",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/triton-webhook",
        "poddisruptionbudget.policy/triton-webhook",
        "service/triton-webhook",
    ] {
        assert!(stdout.contains(kind), "{kind} in:\n{stdout}");
    }
}
