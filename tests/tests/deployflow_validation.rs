//! A malformed DeployFlow is refused by the API server at admission, with the field named
//! (OpenAPI + CEL rules of crds/deployflows.yaml).

use kube::api::{DynamicObject, PostParams};
use serde_json::{Value, json};
use triton_e2e::deployflow::tutorial;
use triton_e2e::*;

async fn refused(client: &kube::Client, ns: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut df = tutorial();
    df["metadata"]["namespace"] = json!(ns);
    edit(&mut df);
    let obj: DynamicObject = serde_json::from_value(df).unwrap();
    let api = dynamic_api(client, ns, "apps.triton.io", "v1alpha1", "DeployFlow");
    // A server-side dry run: admission runs in full, and an accepted case leaves nothing behind.
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&dry_run, &obj).await {
        Ok(_) => panic!(
            "expected the malformed DeployFlow to be refused at admission, but it was accepted"
        ),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn malformed_deployflows_are_refused_naming_the_field() {
    let client = client().await;
    let ns = namespace(&client, "df-validation").await;
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "spec.action",
            Box::new(|d| d["spec"]["action"] = json!("explode")),
        ),
        (
            "spec.updateStrategy.mode",
            Box::new(|d| d["spec"]["updateStrategy"]["mode"] = json!("fast")),
        ),
        (
            "spec.application.replicas",
            Box::new(|d| d["spec"]["application"]["replicas"] = json!(-1)),
        ),
        (
            "spec.updateStrategy.batchIntervalSeconds",
            Box::new(|d| d["spec"]["updateStrategy"]["batchIntervalSeconds"] = json!(-5)),
        ),
        (
            "spec.updateStrategy.batchSize",
            Box::new(|d| d["spec"]["updateStrategy"]["batchSize"] = json!("ten")),
        ),
        (
            "spec.application.instanceName",
            Box::new(|d| {
                d["spec"]["application"]
                    .as_object_mut()
                    .unwrap()
                    .remove("instanceName");
            }),
        ),
        (
            "spec.application.template",
            Box::new(|d| {
                d["spec"]["application"]
                    .as_object_mut()
                    .unwrap()
                    .remove("template");
            }),
        ),
        (
            "spec.application.replicas",
            Box::new(|d| {
                d["spec"]["application"]
                    .as_object_mut()
                    .unwrap()
                    .remove("replicas");
            }),
        ),
        (
            "spec.updateStrategy.stage",
            Box::new(|d| d["spec"]["updateStrategy"]["stage"] = json!("Fried")),
        ),
    ];
    for (field, edit) in cases {
        let msg = refused(&client, &ns, edit).await;
        assert!(msg.contains(field), "the refusal names {field}: {msg}");
    }
}

/// The tutorial turned into a `restart` (batching in `nonUpdateStrategy`).
fn restart(d: &mut Value) {
    d["spec"]["action"] = json!("restart");
    let strategy = d["spec"]
        .as_object_mut()
        .unwrap()
        .remove("updateStrategy")
        .unwrap();
    d["spec"]["nonUpdateStrategy"] = json!({"batchSize": strategy["batchSize"], "mode": "auto"});
}

#[tokio::test]
async fn a_template_that_is_not_a_valid_pod_template_is_refused_naming_the_field_path() {
    let client = client().await;
    let ns = namespace(&client, "df-validation-template").await;
    let msg = refused(&client, &ns, |d| {
        d["spec"]["application"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "X", "value": 8080}]);
    })
    .await;
    let field = "template.spec.containers[0].env[0].value";
    assert!(
        msg.contains(field),
        "expected the refusal of an env value 8080 (a number, not a string) to name {field}: {msg}"
    );
}

#[tokio::test]
async fn out_of_range_numbers_are_refused_naming_the_field() {
    let client = client().await;
    let ns = namespace(&client, "df-validation-ranges").await;
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "replicas 100001",
            "spec.application.replicas",
            Box::new(|d| d["spec"]["application"]["replicas"] = json!(100001)),
        ),
        (
            "batchSize \"99999999999\"",
            "spec.updateStrategy.batchSize",
            Box::new(|d| d["spec"]["updateStrategy"]["batchSize"] = json!("99999999999")),
        ),
        (
            "batchSize \"150%\"",
            "spec.updateStrategy.batchSize",
            Box::new(|d| d["spec"]["updateStrategy"]["batchSize"] = json!("150%")),
        ),
        (
            "canary -1",
            "spec.updateStrategy.canary",
            Box::new(|d| d["spec"]["updateStrategy"]["canary"] = json!(-1)),
        ),
        (
            "updateStrategy.smokeTimeoutSeconds 0",
            "spec.updateStrategy.smokeTimeoutSeconds",
            Box::new(|d| d["spec"]["updateStrategy"]["smokeTimeoutSeconds"] = json!(0)),
        ),
        (
            "updateStrategy.smokeTimeoutSeconds 86401",
            "spec.updateStrategy.smokeTimeoutSeconds",
            Box::new(|d| d["spec"]["updateStrategy"]["smokeTimeoutSeconds"] = json!(86401)),
        ),
        (
            "nonUpdateStrategy.smokeTimeoutSeconds 0",
            "spec.nonUpdateStrategy.smokeTimeoutSeconds",
            Box::new(|d| {
                restart(d);
                d["spec"]["nonUpdateStrategy"]["smokeTimeoutSeconds"] = json!(0);
            }),
        ),
    ];
    // Every case is tried, so one run reports all that are accepted or misnamed.
    let mut wrong = Vec::new();
    for (case, field, edit) in cases {
        let mut df = tutorial();
        df["metadata"]["namespace"] = json!(ns);
        edit(&mut df);
        let obj: DynamicObject = serde_json::from_value(df).unwrap();
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };
        match dynamic_api(&client, &ns, "apps.triton.io", "v1alpha1", "DeployFlow")
            .create(&dry_run, &obj)
            .await
        {
            Ok(_) => wrong.push(format!("{case}: accepted")),
            Err(e) if !e.to_string().contains(field) => {
                wrong.push(format!("{case}: refused without naming {field}: {e}"))
            }
            Err(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "expected each out-of-range value refused naming its field:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn in_range_smoke_timeouts_and_batch_sizes_are_accepted() {
    let client = client().await;
    let ns = namespace(&client, "df-validation-in-range").await;
    let mut df = tutorial();
    df["metadata"]["namespace"] = json!(ns);
    df["spec"]["application"]["replicas"] = json!(100000);
    df["spec"]["updateStrategy"]["batchSize"] = json!("100%");
    df["spec"]["updateStrategy"]["smokeTimeoutSeconds"] = json!(86400);
    let obj: DynamicObject = serde_json::from_value(df.clone()).unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let api = dynamic_api(&client, &ns, "apps.triton.io", "v1alpha1", "DeployFlow");
    let created = api
        .create(&dry_run, &obj)
        .await
        .expect("replicas 100000, batchSize 100% and smokeTimeoutSeconds 86400 are valid");
    assert_eq!(
        serde_json::to_value(created).unwrap()["spec"]["updateStrategy"]["smokeTimeoutSeconds"],
        86400,
        "expected smokeTimeoutSeconds kept (a field of the schema, not pruned)"
    );
    let mut r = tutorial();
    r["metadata"]["namespace"] = json!(ns);
    restart(&mut r);
    r["spec"]["nonUpdateStrategy"]["smokeTimeoutSeconds"] = json!(1);
    let obj: DynamicObject = serde_json::from_value(r).unwrap();
    let created = api
        .create(&dry_run, &obj)
        .await
        .expect("a restart with smokeTimeoutSeconds 1 is valid");
    assert_eq!(
        serde_json::to_value(created).unwrap()["spec"]["nonUpdateStrategy"]["smokeTimeoutSeconds"],
        1,
        "expected nonUpdateStrategy.smokeTimeoutSeconds kept (a field of the schema, not pruned)"
    );
}

#[tokio::test]
async fn the_tutorial_deployflow_applies_unchanged() {
    let client = client().await;
    let ns = namespace(&client, "df-tutorial-applies").await;
    let mut df = tutorial();
    df["metadata"]["namespace"] = json!(ns);
    df["spec"]["application"]["instanceName"] = json!("never-released");
    df["spec"]["updateStrategy"]["paused"] = json!(true);
    let obj: DynamicObject = serde_json::from_value(df).unwrap();
    dynamic_api(&client, &ns, "apps.triton.io", "v1alpha1", "DeployFlow")
        .create(
            &kube::api::PostParams {
                dry_run: true,
                ..Default::default()
            },
            &obj,
        )
        .await
        .expect("the tutorial DeployFlow is valid");
}
