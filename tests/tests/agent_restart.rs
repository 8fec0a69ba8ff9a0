//! The readiness agent across a controller restart (its own binary: it kills the harness's
//! controller, which no other test may see): the condition is kept, not reset, and the agent's
//! reports arrive again.

use std::sync::Arc;
use std::sync::atomic::AtomicU16;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;
use triton_e2e::deployflow::Flow;
use triton_e2e::*;

mod agent_common;
use agent_common::*;

fn probe_time(p: &Pod) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == HEALTHY))
        .and_then(|c| c.last_probe_time.clone())
}

fn transition_time(p: &Pod) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == HEALTHY))
        .and_then(|c| c.last_transition_time.clone())
}

#[tokio::test]
async fn a_controller_restart_keeps_the_health_condition_and_the_agent_reports_again() {
    let client = client().await;
    let ns = namespace(&client, "agent-restart").await;
    let code = Arc::new(AtomicU16::new(200));
    let port = app(code.clone()).await;
    let df = Flow::create(
        &client,
        &ns,
        annotated(
            "r-v1",
            "r",
            &format!("http://:{port}/healthz"),
            json!({"mode": "auto"}),
        ),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = the_pod(&pods, "r").await;
    let name = pod.metadata.name.clone().unwrap();
    let dir = std::env::temp_dir().join(format!("triton-agent-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(
        &token_file,
        pod_token(&client, &ns, &pod, "triton-agent").await,
    )
    .unwrap();
    let _agent = agent(&pod, port, &token_file);
    let before = wait_healthy(&pods, &name, ("True", "ProbeSucceeded")).await;
    df.wait_phase("Success", LONG).await;

    let admin = testenv_var("TRITON_CONTROLLER_ADMIN");
    signal_processes("-KILL", "triton-controller --admin-listen=127.0.0.1:8000").await;
    eventually(
        "the killed controller gone",
        Duration::from_secs(10),
        || async {
            if http_ok(&admin, "/healthz").await {
                Err("still answering")
            } else {
                Ok(())
            }
        },
    )
    .await;
    tokio::process::Command::new(testenv_var("TRITON_CONTROLLER_START"))
        .spawn()
        .expect("restart triton-controller");
    eventually("triton-controller ready again", LONG, || async {
        if http_ok(&admin, "/readyz").await {
            Ok(())
        } else {
            Err("not ready")
        }
    })
    .await;
    let t0 = probe_time(&before);
    let after = eventually("a heartbeat recorded after the restart", LONG, || async {
        let p = pods.get(&name).await.map_err(|e| e.to_string())?;
        let h = healthy(&p);
        if h != ("True".to_string(), "ProbeSucceeded".to_string()) {
            return Err(format!("condition reset or changed: {h:?}"));
        }
        if probe_time(&p) > t0 {
            Ok(p)
        } else {
            Err("no newer heartbeat".to_string())
        }
    })
    .await;
    assert_eq!(
        transition_time(&after),
        transition_time(&before),
        "kept True throughout: no transition across the restart"
    );
}
