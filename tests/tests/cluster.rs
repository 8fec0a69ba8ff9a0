//! The local control plane does what every other test relies on: Kruise manages CloneSets,
//! the scheduler places pods on kwok nodes, kwok honours readiness gates like a kubelet, the
//! EndpointSlice controller publishes pod IPs, the API server calls webhooks at loopback URLs,
//! and bound service-account tokens pass TokenReview.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use triton_e2e::cloneset::{CloneSetSpec, pod_revision};
use triton_e2e::*;

const GATE: &str = "e2e.triton.io/gate";

async fn create_service(client: &kube::Client, ns: &str, name: &str, app: &str) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap_or_else(|e| panic!("create Service {name}: {e}"));
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod has an IP")
}

#[tokio::test]
async fn cloneset_of_three_gives_running_pods_on_kwok_nodes_and_three_ready_endpoints() {
    let client = client().await;
    let ns = namespace(&client, "cloneset-three").await;
    let cs = CloneSetSpec::new("web", 3).create(&client, &ns).await;
    create_service(&client, &ns, "web", "web").await;

    let pods = cs.wait_ready(3).await;
    let mut ips: Vec<String> = pods.iter().map(pod_ip).collect();
    ips.sort();
    for pod in &pods {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .expect("scheduled");
        assert!(
            node.starts_with("kwok-node-"),
            "pod on a kwok node, got {node}"
        );
        assert!(
            pod_ip(pod).starts_with(POD_CIDR_PREFIX),
            "pod IP in the pod CIDR: {}",
            pod_ip(pod)
        );
    }
    let eps = wait_ready_endpoints(&client, &ns, "web", 3, Duration::from_secs(30)).await;
    assert_eq!(
        eps.ready, ips,
        "the ready endpoints are exactly the pods' IPs"
    );
    assert!(eps.not_ready.is_empty());
}

#[tokio::test]
async fn extra_readiness_gate_holds_pod_out_of_endpoints_until_its_condition_is_true() {
    let client = client().await;
    let ns = namespace(&client, "gated-pod").await;
    let cs = CloneSetSpec::new("gated", 1)
        .readiness_gate(GATE)
        .create(&client, &ns)
        .await;
    create_service(&client, &ns, "gated", "gated").await;

    // Kruise's own gate (InPlaceUpdateReady) goes True; ours stays absent: not Ready.
    let pod = cs
        .wait_pods(
            "ContainersReady with InPlaceUpdateReady True",
            1,
            Duration::from_secs(60),
            |p| is_true(p, "ContainersReady") && is_true(p, "InPlaceUpdateReady"),
        )
        .await
        .remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let ip = pod_ip(&pod);
    let not_ready = eventually(
        "the gated pod listed not-ready in the EndpointSlice",
        Duration::from_secs(30),
        || async {
            let eps = service_endpoints(&client, &ns, "gated").await;
            if eps.not_ready == vec![ip.clone()] {
                Ok(eps)
            } else {
                Err(eps)
            }
        },
    )
    .await;
    assert!(
        not_ready.ready.is_empty(),
        "no ready endpoint while the gate is unset: {not_ready:?}"
    );
    let pod = cs.pods.get(&name).await.unwrap();
    assert_eq!(
        condition(&pod, "Ready"),
        Some("False"),
        "Ready stays False without the gate condition"
    );

    let set_gate = |status: &'static str| {
        let pods = cs.pods.clone();
        let name = name.clone();
        async move {
            let patch = json!({"status": {"conditions": [{"type": GATE, "status": status}]}});
            pods.patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .unwrap_or_else(|e| panic!("patch {GATE}={status}: {e}"));
        }
    };

    set_gate("True").await;
    cs.wait_pods("Ready", 1, Duration::from_secs(30), |p| is_true(p, "Ready"))
        .await;
    eventually(
        "the pod's endpoint to become ready",
        Duration::from_secs(30),
        || async {
            let eps = service_endpoints(&client, &ns, "gated").await;
            if eps.ready == vec![ip.clone()] && eps.not_ready.is_empty() {
                Ok(())
            } else {
                Err(eps)
            }
        },
    )
    .await;

    set_gate("False").await;
    cs.wait_pods("not Ready", 1, Duration::from_secs(30), |p| {
        condition(p, "Ready") == Some("False")
    })
    .await;
    eventually(
        "the pod's endpoint to become not-ready again",
        Duration::from_secs(30),
        || async {
            let eps = service_endpoints(&client, &ns, "gated").await;
            if eps.not_ready == vec![ip.clone()] && eps.ready.is_empty() {
                Ok(())
            } else {
                Err(eps)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn kruise_partition_equal_to_replicas_updates_no_pod_and_lowering_it_by_one_updates_one() {
    let client = client().await;
    let ns = namespace(&client, "partition").await;
    let cs = CloneSetSpec::new("part", 3)
        .partition(3)
        .create(&client, &ns)
        .await;
    let before = cs.wait_ready(3).await;
    let old_names: Vec<String> = before
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let old_rev = pod_revision(&before[0]).unwrap().to_string();

    cs.patch_spec(
        json!({"template": {"spec": {"containers": [{"name": "main", "image": "nginx:1.26"}]}}}),
    )
    .await;
    let status = cs.observed_status().await;
    let new_rev = status["updateRevision"]
        .as_str()
        .expect("updateRevision")
        .to_string();
    assert_ne!(new_rev, old_rev, "a template change makes a new revision");
    assert_eq!(
        status["updatedReplicas"],
        json!(0),
        "partition = replicas: nothing updated: {status}"
    );
    holds_for(
        "no pod updated while partition = replicas",
        Duration::from_secs(3),
        || async {
            let pods = cs.live_pods().await;
            let names: Vec<String> = pods
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            if names.len() == 3 && names.iter().all(|n| old_names.contains(n)) {
                Ok(())
            } else {
                Err(format!("pods are now {names:?}, were {old_names:?}"))
            }
        },
    )
    .await;

    cs.patch_spec(json!({"updateStrategy": {"partition": 2}}))
        .await;
    eventually(
        "exactly one pod at the new revision, all 3 Ready",
        Duration::from_secs(60),
        || async {
            let pods = cs.live_pods().await;
            let updated = pods
                .iter()
                .filter(|p| pod_revision(p) == Some(new_rev.as_str()))
                .count();
            let ready = pods.iter().filter(|p| is_true(p, "Ready")).count();
            if pods.len() == 3 && updated == 1 && ready == 3 {
                Ok(())
            } else {
                Err((pods.len(), updated, ready))
            }
        },
    )
    .await;
    let status = cs.observed_status().await;
    assert_eq!(status["updatedReplicas"], json!(1), "{status}");
    holds_for(
        "still exactly one updated pod",
        Duration::from_secs(3),
        || async {
            let pods = cs.live_pods().await;
            let updated = pods
                .iter()
                .filter(|p| pod_revision(p) == Some(new_rev.as_str()))
                .count();
            if updated == 1 && pods.len() == 3 {
                Ok(())
            } else {
                Err(format!("{updated} updated of {}", pods.len()))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn kruise_pods_to_delete_with_replicas_lowered_removes_exactly_the_named_pod() {
    let client = client().await;
    let ns = namespace(&client, "pods-to-delete").await;
    let cs = CloneSetSpec::new("shrink", 3).create(&client, &ns).await;
    let pods = cs.wait_ready(3).await;
    let mut names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    let victim = names[1].clone();

    cs.patch_spec(json!({"replicas": 2, "scaleStrategy": {"podsToDelete": [victim]}}))
        .await;
    let survivors: Vec<String> = names.iter().filter(|n| **n != victim).cloned().collect();
    eventually(
        &format!("pod {victim} gone and the other two kept"),
        Duration::from_secs(60),
        || async {
            let all = cs.pods().await;
            let mut now: Vec<String> = all.iter().filter_map(|p| p.metadata.name.clone()).collect();
            now.sort();
            if now == survivors { Ok(()) } else { Err(now) }
        },
    )
    .await;
    holds_for(
        "no replacement pod for the deleted one",
        Duration::from_secs(3),
        || async {
            let now: Vec<String> = cs
                .pods()
                .await
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            if now.len() == 2 {
                Ok(())
            } else {
                Err(format!("pods are {now:?}"))
            }
        },
    )
    .await;
}
