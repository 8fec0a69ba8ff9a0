//! Disrupting triton-webhook (tests/cluster/run --triton). One test in its own binary: cargo runs
//! test binaries one after another, so no other test creates managed pods while the webhook is
//! down or its certificate changes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
use serde_json::{Value, json};
use triton_e2e::cloneset::CloneSetSpec;
use triton_e2e::tls::served_certificate;
use triton_e2e::*;

fn pod(name: &str, labels: Value, owner_uid: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels,
            "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "owner", "uid": owner_uid}]},
        "spec": {"containers": [{"name": "main", "image": "nginx"}]}
    }))
    .unwrap()
}

async fn admin_ready() -> bool {
    http_ok(&testenv_var("TRITON_WEBHOOK_ADMIN"), "/readyz").await
}

/// Writes a file atomically, as a Secret volume update does.
fn replace_file(path: &str, contents: &str) {
    let tmp = format!("{path}.new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn webhook_stop_restart_and_certificate_rotation() {
    let client = client().await;
    let ns = namespace(&client, "webhook-disruption").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let owner = CloneSetSpec::new("owner", 0)
        .pod_label("managed-by", "triton-io")
        .create(&client, &ns)
        .await;
    let uid = owner.get().await["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let managed = json!({"managed-by": "triton-io"});

    // --- Stopped: managed pods are refused naming the webhook; other pods are created. -------
    let stopped = signal_processes("-TERM", "triton-webhook --listen").await;
    assert!(stopped, "a triton-webhook process was running");
    eventually(
        "triton-webhook to stop answering",
        Duration::from_secs(15),
        || async {
            if admin_ready().await {
                Err("still ready")
            } else {
                Ok(())
            }
        },
    )
    .await;
    let err = pods
        .create(
            &PostParams::default(),
            &pod("managed-while-down", managed.clone(), &uid),
        )
        .await
        .expect_err("a managed pod cannot be created while the webhook is down");
    let msg = err.to_string();
    assert!(
        msg.contains("pods.webhook.apps.triton.io"),
        "the error names the webhook: {msg}"
    );
    pods.create(
        &PostParams::default(),
        &pod("unmanaged-while-down", json!({"app": "other"}), &uid),
    )
    .await
    .expect("an unmanaged pod is created while the webhook is down");

    // --- Restarted: managed pods are created again, with the gate. --------------------------
    // Left running for the rest of the run (tokio reaps it; the namespace's end stops it).
    tokio::process::Command::new(testenv_var("TRITON_WEBHOOK_START"))
        .spawn()
        .expect("start triton-webhook again");
    eventually(
        "triton-webhook ready again",
        Duration::from_secs(15),
        || async {
            if admin_ready().await {
                Ok(())
            } else {
                Err("not ready")
            }
        },
    )
    .await;
    let created = eventually(
        "a managed pod to be created after the restart",
        Duration::from_secs(30),
        || async {
            pods.create(
                &PostParams::default(),
                &pod("managed-after-restart", managed.clone(), &uid),
            )
            .await
            .map_err(|e| e.to_string())
        },
    )
    .await;
    let gates: Vec<String> = created
        .spec
        .unwrap()
        .readiness_gates
        .into_iter()
        .flatten()
        .map(|g| g.condition_type)
        .collect();
    assert_eq!(gates, vec!["apps.triton.io/ready"]);

    // --- Rotation: new files on disk are served to new connections, without a restart. -------
    let dir = testenv_var("TRITON_WEBHOOK_DIR");
    let addr = testenv_var("TRITON_WEBHOOK_ADDR");
    let ca_pem = std::fs::read_to_string(format!("{dir}/certs/ca.crt")).unwrap();
    let old = served_certificate(&addr, "127.0.0.1", &ca_pem)
        .await
        .expect("the current certificate");
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(format!("{dir}/certs/ca.key")).unwrap())
            .unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "rotated");
    let cert = params.signed_by(&key, &issuer).unwrap();
    replace_file(&format!("{dir}/tls.key"), &key.serialize_pem());
    replace_file(&format!("{dir}/tls.crt"), &cert.pem());
    let new = cert.der().to_vec();
    assert_ne!(old, new);
    eventually(
        "new TLS connections to get the rotated certificate",
        Duration::from_secs(15),
        || async {
            let served = served_certificate(&addr, "127.0.0.1", &ca_pem).await?;
            if served == new {
                Ok(())
            } else {
                Err("still the old certificate".to_string())
            }
        },
    )
    .await;
    let after = pods
        .create(
            &PostParams::default(),
            &pod("managed-after-rotation", managed.clone(), &uid),
        )
        .await
        .expect("the API server accepts the rotated certificate");
    assert_eq!(
        after
            .spec
            .unwrap()
            .readiness_gates
            .into_iter()
            .flatten()
            .count(),
        1
    );
}
