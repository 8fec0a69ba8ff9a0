//! `kubectl triton` (the kubectl plugin) against the real control plane, found by kubectl on
//! PATH as a user would: the tutorial driven only by `kubectl triton next --wait`, `get --watch`
//! read off a real terminal (tmux), `get -o json` against the API server's copy, the tree of a
//! failing release, and the refusals, a missing DeployFlow and RBAC.

use std::time::Duration;

use kube::Api;
use serde_json::{Value, json};
use triton_e2e::api::{grpcurl, grpc_addr, service_account_token};
use triton_e2e::deployflow::{Flow, flow, tutorial, tutorial_service};
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(120);

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `kubectl triton ARGS` (kubectl finds the plugin on PATH), bounded in time.
async fn triton(args: &[&str]) -> Out {
    let run = tokio::process::Command::new("kubectl")
        .arg("triton")
        .args(args)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| panic!("kubectl triton {args:?} did not finish within 180 s"))
        .expect("run kubectl triton");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A program running in a detached tmux session (a real pseudo-terminal), whose screen the
/// test reads with `tmux capture-pane`.
struct Terminal {
    socket: String,
}

impl Terminal {
    async fn start(command: &str) -> Terminal {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let socket = format!(
            "triton-e2e-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let shell = format!("{command}; echo EXIT=$?; sleep 600");
        // -f /dev/null: no tmux configuration of the machine's user changes the terminal.
        let ok = tokio::process::Command::new("tmux")
            .args(["-f", "/dev/null", "-L", &socket, "new-session", "-d", "-x", "200", "-y", "50", &shell])
            .status()
            .await
            .expect("run tmux");
        assert!(ok.success(), "tmux new-session failed");
        Terminal { socket }
    }

    async fn screen(&self) -> String {
        let out = tokio::process::Command::new("tmux")
            .args(["-f", "/dev/null", "-L", &self.socket, "capture-pane", "-p"])
            .output()
            .await
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows every one of `texts`.
    async fn shows(&self, what: &str, texts: &[&str], timeout: Duration) -> String {
        eventually(&format!("the terminal to show {what}"), timeout, || async {
            let s = self.screen().await;
            if texts.iter().all(|t| s.contains(t)) {
                Ok(s)
            } else {
                Err(format!("\n{s}"))
            }
        })
        .await
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The line of `screen` that contains `needle`.
fn line_with<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{screen}"))
}

/// `get -o json` prints the DeployFlow as the API server has it: its status equals the
/// status of a GET of the same resourceVersion.
async fn json_matches_the_api_server(df: &Flow) {
    eventually(
        "kubectl triton get -o json and a GET at the same resourceVersion",
        Duration::from_secs(30),
        || async {
            let out = triton(&["get", &df.name, "-n", &df.ns, "-o", "json"]).await;
            assert_eq!(out.code, 0, "{out:?}");
            let printed: Value = serde_json::from_str(&out.stdout).expect("get -o json prints JSON");
            let live = df.get().await;
            let rv = |v: &Value| v["metadata"]["resourceVersion"].clone();
            if rv(&printed) != rv(&live) {
                return Err(format!("changed in between: {} vs {}", rv(&printed), rv(&live)));
            }
            assert_eq!(printed["status"], live["status"], "get -o json's status");
            assert_eq!(printed["spec"], live["spec"], "get -o json's spec");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_tutorial_runs_to_success_driven_only_by_next_wait_while_get_watch_shows_each_phase() {
    let client = client().await;
    let ns = namespace(&client, "plugin-tutorial").await;
    create_service(&client, &ns, tutorial_service()).await;
    let df = Flow::create(&client, &ns, tutorial()).await;
    let name = df.name.clone();
    let svc = "sample-12122-svc";
    // The watch, the last Next and a Scale run as a ServiceAccount bound to the example role
    // triton-release-operator (deploy/): it is all a user needs.
    let operator = service_account_token(&client, &ns, "operator", true, None).await;
    let kc = kubeconfig_with_token(&operator, &format!("{ns}-operator")).await;
    let kc = kc.to_str().unwrap().to_string();
    let watch =
        Terminal::start(&format!("kubectl triton --kubeconfig {kc} get {name} -n {ns} --watch")).await;

    // The canary stops at Smoked: Ready gate closed, outside the Service's endpoints.
    let screen = watch
        .shows("the canary Smoked", &["batch 1 (canary) Smoked"], LONG)
        .await;
    let canary = df.status().await["conditions"][0]["pods"][0]["name"]
        .as_str()
        .expect("the canary pod in the status")
        .to_string();
    // Listed in the Service's EndpointSlice as not ready (no traffic), or not listed yet.
    let outside = |l: &str| l.contains("not ready in svc/") || l.contains("in no endpoints");
    let pod_line = line_with(&screen, &format!("pod {canary}"));
    assert!(outside(pod_line), "{pod_line}");
    assert!(!pod_line.contains(&format!("  in svc/{svc}")), "{pod_line}");
    assert!(pod_line.contains("gate closed"), "{pod_line}");
    assert!(screen.contains("○ batch 2 Pending"), "{screen}");

    // Next 1: the canary is pulled in.
    let out = triton(&["next", &name, "-n", &ns, "--wait"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("next → batch 1 Baking"), "{out:?}");
    assert!(
        out.stdout.contains("state: BatchStarted, batch 1/3 (canary) Baking"),
        "{out:?}"
    );
    let s = df.status().await;
    assert_eq!(s["conditions"][0]["phase"], "Baking", "next --wait returned at Baking");
    let screen = watch
        .shows(
            "the canary Baking, in the Service's endpoints",
            &["batch 1 (canary) Baking", &format!("  in svc/{svc}")],
            Duration::from_secs(20),
        )
        .await;
    assert!(line_with(&screen, &format!("pod {canary}")).contains("gate open"), "{screen}");
    json_matches_the_api_server(&df).await;

    // Next 2: the canary is baked.
    let out = triton(&["next", &name, "-n", &ns, "--wait"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("next → batch 1 Baked"), "{out:?}");
    assert_eq!(df.status().await["conditions"][0]["phase"], "Baked", "next --wait returned at Baked");
    watch
        .shows("the canary Baked", &["✔ batch 1 (canary) Baked"], Duration::from_secs(20))
        .await;

    // Next 3 at once (the controller may still be planning batch 2, which the API refuses with
    // "try again": the plugin retries it): batches 2 and 3, 10 s apart, to Success; --wait
    // prints the progress.
    let out = triton(&["--kubeconfig", &kc, "next", &name, "-n", &ns, "--wait"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("state: Success"), "{out:?}");
    assert!(out.stderr.contains("batch 3/3"), "progress lines: {out:?}");
    let s = df.status().await;
    assert_eq!(s["phase"], "Success");
    wait_ready_endpoints(&client, &ns, svc, 3, LONG).await;

    // The watch saw it, and exited 0 at Success.
    let screen = watch
        .shows("Success and exit 0", &["✔ Success", "EXIT=0"], Duration::from_secs(20))
        .await;
    assert!(screen.contains("✔ batch 3 Baked"), "{screen}");
    assert_eq!(
        screen.matches(&format!("  in svc/{svc}")).count(),
        3,
        "the last frame shows the 3 pods in the endpoints:\n{screen}"
    );
    assert_eq!(screen.matches("DeployFlow ").count(), 1, "frames are redrawn in place:\n{screen}");

    // A scale in naming a pod, as the operator: exactly that pod goes.
    let victim = s["conditions"][1]["pods"][0]["name"].as_str().unwrap().to_string();
    let out = triton(&[
        "--kubeconfig", &kc, "-n", &ns, "scale", "12122-sample-10010", "--replicas", "2",
        "--delete-pod", &victim, "--wait",
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("scale to 2 replicas: deployflow"), "{out:?}");
    assert!(out.stdout.contains("state: Success"), "{out:?}");
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns);
    let left = pods_of(&pods, "app.kubernetes.io/instance=12122-sample-10010").await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&victim), "{victim} deleted: {left:?}");
}

async fn pods_of(api: &Api<k8s_openapi::api::core::v1::Pod>, selector: &str) -> Vec<String> {
    live_names(&pods(api, selector).await)
}

/// The status message of a Next refused through the gRPC API (what the plugin must print).
async fn grpc_refusal(ns: &str, name: &str, rpc: &str) -> String {
    let body = json!({"deploy": {"namespace": ns, "name": name}}).to_string();
    let (ok, stdout, stderr) = grpcurl(&[
        "--plaintext",
        "-d",
        &body,
        &grpc_addr(),
        &format!("deployflow.DeployFlow/{rpc}"),
    ])
    .await;
    assert!(!ok, "{rpc} through the API was expected to be refused: {stdout}");
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Message: "))
        .unwrap_or_else(|| panic!("no message in grpcurl's error: {stderr}"))
        .to_string()
}

/// A kubeconfig for the local API server with `token` as the user.
async fn kubeconfig_with_token(token: &str, tag: &str) -> std::path::PathBuf {
    let out = tokio::process::Command::new("kubectl")
        .args(["config", "view", "--raw", "--minify", "-o", "json"])
        .output()
        .await
        .expect("kubectl config view");
    let admin: Value = serde_json::from_slice(&out.stdout).expect("kubeconfig as JSON");
    let cluster = admin["clusters"][0]["cluster"].clone();
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
        "current-context": "sa",
    });
    let path = std::env::temp_dir().join(format!("kubeconfig-{tag}-{}", std::process::id()));
    std::fs::write(&path, kc.to_string()).expect("write kubeconfig");
    path
}

#[tokio::test]
async fn a_failing_release_shows_why_and_every_refusal_is_the_apis_with_exit_1() {
    let client = client().await;
    let ns = namespace(&client, "plugin-refusals").await;
    let mut manifest = flow("crash-v1", "crash", "create", 1, "nginx:1.25", json!({"mode": "auto"}));
    manifest["spec"]["application"]["template"]["metadata"]["annotations"] =
        json!({"e2e.triton.io/crash": "true"});
    let df = Flow::create(&client, &ns, manifest).await;
    let s = df.wait_batch(1, "SmokeFailed", LONG).await;
    let message = s["message"].as_str().expect("a status message").to_string();
    let pod = s["conditions"][0]["pods"][0]["name"]
        .as_str()
        .expect("the failing pod in the status")
        .to_string();

    // The plain tree names the reason and the failing pod.
    let out = triton(&["get", "crash-v1", "-n", &ns]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains('\x1b'), "no colour when piped: {out:?}");
    assert!(
        out.stdout.contains(&format!("⏸ paused: {message}")),
        "the reason: {out:?}"
    );
    assert!(out.stdout.contains("✖ batch 1 SmokeFailed"), "{out:?}");
    let line = line_with(&out.stdout, &format!("pod {pod}"));
    assert!(line.contains(&format!("✖ pod {pod}")), "the failing pod is marked: {line}");
    assert!(line.contains("restart"), "and says why: {line}");

    // Refusals: the API's text, exit 1.
    let want = grpc_refusal(&ns, "crash-v1", "Next").await;
    assert!(want.contains("SmokeFailed"), "{want}");
    let out = triton(&["next", "crash-v1", "-n", &ns]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&want), "the API's refusal {want:?}: {out:?}");
    let out = triton(&["resume", "crash-v1", "-n", &ns, "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 1, "a resume of a still-failing batch is refused: {out:?}");
    assert!(out.stderr.contains("resume refused"), "{out:?}");
    let out = triton(&["cancel", "crash-v1", "-n", &ns, "--wait"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("state: Canceled"), "{out:?}");
    let want = grpc_refusal(&ns, "crash-v1", "Next").await;
    assert!(want.contains("finished"), "{want}");
    for verb in [&["next"][..], &["pause"], &["resume"], &["cancel"], &["continue", "--batches", "2"]] {
        let mut args = verb.to_vec();
        args.extend(["crash-v1", "-n", &ns]);
        let out = triton(&args).await;
        assert_eq!(out.code, 1, "{verb:?} on a finished release: {out:?}");
        assert!(out.stderr.contains(&want), "{verb:?}: the API's refusal {want:?}: {out:?}");
    }
    let out = triton(&["continue", "crash-v1", "-n", &ns, "--stage", "Cooked"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("target.stage"), "the field is named: {out:?}");

    // A missing DeployFlow or application says so.
    for args in [&["get", "nope"][..], &["next", "nope"], &["pause", "nope"]] {
        let mut a = args.to_vec();
        a.extend(["-n", &ns]);
        let out = triton(&a).await;
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(out.stderr.contains("not found"), "{args:?}: {out:?}");
        assert!(out.stderr.contains("nope"), "{args:?}: {out:?}");
    }
    let out = triton(&["scale", "nope", "--replicas", "2", "-n", &ns]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("application") && out.stderr.contains("not found"), "{out:?}");

    // RBAC: a user without it sees the API server's Forbidden; the release-operator role is
    // all a user needs.
    let stranger = service_account_token(&client, &ns, "stranger", false, None).await;
    let kc = kubeconfig_with_token(&stranger, "stranger").await;
    let kc = kc.to_str().unwrap();
    for args in [&["get", "crash-v1"][..], &["next", "crash-v1"], &["list"]] {
        let mut a = vec!["--kubeconfig", kc, "-n", &ns];
        a.extend(args);
        let out = triton(&a).await;
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("Error from server (Forbidden)")
                && out.stderr.contains("deployflows")
                && out.stderr.contains(&format!("system:serviceaccount:{ns}:stranger")),
            "{args:?}: {out:?}"
        );
    }
    let operator = service_account_token(&client, &ns, "operator", true, None).await;
    let kc = kubeconfig_with_token(&operator, "operator").await;
    let out = triton(&["--kubeconfig", kc.to_str().unwrap(), "-n", &ns, "get", "crash-v1"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&format!("pod {pod}")), "pods readable: {out:?}");
    assert!(!out.stdout.contains("not shown"), "{out:?}");
    let out = triton(&["--kubeconfig", kc.to_str().unwrap(), "-n", &ns, "list"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(line_with(&out.stdout, "crash-v1").contains("Canceled"), "{out:?}");
}
