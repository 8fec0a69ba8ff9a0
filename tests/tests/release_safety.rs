//! Release safety (tests/cluster/run --triton): deleting a DeployFlow never deletes the
//! application; failure pauses are written into the spec and hold until the user resumes;
//! unschedulable pods fail a batch after `smokeTimeoutSeconds`; replacement pods get traffic;
//! a running release's identity cannot be edited and its CloneSet's deletion fails it; a scale
//! in the wrong direction fails without touching the CloneSet.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Value, json};
use triton_e2e::deployflow::{
    Flow, canary_waiting, current_batch, deployflows, flow, released, summary,
};
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(90);
const READY_GATE: &str = "apps.triton.io/ready";
/// The annotation a running release puts on its CloneSet (instead of an owner reference).
const RELEASE_ANNOTATION: &str = "apps.triton.io/deployflow";
/// The finalizer every DeployFlow carries, so its deletion cancels the release first.
const RELEASE_FINALIZER: &str = "apps.triton.io/release";
const CRASH: &str = "e2e.triton.io/crash";
const IGNORE_GATE: &str = "e2e.triton.io/ignore-gate";

fn clonesets(client: &Client, ns: &str) -> Api<DynamicObject> {
    dynamic_api(client, ns, "apps.kruise.io", "v1alpha1", "CloneSet")
}

async fn cloneset(client: &Client, ns: &str, name: &str) -> Option<Value> {
    clonesets(client, ns)
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get CloneSet {name}: {e}"))
        .map(|o| serde_json::to_value(o).unwrap())
}

/// A Service selecting the instance's pods (by `app.kubernetes.io/instance`).
async fn create_service(client: &Client, ns: &str, instance: &str) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": instance},
        "spec": {"selector": {"app.kubernetes.io/instance": instance}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
}

/// Waits until the DeployFlow is gone (`what` says why it should be), naming its finalizers
/// and status while it is not.
async fn wait_gone(df: &Flow, what: &str) {
    eventually(what, LONG, || async {
        match df.get_opt().await {
            None => Ok(()),
            Some(o) => Err(format!(
                "still there: finalizers {} {}",
                o["metadata"]["finalizers"],
                summary(&o["status"])
            )),
        }
    })
    .await;
}

fn deployflow_owner_refs(cs: &Value) -> Vec<Value> {
    cs["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["kind"] == "DeployFlow")
        .cloned()
        .collect()
}

fn release_annotation(cs: &Value) -> Value {
    cs["metadata"]["annotations"][RELEASE_ANNOTATION].clone()
}

/// The CloneSet is there, not being deleted, and neither owned nor marked by a DeployFlow.
fn left_alone(cs: Option<&Value>) -> Result<(), String> {
    let Some(cs) = cs else {
        return Err("the CloneSet is gone (deleted with the DeployFlow)".into());
    };
    if !cs["metadata"]["deletionTimestamp"].is_null() {
        return Err(format!(
            "the CloneSet is being deleted (deletionTimestamp {})",
            cs["metadata"]["deletionTimestamp"]
        ));
    }
    let refs = deployflow_owner_refs(cs);
    if !refs.is_empty() {
        return Err(format!(
            "the CloneSet still has DeployFlow ownerReferences {refs:?}"
        ));
    }
    if !release_annotation(cs).is_null() {
        return Err(format!(
            "the CloneSet still carries {RELEASE_ANNOTATION}={}",
            release_annotation(cs)
        ));
    }
    Ok(())
}

fn live(pods: Vec<Pod>) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn names(pods: &[Pod]) -> Vec<String> {
    let mut v: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    v.sort();
    v
}

async fn live_pods(client: &Client, ns: &str, instance: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    live(pods(&api, &format!("app.kubernetes.io/instance={instance}")).await)
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

async fn annotate_pod(client: &Client, ns: &str, pod: &str, key: &str, value: Value) {
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch(
            pod,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("annotate pod {pod} with {key}: {e}"));
}

fn message(s: &Value) -> String {
    s["message"].as_str().unwrap_or_default().to_string()
}

fn spec_paused(df: &Value) -> Value {
    let key = triton_e2e::deployflow::strategy_key(df);
    df["spec"][key]["paused"].clone()
}

fn generation(df: &Value) -> i64 {
    df["metadata"]["generation"].as_i64().unwrap_or_default()
}

/// Records every version of one DeployFlow from before it is created.
async fn deployflow_history(client: &Client, ns: &str, name: &str) -> History<DynamicObject> {
    History::start(
        deployflows(client, ns),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .await
}

fn as_value(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Deleting a DeployFlow never deletes the application.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_running_release_marks_its_cloneset_by_annotation_not_owner_reference_and_finalizes_its_deployflow()
 {
    let client = client().await;
    let ns = namespace(&client, "release-mark").await;
    released(&client, &ns, "web", 2, "nginx:1.25").await;
    let update = Flow::create(
        &client,
        &ns,
        flow(
            "web-v2",
            "web",
            "update",
            2,
            "nginx:1.26",
            json!({"batchSize": 1, "canary": 0, "mode": "manual", "batches": 1}),
        ),
    )
    .await;
    update.wait_batch(2, "Pending", LONG).await;
    let df = update.get().await;
    assert!(
        df["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&json!(RELEASE_FINALIZER))),
        "expected the running DeployFlow to carry the finalizer {RELEASE_FINALIZER}, got finalizers {}",
        df["metadata"]["finalizers"]
    );
    let cs = cloneset(&client, &ns, "web").await.expect("CloneSet web");
    assert_eq!(
        release_annotation(&cs),
        json!("web-v2"),
        "expected the CloneSet annotated {RELEASE_ANNOTATION}: web-v2 while the release runs"
    );
    assert!(
        deployflow_owner_refs(&cs).is_empty(),
        "expected no DeployFlow ownerReference on the CloneSet, got {:?}",
        deployflow_owner_refs(&cs)
    );

    update
        .patch_strategy("updateStrategy", json!({"batches": 2}))
        .await;
    update.wait_phase("Success", LONG).await;
    let cs = eventually(
        "the CloneSet neither owned nor marked once the release ended",
        LONG,
        || async {
            let cs = cloneset(&client, &ns, "web").await;
            left_alone(cs.as_ref()).map(|()| cs)
        },
    )
    .await;
    assert!(cs.is_some(), "expected CloneSet web to exist after Success");
}

#[tokio::test]
async fn deleting_a_deployflow_mid_update_cancels_it_and_keeps_the_cloneset_its_pods_and_endpoints()
{
    let client = client().await;
    let ns = namespace(&client, "delete-df-update").await;
    create_service(&client, &ns, "web").await;
    released(&client, &ns, "web", 3, "nginx:1.25").await;
    let update = Flow::create(
        &client,
        &ns,
        flow(
            "web-v2",
            "web",
            "update",
            3,
            "nginx:1.26",
            json!({"batchSize": 1, "canary": 0, "mode": "manual", "batches": 1}),
        ),
    )
    .await;
    let s = update.wait_batch(2, "Pending", LONG).await;
    assert_eq!(
        s["conditions"][0]["phase"],
        "Baked",
        "expected batch 1 Baked while batch 2 waits: {}",
        summary(&s)
    );

    update
        .api
        .delete(&update.name, &DeleteParams::default())
        .await
        .expect("delete the DeployFlow");
    wait_gone(
        &update,
        "the DeployFlow gone (its finalizer removed once the release is canceled)",
    )
    .await;

    let settled = |cs: Option<Value>, pods: Vec<Pod>, eps: Endpoints| -> Result<(), String> {
        left_alone(cs.as_ref())?;
        if pods.len() != 3 {
            return Err(format!(
                "{} live pods {:?}, expected 3",
                pods.len(),
                names(&pods)
            ));
        }
        if eps.ready.len() < 3 {
            return Err(format!(
                "ready endpoints {:?}, expected at least 3",
                eps.ready
            ));
        }
        Ok(())
    };
    eventually(
        "the CloneSet kept, with 3 live pods and >= 3 ready endpoints, after the DeployFlow is gone",
        LONG,
        || async {
            settled(
                cloneset(&client, &ns, "web").await,
                live_pods(&client, &ns, "web").await,
                service_endpoints(&client, &ns, "web").await,
            )
        },
    )
    .await;
    holds_for(
        "the CloneSet, its 3 pods and >= 3 ready endpoints to stay after the DeployFlow is deleted",
        Duration::from_secs(15),
        || async {
            settled(
                cloneset(&client, &ns, "web").await,
                live_pods(&client, &ns, "web").await,
                service_endpoints(&client, &ns, "web").await,
            )
        },
    )
    .await;
}

/// An admission policy of this namespace's own that refuses any CloneSet update naming pods to
/// delete (with `reason: Invalid`, so the API server answers 422), in force once it refuses a
/// dry-run update naming one. The returned closure removes it.
async fn refuse_pods_to_delete(client: &Client, ns: &str, cs: &str) -> impl AsyncFnOnce() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let name = format!("e2e-refuse-pods-to-delete-{ns}");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{"apiGroups": ["apps.kruise.io"], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["clonesets"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}
            },
            "validations": [{
                "expression": "!has(object.spec.scaleStrategy) || !has(object.spec.scaleStrategy.podsToDelete) || size(object.spec.scaleStrategy.podsToDelete) == 0",
                "message": "podsToDelete is refused in this namespace (the test's admission policy)",
                "reason": "Invalid"
            }]
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]}
    }))
    .unwrap();
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the admission policy");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind the admission policy");
    let probe = json!({"spec": {"scaleStrategy": {"podsToDelete": ["probe"]}}});
    eventually(
        "the admission policy in force (a dry-run update naming a pod to delete refused with 422)",
        LONG,
        || async {
            let pp = PatchParams {
                dry_run: true,
                ..Default::default()
            };
            match clonesets(client, ns)
                .patch(cs, &pp, &Patch::Merge(&probe))
                .await
            {
                // The policy runs before Kruise's webhook, which refuses the unknown pod too.
                Err(kube::Error::Api(e))
                    if e.code == 422 && e.message.contains("the test's admission policy") =>
                {
                    Ok(())
                }
                other => Err(format!("{:?}", other.map(|_| "accepted"))),
            }
        },
    )
    .await;
    async move || {
        let _ = bindings.delete(&name, &DeleteParams::default()).await;
        let _ = policies.delete(&name, &DeleteParams::default()).await;
    }
}

#[tokio::test]
async fn a_deleted_deployflow_whose_cancel_write_is_refused_stays_saying_why_and_goes_once_it_is_written()
 {
    let client = client().await;
    let ns = namespace(&client, "delete-df-refused").await;
    create_service(&client, &ns, "web").await;
    released(&client, &ns, "web", 3, "nginx:1.25").await;
    let update = Flow::create(
        &client,
        &ns,
        flow(
            "web-v2",
            "web",
            "update",
            3,
            "nginx:1.26",
            json!({"batchSize": 1, "canary": 1, "mode": "manual"}),
        ),
    )
    .await;
    let s = update.wait_batch(1, "Smoked", LONG).await;
    let canary = s["conditions"][0]["pods"][0]["name"]
        .as_str()
        .expect("the canary named in the status")
        .to_string();
    // The cancel names the un-baked canary in podsToDelete: the API server refuses that write.
    let remove_policy = refuse_pods_to_delete(&client, &ns, "web").await;
    update
        .api
        .delete(&update.name, &DeleteParams::default())
        .await
        .expect("delete the DeployFlow");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    eventually(
        "a Warning Event naming the refusal and the way out",
        LONG,
        || async {
            let list = events
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web-v2")
                        && e.note.as_deref().is_some_and(|n| {
                            e.reason.as_deref() == Some("CancelRefused")
                                && n.contains("refused the cancel's write")
                                && n.contains("podsToDelete")
                                && n.contains("by hand")
                        })
                })
                .map(|_| ())
                .ok_or_else(|| "none yet".to_string())
        },
    )
    .await;
    // Meanwhile nothing is let go half-cancelled: the DeployFlow stays with its finalizer, its
    // release still holds the CloneSet, and the canary lives (the write naming it was refused).
    let df = update.get_opt().await.expect("the DeployFlow still there");
    assert_eq!(df["metadata"]["finalizers"], json!([RELEASE_FINALIZER]));
    let cs = cloneset(&client, &ns, "web").await.unwrap();
    assert_eq!(release_annotation(&cs), json!("web-v2"));
    assert!(
        live_pods(&client, &ns, "web")
            .await
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(canary.as_str())),
        "the canary {canary} was deleted although the write naming it was refused"
    );

    // The refusal lifted, a retry writes the cancel: the DeployFlow goes, the CloneSet is
    // released and the canary removed.
    remove_policy().await;
    wait_gone(
        &update,
        "the DeployFlow gone once the cancel could be written",
    )
    .await;
    eventually(
        "the CloneSet released, back at partition 3, the canary gone",
        LONG,
        || async {
            let cs = cloneset(&client, &ns, "web").await;
            left_alone(cs.as_ref())?;
            let cs = cs.unwrap();
            let live = names(&live_pods(&client, &ns, "web").await);
            if cs["spec"]["updateStrategy"]["partition"] != json!(3) || live.contains(&canary) {
                return Err(format!(
                    "partition {}, live pods {live:?}",
                    cs["spec"]["updateStrategy"]["partition"]
                ));
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_a_create_deployflow_at_its_canary_keeps_the_cloneset() {
    let client = client().await;
    let ns = namespace(&client, "delete-df-create").await;
    let df = canary_waiting(&client, &ns, "app").await;
    assert!(
        cloneset(&client, &ns, "app").await.is_some(),
        "expected the create to have made CloneSet app"
    );
    df.api
        .delete(&df.name, &DeleteParams::default())
        .await
        .expect("delete the DeployFlow");
    wait_gone(&df, "the DeployFlow gone").await;
    // Cancel semantics remove the un-baked canary (replicas may be 0): the object itself stays.
    holds_for(
        "CloneSet app to exist, not deleted, without DeployFlow ownerReference or release annotation, after its DeployFlow is gone",
        Duration::from_secs(15),
        || async { left_alone(cloneset(&client, &ns, "app").await.as_ref()) },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. Failure pauses hold and are visible in the spec.
// ---------------------------------------------------------------------------------------------

/// A 1-replica auto create whose pod template carries `annotations` (kwok test stages).
fn one_pod_create(name: &str, instance: &str, strategy: Value, annotations: Value) -> Value {
    let mut m = flow(name, instance, "create", 1, "nginx:1.25", strategy);
    m["spec"]["application"]["template"]["metadata"]["annotations"] = annotations;
    m
}

/// Asserts that every version recorded since `mark` keeps batch 1 in `phase`, the release in
/// BatchStarted and `updateStrategy.paused` true (a resume-by-itself would show up as a version
/// with another phase, even if it lasted milliseconds).
fn never_left(history: &History<DynamicObject>, mark: usize, phase: &str) {
    for v in history.since(mark).iter().map(as_value) {
        let s = &v["status"];
        assert!(
            s["conditions"][0]["phase"] == phase
                && s["phase"] == "BatchStarted"
                && spec_paused(&v) == true,
            "expected every version of the DeployFlow to stay {phase}, BatchStarted, spec paused true \
             until resumed; saw {} spec paused {}",
            summary(s),
            spec_paused(&v)
        );
    }
}

#[tokio::test]
async fn a_smoke_failure_writes_paused_into_the_spec_and_stays_paused_after_the_pod_recovers_until_resumed()
 {
    let client = client().await;
    let ns = namespace(&client, "smoke-failed-holds").await;
    let history = deployflow_history(&client, &ns, "crash-v1").await;
    let df = Flow::create(
        &client,
        &ns,
        one_pod_create(
            "crash-v1",
            "crash",
            json!({"mode": "auto", "paused": false}),
            json!({CRASH: "true"}),
        ),
    )
    .await;
    let s = df.wait_batch(1, "SmokeFailed", LONG).await;
    let pod = s["conditions"][0]["pods"][0]["name"]
        .as_str()
        .expect("the failing pod in batch 1")
        .to_string();
    let o = df
        .wait_object("with spec.updateStrategy.paused written true", LONG, |o| {
            spec_paused(o) == true
        })
        .await;
    assert_eq!(
        o["status"]["paused"], true,
        "expected status.paused true after SmokeFailed"
    );
    assert!(
        message(&o["status"]).contains(&pod),
        "expected status.message to name the failing pod {pod}: {}",
        o["status"]["message"]
    );

    // The pod recovers; the release must not resume by itself.
    annotate_pod(&client, &ns, &pod, CRASH, Value::Null).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_pod_condition(&pods, &pod, "ContainersReady", LONG).await;
    let mark = history.mark();
    holds_for(
        "the recovered release to stay SmokeFailed, BatchStarted and spec paused true until resumed",
        Duration::from_secs(8),
        || async {
            let o = df.get().await;
            let s = &o["status"];
            if s["conditions"][0]["phase"] == "SmokeFailed"
                && s["phase"] == "BatchStarted"
                && spec_paused(&o) == true
            {
                Ok(())
            } else {
                Err(format!("{} spec paused {}", summary(s), spec_paused(&o)))
            }
        },
    )
    .await;
    never_left(&history, mark, "SmokeFailed");

    df.patch_strategy("updateStrategy", json!({"paused": false}))
        .await;
    let s = df.wait_phase("Success", LONG).await;
    assert_eq!(
        s["paused"], false,
        "expected status.paused false after Success"
    );
}

#[tokio::test]
async fn resuming_a_smoke_failed_release_while_its_pod_still_fails_is_refused_and_paused_written_back()
 {
    let client = client().await;
    let ns = namespace(&client, "smoke-failed-refuse").await;
    let df = Flow::create(
        &client,
        &ns,
        one_pod_create(
            "crash-v1",
            "crash",
            json!({"mode": "auto"}),
            json!({CRASH: "true"}),
        ),
    )
    .await;
    df.wait_batch(1, "SmokeFailed", LONG).await;
    df.wait_object("with spec.updateStrategy.paused written true", LONG, |o| {
        spec_paused(o) == true
    })
    .await;

    let resumed = df
        .patch_strategy("updateStrategy", json!({"paused": false}))
        .await;
    let g = generation(&resumed);
    let o = df
        .wait_object(
            "to refuse the resume and write spec paused back to true",
            LONG,
            |o| {
                message(&o["status"]).starts_with("resume refused")
                    && spec_paused(o) == true
                    && generation(o) > g
            },
        )
        .await;
    let s = &o["status"];
    assert_eq!(s["paused"], true, "expected status.paused to stay true");
    assert_eq!(
        s["conditions"][0]["phase"],
        "SmokeFailed",
        "expected batch 1 to stay SmokeFailed: {}",
        summary(s)
    );
}

#[tokio::test]
async fn a_pull_in_timeout_goes_bake_failed_stays_paused_without_cycling_and_resumes_after_recovery()
 {
    let client = client().await;
    let ns = namespace(&client, "bake-failed").await;
    let history = deployflow_history(&client, &ns, "stuck-v1").await;
    let df = Flow::create(
        &client,
        &ns,
        one_pod_create(
            "stuck-v1",
            "stuck",
            json!({"mode": "auto", "pullInTimeoutSeconds": 3}),
            json!({IGNORE_GATE: "true"}),
        ),
    )
    .await;
    let s = df.wait_batch(1, "BakeFailed", LONG).await;
    let info = s["conditions"][0]["pods"][0].clone();
    let pod = info["name"]
        .as_str()
        .expect("the pod of batch 1")
        .to_string();
    assert_eq!(
        info["pullInStatus"], "PullInFailed",
        "expected pod {pod} PullInFailed: {info}"
    );
    let o = df
        .wait_object("with spec.updateStrategy.paused written true", LONG, |o| {
            spec_paused(o) == true
        })
        .await;
    assert_eq!(o["status"]["paused"], true, "expected status.paused true");
    assert!(
        message(&o["status"]).contains("pull-in"),
        "expected status.message to mention the pull-in: {}",
        o["status"]["message"]
    );

    let mark = history.mark();
    holds_for(
        "BakeFailed and paused (spec and status) with no retry cycle",
        Duration::from_secs(10),
        || async {
            let o = df.get().await;
            let s = &o["status"];
            if s["conditions"][0]["phase"] == "BakeFailed"
                && s["paused"] == true
                && spec_paused(&o) == true
            {
                Ok(())
            } else {
                Err(format!("{} spec paused {}", summary(s), spec_paused(&o)))
            }
        },
    )
    .await;
    never_left(&history, mark, "BakeFailed");

    annotate_pod(&client, &ns, &pod, IGNORE_GATE, Value::Null).await;
    df.patch_strategy("updateStrategy", json!({"paused": false}))
        .await;
    let s = df.wait_phase("Success", LONG).await;
    assert_eq!(
        s["conditions"][0]["pods"][0]["pullInStatus"],
        "PullInSucceeded",
        "expected the resumed pull-in to succeed: {}",
        summary(&s)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. smokeTimeoutSeconds.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unschedulable_pod_is_named_while_smoking_and_fails_the_batch_after_smoke_timeout_seconds()
 {
    let client = client().await;
    let ns = namespace(&client, "smoke-timeout").await;
    let history = deployflow_history(&client, &ns, "nowhere-v1").await;
    let mut m = flow(
        "nowhere-v1",
        "nowhere",
        "create",
        1,
        "nginx:1.25",
        json!({"mode": "auto", "smokeTimeoutSeconds": 5}),
    );
    m["spec"]["application"]["template"]["spec"]["nodeSelector"] =
        json!({"e2e.triton.io/nowhere": "true"});
    let df = Flow::create(&client, &ns, m).await;

    // The fixture: no node matches, the scheduler says Unschedulable.
    let pod = eventually("the pod Pending and Unschedulable", LONG, || async {
        let pods = live_pods(&client, &ns, "nowhere").await;
        let Some(p) = pods.first() else {
            return Err("no pod yet".to_string());
        };
        let scheduled = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .map(|c| (c.status.clone(), c.reason.clone()));
        if scheduled == Some(("False".into(), Some("Unschedulable".into()))) {
            Ok(p.metadata.name.clone().unwrap())
        } else {
            Err(format!("PodScheduled {scheduled:?}"))
        }
    })
    .await;

    eventually(
        &format!(
            "a DeployFlow version at batch 1 Smoking whose message names {pod} and Unschedulable"
        ),
        LONG,
        || async {
            let versions: Vec<Value> = history.versions().iter().map(as_value).collect();
            if versions.iter().any(|v| {
                let s = &v["status"];
                s["conditions"][0]["phase"] == "Smoking"
                    && message(s).contains(&pod)
                    && message(s).contains("Unschedulable")
            }) {
                Ok(())
            } else {
                Err(versions
                    .last()
                    .map(|v| summary(&v["status"]))
                    .unwrap_or_default())
            }
        },
    )
    .await;

    let s = df.wait_batch(1, "SmokeFailed", LONG).await;
    assert!(
        message(&s).contains(&pod) && message(&s).contains("Unschedulable"),
        "expected the SmokeFailed message to name {pod} and Unschedulable: {}",
        s["message"]
    );
    df.wait_object("with spec.updateStrategy.paused written true", LONG, |o| {
        spec_paused(o) == true
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Replacement pods get traffic.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_deleted_baked_pod_is_replaced_and_the_replacement_pulled_in_while_the_release_waits() {
    let client = client().await;
    let ns = namespace(&client, "replace-baked").await;
    create_service(&client, &ns, "web").await;
    released(&client, &ns, "web", 3, "nginx:1.25").await;
    let update = Flow::create(
        &client,
        &ns,
        flow(
            "web-v2",
            "web",
            "update",
            3,
            "nginx:1.26",
            json!({"batchSize": 1, "mode": "manual", "batches": 1}),
        ),
    )
    .await;
    let s = update.wait_batch(2, "Pending", LONG).await;
    assert!(
        s["phase"] == "BatchStarted" && s["conditions"][0]["phase"] == "Baked",
        "expected the release waiting (BatchStarted) with batch 1 Baked: {}",
        summary(&s)
    );
    let baked = s["conditions"][0]["pods"][0]["name"]
        .as_str()
        .expect("the pod of batch 1")
        .to_string();
    let before = names(&live_pods(&client, &ns, "web").await);

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.delete(&baked, &DeleteParams::default())
        .await
        .expect("delete the batch-1 pod");
    let replacement = eventually(
        &format!("a replacement for {baked}: Ready, gate True and a ready endpoint of Service web"),
        LONG,
        || async {
            let live = live_pods(&client, &ns, "web").await;
            let Some(p) = live
                .iter()
                .find(|p| !before.contains(p.metadata.name.as_ref().unwrap()))
            else {
                return Err(format!("no replacement yet among {:?}", names(&live)));
            };
            let name = p.metadata.name.clone().unwrap();
            let eps = service_endpoints(&client, &ns, "web").await;
            let endpoint = pod_ip(p).is_some_and(|ip| eps.ready.contains(&ip));
            if live.len() == 3 && is_true(p, READY_GATE) && is_true(p, "Ready") && endpoint {
                Ok(name)
            } else {
                Err(format!(
                    "{} live pods; {name}: gate {:?}, Ready {:?}, ready endpoint {endpoint}",
                    live.len(),
                    condition(p, READY_GATE),
                    condition(p, "Ready")
                ))
            }
        },
    )
    .await;
    let s = update.status().await;
    assert!(
        s["phase"] == "BatchStarted"
            && current_batch(&s)["batch"] == 2
            && current_batch(&s)["phase"] == "Pending",
        "expected the release to still wait at batch 2 (BatchStarted) after {replacement} was pulled in: {}",
        summary(&s)
    );
}

#[tokio::test]
async fn a_pod_deleted_during_pull_in_is_replaced_in_its_batch_and_the_replacement_pulled_in() {
    let client = client().await;
    let ns = namespace(&client, "replace-pulling").await;
    create_service(&client, &ns, "app").await;
    let df = canary_waiting(&client, &ns, "app").await;
    let s = df.status().await;
    let canary = s["conditions"][0]["pods"][0]["name"]
        .as_str()
        .expect("the canary pod")
        .to_string();
    // The canary will not become Ready when its gate is set: the pull-in stays in progress.
    annotate_pod(&client, &ns, &canary, IGNORE_GATE, json!("true")).await;
    df.patch_strategy("updateStrategy", json!({"stage": "Baking", "batches": 1}))
        .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually(
        &format!("the gate {READY_GATE} True on the canary {canary} (pull-in in progress)"),
        LONG,
        || async {
            let p = pods.get(&canary).await.map_err(|e| e.to_string())?;
            if is_true(&p, READY_GATE) {
                Ok(())
            } else {
                Err(format!("gate {:?}", condition(&p, READY_GATE)))
            }
        },
    )
    .await;
    pods.delete(&canary, &DeleteParams::default())
        .await
        .expect("delete the canary during its pull-in");

    let s = df.wait_batch(1, "Baking", LONG).await;
    let batch_pods = s["conditions"][0]["pods"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        batch_pods.len(),
        1,
        "expected exactly one pod in batch 1 (the replacement): {batch_pods:?}"
    );
    let p = &batch_pods[0];
    assert_ne!(
        p["name"], canary,
        "expected batch 1 to list the replacement, not the deleted canary: {p}"
    );
    assert_eq!(
        p["pullInStatus"], "PullInSucceeded",
        "expected the replacement pulled in: {p}"
    );
    let replacement = p["name"].as_str().unwrap().to_string();
    let live = live_pods(&client, &ns, "app").await;
    assert!(
        names(&live).contains(&replacement),
        "expected the replacement {replacement} among the live pods {:?}",
        names(&live)
    );

    df.patch_strategy("updateStrategy", json!({"stage": "Baked", "batches": 3}))
        .await;
    df.wait_phase("Success", LONG).await;
    eventually("3 live pods, all Ready", LONG, || async {
        let live = live_pods(&client, &ns, "app").await;
        if live.len() == 3 && live.iter().all(|p| is_true(p, "Ready")) {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                live.iter()
                    .map(|p| (p.metadata.name.clone(), condition(p, "Ready")))
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 7. Edits and deletions under a running release.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn changing_action_replicas_or_instance_name_of_a_running_release_is_refused() {
    let client = client().await;
    let ns = namespace(&client, "immutable-running").await;
    released(&client, &ns, "web", 2, "nginx:1.25").await;
    let update = Flow::create(
        &client,
        &ns,
        flow(
            "web-v2",
            "web",
            "update",
            2,
            "nginx:1.26",
            json!({"batchSize": 1, "mode": "manual", "batches": 1}),
        ),
    )
    .await;
    let s = update.wait_batch(2, "Pending", LONG).await;
    assert_eq!(
        s["conditions"][0]["phase"],
        "Baked",
        "expected batch 1 Baked while batch 2 waits: {}",
        summary(&s)
    );
    let edits = [
        ("spec.action", json!({"spec": {"action": "restart"}})),
        (
            "spec.application.replicas",
            json!({"spec": {"application": {"replicas": 4}}}),
        ),
        (
            "spec.application.instanceName",
            json!({"spec": {"application": {"instanceName": "other"}}}),
        ),
    ];
    let mut wrong = Vec::new();
    for (field, patch) in edits {
        match update
            .api
            .patch(&update.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => wrong.push(format!("{field}: the patch was accepted")),
            Err(kube::Error::Api(e))
                if e.code == 422 && e.message.contains("while the release runs") => {}
            Err(e) => wrong.push(format!(
                "{field}: refused, but not with 422 \"... while the release runs\": {e}"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "expected each edit of a running release refused with 422 and a message containing \
         \"while the release runs\":\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn deleting_the_cloneset_mid_release_fails_the_release_naming_it() {
    let client = client().await;
    let ns = namespace(&client, "cloneset-deleted").await;
    let df = canary_waiting(&client, &ns, "app").await;
    clonesets(&client, &ns)
        .delete("app", &DeleteParams::default())
        .await
        .expect("delete CloneSet app");
    let s = df
        .wait("in phase Failed", LONG, |s| s["phase"] == "Failed")
        .await;
    let m = message(&s);
    assert!(
        m.contains("CloneSet") && (m.contains("deleted") || m.contains("not found")),
        "expected status.message to say the CloneSet was deleted / not found: {m:?}"
    );
    assert_eq!(s["finished"], true, "expected finished true");
}

// ---------------------------------------------------------------------------------------------
// 8. Scale direction.
// ---------------------------------------------------------------------------------------------

async fn wrong_direction_fails_and_leaves_the_cloneset(
    test: &str,
    action: &str,
    replicas: i32,
    named: &str,
) {
    let client = client().await;
    let ns = namespace(&client, test).await;
    released(&client, &ns, "app", 3, "nginx:1.25").await;
    let before = names(&live_pods(&client, &ns, "app").await);
    assert_eq!(before.len(), 3, "expected 3 released pods: {before:?}");
    let df = Flow::create(
        &client,
        &ns,
        flow(
            &format!("app-{}", action.replace('_', "-")),
            "app",
            action,
            replicas,
            "nginx:1.25",
            json!({"batchSize": 1, "mode": "auto"}),
        ),
    )
    .await;
    let s = df
        .wait("in phase Failed", LONG, |s| s["phase"] == "Failed")
        .await;
    assert!(
        message(&s).contains(named),
        "expected the failure message of a {action} to {replicas} (from 3) to point at {named}: {}",
        s["message"]
    );
    holds_for(
        "the CloneSet unchanged: spec.replicas 3 and the 3 original pods",
        Duration::from_secs(5),
        || async {
            let cs = cloneset(&client, &ns, "app")
                .await
                .ok_or_else(|| "CloneSet app gone".to_string())?;
            let now = names(&live_pods(&client, &ns, "app").await);
            if cs["spec"]["replicas"] == 3 && now == before {
                Ok(())
            } else {
                Err(format!(
                    "spec.replicas {}, pods {now:?} (originally {before:?})",
                    cs["spec"]["replicas"]
                ))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn scale_out_to_fewer_replicas_fails_naming_scale_in_and_leaves_the_cloneset_alone() {
    wrong_direction_fails_and_leaves_the_cloneset("scale-out-down", "scale_out", 2, "scale_in")
        .await;
}

#[tokio::test]
async fn scale_in_to_more_replicas_fails_naming_scale_out_and_leaves_the_cloneset_alone() {
    wrong_direction_fails_and_leaves_the_cloneset("scale-in-up", "scale_in", 5, "scale_out").await;
}
