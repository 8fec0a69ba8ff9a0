//! OpenKruise CloneSets, handled as JSON (the tests check Kruise's behaviour, not our types).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::{dynamic_api, eventually, is_true, pods};

/// A CloneSet under test: its name, namespace and pod selector.
pub struct CloneSet {
    pub api: Api<DynamicObject>,
    pub pods: Api<Pod>,
    pub name: String,
    pub ns: String,
}

/// Builder for a CloneSet manifest with `app=<name>` pods.
pub struct CloneSetSpec {
    name: String,
    replicas: i32,
    image: String,
    partition: Option<i32>,
    readiness_gates: Vec<String>,
    pod_labels: Vec<(String, String)>,
    pod_annotations: Vec<(String, String)>,
}

impl CloneSetSpec {
    pub fn new(name: &str, replicas: i32) -> Self {
        Self {
            name: name.into(),
            replicas,
            image: "nginx:1.25".into(),
            partition: None,
            readiness_gates: vec![],
            pod_labels: vec![],
            pod_annotations: vec![],
        }
    }
    pub fn partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }
    pub fn readiness_gate(mut self, condition_type: &str) -> Self {
        self.readiness_gates.push(condition_type.into());
        self
    }
    pub fn pod_label(mut self, k: &str, v: &str) -> Self {
        self.pod_labels.push((k.into(), v.into()));
        self
    }

    pub fn pod_annotation(mut self, k: &str, v: &str) -> Self {
        self.pod_annotations.push((k.into(), v.into()));
        self
    }

    pub fn manifest(&self) -> Value {
        let mut labels = serde_json::Map::new();
        labels.insert("app".into(), json!(self.name));
        for (k, v) in &self.pod_labels {
            labels.insert(k.clone(), json!(v));
        }
        let annotations: serde_json::Map<String, Value> = self
            .pod_annotations
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let gates: Vec<Value> = self
            .readiness_gates
            .iter()
            .map(|g| json!({"conditionType": g}))
            .collect();
        let mut update_strategy = json!({"type": "ReCreate"});
        if let Some(p) = self.partition {
            update_strategy["partition"] = json!(p);
        }
        json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "CloneSet",
            "metadata": {"name": self.name},
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": {"app": self.name}},
                "updateStrategy": update_strategy,
                "template": {
                    "metadata": {"labels": labels, "annotations": annotations},
                    "spec": {
                        "readinessGates": gates,
                        "containers": [{"name": "main", "image": self.image}],
                    }
                }
            }
        })
    }

    pub async fn create(self, client: &Client, ns: &str) -> CloneSet {
        let api = dynamic_api(client, ns, "apps.kruise.io", "v1alpha1", "CloneSet");
        let obj: DynamicObject = serde_json::from_value(self.manifest()).unwrap();
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create CloneSet {}: {e}", self.name));
        CloneSet {
            api,
            pods: Api::namespaced(client.clone(), ns),
            name: self.name,
            ns: ns.into(),
        }
    }
}

impl CloneSet {
    pub fn selector(&self) -> String {
        format!("app={}", self.name)
    }

    pub async fn get(&self) -> Value {
        let obj = self
            .api
            .get(&self.name)
            .await
            .unwrap_or_else(|e| panic!("get CloneSet {}: {e}", self.name));
        serde_json::to_value(obj).unwrap()
    }

    /// Merge-patches the CloneSet's spec.
    pub async fn patch_spec(&self, spec: Value) {
        self.api
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .unwrap_or_else(|e| panic!("patch CloneSet {}: {e}", self.name));
    }

    pub async fn pods(&self) -> Vec<Pod> {
        pods(&self.pods, &self.selector()).await
    }

    /// Live (not terminating) pods.
    pub async fn live_pods(&self) -> Vec<Pod> {
        self.pods()
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Waits until the CloneSet has `n` live pods that satisfy `pred`, and returns them.
    pub async fn wait_pods(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Pod) -> bool,
    ) -> Vec<Pod> {
        eventually(
            &format!("{n} pods of CloneSet {} {what}", self.name),
            timeout,
            || async {
                let pods = self.live_pods().await;
                let matching = pods.iter().filter(|p| pred(p)).count();
                if pods.len() == n && matching == n {
                    Ok(pods)
                } else {
                    Err(format!("{} live pods, {matching} {what}", pods.len()))
                }
            },
        )
        .await
    }

    /// Waits until all `n` pods are Running and Ready.
    pub async fn wait_ready(&self, n: usize) -> Vec<Pod> {
        self.wait_pods("Running and Ready", n, Duration::from_secs(60), |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && is_true(p, "Ready")
        })
        .await
    }

    /// `status.updateRevision`, once Kruise has observed the current generation.
    pub async fn observed_status(&self) -> Value {
        eventually(
            &format!("CloneSet {} status to observe its generation", self.name),
            Duration::from_secs(30),
            || async {
                let cs = self.get().await;
                if cs["status"]["observedGeneration"] == cs["metadata"]["generation"] {
                    Ok(cs["status"].clone())
                } else {
                    Err(cs["status"].clone())
                }
            },
        )
        .await
    }
}

/// The revision hash label Kruise puts on every pod it creates.
pub fn pod_revision(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get("controller-revision-hash")
        .map(String::as_str)
}
