//! The Helm chart (deploy/helm/triton) with the real helm (built from its Go module by
//! tests/cluster/build) and the real API server: lint and a server-side dry run for the default
//! values and for a values file setting every option; the schema refusing bad values by name;
//! and the chart rendering the same objects as deploy/ for the same settings (one install, two
//! ways to apply it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use triton_e2e::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> String {
    repo().join("deploy/helm/triton").display().to_string()
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Out {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn helm_template(ns: &str, extra: &[&str]) -> String {
    let c = chart();
    let mut args = vec!["template", "triton", c.as_str(), "-n", ns];
    args.extend(extra);
    let out = run("helm", &args, None);
    assert!(out.ok, "helm template {extra:?}: {}", out.stderr);
    out.stdout
}

/// Labels and annotations that only say who installed an object.
const INSTALLER_LABELS: [&str; 5] = [
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "helm.sh/chart",
];

/// The objects of a multi-document YAML by (kind, namespace, name), without installer labels.
fn objects(yaml: &str) -> BTreeMap<(String, String, String), Value> {
    let mut out = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("YAML");
        if v.is_null() {
            continue;
        }
        let mut v = v;
        let meta = v["metadata"].as_object_mut().expect("metadata");
        for key in ["labels", "annotations"] {
            if let Some(m) = meta.get_mut(key).and_then(Value::as_object_mut) {
                for l in INSTALLER_LABELS {
                    m.remove(l);
                }
                m.remove("helm.sh/resource-policy");
                if m.is_empty() {
                    meta.remove(key);
                }
            }
        }
        let key = (
            v["kind"].as_str().unwrap_or_default().to_string(),
            v["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
            v["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        );
        assert!(out.insert(key.clone(), v).is_none(), "{key:?} twice");
    }
    out
}

fn assert_same(chart: &str, kustomize: &str, what: &str) {
    let a = objects(chart);
    let mut b = objects(kustomize);
    // `helm install --create-namespace` makes the namespace; deploy/ has it as an object.
    b.retain(|k, _| k.0 != "Namespace");
    let ka: Vec<_> = a.keys().collect();
    let kb: Vec<_> = b.keys().collect();
    assert_eq!(ka, kb, "{what}: the same objects");
    for (k, va) in &a {
        let vb = &b[k];
        assert!(
            va == vb,
            "{what}: {k:?} differs\n--- chart\n{}\n--- deploy/\n{}",
            serde_json::to_string_pretty(va).unwrap(),
            serde_json::to_string_pretty(vb).unwrap()
        );
    }
}

#[test]
fn the_chart_renders_the_objects_of_deploy_for_the_same_settings() {
    let kustomize = |dir: &str| {
        let out = run("kubectl", &["kustomize", &repo().join(dir).display().to_string()], None);
        assert!(out.ok, "kubectl kustomize {dir}: {}", out.stderr);
        out.stdout
    };
    assert_same(
        &helm_template("triton-system", &[]),
        &kustomize("deploy"),
        "default values vs deploy/",
    );
    assert_same(
        &helm_template("triton-system", &["--set", "webhook.certificate.mode=cert-manager"]),
        &kustomize("deploy/cert-manager"),
        "webhook.certificate.mode=cert-manager vs deploy/cert-manager/",
    );
}

#[test]
fn lint_passes_and_the_schema_refuses_bad_values_naming_them() {
    let c = chart();
    let all = repo().join("deploy/helm/triton/ci/all-options.yaml").display().to_string();
    let tls = repo().join("deploy/helm/triton/ci/api-tls.yaml").display().to_string();
    for extra in [
        &[][..],
        &["-f", all.as_str()],
        &["-f", tls.as_str()],
        &["--set", "webhook.certificate.mode=generate"],
    ] {
        let mut args = vec!["lint", "--strict", c.as_str()];
        args.extend(extra);
        let out = run("helm", &args, None);
        assert!(out.ok, "helm lint {extra:?}: {}{}", out.stdout, out.stderr);
    }
    for (set, field) in [
        ("controller.replicas=0", "/controller/replicas"),
        ("webhook.certificate.mode=vault", "/webhook/certificate/mode"),
        ("webhook.failurePolicy=Maybe", "/webhook/failurePolicy"),
        ("controller.agentStaleness=soon", "/controller/agentStaleness"),
        ("controller.extraArgs[0]=rm", "/controller/extraArgs/0"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("unknownOption=1", "unknownOption"),
        // Combinations refused by the templates, with the reason.
        ("controller.leaderElection.enabled=false", "needs controller.replicas=1"),
        ("controller.api.tlsSecretName=t", "set agent.enabled=false with it"),
        ("webhook.url=https://127.0.0.1:8443/mutate-pods,webhook.certificate.mode=generate", "not for webhook.url"),
    ] {
        let out = run("helm", &["template", "triton", c.as_str(), "--set", set], None);
        assert!(!out.ok, "--set {set} is refused");
        assert!(out.stderr.contains(field), "--set {set}: the error names {field}: {}", out.stderr);
    }
    // Accepted: an umbrella chart's globals, pull secrets by name or as objects, a quoted flag,
    // a single webhook replica (then no PodDisruptionBudget, which would block node drains).
    let out = run(
        "helm",
        &["template", "triton", c.as_str(), "--set", "global.x=1", "--set", "imagePullSecrets[0].name=reg",
          "--set", "imagePullSecrets[1]=two", "--set", "controller.extraArgs[0]=--api-auth-ttl=5s # x",
          "--set", "webhook.replicas=1"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("- name: reg") && out.stdout.contains("- name: two"), "{}", out.stdout);
    assert!(out.stdout.contains("- \"--api-auth-ttl=5s # x\""), "{}", out.stdout);
    assert!(!out.stdout.contains("kind: PodDisruptionBudget"), "{}", out.stdout);
}

/// Registers cert-manager's and the Prometheus Operator's kinds (schema-less) so that a server
/// dry run can take the chart's Certificate, Issuer and ServiceMonitor objects; Triton's own
/// objects are checked against the real schemas.
fn register_foreign_kinds() {
    for (group, plural, kind) in [
        ("cert-manager.io", "certificates", "Certificate"),
        ("cert-manager.io", "issuers", "Issuer"),
        ("monitoring.coreos.com", "servicemonitors", "ServiceMonitor"),
    ] {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {"group": group, "scope": "Namespaced",
                "names": {"plural": plural, "kind": kind, "singular": kind.to_lowercase()},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        });
        let out = run("kubectl", &["apply", "-f", "-"], Some(&crd.to_string()));
        assert!(out.ok, "register {kind}: {}", out.stderr);
        let out = run(
            "kubectl",
            &["wait", "--for=condition=established", "--timeout=30s", &format!("crd/{plural}.{group}")],
            None,
        );
        assert!(out.ok, "{kind} established: {}", out.stderr);
    }
}

#[tokio::test]
async fn the_rendered_chart_passes_a_server_side_dry_run_with_default_and_every_option() {
    let client = client().await;
    let ns = namespace(&client, "helm-dry-run").await;
    register_foreign_kinds();
    let all = repo().join("deploy/helm/triton/ci/all-options.yaml").display().to_string();
    let tls = repo().join("deploy/helm/triton/ci/api-tls.yaml").display().to_string();
    for extra in [
        &[][..],
        &["-f", all.as_str()],
        &["-f", tls.as_str()],
        &["--set", "webhook.certificate.mode=generate"],
    ] {
        let rendered = helm_template(&ns, extra);
        let out = run("kubectl", &["apply", "--dry-run=server", "-f", "-"], Some(&rendered));
        assert!(out.ok, "kubectl apply --dry-run=server of the chart {extra:?}: {}", out.stderr);
        let applied = out.stdout.lines().filter(|l| l.ends_with("(server dry run)")).count();
        assert_eq!(applied, objects(&rendered).len(), "{extra:?}: every object was accepted: {}", out.stdout);
    }
}
