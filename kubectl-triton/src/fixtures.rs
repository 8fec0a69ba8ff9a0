//! Test fixtures shared by the plugin's unit tests.

use serde_json::{Value, json};
use triton_controller::crd::DeployFlow;

/// An update of `web` (3 replicas) in `shop`, named web-v2, with `metadata` merged in.
pub fn update_release(metadata: Value, strategy: Value, status: Value) -> DeployFlow {
    let mut meta = json!({"name": "web-v2", "namespace": "shop"});
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), metadata.as_object()) {
        m.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "apps.triton.io/v1alpha1", "kind": "DeployFlow",
        "metadata": meta,
        "spec": {
            "action": "update",
            "application": {"appID": 1, "groupID": 2, "appName": "web", "instanceName": "web",
                "replicas": 3, "selector": {}, "template": {"spec": {"containers": []}}},
            "updateStrategy": strategy,
        },
        "status": status,
    }))
    .unwrap()
}
