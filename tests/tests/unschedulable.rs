//! A batch far larger than the cluster can schedule (30 pods for no node): the release waits,
//! Smoking, with a status message naming 5 pods and counting the rest, without a hot loop (the
//! controller's reconciles are counted while nothing changes; this file runs alone, so the
//! count is this release's), and a cancel ends it.

use std::time::Duration;

use serde_json::json;
use triton_e2e::deployflow::{Flow, flow};
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_batch_the_cluster_cannot_schedule_waits_with_a_short_message_and_no_hot_loop() {
    let client = client().await;
    let ns = namespace(&client, "unschedulable").await;
    let mut m = flow("big-v1", "big", "create", 30, "nginx:1.25", json!({"batchSize": 30, "mode": "auto"}));
    m["spec"]["application"]["template"]["spec"]["nodeSelector"] = json!({"e2e.triton.io/nowhere": "true"});
    let df = Flow::create(&client, &ns, m).await;
    let s = df
        .wait("30 pods named Unschedulable", LONG, |s| {
            s["message"].as_str().is_some_and(|m| m.contains("Unschedulable") && m.contains("and 25 more"))
        })
        .await;
    let message = s["message"].as_str().unwrap();
    assert!(message.len() < 2048, "the message stays short ({} bytes): {message}", message.len());
    assert_eq!(message.matches("(Unschedulable").count(), 5, "5 pods named: {message}");
    // Waiting is event-driven: a few reconciles while nothing changes (a hot loop makes hundreds).
    let before = controller_reconciles().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let n = controller_reconciles().await - before;
    eprintln!("reconciles in 10 s while 30 pods stay unschedulable: {n}");
    assert!(n < 50.0, "{n} reconciles in 10 s while the batch waits");
    // Defined way out: cancel.
    let o = std::process::Command::new("kubectl")
        .args(["triton", "cancel", "big-v1", "-n", &ns, "--wait"])
        .output()
        .unwrap();
    assert!(o.status.success(), "cancel: {o:?}");
    df.wait_phase("Canceled", LONG).await;
}
