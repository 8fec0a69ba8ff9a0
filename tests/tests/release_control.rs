//! Pause, resume and cancel of running releases (tests/cluster/run --triton).

use std::time::Duration;

use kube::Api;
use serde_json::json;
use triton_e2e::deployflow::{Flow, flow, released};
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(90);

#[tokio::test]
async fn pause_holds_the_release_between_batches_and_resume_finishes_it() {
    let client = client().await;
    let ns = namespace(&client, "pause").await;
    let df = Flow::create(
        &client,
        &ns,
        flow(
            "app-v1",
            "app",
            "create",
            3,
            "nginx:1.25",
            json!({"batchSize": 1, "mode": "auto", "batchIntervalSeconds": 3}),
        ),
    )
    .await;
    df.wait_batch(1, "Baked", LONG).await;
    df.patch_strategy("updateStrategy", json!({"paused": true}))
        .await;
    let s = df.wait("paused", LONG, |s| s["paused"] == true).await;
    let finished = s["finishedBatches"].clone();
    let cs = dynamic_api(&client, &ns, "apps.kruise.io", "v1alpha1", "CloneSet");
    let paused = serde_json::to_value(cs.get("app").await.unwrap()).unwrap()["spec"]["updateStrategy"]["paused"].clone();
    assert_eq!(paused, true, "the CloneSet is paused too");
    holds_for(
        "no batch finishing while paused",
        Duration::from_secs(5),
        || async {
            let st = df.status().await;
            if st["finishedBatches"] == finished && st["phase"] == "BatchStarted" {
                Ok(())
            } else {
                Err(triton_e2e::deployflow::summary(&st))
            }
        },
    )
    .await;
    df.patch_strategy("updateStrategy", json!({"paused": false}))
        .await;
    let s = df.wait_phase("Success", LONG).await;
    assert_eq!(s["paused"], false);
    assert_eq!(s["finishedReplicas"], 3);
}

#[tokio::test]
async fn cancel_at_the_canary_removes_the_surge_and_leaves_the_old_revision_serving() {
    let client = client().await;
    let ns = namespace(&client, "cancel").await;
    let selector = json!({"app.kubernetes.io/instance": "web"});
    let svc: k8s_openapi::api::core::v1::Service =
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"selector": selector, "ports": [{"port": 80}]}})).unwrap();
    Api::namespaced(client.clone(), &ns)
        .create(&Default::default(), &svc)
        .await
        .unwrap();
    released(&client, &ns, "web", 4, "nginx:1.25").await;

    let update = Flow::create(
        &client,
        &ns,
        flow(
            "web-v2",
            "web",
            "update",
            4,
            "nginx:1.26",
            json!({"batchSize": 2, "canary": 1, "mode": "auto"}),
        ),
    )
    .await;
    let s = update.wait_batch(1, "Smoked", LONG).await;
    let canary = s["conditions"][0]["pods"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    update
        .patch_strategy("updateStrategy", json!({"canceled": true}))
        .await;
    let s = update.wait_phase("Canceled", LONG).await;
    assert_eq!(s["finished"], true);
    assert!(
        s["message"]
            .as_str()
            .unwrap_or_default()
            .contains("batch 1"),
        "{}",
        s["message"]
    );

    let pods_api = Api::namespaced(client.clone(), &ns);
    let live = eventually("the canary removed and 4 old pods left", LONG, || async {
        let pods = triton_e2e::pods(&pods_api, "app.kubernetes.io/instance=web").await;
        let live: Vec<_> = pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let has_canary = live
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(&canary));
        if live.len() == 4 && !has_canary {
            Ok(live)
        } else {
            Err(format!(
                "{} live pods, canary present: {has_canary}",
                live.len()
            ))
        }
    })
    .await;
    for p in &live {
        assert_eq!(
            p.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some("nginx:1.25")
        );
    }
    let cs = serde_json::to_value(
        dynamic_api(&client, &ns, "apps.kruise.io", "v1alpha1", "CloneSet")
            .get("web")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(cs["spec"]["replicas"], 4);
    assert_ne!(
        cs["spec"]["updateStrategy"]["paused"], true,
        "the CloneSet is left unpaused"
    );
    assert!(
        cs["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.iter().all(|o| o["kind"] != "DeployFlow")),
        "ownership released"
    );
    wait_ready_endpoints(&client, &ns, "web", 4, LONG).await;
}

#[tokio::test]
async fn a_crashing_batch_goes_smoke_failed_pauses_and_needs_a_resume_after_recovery() {
    let client = client().await;
    let ns = namespace(&client, "smoke-failed").await;
    let mut manifest = flow(
        "crash-v1",
        "crash",
        "create",
        1,
        "nginx:1.25",
        json!({"mode": "auto"}),
    );
    manifest["spec"]["application"]["template"]["metadata"]["annotations"] =
        json!({"e2e.triton.io/crash": "true"});
    let df = Flow::create(&client, &ns, manifest).await;
    let s = df.wait_batch(1, "SmokeFailed", LONG).await;
    assert_eq!(s["paused"], true, "the release pauses");
    assert!(
        s["message"].as_str().unwrap_or_default().contains("smoke"),
        "{}",
        s["message"]
    );
    let cs = dynamic_api(&client, &ns, "apps.kruise.io", "v1alpha1", "CloneSet");
    let cs = serde_json::to_value(cs.get("crash").await.unwrap()).unwrap();
    assert_eq!(
        cs["spec"]["updateStrategy"]["paused"], true,
        "the CloneSet is paused too"
    );
    let pod = s["conditions"][0]["pods"][0]["name"]
        .as_str()
        .expect("the failing pod")
        .to_string();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    eventually("a BatchFailed Event on the DeployFlow", LONG, || async {
        let list = events
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        if list
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("BatchFailed"))
        {
            Ok(())
        } else {
            Err("none yet".to_string())
        }
    })
    .await;

    // The failure pause is written into the spec (as if the user had paused), so a resume is an
    // explicit `paused: false` written after it.
    df.wait_object("with spec.updateStrategy.paused written true", LONG, |o| {
        o["spec"]["updateStrategy"]["paused"] == true
    })
    .await;
    let g = df
        .patch_strategy("updateStrategy", json!({"paused": false}))
        .await["metadata"]["generation"]
        .as_i64()
        .unwrap();
    let o = df
        .wait_object(
            "to refuse the resume and write spec paused back to true",
            LONG,
            |o| {
                o["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("resume refused")
                    && o["spec"]["updateStrategy"]["paused"] == true
                    && o["metadata"]["generation"].as_i64() > Some(g)
            },
        )
        .await;
    let s = &o["status"];
    assert_eq!(s["paused"], true, "expected status.paused to stay true");
    assert_eq!(
        s["conditions"][0]["phase"], "SmokeFailed",
        "expected batch 1 to stay SmokeFailed after the refused resume"
    );

    // The pod recovers (kwok stops crashing it). The refused resume is not remembered: the
    // release stays paused until the user resumes again, then the batch is retried to Success.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    pods.patch(
        &pod,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            json!({"metadata": {"annotations": {"e2e.triton.io/crash": null}}}),
        ),
    )
    .await
    .unwrap();
    wait_pod_condition(&pods, &pod, "ContainersReady", LONG).await;
    holds_for(
        "the release to stay SmokeFailed and paused after recovery until resumed again",
        Duration::from_secs(5),
        || async {
            let o = df.get().await;
            let s = &o["status"];
            if s["conditions"][0]["phase"] == "SmokeFailed"
                && s["paused"] == true
                && o["spec"]["updateStrategy"]["paused"] == true
            {
                Ok(())
            } else {
                Err(format!(
                    "{} spec paused {}",
                    triton_e2e::deployflow::summary(s),
                    o["spec"]["updateStrategy"]["paused"]
                ))
            }
        },
    )
    .await;
    df.patch_strategy("updateStrategy", json!({"paused": false}))
        .await;
    let s = df.wait_phase("Success", LONG).await;
    assert_eq!(s["paused"], false);
}
