//! triton-controller dying between the status write that records which pods a batch's finish
//! deletes and the CloneSet write that deletes them (tests/cluster/run --triton). Its own binary:
//! the tests restart the controller, so no other release may run meanwhile; the two tests here
//! take turns (SERIAL).
//!
//! The controller honours `TRITON_CONTROLLER_FAILPOINT=after-status-write:<ns>/<name>:podsToDelete`:
//! it aborts right after the status write that recorded a batch's `podsToDelete`, before the
//! CloneSet write that follows. A controller without the hook ignores the variable; the tests
//! then fail waiting for it to exit.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;
use triton_e2e::deployflow::{Flow, flow, released, summary};
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(90);

/// The tests restart the one controller: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn controller_ready() -> bool {
    http_ok(&testenv_var("TRITON_CONTROLLER_ADMIN"), "/readyz").await
}

async fn wait_controller_gone(what: &str, timeout: Duration) {
    eventually(what, timeout, || async {
        if controller_ready().await {
            Err("/readyz still answers")
        } else {
            Ok(())
        }
    })
    .await;
}

async fn wait_controller_ready() {
    eventually(
        "triton-controller ready",
        Duration::from_secs(30),
        || async {
            if controller_ready().await {
                Ok(())
            } else {
                Err("/readyz does not answer")
            }
        },
    )
    .await;
}

/// Starts triton-controller (the run's start script), with `failpoint` in its environment if given.
async fn start_controller(failpoint: Option<&str>) {
    let mut cmd = tokio::process::Command::new(testenv_var("TRITON_CONTROLLER_START"));
    match failpoint {
        Some(fp) => cmd.env("TRITON_CONTROLLER_FAILPOINT", fp),
        None => cmd.env_remove("TRITON_CONTROLLER_FAILPOINT"),
    };
    cmd.spawn().expect("start triton-controller");
    wait_controller_ready().await;
}

/// Kills the running controller hard and waits until it no longer answers.
async fn kill_controller() {
    signal_processes("-KILL", "triton-controller --admin-listen=127.0.0.1:8000").await;
    wait_controller_gone("the killed triton-controller gone", Duration::from_secs(10)).await;
}

/// Runs `df` under a controller with the failpoint after batch 1's status write that records
/// its pods to delete; waits for the abort; checks that the crash hit the window (recorded, not
/// yet carried out); restarts the controller without it; waits for Success.
async fn run_through_the_crash_window(
    client: &kube::Client,
    ns: &str,
    manifest: serde_json::Value,
) -> serde_json::Value {
    let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
    kill_controller().await;
    let failpoint = format!("after-status-write:{ns}/{name}:podsToDelete");
    start_controller(Some(&failpoint)).await;

    let df = Flow::create(client, ns, manifest).await;
    wait_controller_gone(
        &format!("triton-controller to abort at its failpoint {failpoint}"),
        LONG,
    )
    .await;
    let s = df.status().await;
    assert!(
        s["conditions"][0]["phase"] == "Baking" && s["conditions"][0]["podsToDelete"].is_array(),
        "expected the abort inside the window: batch 1 Baking with its podsToDelete recorded: {} {}",
        summary(&s),
        s["conditions"][0]["podsToDelete"]
    );

    start_controller(None).await;
    df.wait_phase("Success", LONG).await
}

#[tokio::test]
async fn scale_in_killed_between_recording_and_deleting_deletes_exactly_the_named_pods() {
    let _turn = SERIAL.lock().await;
    let client = client().await;
    let ns = namespace(&client, "failpoint-scale-in").await;
    released(&client, &ns, "app", 4, "nginx:1.25").await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = "app.kubernetes.io/instance=app";
    let before = live_names(&pods(&pods_api, selector).await);
    assert_eq!(before.len(), 4, "expected 4 released pods: {before:?}");
    // Two batches of one: the crash hits the first; the second must not pick its pod again.
    let victims = vec![before[1].clone(), before[3].clone()];

    run_through_the_crash_window(
        &client,
        &ns,
        flow(
            "app-in",
            "app",
            "scale_in",
            2,
            "nginx:1.25",
            json!({"podsToDelete": victims, "batchSize": 1, "mode": "auto"}),
        ),
    )
    .await;

    let expected: Vec<String> = before
        .iter()
        .filter(|n| !victims.contains(n))
        .cloned()
        .collect();
    eventually(
        &format!("exactly {victims:?} deleted, {expected:?} left"),
        LONG,
        || async {
            let left = live_names(&pods(&pods_api, selector).await);
            if left == expected { Ok(()) } else { Err(left) }
        },
    )
    .await;
    let cs = serde_json::to_value(
        dynamic_api(&client, &ns, "apps.kruise.io", "v1alpha1", "CloneSet")
            .get("app")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        cs["spec"]["replicas"], 2,
        "expected CloneSet replicas 2 after the scale in"
    );
}

#[tokio::test]
async fn restart_killed_between_recording_and_deleting_replaces_exactly_the_named_pod() {
    let _turn = SERIAL.lock().await;
    let client = client().await;
    let ns = namespace(&client, "failpoint-restart").await;
    released(&client, &ns, "app", 3, "nginx:1.25").await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = "app.kubernetes.io/instance=app";
    let before = live_names(&pods(&pods_api, selector).await);
    assert_eq!(before.len(), 3, "expected 3 released pods: {before:?}");
    let victim = before[1].clone();

    run_through_the_crash_window(
        &client,
        &ns,
        flow(
            "app-restart",
            "app",
            "restart",
            3,
            "nginx:1.25",
            json!({"podsToDelete": [victim], "batchSize": 1, "mode": "auto"}),
        ),
    )
    .await;

    let kept: Vec<String> = before.iter().filter(|n| **n != victim).cloned().collect();
    eventually(
        &format!("{victim} replaced by one new pod, {kept:?} untouched, 3 live pods"),
        LONG,
        || async {
            let left = live_names(&pods(&pods_api, selector).await);
            let new: Vec<&String> = left.iter().filter(|n| !before.contains(n)).collect();
            if left.len() == 3
                && !left.contains(&victim)
                && kept.iter().all(|k| left.contains(k))
                && new.len() == 1
            {
                Ok(())
            } else {
                Err(left)
            }
        },
    )
    .await;
}
