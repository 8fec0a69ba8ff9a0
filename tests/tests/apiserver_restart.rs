//! The API server restarted in the middle of a release (tests/cluster/run --triton): every
//! component reconnects and the release resumes and succeeds. One test in its own binary.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;
use triton_e2e::deployflow::canary_waiting;
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_release_survives_an_api_server_restart_mid_batch() {
    let client = client().await;
    let ns = namespace(&client, "apiserver-restart").await;
    let df = canary_waiting(&client, &ns, "app").await;

    let stopped = signal_processes("-TERM", "kube-apiserver --etcd-servers").await;
    assert!(stopped, "kube-apiserver was running");
    eventually(
        "the API server to be down",
        Duration::from_secs(30),
        || async {
            match client.apiserver_version().await {
                Ok(_) => Err("still answering".to_string()),
                Err(_) => Ok(()),
            }
        },
    )
    .await;
    let start = testenv_var("TRITON_APISERVER_START");
    tokio::process::Command::new(start)
        .spawn()
        .expect("start kube-apiserver again");
    eventually("the API server back", Duration::from_secs(60), || async {
        client.apiserver_version().await.map_err(|e| e.to_string())
    })
    .await;

    // The release goes on: pull-in, bake, the remaining batches, Success.
    df.patch_strategy("updateStrategy", json!({"batches": 1, "stage": "Baking"}))
        .await;
    df.wait_batch(1, "Baking", LONG).await;
    df.patch_strategy("updateStrategy", json!({"batches": 3, "stage": "Baked"}))
        .await;
    let s = df.wait_phase("Success", LONG).await;
    assert_eq!(s["finishedReplicas"], 3);
    let pods = triton_e2e::pods(
        &Api::<Pod>::namespaced(client.clone(), &ns),
        "app.kubernetes.io/instance=app",
    )
    .await;
    assert_eq!(pods.len(), 3, "no extra pods");
    assert!(pods.iter().all(|p| is_true(p, "Ready")), "every pod Ready");
    for p in &pods {
        let gates = p
            .spec
            .as_ref()
            .unwrap()
            .readiness_gates
            .iter()
            .flatten()
            .filter(|g| g.condition_type == "apps.triton.io/ready")
            .count();
        assert_eq!(gates, 1, "{:?} was gated by the webhook", p.metadata.name);
    }
}
