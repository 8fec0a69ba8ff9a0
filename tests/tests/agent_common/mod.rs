//! Helpers of the agent end-to-end tests (agent.rs, agent_restart.rs).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use triton_e2e::deployflow::flow;
use triton_e2e::*;

pub const LONG: Duration = Duration::from_secs(90);
pub const HEALTHY: &str = "apps.triton.io/healthy";

/// An HTTP server on 127.0.0.1 answering every request with the status in `code`.
pub async fn app(code: Arc<AtomicU16>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            let code = code.load(Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                let reply =
                    format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = tcp.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

/// A token for the `default` ServiceAccount bound to `pod`, for `audience`.
pub async fn pod_token(client: &kube::Client, ns: &str, pod: &Pod, audience: &str) -> String {
    let request: TokenRequest = serde_json::from_value(json!({"spec": {
        "audiences": [audience], "expirationSeconds": 600,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
            "name": pod.metadata.name, "uid": pod.metadata.uid}}}))
    .unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request("default", &PostParams::default(), &request)
        .await
        .expect("a pod-bound token")
        .status
        .and_then(|s| s.token)
        .expect("a token")
}

/// The single pod of `instance`, once it is ContainersReady.
pub async fn the_pod(pods: &Api<Pod>, instance: &str) -> Pod {
    eventually(
        &format!("a ContainersReady pod of {instance}"),
        LONG,
        || async {
            let v = triton_e2e::pods(pods, &format!("app.kubernetes.io/instance={instance}")).await;
            v.into_iter()
                .find(|p| is_true(p, "ContainersReady"))
                .ok_or("none yet")
        },
    )
    .await
}

/// Runs triton-agent for `pod`, probing `http://:port/healthz`, with its token in `token_file`.
pub fn agent(pod: &Pod, port: u16, token_file: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(testenv_var("TRITON_AGENT_BIN"))
        .env("POD_NAME", pod.metadata.name.clone().unwrap())
        .env("POD_NAMESPACE", pod.metadata.namespace.clone().unwrap())
        .env("POD_UID", pod.metadata.uid.clone().unwrap())
        .env("TRITON_AGENT_TARGET", format!("http://:{port}/healthz"))
        .env(
            "TRITON_AGENT_CONTROLLER",
            format!("http://{}", testenv_var("TRITON_AGENT_SERVICE")),
        )
        .env("TRITON_AGENT_TOKEN_FILE", token_file)
        .env("TRITON_AGENT_PERIOD", "200ms")
        .env("TRITON_AGENT_FAILURE_THRESHOLD", "2")
        .kill_on_drop(true)
        .spawn()
        .expect("start triton-agent")
}

pub fn healthy(p: &Pod) -> (String, String) {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == HEALTHY))
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
        .unwrap_or_default()
}

pub async fn wait_healthy(pods: &Api<Pod>, name: &str, want: (&str, &str)) -> Pod {
    eventually(&format!("pod {name} {HEALTHY}={want:?}"), LONG, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        let h = healthy(&p);
        if (h.0.as_str(), h.1.as_str()) == want {
            Ok(p)
        } else {
            Err(format!("{h:?}"))
        }
    })
    .await
}

pub fn annotated(name: &str, instance: &str, port_hint: &str, strategy: Value) -> Value {
    let mut m = flow(name, instance, "create", 1, "nginx:1.25", strategy);
    m["spec"]["application"]["template"]["metadata"]["annotations"] =
        json!({"apps.triton.io/agent": port_hint});
    m
}
