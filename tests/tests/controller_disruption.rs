//! triton-controller killed in the middle of a release (tests/cluster/run --triton). One test in
//! its own binary, so no other release runs while the controller is down.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;
use triton_e2e::deployflow::canary_waiting;
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(90);

async fn controller_ready() -> bool {
    http_ok(&testenv_var("TRITON_CONTROLLER_ADMIN"), "/readyz").await
}

#[tokio::test]
async fn a_release_resumes_after_the_controller_is_killed_mid_batch_with_no_extra_pods() {
    let client = client().await;
    let ns = namespace(&client, "controller-restart").await;
    let df = canary_waiting(&client, &ns, "app").await;

    // Kill it hard (no graceful shutdown), and move the release forward while it is down.
    let killed = signal_processes("-KILL", "triton-controller --admin-listen=127.0.0.1:8000").await;
    assert!(killed, "a triton-controller process was running");
    eventually(
        "triton-controller gone",
        Duration::from_secs(10),
        || async {
            if controller_ready().await {
                Err("still answering")
            } else {
                Ok(())
            }
        },
    )
    .await;
    df.patch_strategy("updateStrategy", json!({"batches": 1, "stage": "Baking"}))
        .await;
    holds_for(
        "no progress while the controller is down",
        Duration::from_secs(2),
        || async {
            let s = df.status().await;
            if s["conditions"][0]["phase"] == "Smoked" {
                Ok(())
            } else {
                Err(triton_e2e::deployflow::summary(&s))
            }
        },
    )
    .await;

    let start = testenv_var("TRITON_CONTROLLER_START");
    tokio::process::Command::new(start)
        .spawn()
        .expect("start triton-controller again");
    eventually(
        "triton-controller ready again",
        Duration::from_secs(30),
        || async {
            if controller_ready().await {
                Ok(())
            } else {
                Err("not ready")
            }
        },
    )
    .await;
    df.wait_batch(1, "Baking", LONG).await;
    df.patch_strategy("updateStrategy", json!({"batches": 3, "stage": "Baked"}))
        .await;
    let s = df.wait_phase("Success", LONG).await;
    assert_eq!(s["finishedReplicas"], 3);
    let pods: Vec<Pod> = triton_e2e::pods(
        &Api::namespaced(client.clone(), &ns),
        "app.kubernetes.io/instance=app",
    )
    .await;
    assert_eq!(
        pods.len(),
        3,
        "no extra pods: {:?}",
        pods.iter()
            .map(|p| p.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    let names: Vec<String> = serde_json::from_value(s["pods"].clone()).unwrap();
    assert_eq!(
        names.len(),
        3,
        "three pods attributed to batches: {names:?}"
    );
    for p in &pods {
        assert!(
            names.contains(p.metadata.name.as_ref().unwrap()),
            "{:?} belongs to a batch",
            p.metadata.name
        );
    }
}
