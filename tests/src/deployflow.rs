//! DeployFlows under test, handled as JSON (the tests check the wire format, not our types).

use std::time::Duration;

use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::{dynamic_api, eventually};

pub struct Flow {
    pub api: Api<DynamicObject>,
    pub name: String,
    pub ns: String,
}

/// The tutorial DeployFlow (examples/nginx-deployflow.yaml), unchanged but for its namespace.
pub fn tutorial() -> Value {
    let text = include_str!("../../examples/nginx-deployflow.yaml");
    serde_yaml::from_str(text).expect("the tutorial DeployFlow parses")
}

/// The tutorial Service (examples/nginx-service.yaml).
pub fn tutorial_service() -> Value {
    serde_yaml::from_str(include_str!("../../examples/nginx-service.yaml"))
        .expect("the tutorial Service parses")
}

/// A DeployFlow in the tutorial's shape for another instance and action.
pub fn flow(
    name: &str,
    instance: &str,
    action: &str,
    replicas: i32,
    image: &str,
    strategy: Value,
) -> Value {
    let labels = json!({"app": "7", "group": "8", "app.kubernetes.io/name": instance, "app.kubernetes.io/instance": instance, "managed-by": "triton-io"});
    let strategy_key = if ["create", "update", "rollback"].contains(&action) {
        "updateStrategy"
    } else {
        "nonUpdateStrategy"
    };
    json!({
        "apiVersion": "apps.triton.io/v1alpha1", "kind": "DeployFlow",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "action": action,
            "application": {
                "appID": 7, "groupID": 8, "appName": instance, "instanceName": instance, "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {}, "spec": {"containers": [{"name": "main", "image": image, "ports": [{"containerPort": 80}]}]}}
            },
            strategy_key: strategy
        }
    })
}

impl Flow {
    pub async fn create(client: &Client, ns: &str, mut manifest: Value) -> Flow {
        manifest["metadata"]["namespace"] = json!(ns);
        let name = manifest["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_string();
        let api = dynamic_api(client, ns, "apps.triton.io", "v1alpha1", "DeployFlow");
        let obj: DynamicObject = serde_json::from_value(manifest).unwrap();
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create DeployFlow {name}: {e}"));
        Flow {
            api,
            name,
            ns: ns.into(),
        }
    }

    pub async fn get(&self) -> Value {
        serde_json::to_value(
            self.api
                .get(&self.name)
                .await
                .unwrap_or_else(|e| panic!("get DeployFlow {}: {e}", self.name)),
        )
        .unwrap()
    }

    pub async fn status(&self) -> Value {
        self.get().await["status"].clone()
    }

    /// The DeployFlow, or None once it is gone from the API server.
    pub async fn get_opt(&self) -> Option<Value> {
        self.api
            .get_opt(&self.name)
            .await
            .unwrap_or_else(|e| panic!("get DeployFlow {}: {e}", self.name))
            .map(|o| serde_json::to_value(o).unwrap())
    }

    /// Merge-patches `spec.<strategy>` (the patches `Next`, `Pause`, ... write); returns the
    /// DeployFlow as the API server stored it (its `metadata.generation` orders later spec writes).
    pub async fn patch_strategy(&self, strategy_key: &str, patch: Value) -> Value {
        let obj = self
            .api
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {strategy_key: patch}})),
            )
            .await
            .unwrap_or_else(|e| panic!("patch DeployFlow {}: {e}", self.name));
        serde_json::to_value(obj).unwrap()
    }

    /// Waits until `pred(whole DeployFlow)` holds (spec and metadata too, not only the status).
    pub async fn wait_object(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(
            &format!("DeployFlow {} {what}", self.name),
            timeout,
            || async {
                let o = self.get().await;
                if pred(&o) {
                    Ok(o)
                } else {
                    Err(format!(
                        "{} spec.{}.paused={} generation={}",
                        summary(&o["status"]),
                        strategy_key(&o),
                        o["spec"][strategy_key(&o)]["paused"],
                        o["metadata"]["generation"]
                    ))
                }
            },
        )
        .await
    }

    /// Waits until `pred(status)` holds; the message names `what` and the last status.
    pub async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(
            &format!("DeployFlow {} {what}", self.name),
            timeout,
            || async {
                let s = self.status().await;
                if pred(&s) { Ok(s) } else { Err(summary(&s)) }
            },
        )
        .await
    }

    pub async fn wait_phase(&self, phase: &str, timeout: Duration) -> Value {
        self.wait(&format!("in phase {phase}"), timeout, |s| {
            s["phase"] == phase
        })
        .await
    }

    /// Waits until the current batch is `batch` in `phase`.
    pub async fn wait_batch(&self, batch: i64, phase: &str, timeout: Duration) -> Value {
        self.wait(&format!("at batch {batch} {phase}"), timeout, |s| {
            let cur = s["conditions"]
                .as_array()
                .and_then(|c| c.last())
                .cloned()
                .unwrap_or_default();
            cur["batch"] == batch && cur["phase"] == phase
        })
        .await
    }
}

/// `updateStrategy` for create/update/rollback, `nonUpdateStrategy` for the other actions.
pub fn strategy_key(df: &Value) -> &'static str {
    match df["spec"]["action"].as_str() {
        Some("create" | "update" | "rollback") => "updateStrategy",
        _ => "nonUpdateStrategy",
    }
}

/// The current (last) batch condition of a status.
pub fn current_batch(s: &Value) -> Value {
    s["conditions"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .unwrap_or_default()
}

/// The DeployFlow API of a namespace.
pub fn deployflows(client: &Client, ns: &str) -> Api<DynamicObject> {
    dynamic_api(client, ns, "apps.triton.io", "v1alpha1", "DeployFlow")
}

/// A one-line view of a status for failure messages.
pub fn summary(s: &Value) -> String {
    let cur = s["conditions"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .unwrap_or_default();
    format!(
        "phase={} batch={}/{} {} pods={} message={}",
        s["phase"], cur["batch"], s["batches"], cur["phase"], cur["pods"], s["message"]
    )
}

/// Seconds between two RFC 3339 timestamps.
pub fn seconds_between(a: &Value, b: &Value) -> f64 {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .expect("a timestamp")
    };
    parse(b).duration_since(parse(a)).as_secs_f64()
}

/// Given: `instance` already released with `replicas` pods of `image` (a `create` DeployFlow
/// named `<instance>-v1`, auto mode, run to Success).
pub async fn released(
    client: &Client,
    ns: &str,
    instance: &str,
    replicas: i32,
    image: &str,
) -> Flow {
    let df = Flow::create(
        client,
        ns,
        flow(
            &format!("{instance}-v1"),
            instance,
            "create",
            replicas,
            image,
            json!({"mode": "auto"}),
        ),
    )
    .await;
    df.wait_phase("Success", Duration::from_secs(90)).await;
    df
}

/// Given: a `create` of `instance` with 3 replicas in batches of 1 behind a canary of 1 (auto
/// mode), its canary waiting at Smoked.
pub async fn canary_waiting(client: &Client, ns: &str, instance: &str) -> Flow {
    let strategy = json!({"batchSize": 1, "canary": 1, "mode": "auto"});
    let df = Flow::create(
        client,
        ns,
        flow(
            &format!("{instance}-v1"),
            instance,
            "create",
            3,
            "nginx:1.25",
            strategy,
        ),
    )
    .await;
    df.wait_batch(1, "Smoked", Duration::from_secs(120)).await;
    df
}
