//! Triton installed by its Helm chart: `make test` runs this file in a control plane of its own
//! where tests/cluster/triton.sh ran `helm install` instead of applying deploy/
//! (TRITON_INSTALL=helm): the controller and the webhook run as processes with the chart's
//! ServiceAccount, RBAC and webhook configuration. The tutorial reaches Success; a `helm
//! upgrade` with changed values in the middle of a release keeps it going; `helm uninstall`
//! leaves the application's CloneSet and pods as they are and no webhook configuration behind.
//!
//! Run by hand: `TRITON_INSTALL=helm tests/cluster/run --triton -- cargo test --offline -p
//! triton-e2e --test helm_install -- --ignored`.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use triton_e2e::deployflow::{Flow, flow, tutorial, tutorial_service};
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(120);

fn run(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chart() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/helm/triton")
        .display()
        .to_string()
}

async fn next_wait(name: &str, ns: &str) {
    let (ok, stdout, stderr) = run("kubectl", &["triton", "next", name, "-n", ns, "--wait"]);
    assert!(ok, "kubectl triton next {name} --wait: {stdout}{stderr}");
}

/// Every object of the release's manifest exists in the cluster.
fn every_object_exists() -> usize {
    let (ok, manifest, err) = run("helm", &["get", "manifest", "triton", "-n", "triton-system"]);
    assert!(ok, "helm get manifest: {err}");
    let mut n = 0;
    for doc in serde_yaml::Deserializer::from_str(&manifest) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().unwrap();
        let name = v["metadata"]["name"].as_str().unwrap();
        let mut args = vec!["get", kind, name, "-o", "name"];
        if let Some(ns) = v["metadata"]["namespace"].as_str() {
            args.extend(["-n", ns]);
        }
        let (ok, _, err) = run("kubectl", &args);
        assert!(ok, "{kind} {name} of the chart exists: {err}");
        n += 1;
    }
    n
}

fn mwc_exists() -> bool {
    run("kubectl", &["get", "mutatingwebhookconfiguration", "triton-webhook"]).0
}

#[tokio::test]
#[ignore = "needs the control plane with Triton installed by helm (TRITON_INSTALL=helm); make test runs it"]
async fn installed_by_helm_the_tutorial_succeeds_an_upgrade_keeps_a_release_going_and_uninstall_leaves_the_app() {
    let client = client().await;
    assert_eq!(
        std::env::var("TRITON_INSTALL").as_deref(),
        Ok("helm"),
        "run with TRITON_INSTALL=helm (tests/cluster/triton.sh installs the chart then)"
    );
    let (ok, status, err) = run("helm", &["status", "triton", "-n", "triton-system"]);
    assert!(ok && status.contains("STATUS: deployed"), "{status}{err}");
    let objects = every_object_exists();
    assert!(objects >= 14, "the chart's objects: {objects}");

    // The tutorial, with the chart's RBAC and webhook configuration.
    let ns = namespace(&client, "helm-tutorial").await;
    create_service(&client, &ns, tutorial_service()).await;
    let df = Flow::create(&client, &ns, tutorial()).await;
    df.wait_batch(1, "Smoked", LONG).await;
    for _ in 0..3 {
        next_wait(&df.name, &ns).await;
    }
    assert_eq!(df.status().await["phase"], "Success");
    wait_ready_endpoints(&client, &ns, "sample-12122-svc", 3, LONG).await;

    // A manual update of 3 pods, stopped after its first batch: upgrade the chart with changed
    // values meanwhile.
    let ns2 = namespace(&client, "helm-upgrade").await;
    let v1 = Flow::create(
        &client,
        &ns2,
        flow("web-v1", "web", "create", 3, "nginx:1.25", json!({"batchSize": 3, "mode": "auto"})),
    )
    .await;
    v1.wait_phase("Success", LONG).await;
    let v2 = Flow::create(
        &client,
        &ns2,
        flow("web-v2", "web", "update", 3, "nginx:1.26", json!({"batchSize": 1, "mode": "manual", "batches": 1})),
    )
    .await;
    // Batch 1 baked, batch 2 planned and waiting for `batches` >= 2.
    v2.wait_batch(2, "Pending", LONG).await;
    let sets = std::env::var("TRITON_HELM_SETS").expect("TRITON_HELM_SETS");
    let c = chart();
    let mut args = vec!["upgrade", "triton", c.as_str(), "-n", "triton-system"];
    args.extend(sets.split_whitespace());
    args.extend([
        "--set", "webhook.timeoutSeconds=7",
        "--set", "controller.logFormat=text",
        "--set", "controller.replicas=3",
        "--set", "serviceMonitor.enabled=false",
    ]);
    let (ok, out, err) = run("helm", &args);
    assert!(ok, "helm upgrade: {out}{err}");
    let (_, timeout, _) = run(
        "kubectl",
        &["get", "mutatingwebhookconfiguration", "triton-webhook", "-o", "jsonpath={.webhooks[0].timeoutSeconds}"],
    );
    assert_eq!(timeout, "7", "the upgrade applied the new values");
    let (_, replicas, _) = run(
        "kubectl",
        &["get", "deploy", "triton-controller", "-n", "triton-system", "-o", "jsonpath={.spec.replicas}"],
    );
    assert_eq!(replicas, "3");
    // The release goes on to Success (new pods still get their gate from the webhook).
    let (ok, out, err) = run("kubectl", &["triton", "continue", "web-v2", "-n", &ns2, "--batches", "3", "--wait"]);
    assert!(ok, "continue --wait after the upgrade: {out}{err}");
    v2.wait_phase("Success", LONG).await;
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns2);
    let before = pods(&pod_api, "app.kubernetes.io/instance=web").await;
    assert_eq!(live_names(&before).len(), 3);
    assert!(before.iter().all(|p| is_true(p, "apps.triton.io/ready") && is_true(p, "Ready")));

    // Uninstall: no webhook configuration left; the CRD, the DeployFlows, the CloneSet and its
    // pods stay as they are.
    let (ok, out, err) = run("helm", &["uninstall", "triton", "-n", "triton-system", "--wait"]);
    assert!(ok, "helm uninstall: {out}{err}");
    assert!(!mwc_exists(), "the MutatingWebhookConfiguration is removed");
    assert!(run("kubectl", &["get", "crd", "deployflows.apps.triton.io"]).0, "the CRD is kept");
    assert!(run("kubectl", &["get", "df", "web-v2", "-n", &ns2]).0, "DeployFlows are kept");
    assert!(!run("kubectl", &["get", "clusterrole", "triton-controller"]).0, "the chart's RBAC is gone");
    let cs = dynamic_api(&client, &ns2, "apps.kruise.io", "v1alpha1", "CloneSet");
    assert!(cs.get("web").await.is_ok(), "the CloneSet stays");
    holds_for("the application's pods untouched after uninstall", Duration::from_secs(5), || async {
        let now = pods(&pod_api, "app.kubernetes.io/instance=web").await;
        let same = live_names(&now) == live_names(&before)
            && now.iter().zip(&before).all(|(a, b)| a.metadata.uid == b.metadata.uid)
            && now.iter().all(|p| is_true(p, "Ready"));
        if same { Ok(()) } else { Err(format!("{:?}", live_names(&now))) }
    })
    .await;
    // No cluster left refusing pod creations: a managed pod is created with the webhook down.
    assert!(signal_processes("-TERM", "triton-webhook --listen").await, "stop triton-webhook");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "after-uninstall", "labels": {"managed-by": "triton-io"}},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.25"}]}
    }))
    .unwrap();
    let created = pod_api.create(&PostParams::default(), &pod).await;
    let created = created.expect("a managed pod is created after uninstall, the webhook down");
    assert!(
        created.spec.unwrap().readiness_gates.is_none(),
        "no webhook was called"
    );
}
