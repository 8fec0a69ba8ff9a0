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
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => panic!("the malformed DeployFlow was accepted"),
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
