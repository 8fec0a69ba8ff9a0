//! What users do that the release engine must survive, each with its defined outcome (README,
//! "Hostile input"): a release of 0 replicas; two releases of one CloneSet applied at once; the
//! CloneSet's partition edited by hand in the middle of a release. (A batch the cluster cannot
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

/// A CloneSet's partition set to 0 by hand while the release waits between batches: Kruise
/// starts updating every pod. The release sets its partition back, removes the pod updated out of
/// turn (held out of the Service by the gate controller meanwhile), says so in its message and a
/// Warning Event, and then goes on to Success as if nothing had happened. The Service never has
/// fewer ready endpoints than the CloneSet's maxUnavailable allows (the edit itself takes one old
/// pod down), and no new pod outside batch 1 is ever Ready before its batch.
#[tokio::test]
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

    // Someone releases every pod by hand, and the pods are watched from then on.
    let pod_api = Api::<Pod>::namespaced(client.clone(), &ns);
    let watched = History::start(pod_api.clone(), Default::default()).await;
    let history = History::start(
        v2.api.clone(),
        kube::runtime::watcher::Config::default().fields("metadata.name=edit-v2"),
    )
    .await;
    let slices = History::start(
        Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(client.clone(), &ns),
        kube::runtime::watcher::Config::default().labels("kubernetes.io/service-name=edit"),
    )
    .await;
    kruise_cs(&client, &ns)
        .patch(
            "edit",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"updateStrategy": {"partition": 0}}})),
        )
        .await
        .expect("edit the CloneSet's partition");
    // The release answers: its partition back, the out-of-turn pods removed, told (the message
    // lasts one step, so it is read from the DeployFlow's watch).
    let msgs = || -> Vec<String> {
        history
            .versions()
            .iter()
            .filter_map(|d| d.data["status"]["message"].as_str().map(str::to_string))
            .filter(|m| m.contains("was edited outside the release"))
            .collect()
    };
    eventually("the edit told in the status message", LONG, || async {
        let m = msgs();
        if m.iter().any(|m| m.contains("partition is set back to 2")) {
            Ok(())
        } else {
            Err(format!("{m:?}"))
        }
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    eventually("a CloneSetEdited Warning Event", LONG, || async {
        let list = events.list(&Default::default()).await.map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find(|e| e.reason.as_deref() == Some("CloneSetEdited") && e.type_.as_deref() == Some("Warning"))
            .map(|_| ())
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    eventually("the CloneSet back at partition 2, 1 new and 2 old pods, 3 ready endpoints", LONG, || async {
        let cs = cloneset(&client, &ns, "edit").await;
        if cs["spec"]["updateStrategy"]["partition"] != 2 {
            return Err(format!("partition {}", cs["spec"]["updateStrategy"]["partition"]));
        }
        let live: Vec<Pod> = pods(&pod_api, "app.kubernetes.io/instance=edit")
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let new: Vec<String> = live
            .iter()
            .filter(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:1.26"))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let eps = service_endpoints(&client, &ns, "edit").await;
        if live.len() != 3 || new != batch1 || eps.ready.len() != 3 {
            return Err(format!("{} live, new {new:?}, ready endpoints {:?}", live.len(), eps.ready));
        }
        Ok(())
    })
    .await;
    // What the pod watch saw since the edit: no new pod but batch 1's was ever Ready.
    for p in watched.versions() {
        let name = p.metadata.name.clone().unwrap_or_default();
        let new = p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:1.26");
        assert!(
            !(new && !batch1.contains(&name) && is_true(&p, "Ready")),
            "{name} was Ready before its batch"
        );
    }
    // And what the slice watch saw: the edit took one old pod down (maxUnavailable), never more.
    let fewest = slices
        .versions()
        .iter()
        .map(|sl| {
            sl.endpoints
                .iter()
                .flatten()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count()
        })
        .min()
        .expect("the Service's EndpointSlice");
    assert!(fewest >= 2, "the Service had {fewest} ready endpoints");
    holds_for("3 ready endpoints", Duration::from_secs(5), || async {
        let eps = service_endpoints(&client, &ns, "edit").await;
        if eps.ready.len() < 3 {
            return Err(format!("ready endpoints {:?}", eps.ready));
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
    assert!(ok, "continue --wait: {out}{err}; the release: {}", v2.status().await);
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
