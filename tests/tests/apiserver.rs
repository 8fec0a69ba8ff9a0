//! The API server features Triton builds on: mutating webhooks at loopback URLs and
//! pod-bound service-account tokens checked by TokenReview.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};
use triton_e2e::tls::{TestPki, serve_https};
use triton_e2e::*;

fn pod_manifest(name: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.25"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn api_server_calls_a_webhook_at_a_loopback_https_url_and_applies_its_patch() {
    let client = client().await;
    let ns = namespace(&client, "loopback-webhook").await;
    let pki = TestPki::new(&["127.0.0.1"]);
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let addr = serve_https(&pki, move |path, body| {
        seen.fetch_add(1, Ordering::SeqCst);
        let review: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return (400, json!({"error": e.to_string()})),
        };
        assert_eq!(path, "/mutate", "the API server calls the configured path");
        let patch = json!([{"op": "add", "path": "/metadata/labels/e2e-mutated", "value": "yes"}]);
        let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
        (200, json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": true, "patchType": "JSONPatch", "patch": patch}
        }))
    })
    .await;

    let config_name = format!("e2e-{ns}");
    let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": config_name},
        "webhooks": [{
            "name": "stub.e2e.triton.io",
            "clientConfig": {
                "url": format!("https://127.0.0.1:{}/mutate", addr.port()),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "objectSelector": {"matchLabels": {"e2e-webhook": "on"}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }]
    }))
    .unwrap();
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    configs
        .create(&PostParams::default(), &config)
        .await
        .expect("create MutatingWebhookConfiguration");

    // The configuration takes effect asynchronously in the API server: retry the create until the
    // webhook has been called (a pod created before that is deleted and created again).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = eventually(
        "the webhook to be called for a matching pod",
        Duration::from_secs(30),
        || async {
            let created = pods
                .create(
                    &PostParams::default(),
                    &pod_manifest("mutated", json!({"e2e-webhook": "on"})),
                )
                .await
                .map_err(|e| e.to_string())?;
            if calls.load(Ordering::SeqCst) > 0 {
                return Ok(created);
            }
            pods.delete("mutated", &DeleteParams::default().grace_period(0))
                .await
                .map_err(|e| e.to_string())?;
            eventually(
                "the uncalled pod to be gone",
                Duration::from_secs(30),
                || async {
                    match pods.get_opt("mutated").await.map_err(|e| e.to_string())? {
                        None => Ok(()),
                        Some(_) => Err("still there".to_string()),
                    }
                },
            )
            .await;
            Err("webhook not called yet".to_string())
        },
    )
    .await;
    let labels = pod.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("e2e-mutated").map(String::as_str),
        Some("yes"),
        "the webhook's patch is applied: {labels:?}"
    );

    let before = calls.load(Ordering::SeqCst);
    let plain = pods
        .create(&PostParams::default(), &pod_manifest("plain", json!({})))
        .await
        .unwrap();
    assert!(
        !plain
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("e2e-mutated")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "a pod outside the objectSelector is not sent to the webhook"
    );

    configs
        .delete(&config_name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn pod_bound_token_with_audience_passes_token_review_naming_the_pod_and_fails_for_another_audience()
 {
    let client = client().await;
    let ns = namespace(&client, "bound-token").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = pods
        .create(
            &PostParams::default(),
            &pod_manifest("agent-host", json!({})),
        )
        .await
        .unwrap();
    let uid = pod.metadata.uid.clone().unwrap();

    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {
            "audiences": ["triton-agent"],
            "expirationSeconds": 600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "agent-host", "uid": uid}
        }
    }))
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let token = sas
        .create_token_request("default", &PostParams::default(), &request)
        .await
        .expect("TokenRequest for the default ServiceAccount bound to the pod")
        .status
        .expect("token in status")
        .token;

    let review = |audience: &'static str| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let review: TokenReview =
                serde_json::from_value(json!({"spec": {"token": token, "audiences": [audience]}}))
                    .unwrap();
            Api::<TokenReview>::all(client)
                .create(&PostParams::default(), &review)
                .await
                .expect("TokenReview")
                .status
                .expect("TokenReview status")
        }
    };

    let ok = review("triton-agent").await;
    assert_eq!(
        ok.authenticated,
        Some(true),
        "token valid for audience triton-agent: {ok:?}"
    );
    assert_eq!(
        ok.audiences.as_deref(),
        Some(&["triton-agent".to_string()][..])
    );
    let user = ok.user.expect("user info");
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{ns}:default").as_str())
    );
    let extra = user.extra.expect("extra names the bound pod");
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["agent-host".to_string()])
    );
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-uid"),
        Some(&vec![uid.clone()])
    );

    let other = review("some-other-audience").await;
    assert_ne!(
        other.authenticated,
        Some(true),
        "token must not pass for another audience: {other:?}"
    );
    assert!(
        other.error.is_some_and(|e| !e.is_empty()),
        "the review says why it failed"
    );
}
