//! The readiness agent end to end (tests/cluster/run --triton): kwok pods run no containers, so
//! `triton-agent` runs here as a process *for* a real pod — that pod's identity, a token from
//! the TokenRequest API bound to it (audience triton-agent), probing an HTTP server this test
//! controls — and reports to the harness controller's agent service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;
use tonic::Code;
use triton_e2e::deployflow::Flow;
use triton_e2e::*;
use triton_proto::agent::{HealthReport, agent_client::AgentClient};

mod agent_common;
use agent_common::*;

#[tokio::test]
async fn the_agent_gates_the_smoke_a_failing_app_fails_it_and_a_healthy_one_resumes_to_success() {
    let client = client().await;
    let ns = namespace(&client, "agent-smoke").await;
    let code = Arc::new(AtomicU16::new(500));
    let port = app(code.clone()).await;
    let df = Flow::create(
        &client,
        &ns,
        annotated(
            "web-v1",
            "web",
            &format!("http://:{port}/healthz"),
            json!({"mode": "auto", "smokeTimeoutSeconds": 8}),
        ),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = the_pod(&pods, "web").await;
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

    // The app answers 500 from the start: not healthy yet, the batch keeps smoking…
    wait_healthy(&pods, &name, ("False", "Starting")).await;
    holds_for(
        "batch 1 Smoking while the app is not healthy",
        Duration::from_secs(2),
        || async {
            let s = df.status().await;
            if s["conditions"][0]["phase"] == "Smoking" {
                Ok(())
            } else {
                Err(format!("batch 1 is {}", s["conditions"][0]["phase"]))
            }
        },
    )
    .await;
    // …until the smoke timeout fails it, naming the pod.
    let s = df.wait_batch(1, "SmokeFailed", LONG).await;
    assert!(
        s["message"].as_str().unwrap_or("").contains(&name),
        "{}",
        s["message"]
    );

    // Healthy again: the condition turns True, and a resume smokes it to Success.
    code.store(200, Ordering::SeqCst);
    wait_healthy(&pods, &name, ("True", "ProbeSucceeded")).await;
    df.patch_strategy("updateStrategy", json!({"paused": false}))
        .await;
    df.wait_phase("Success", LONG).await;
    assert!(
        is_true(&pods.get(&name).await.unwrap(), "Ready"),
        "pulled in once healthy"
    );

    // The app breaks after the release: the agent reports it (a failure, not Starting).
    code.store(503, Ordering::SeqCst);
    let p = eventually("the failure recorded", LONG, || async {
        let p = pods.get(&name).await.map_err(|e| e.to_string())?;
        let h = healthy(&p);
        if h.0 == "False" && h.1 != "Starting" {
            Ok(p)
        } else {
            Err(format!("{h:?}"))
        }
    })
    .await;
    assert_ne!(healthy(&p).1, "AgentSilent");
}

#[tokio::test]
async fn reports_are_refused_for_another_pod_another_audience_or_no_token_and_a_silent_agent_is_marked()
 {
    let client = client().await;
    let ns = namespace(&client, "agent-auth").await;
    let code = Arc::new(AtomicU16::new(200));
    let port = app(code.clone()).await;
    let hint = format!("http://:{port}/healthz");
    Flow::create(
        &client,
        &ns,
        annotated("a-v1", "a", &hint, json!({"mode": "auto"})),
    )
    .await;
    Flow::create(
        &client,
        &ns,
        annotated("b-v1", "b", &hint, json!({"mode": "auto"})),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let a = the_pod(&pods, "a").await;
    let b = the_pod(&pods, "b").await;
    let token_a = pod_token(&client, &ns, &a, "triton-agent").await;
    let other_audience = pod_token(&client, &ns, &b, "somebody-else").await;
    let mut c = AgentClient::connect(format!("http://{}", testenv_var("TRITON_AGENT_SERVICE")))
        .await
        .expect("the agent service");
    let report = |p: &Pod, token: Option<&str>| {
        let mut r = tonic::Request::new(HealthReport {
            namespace: ns.clone(),
            pod: p.metadata.name.clone().unwrap(),
            pod_uid: p.metadata.uid.clone().unwrap(),
            healthy: true,
            reason: "ProbeSucceeded".into(),
            message: "forged".into(),
            ..Default::default()
        });
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    let e = c
        .report(report(&b, Some(&token_a)))
        .await
        .expect_err("a's token for b");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = c
        .report(report(&b, Some(&other_audience)))
        .await
        .expect_err("another audience");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c.report(report(&b, None)).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert_eq!(
        healthy(&pods.get(&b.metadata.name.clone().unwrap()).await.unwrap()),
        Default::default(),
        "b untouched"
    );

    // a's own report is recorded; then its agent falls silent: AgentSilent after the window.
    c.report(report(&a, Some(&token_a)))
        .await
        .expect("a's report about a");
    let name = a.metadata.name.clone().unwrap();
    wait_healthy(&pods, &name, ("True", "ProbeSucceeded")).await;
    wait_healthy(&pods, &name, ("False", "AgentSilent")).await;

    // A deleted pod's token reports nothing: b goes (its CloneSet makes another pod), and b's
    // own token, about b, is refused (the API server no longer accepts it, or the pod is gone).
    let token_b = pod_token(&client, &ns, &b, "triton-agent").await;
    let b_name = b.metadata.name.clone().unwrap();
    pods.delete(&b_name, &Default::default()).await.unwrap();
    eventually("pod b gone", LONG, || async {
        match pods.get_opt(&b_name).await {
            Ok(None) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.map(|p| p.map(|p| p.metadata.deletion_timestamp))
            )),
        }
    })
    .await;
    let e = c
        .report(report(&b, Some(&token_b)))
        .await
        .expect_err("a deleted pod's token");
    assert!(
        matches!(e.code(), Code::Unauthenticated | Code::NotFound),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_broken_app_fails_the_bake_resume_waits_for_health_and_the_agent_follows_a_token_change()
{
    let client = client().await;
    let ns = namespace(&client, "agent-bake").await;
    let code = Arc::new(AtomicU16::new(200));
    let port = app(code.clone()).await;
    let mut m = annotated(
        "svc-v1",
        "svc",
        &format!("http://:{port}/healthz"),
        json!({"mode": "auto", "canary": 1, "batchSize": 1, "pullInTimeoutSeconds": 60}),
    );
    m["spec"]["application"]["replicas"] = json!(2);
    let df = Flow::create(&client, &ns, m).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = the_pod(&pods, "svc").await;
    let name = pod.metadata.name.clone().unwrap();
    let dir = std::env::temp_dir().join(format!("triton-agent-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    let write_token = |t: &str| {
        let tmp = dir.join("token.new");
        std::fs::write(&tmp, t).unwrap();
        std::fs::rename(&tmp, &token_file).unwrap();
    };
    write_token(&pod_token(&client, &ns, &pod, "triton-agent").await);
    let _agent = agent(&pod, port, &token_file);
    df.wait_batch(1, "Smoked", LONG).await;

    // Next: the canary is pulled in; its app breaks while it bakes.
    df.patch_strategy("updateStrategy", json!({"batches": 1, "stage": "Baking"}))
        .await;
    df.wait_batch(1, "Baking", LONG).await;
    code.store(500, Ordering::SeqCst);
    let s = df.wait_batch(1, "BakeFailed", LONG).await;
    assert_eq!(s["paused"], true);
    assert!(
        s["message"].as_str().unwrap_or("").contains(&name),
        "{}",
        s["message"]
    );
    // A resume while it is still broken is refused (paused again, saying why).
    df.patch_strategy("updateStrategy", json!({"paused": false}))
        .await;
    let o = df
        .wait_object("the resume refused (spec paused again)", LONG, |o| {
            o["spec"]["updateStrategy"]["paused"] == true
        })
        .await;
    assert_eq!(o["status"]["conditions"][0]["phase"], "BakeFailed");
    // Healthy again: the resume goes through and the canary bakes.
    code.store(200, Ordering::SeqCst);
    wait_healthy(&pods, &name, ("True", "ProbeSucceeded")).await;
    df.patch_strategy("updateStrategy", json!({"paused": false}))
        .await;
    df.wait_batch(1, "Baking", LONG).await;

    // The token file changes under the agent: a bad token stops its reports (the pod goes
    // AgentSilent), a good one is picked up without a restart (healthy again).
    write_token("not-a-token");
    wait_healthy(&pods, &name, ("False", "AgentSilent")).await;
    write_token(&pod_token(&client, &ns, &pod, "triton-agent").await);
    wait_healthy(&pods, &name, ("True", "ProbeSucceeded")).await;
}
