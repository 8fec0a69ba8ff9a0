//! The REST API (/api/v1, the {code, data, msg} envelope) against the real control plane,
//! through the harness's controller (plaintext, --insecure-anonymous): each route once with its
//! success reply and its errors.

use std::time::Duration;

use serde_json::{Value, json};
use triton_e2e::api::*;
use triton_e2e::deployflow::{Flow, canary_waiting, released};
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(120);

fn url(path: &str) -> String {
    format!("http://{}{path}", rest_addr())
}

async fn call(method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    rest(method, &url(path), body.as_ref(), None, None).await
}

fn assert_envelope_error(reply: &(u16, Value), status: u16, msg_part: &str) {
    assert_eq!(reply.0, status, "{reply:?}");
    assert_eq!(reply.1["code"], 7, "{reply:?}");
    let msg = reply.1["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(msg_part), "expected {msg_part:?} in {msg:?}");
}

fn template(image: &str) -> Value {
    json!({"spec": {"containers": [{"name": "main", "image": image, "ports": [{"containerPort": 80}]}]}})
}

#[tokio::test]
async fn each_rest_route_answers_in_the_envelope_and_refuses_with_its_status() {
    let client = client().await;
    let ns = namespace(&client, "api-rest").await;
    let base = format!("/api/v1/namespaces/{ns}");
    let dfs = |n: &str| Flow {
        api: dynamic_api(&client, &ns, "apps.triton.io", "v1alpha1", "DeployFlow"),
        name: n.to_string(),
        ns: ns.clone(),
    };

    assert!(http_ok(&rest_addr(), "/api/v1/health").await);
    assert!(http_ok(&rest_addr(), "/@in/api/health").await);

    // POST deployflows: a create (no CloneSet yet) from an application spec.
    let body = json!({"applicationSpec": {"appID": 7, "groupID": 8, "appName": "web", "instanceName": "web",
        "replicas": 2, "template": template("nginx:1.24")},
        "updateStrategy": {"batchSize": 1, "mode": "auto"}});
    let created = call("POST", &format!("{base}/deployflows"), Some(body.clone())).await;
    assert_eq!(created.0, 201, "{created:?}");
    assert_eq!(created.1["code"], 0);
    assert_eq!(created.1["data"]["action"], "create");
    let first = created.1["data"]["name"]
        .as_str()
        .expect("a name")
        .to_string();
    dfs(&first).wait_phase("Success", LONG).await;

    // GET one and the list (default page size, instanceName filter).
    let got = call("GET", &format!("{base}/deployflows/{first}"), None).await;
    assert_eq!(
        (got.0, got.1["data"]["phase"].clone()),
        (200, json!("Success")),
        "{got:?}"
    );
    assert_eq!(
        got.1["data"]["conditions"].as_array().map(Vec::len),
        Some(2)
    );
    let list = call("GET", &format!("{base}/deployflows?instanceName=web"), None).await;
    assert_eq!(list.1["data"].as_array().map(Vec::len), Some(1), "{list:?}");
    let none = call(
        "GET",
        &format!("{base}/deployflows?instanceName=other"),
        None,
    )
    .await;
    assert_eq!(none.1["data"], json!([]));
    assert_envelope_error(
        &call("GET", &format!("{base}/deployflows?pageSize=-1"), None).await,
        400,
        "pageSize",
    );
    assert_envelope_error(
        &call("GET", &format!("{base}/deployflows/nope"), None).await,
        404,
        "not found",
    );

    // PATCH of a finished release: 409; a malformed body: 400 naming the field.
    assert_envelope_error(
        &call(
            "PATCH",
            &format!("{base}/deployflows/{first}"),
            Some(json!({"paused": true})),
        )
        .await,
        409,
        "finished",
    );
    assert_envelope_error(
        &call(
            "PATCH",
            &format!("{base}/deployflows/{first}"),
            Some(json!({"batches": "many"})),
        )
        .await,
        400,
        "batches",
    );

    // POST again: an update of the existing application.
    let mut update = body.clone();
    update["applicationSpec"]["template"] = template("nginx:1.25");
    let updated = call("POST", &format!("{base}/deployflows"), Some(update)).await;
    assert_eq!(
        (updated.0, updated.1["data"]["action"].clone()),
        (201, json!("update")),
        "{updated:?}"
    );
    let second = updated.1["data"]["name"].as_str().unwrap().to_string();
    dfs(&second).wait_phase("Success", LONG).await;

    // Scales honours the body's replicas (the original ignored them).
    let scaled = call(
        "POST",
        &format!("{base}/instances/web/scales"),
        Some(json!({"replicas": 3, "nonUpdateStrategy": {"batchSize": "1"}})),
    )
    .await;
    assert_eq!(scaled.0, 201, "{scaled:?}");
    let s = dfs(scaled.1["data"]["deployName"].as_str().unwrap());
    s.wait_phase("Success", LONG).await;
    let spec = s.get().await["spec"].clone();
    assert_eq!(
        (
            spec["action"].clone(),
            spec["application"]["replicas"].clone()
        ),
        (json!("scale_out"), json!(3))
    );
    assert_envelope_error(
        &call(
            "POST",
            &format!("{base}/instances/web/scales"),
            Some(json!({"replicas": -3})),
        )
        .await,
        400,
        "replicas",
    );
    assert_envelope_error(
        &call(
            "POST",
            &format!("{base}/instances/nope/scales"),
            Some(json!({"replicas": 1})),
        )
        .await,
        404,
        "not found",
    );

    // Restarts with an empty body; rollbacks to a named release.
    let restarted = call("POST", &format!("{base}/instances/web/restarts"), None).await;
    assert_eq!(restarted.0, 201, "{restarted:?}");
    dfs(restarted.1["data"]["deployName"].as_str().unwrap())
        .wait_phase("Success", LONG)
        .await;
    let rolled = call(
        "POST",
        &format!("{base}/instances/web/rollbacks"),
        Some(json!({"deployName": first, "updateStrategy": {"batchSize": "50%", "mode": "auto"}})),
    )
    .await;
    assert_eq!(
        (rolled.0, rolled.1["data"]["rollbackTo"].clone()),
        (201, json!(first)),
        "{rolled:?}"
    );
    let rb = dfs(rolled.1["data"]["deployName"].as_str().unwrap());
    rb.wait_phase("Success", LONG).await;
    let cs = dynamic_api(&client, &ns, "apps.kruise.io", "v1alpha1", "CloneSet")
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(cs).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.24"
    );

    // Instances and pods.
    let inst = call("GET", &format!("{base}/instances/web"), None).await;
    assert_eq!(
        (
            inst.0,
            inst.1["data"]["replicas"].clone(),
            inst.1["data"]["appID"].clone()
        ),
        (200, json!(3), json!(7)),
        "{inst:?}"
    );
    let pods = call("GET", &format!("{base}/pods?instanceName=web"), None).await;
    assert_eq!(pods.1["data"].as_array().map(Vec::len), Some(3), "{pods:?}");

    // PATCH and the one-shot actions on a running release; DELETE refused until it finishes.
    let running = canary_waiting(&client, &ns, "held").await;
    let patched = call(
        "PATCH",
        &format!("{base}/deployflows/{}", running.name),
        Some(json!({"stage": "Smoked", "batches": 2})),
    )
    .await;
    assert_eq!(patched.0, 200, "{patched:?}");
    assert_eq!(running.get().await["spec"]["updateStrategy"]["batches"], 2);
    assert_envelope_error(
        &call(
            "POST",
            &format!("{base}/deployflows/{}/next", running.name),
            None,
        )
        .await,
        409,
        "not finished yet",
    );
    assert_envelope_error(
        &call(
            "DELETE",
            &format!("{base}/deployflows/{}", running.name),
            None,
        )
        .await,
        409,
        "not finished",
    );
    assert_envelope_error(
        &call("POST", &format!("{base}/instances/held/restarts"), None).await,
        409,
        &running.name,
    );
    let canceled = call(
        "POST",
        &format!("{base}/deployflows/{}/cancel", running.name),
        None,
    )
    .await;
    assert_eq!(canceled.0, 200, "{canceled:?}");
    running.wait_phase("Canceled", LONG).await;
    let deleted = call(
        "DELETE",
        &format!("{base}/deployflows/{}", running.name),
        None,
    )
    .await;
    assert_eq!(deleted.0, 204, "{deleted:?}");
    let again = call(
        "DELETE",
        &format!("{base}/deployflows/{}", running.name),
        None,
    )
    .await;
    assert_eq!(again.0, 204, "a missing DeployFlow counts as deleted");

    // Unknown path, wrong method, malformed JSON.
    assert_envelope_error(
        &call("GET", "/api/v1/nothing", None).await,
        404,
        "Invalid path: /api/v1/nothing",
    );
    assert_envelope_error(
        &call("PUT", &format!("{base}/deployflows/{first}"), None).await,
        405,
        "Method not allowed: PUT",
    );
    let bad = rest(
        "POST",
        &url(&format!("{base}/deployflows")),
        None,
        None,
        None,
    )
    .await;
    assert_envelope_error(&bad, 400, "applicationSpec");
    let _ = released; // (shared fixture module)
}
