//! What users do that the release engine must survive, each with its defined outcome (README,
//! "Hostile input"): a release of 0 replicas; two releases of one CloneSet applied at once; the
//! CloneSet's partition edited by hand in the middle of a release (ignored: a known defect, see
//! the test). (A batch the cluster cannot
//! schedule: unschedulable.rs, alone in its binary, so that its reconcile count is its own.)

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use triton_e2e::deployflow::{Flow, flow};
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(120);

fn kruise_cs(client: &kube::Client, ns: &str) -> Api<kube::api::DynamicObject> {
    dynamic_api(client, ns, "apps.kruise.io", "v1alpha1", "CloneSet")
}

async fn cloneset(client: &kube::Client, ns: &str, name: &str) -> Value {
    serde_json::to_value(kruise_cs(client, ns).get(name).await.expect("the CloneSet")).unwrap()
}

async fn create_all(client: &kube::Client, ns: &str, manifests: Vec<Value>) -> Vec<Flow> {
    // Sent concurrently: the second is created before the controller has seen the first.
    futures::future::join_all(manifests.into_iter().map(|m| Flow::create(client, ns, m))).await
}

#[tokio::test]
async fn a_release_of_zero_replicas_succeeds_with_an_empty_cloneset() {
    let client = client().await;
    let ns = namespace(&client, "zero-replicas").await;
    let df = Flow::create(
        &client,
        &ns,
        flow("zero-v1", "zero", "create", 0, "nginx:1.25", json!({"batchSize": 1, "mode": "auto"})),
    )
    .await;
    let s = df.wait_phase("Success", LONG).await;
    assert_eq!(s["batches"], 0, "no batch to run: {s}");
    let cs = cloneset(&client, &ns, "zero").await;
    assert_eq!(cs["spec"]["replicas"], 0, "{cs}");
    let pods = pods(&Api::<Pod>::namespaced(client.clone(), &ns), "app.kubernetes.io/instance=zero").await;
    assert!(pods.is_empty(), "{:?}", live_names(&pods));
}

#[tokio::test]
async fn two_releases_of_one_cloneset_applied_at_once_one_runs_and_the_other_fails_naming_why() {
    let client = client().await;
    let ns = namespace(&client, "two-at-once").await;
    // Two creates: the first to reach the controller creates the CloneSet, the other is told
    // to update it instead.
    let flows = create_all(
        &client,
        &ns,
        vec![
            flow("two-a", "two", "create", 3, "nginx:1.25", json!({"batchSize": 3, "mode": "auto"})),
            flow("two-b", "two", "create", 3, "nginx:1.26", json!({"batchSize": 3, "mode": "auto"})),
        ],
    )
    .await;
    let mut ended = Vec::new();
    for f in &flows {
        let s = f
            .wait("a finished create", LONG, |s| s["finished"] == true)
            .await;
        ended.push((f.name.clone(), s));
    }
    let winners: Vec<_> = ended.iter().filter(|(_, s)| s["phase"] == "Success").collect();
    let losers: Vec<_> = ended.iter().filter(|(_, s)| s["phase"] == "Failed").collect();
    assert_eq!((winners.len(), losers.len()), (1, 1), "one runs, one fails: {ended:?}");
    // Refused on seeing the CloneSet, or on seeing the other release take it in the same moment.
    let why = losers[0].1["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("CloneSet two already exists")
            || why.contains(&format!("CloneSet two is held by DeployFlow {}", winners[0].0)),
        "the loser says why: {why}"
    );
    let cs = cloneset(&client, &ns, "two").await;
    let winner_image = if winners[0].0 == "two-a" { "nginx:1.25" } else { "nginx:1.26" };
    assert_eq!(cs["spec"]["template"]["spec"]["containers"][0]["image"], winner_image);
    let pod_api = Api::<Pod>::namespaced(client.clone(), &ns);
    let ready = pods(&pod_api, "app.kubernetes.io/instance=two").await;
    assert_eq!(live_names(&ready).len(), 3);

    // Two updates: one takes the CloneSet; the other ends Failed naming the release holding it.
    let flows = create_all(
        &client,
        &ns,
        vec![
            flow("two-c", "two", "update", 3, "nginx:1.27", json!({"batchSize": 1, "mode": "auto"})),
            flow("two-d", "two", "update", 3, "nginx:1.28", json!({"batchSize": 1, "mode": "auto"})),
        ],
    )
    .await;
    let mut ended = Vec::new();
    for f in &flows {
        let s = f.wait("a finished update", LONG, |s| s["finished"] == true).await;
        ended.push((f.name.clone(), s));
    }
    let winners: Vec<_> = ended.iter().filter(|(_, s)| s["phase"] == "Success").collect();
    let losers: Vec<_> = ended.iter().filter(|(_, s)| s["phase"] == "Failed").collect();
    assert_eq!((winners.len(), losers.len()), (1, 1), "one runs, one fails: {ended:?}");
    let why = losers[0].1["message"].as_str().unwrap_or_default();
    assert!(why.contains(&winners[0].0), "the loser names the holder: {why}");
    let cs = cloneset(&client, &ns, "two").await;
    let winner_image = if winners[0].0 == "two-c" { "nginx:1.27" } else { "nginx:1.28" };
    assert_eq!(cs["spec"]["template"]["spec"]["containers"][0]["image"], winner_image);
    let live = pods(&pod_api, "app.kubernetes.io/instance=two").await;
    assert_eq!(live_names(&live).len(), 3, "no pod more or less");
    for p in &live {
        if p.metadata.deletion_timestamp.is_none() {
            assert!(is_true(p, "Ready") && is_true(p, "apps.triton.io/ready"), "{:?}", p.metadata.name);
        }
    }
}

/// Known defect, open (issue 12's note): today the gate controller pulls in the pods a hand edit
/// releases between batches. A fix was written and reverted after review: holding them needs
/// gate-aware replacement accounting, revision-changing actions only, and sticky batch
/// attribution, or releases deadlock (restart with an evicted pod) or pods still slip through.
/// This test is the reproduction the fix must pass.
#[tokio::test]
#[ignore = "known defect: pods released by a hand-edited partition are pulled in before their batch (see the doc comment)"]
async fn a_partition_edited_by_hand_mid_release_releases_no_pod_before_its_batch() {
    let client = client().await;
    let ns = namespace(&client, "hand-edit").await;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "edit", "namespace": ns},
        "spec": {"selector": {"app.kubernetes.io/instance": "edit"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let v1 = Flow::create(
        &client,
        &ns,
        flow("edit-v1", "edit", "create", 3, "nginx:1.25", json!({"batchSize": 3, "mode": "auto"})),
    )
    .await;
    v1.wait_phase("Success", LONG).await;
    wait_ready_endpoints(&client, &ns, "edit", 3, LONG).await;
    let v2 = Flow::create(
        &client,
        &ns,
        flow("edit-v2", "edit", "update", 3, "nginx:1.26", json!({"batchSize": 1, "mode": "manual", "batches": 1})),
    )
    .await;
    // Batch 1 baked, batch 2 waiting for `batches` >= 2.
    v2.wait_batch(2, "Pending", LONG).await;
    let batch1: Vec<String> = v2.status().await["conditions"][0]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();

    // Someone releases every pod by hand.
    kruise_cs(&client, &ns)
        .patch(
            "edit",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"updateStrategy": {"partition": 0}}})),
        )
        .await
        .expect("edit the CloneSet's partition");
    // Kruise creates new-revision pods at once; the gate keeps each out of the endpoints until
    // its batch, so the Service keeps its 3 ready endpoints and no new pod outside batch 1 is
    // Ready.
    let pod_api = Api::<Pod>::namespaced(client.clone(), &ns);
    holds_for("no pod released before its batch, 3 ready endpoints", Duration::from_secs(10), || async {
        let eps = service_endpoints(&client, &ns, "edit").await;
        if eps.ready.len() < 3 {
            return Err(format!("ready endpoints {:?}", eps.ready));
        }
        for p in pods(&pod_api, "app.kubernetes.io/instance=edit").await {
            let name = p.metadata.name.clone().unwrap_or_default();
            let new = p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:1.26");
            if new && !batch1.contains(&name) && is_true(&p, "Ready") {
                return Err(format!("{name} is Ready before its batch"));
            }
        }
        Ok(())
    })
    .await;
    // The release goes on to its end; every pod is the new revision, pulled in.
    let (ok, out, err) = {
        let o = std::process::Command::new("kubectl")
            .args(["triton", "continue", "edit-v2", "-n", &ns, "--batches", "3", "--wait", "--timeout", "120s"])
            .output()
            .unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    assert!(ok, "continue --wait: {out}{err}");
    v2.wait_phase("Success", LONG).await;
    let eps = wait_ready_endpoints(&client, &ns, "edit", 3, LONG).await;
    assert_eq!(eps.ready.len(), 3);
    for p in pods(&pod_api, "app.kubernetes.io/instance=edit").await {
        if p.metadata.deletion_timestamp.is_none() {
            assert_eq!(p.spec.as_ref().unwrap().containers[0].image.as_deref(), Some("nginx:1.26"));
            assert!(is_true(&p, "apps.triton.io/ready"), "{:?}", p.metadata.name);
        }
    }
}
