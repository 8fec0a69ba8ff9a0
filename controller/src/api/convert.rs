//! DeployFlows, CloneSets and pods as API messages (reference §4.2), and JSON ↔ protobuf
//! `Struct`. Pure functions, unit-tested.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use prost_types::value::Kind;
use serde_json::Value;
use triton_core::api::short_revision;
use triton_core::names::{AGENT_CONTAINER, INSTANCE_LABEL, REVISION_LABEL};
use triton_proto::{application as app, deployflow as pb, pod as podpb};

use crate::crd::{BatchCondition, DeployFlow};
use crate::observe::{self, CloneSetView};
use crate::raw::RawCloneSet;

/// Label of the application id (reference §4.4).
pub const APP_LABEL: &str = "app";
/// Label of the group id.
pub const GROUP_LABEL: &str = "group";

/// The zero time of the original's replies (`0001-01-01T00:00:00Z`).
const ZERO_TIME: prost_types::Timestamp = prost_types::Timestamp {
    seconds: -62_135_596_800,
    nanos: 0,
};

pub fn timestamp(t: Option<&Time>) -> Option<prost_types::Timestamp> {
    Some(match t {
        Some(t) => prost_types::Timestamp {
            seconds: t.0.as_second(),
            nanos: t.0.subsec_nanosecond(),
        },
        None => ZERO_TIME,
    })
}

fn clamp(v: i64) -> i32 {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// A DeployFlow as the API's `Deploy`.
pub fn deploy(df: &DeployFlow) -> pb::Deploy {
    let spec = &df.spec;
    let status = df.status.clone().unwrap_or_default();
    let replicas = spec.application.replicas;
    pb::Deploy {
        namespace: df.namespace().unwrap_or_default(),
        name: df.name_any(),
        app_id: clamp(spec.application.app_id),
        group_id: clamp(spec.application.group_id),
        app_name: spec.application.app_name.clone(),
        instance_name: spec.application.instance_name.clone(),
        replicas,
        action: action_str(df),
        available_replicas: status.available_replicas,
        updated_replicas: status.updated_replicas,
        updated_ready_replicas: status.updated_ready_replicas,
        update_revision: status
            .update_revision
            .as_deref()
            .map(short_revision)
            .unwrap_or_default()
            .to_string(),
        conditions: status.conditions.iter().flatten().map(batch).collect(),
        paused: status.paused,
        phase: status.phase.as_str().to_string(),
        finished: status.finished,
        batches: status.batches,
        batch_size: spec.batch_size().map_or(0, |b| b.resolve(replicas)),
        finished_batches: status.finished_batches,
        finished_replicas: status.finished_replicas,
        failed_replicas: status.failed_replicas,
        started_at: timestamp(status.started_at.as_ref()),
        finished_at: timestamp(status.finished_at.as_ref()),
        updated_at: timestamp(status.updated_at.as_ref()),
        mode: spec.base().mode.unwrap_or_default(),
        batch_interval_seconds: spec.batch_interval().as_secs() as i32,
        timeout_seconds: 0,
        graceful_period_seconds: 0,
        canary: spec.canary(),
        message: status.message.unwrap_or_default(),
        deleted: false,
    }
}

pub fn action_str(df: &DeployFlow) -> String {
    serde_json::to_value(df.spec.action)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn batch(c: &BatchCondition) -> pb::Batch {
    pb::Batch {
        batch: c.batch,
        batch_size: c.batch_size,
        canary: c.canary,
        phase: format!("{:?}", c.phase),
        failed_replicas: c.failed_replicas,
        pods: c
            .pods
            .iter()
            .flatten()
            .map(|p| pb::PodInfo {
                name: p.name.clone(),
                ip: p.ip.clone(),
                port: p.port,
                phase: p.phase.clone(),
                pull_in_status: p.pull_in_status.clone(),
            })
            .collect(),
        started_at: timestamp(c.started_at.as_ref()),
        finished_at: timestamp(c.finished_at.as_ref()),
    }
}

/// The application's ids and name, from the labels `app`, `group` and
/// `app.kubernetes.io/name` of a CloneSet's pod template (0 / "" when absent or not a number).
pub fn app_identity(labels: &std::collections::BTreeMap<String, String>) -> (i64, i64, String) {
    let num = |k: &str| labels.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        num(APP_LABEL),
        num(GROUP_LABEL),
        labels
            .get(triton_core::names::NAME_LABEL)
            .cloned()
            .unwrap_or_default(),
    )
}

/// The application container of a pod spec: the only one, else `<appID>-container-<groupID>`,
/// else the first that is not the agent.
pub fn app_container<'a>(
    containers: &'a [Container],
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<&'a Container> {
    if containers.len() == 1 {
        return containers.first();
    }
    let (app, group) = (labels.get(APP_LABEL), labels.get(GROUP_LABEL));
    if let (Some(a), Some(g)) = (app, group) {
        let name = format!("{a}-container-{g}");
        if let Some(c) = containers.iter().find(|c| c.name == name) {
            return Some(c);
        }
    }
    containers.iter().find(|c| c.name != AGENT_CONTAINER)
}

fn quantity(q: Option<&std::collections::BTreeMap<String, Quantity>>, k: &str) -> String {
    q.and_then(|m| m.get(k))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

/// A CloneSet as the API's `Instance`.
pub fn instance(cs: &RawCloneSet) -> app::Instance {
    let view = CloneSetView::from_raw(cs).unwrap_or_default();
    let labels = view.template_labels().clone();
    let (app_id, group_id, _) = app_identity(&labels);
    let (app_id, group_id) = (clamp(app_id), clamp(group_id));
    // Read in place, through the one deserializer of cached JSON (`&Value`): each deserializer
    // type instantiates the pod types' decoding code anew (about half a megabyte of it).
    let template = <k8s_openapi::api::core::v1::PodTemplateSpec as serde::Deserialize>::deserialize(
        &cs.data["spec"]["template"],
    )
    .ok();
    let containers = template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let c = app_container(&containers, &labels);
    let res = c.and_then(|c| c.resources.as_ref());
    let replicas = view.spec.replicas;
    let ready = cs.data["status"]["updatedReadyReplicas"]
        .as_i64()
        .unwrap_or(0) as i32;
    app::Instance {
        namespace: cs.namespace().unwrap_or_default(),
        name: cs.name_any(),
        available_replicas: ready,
        replicas,
        status: if replicas == ready {
            "Ready"
        } else {
            "InProgress"
        }
        .into(),
        app_id,
        group_id,
        image: c.and_then(|c| c.image.clone()).unwrap_or_default(),
        cpu: quantity(res.and_then(|r| r.limits.as_ref()), "cpu"),
        memory: quantity(res.and_then(|r| r.limits.as_ref()), "memory"),
        request_cpu: quantity(res.and_then(|r| r.requests.as_ref()), "cpu"),
        request_memory: quantity(res.and_then(|r| r.requests.as_ref()), "memory"),
        update_revision: cs.data["status"]["updateRevision"]
            .as_str()
            .map(short_revision)
            .unwrap_or_default()
            .to_string(),
    }
}

/// A pod as the API's `PodInfo`.
pub fn pod(p: &Pod) -> podpb::PodInfo {
    let labels = p.labels().clone();
    let containers = p
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let c = app_container(&containers, &labels);
    let res = c.and_then(|c| c.resources.as_ref());
    let status = p.status.as_ref();
    podpb::PodInfo {
        namespace: p.namespace().unwrap_or_default(),
        name: p.name_any(),
        instance_name: labels.get(INSTANCE_LABEL).cloned().unwrap_or_default(),
        image: c.and_then(|c| c.image.clone()).unwrap_or_default(),
        cpu: quantity(res.and_then(|r| r.limits.as_ref()), "cpu"),
        memory: quantity(res.and_then(|r| r.limits.as_ref()), "memory"),
        guaranteed_cpu: quantity(res.and_then(|r| r.requests.as_ref()), "cpu"),
        guaranteed_memory: quantity(res.and_then(|r| r.requests.as_ref()), "memory"),
        public_network: false,
        container_name: c.map(|c| c.name.clone()).unwrap_or_default(),
        pod_ip: status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        status: observe::pod_phase(p),
        host_ip: status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        update_revision: labels
            .get(REVISION_LABEL)
            .map(|r| short_revision(r).to_string())
            .unwrap_or_default(),
        creation_timestamp: timestamp(p.metadata.creation_timestamp.as_ref()),
    }
}

/// A protobuf `Struct` as JSON.
pub fn struct_to_json(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            // JSON numbers arrive as doubles; whole ones are integers (ports, replicas).
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn df(v: Value) -> DeployFlow {
        serde_json::from_value(v).unwrap()
    }

    fn tutorial() -> Value {
        json!({"apiVersion": "apps.triton.io/v1alpha1", "kind": "DeployFlow",
            "metadata": {"name": "12122-sample-10010-df", "namespace": "default",
                "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"action": "create", "application": {"appID": 12122, "groupID": 10010,
                "appName": "sample", "instanceName": "12122-sample-10010",
                "selector": {"matchLabels": {"app": "12122"}},
                "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}},
                "replicas": 3},
                "updateStrategy": {"batchSize": 1, "batchIntervalSeconds": 10, "canary": 1, "mode": "auto"}},
            "status": {"phase": "BatchStarted", "batches": 3, "updateRevision": "12122-sample-10010-6ddf9b7cf4",
                "startedAt": "2026-01-01T00:00:01Z",
                "conditions": [{"batch": 1, "batchSize": 1, "canary": true, "phase": "Smoked",
                    "startedAt": "2026-01-01T00:00:02Z",
                    "pods": [{"name": "p", "ip": "10.0.0.1", "port": 80, "phase": "ContainersReady"}]}]}})
    }

    #[test]
    fn a_deployflow_becomes_the_originals_deploy() {
        let d = deploy(&df(tutorial()));
        assert_eq!(d.app_id, 12122);
        assert_eq!(d.instance_name, "12122-sample-10010");
        assert_eq!(d.action, "create");
        assert_eq!(d.update_revision, "6ddf9b7cf4");
        assert_eq!(d.batch_size, 1);
        assert_eq!(d.canary, 1);
        assert_eq!(d.mode, "auto");
        assert_eq!(d.batch_interval_seconds, 10);
        assert_eq!(d.conditions[0].phase, "Smoked");
        assert_eq!(d.conditions[0].pods[0].ip, "10.0.0.1");
        assert_eq!(
            d.finished_at,
            Some(ZERO_TIME),
            "zero times as 0001-01-01T00:00:00Z"
        );
        assert_eq!(d.started_at.unwrap().seconds, 1_767_225_601);
    }

    #[test]
    fn scale_in_reports_its_effective_interval() {
        let mut v = tutorial();
        v["spec"]["action"] = json!("scale_in");
        v["spec"]["nonUpdateStrategy"] = json!({"batchSize": "50%"});
        let d = deploy(&df(v));
        assert_eq!(d.batch_interval_seconds, 1);
        assert_eq!(d.batch_size, 2, "50% of 3, rounded up");
        assert_eq!(d.canary, 0);
    }

    #[test]
    fn instances_read_ids_from_labels_and_the_app_container() {
        let cs: RawCloneSet = serde_json::from_value(json!({
            "metadata": {"name": "i", "namespace": "ns"},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "12122", "group": "10010"}},
                "spec": {"containers": [
                    {"name": "triton-agent", "image": "agent"},
                    {"name": "12122-container-10010", "image": "nginx:1",
                     "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}]}}},
            "status": {"updatedReadyReplicas": 3, "updateRevision": "i-abc"}})).unwrap();
        let i = instance(&cs);
        assert_eq!((i.app_id, i.group_id), (12122, 10010));
        assert_eq!(i.image, "nginx:1");
        assert_eq!(
            (i.cpu.as_str(), i.memory.as_str(), i.request_cpu.as_str()),
            ("1", "1Gi", "500m")
        );
        assert_eq!(i.status, "Ready");
        assert_eq!(i.update_revision, "abc");
    }

    #[test]
    fn structs_become_json_with_integers_kept_integral() {
        let s = prost_types::Struct {
            fields: [
                (
                    "port".to_string(),
                    prost_types::Value {
                        kind: Some(Kind::NumberValue(80.0)),
                    },
                ),
                (
                    "ratio".to_string(),
                    prost_types::Value {
                        kind: Some(Kind::NumberValue(0.5)),
                    },
                ),
                (
                    "name".to_string(),
                    prost_types::Value {
                        kind: Some(Kind::StringValue("x".into())),
                    },
                ),
            ]
            .into(),
        };
        assert_eq!(
            struct_to_json(&s),
            json!({"port": 80, "ratio": 0.5, "name": "x"})
        );
    }
}
