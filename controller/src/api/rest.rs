//! The REST front end (reference §4.5) under `/api/v1`, every reply in the envelope
//! `{"code": 0|7, "data": …, "msg": "…"}`; the same operations and authorization as gRPC (each
//! route is authorized as the gRPC method it maps to). Bodies are decoded strictly by type with
//! the failing field named; unknown fields are ignored, as the original did.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use triton_core::api::FieldError;
use triton_proto::deployflow as pb;

use super::convert;
use super::auth::Target;
use super::ops::{ApplyRequest, NonUpdate};
use super::{ApiContext, ApiError};
use crate::crd::DeployFlow;

type Ctx = State<Arc<ApiContext>>;

/// The REST router.
pub fn router(ctx: Arc<ApiContext>) -> Router {
    let ns = "/api/v1/namespaces/{ns}";
    Router::new()
        .route("/@in/api/health", get(health))
        .route("/api/v1/health", get(health))
        .route(&format!("{ns}/deployflows"), get(list).post(apply))
        .route(
            &format!("{ns}/deployflows/{{name}}"),
            get(get_one).patch(patch_strategy).delete(delete),
        )
        .route(&format!("{ns}/deployflows/{{name}}/{{verb}}"), post(verb))
        .route(&format!("{ns}/instances"), get(instances))
        .route(
            &format!("{ns}/instances/{{name}}"),
            get(instance).delete(delete_instance),
        )
        .route(&format!("{ns}/instances/{{name}}/restarts"), post(restart))
        .route(&format!("{ns}/instances/{{name}}/scales"), post(scale))
        .route(
            &format!("{ns}/instances/{{name}}/rollbacks"),
            post(rollback),
        )
        .route(&format!("{ns}/pods"), get(pods))
        .route(&format!("{ns}/pods/{{name}}"), get(pod))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .with_state(ctx)
}

/// The envelope.
fn ok(status: StatusCode, data: Value) -> Response {
    (
        status,
        axum::Json(json!({"code": 0, "data": data, "msg": "ok"})),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.http_status(),
            axum::Json(json!({"code": 7, "data": {}, "msg": self.to_string()})),
        )
            .into_response()
    }
}

type Reply = Result<Response, ApiError>;

async fn health() -> &'static str {
    "ok"
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("Invalid path: {}", uri.path()))
}

async fn not_allowed(method: Method, uri: Uri) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(json!({"code": 7, "data": {},
            "msg": format!("Method not allowed: {method} {}", uri.path())})),
    )
        .into_response()
}

async fn guard(
    ctx: &ApiContext,
    headers: &HeaderMap,
    method: &str,
    ns: &str,
    target: Target<'_>,
) -> Result<(), ApiError> {
    let Some(auth) = &ctx.auth else {
        return Ok(());
    };
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    auth.check(bearer, method, ns, target).await.map(|_| ())
}

fn names(ns: &str, name: &str) -> Result<(), ApiError> {
    triton_core::api::namespace("namespace", ns, false)?;
    triton_core::api::object_name("name", name)?;
    Ok(())
}

/// Decodes a JSON body (an empty body is `{}`), naming the field whose type is wrong.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FieldError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path == "?" || path.is_empty() {
            "body".to_string()
        } else {
            path
        };
        FieldError::new(field, e.into_inner().to_string())
    })
}

/// The original's deploy JSON (reference §4.5).
fn deploy_json(d: &pb::Deploy, df: Option<&DeployFlow>) -> Value {
    let ts = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| {
                jiff::Timestamp::new(t.seconds, t.nanos)
                    .ok()
                    .map(|t| t.to_string())
            })
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
    };
    let conditions = df
        .and_then(|df| df.status.as_ref())
        .and_then(|s| serde_json::to_value(s.conditions.clone().unwrap_or_default()).ok())
        .unwrap_or_else(|| json!([]));
    let mut v = json!({
        "name": d.name, "appID": d.app_id, "groupID": d.group_id, "namespace": d.namespace,
        "appName": d.app_name, "instanceName": d.instance_name, "replicas": d.replicas,
        "action": d.action, "availableReplicas": d.available_replicas,
        "updatedReplicas": d.updated_replicas, "updatedReadyReplicas": d.updated_ready_replicas,
        "updateRevision": d.update_revision, "conditions": conditions, "paused": d.paused,
        "phase": d.phase, "finished": d.finished, "batches": d.batches,
        "finishedBatches": d.finished_batches, "finishedReplicas": d.finished_replicas,
        "failedReplicas": d.failed_replicas, "startedAt": ts(&d.started_at),
        "finishedAt": ts(&d.finished_at), "updatedAt": ts(&d.updated_at), "message": d.message,
    });
    if !d.mode.is_empty() {
        v["mode"] = json!(d.mode);
    }
    v
}

fn deploy_reply(ctx: &ApiContext, status: StatusCode, d: pb::Deploy) -> Response {
    let df = ctx
        .deployflows
        .get(&kube::runtime::reflector::ObjectRef::new(&d.name).within(&d.namespace))
        .and_then(|raw| crate::reconcile::decode(&raw).ok());
    ok(status, deploy_json(&d, df.as_ref()))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    instance_name: Option<String>,
    action: Option<String>,
    start: Option<i32>,
    page_size: Option<i32>,
}

async fn list(State(ctx): Ctx, Path(ns): Path<String>, headers: HeaderMap, uri: Uri) -> Reply {
    let q: ListQuery = match uri.query() {
        None => ListQuery::default(),
        Some(q) => {
            serde_urlencoded::from_str(q).map_err(|e| FieldError::new("query", e.to_string()))?
        }
    };
    triton_core::api::namespace("namespace", &ns, false)?;
    guard(
        &ctx,
        &headers,
        "deployflow.DeployFlow/Gets",
        &ns,
        Target::default(),
    )
    .await?;
    let filter = pb::DeployFilter {
        namespace: ns,
        instance_name: q.instance_name.unwrap_or_default(),
        action: q.action.unwrap_or_default(),
        start: q.start.unwrap_or(0),
        page_size: q.page_size.unwrap_or(0),
        after: None,
    };
    let items: Vec<Value> = ctx
        .gets(&filter)?
        .into_iter()
        .map(|d| {
            let df = ctx
                .deployflows
                .get(&kube::runtime::reflector::ObjectRef::new(&d.name).within(&d.namespace))
                .and_then(|raw| crate::reconcile::decode(&raw).ok());
            deploy_json(&d, df.as_ref())
        })
        .collect();
    Ok(ok(StatusCode::OK, Value::Array(items)))
}

async fn get_one(
    State(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    names(&ns, &name)?;
    guard(
        &ctx,
        &headers,
        "deployflow.DeployFlow/Get",
        &ns,
        Target::deployflow(&name),
    )
    .await?;
    let d = ctx.get(&ns, &name).await?;
    Ok(deploy_reply(&ctx, StatusCode::OK, d))
}

/// A strategy as REST sends it: `batchSize` a number or a string.
#[derive(Deserialize, Default, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct RestStrategy {
    canary: Option<i32>,
    batch_size: Option<IntOrString>,
    no_pull_in: Option<bool>,
    stage: Option<String>,
    batches: Option<i32>,
    batch_interval_seconds: Option<i32>,
    mode: Option<String>,
    pods_to_delete: Option<Vec<String>>,
    paused: Option<bool>,
    canceled: Option<bool>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    String(String),
}

impl RestStrategy {
    fn batch_size(&self) -> String {
        match &self.batch_size {
            None => String::new(),
            Some(IntOrString::Int(n)) => n.to_string(),
            Some(IntOrString::String(s)) => s.clone(),
        }
    }
    fn update(&self) -> pb::UpdateStrategy {
        pb::UpdateStrategy {
            canary: self.canary.unwrap_or(0),
            batch_size: self.batch_size(),
            no_pull_in: self.no_pull_in.unwrap_or(false),
            stage: self.stage.clone().unwrap_or_default(),
            batches: self.batches.unwrap_or(0),
            batch_interval_seconds: self.batch_interval_seconds.unwrap_or(0),
            mode: self.mode.clone().unwrap_or_default(),
        }
    }
    fn non_update(&self) -> pb::NonUpdateStrategy {
        pb::NonUpdateStrategy {
            batch_size: self.batch_size(),
            pods_to_delete: self.pods_to_delete.clone().unwrap_or_default(),
            batches: self.batches.unwrap_or(0),
            batch_interval_seconds: self.batch_interval_seconds.unwrap_or(0),
            mode: self.mode.clone().unwrap_or_default(),
        }
    }
}

/// PATCH of a strategy: only the fields sent, validated, merged into the applicable strategy.
async fn patch_strategy(
    State(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    names(&ns, &name)?;
    let s: RestStrategy = decode_body(&body)?;
    guard(
        &ctx,
        &headers,
        "deployflow.DeployFlow/Continue",
        &ns,
        Target::deployflow(&name),
    )
    .await?;
    let mut fields = serde_json::Map::new();
    if s.batch_size.is_some() {
        let v = super::ops::non_update_strategy(&pb::NonUpdateStrategy {
            batch_size: s.batch_size(),
            ..Default::default()
        })?;
        fields.insert("batchSize".into(), v["batchSize"].clone());
    }
    if let Some(stage) = &s.stage {
        triton_core::api::stage("stage", stage)?;
        fields.insert("stage".into(), json!(stage));
    }
    if let Some(mode) = &s.mode {
        triton_core::api::mode("mode", mode)?;
        fields.insert("mode".into(), json!(mode));
    }
    for (k, v, max) in [
        ("batches", s.batches, 100_000),
        ("batchIntervalSeconds", s.batch_interval_seconds, 604_800),
        ("canary", s.canary, 100_000),
    ] {
        if let Some(v) = v {
            fields.insert(k.into(), json!(triton_core::api::bounded(k, v, max)?));
        }
    }
    for (k, v) in [
        ("noPullIn", s.no_pull_in),
        ("paused", s.paused),
        ("canceled", s.canceled),
    ] {
        if let Some(v) = v {
            fields.insert(k.into(), json!(v));
        }
    }
    if let Some(p) = &s.pods_to_delete {
        for (i, n) in p.iter().enumerate() {
            triton_core::api::object_name(&format!("podsToDelete[{i}]"), n)?;
        }
        fields.insert("podsToDelete".into(), json!(p));
    }
    if fields.is_empty() {
        return Err(FieldError::new("body", "names no strategy field to change").into());
    }
    let d = ctx.patch_fields(&ns, &name, Value::Object(fields)).await?;
    Ok(deploy_reply(&ctx, StatusCode::OK, convert::deploy(&d)))
}

async fn delete(
    State(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    names(&ns, &name)?;
    guard(
        &ctx,
        &headers,
        "deployflow.DeployFlow/Delete",
        &ns,
        Target::deployflow(&name),
    )
    .await?;
    ctx.delete(&ns, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST …/deployflows/{name}/{next,pause,resume,cancel}`: one shot, the patched DeployFlow.
async fn verb(
    State(ctx): Ctx,
    Path((ns, name, verb)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Reply {
    let (method, body) = match verb.as_str() {
        "next" => ("deployflow.DeployFlow/Next", None),
        "pause" => ("deployflow.DeployFlow/Pause", Some(json!({"paused": true}))),
        "resume" => (
            "deployflow.DeployFlow/Resume",
            Some(json!({"paused": false})),
        ),
        "cancel" => (
            "deployflow.DeployFlow/Cancel",
            Some(json!({"canceled": true})),
        ),
        _ => return Err(not_found(uri).await),
    };
    names(&ns, &name)?;
    guard(&ctx, &headers, method, &ns, Target::deployflow(&name)).await?;
    let d = match body {
        None => ctx.next(&ns, &name).await?,
        Some(body) => ctx.patch_fields(&ns, &name, body).await?,
    };
    Ok(deploy_reply(&ctx, StatusCode::OK, convert::deploy(&d)))
}

/// POST deployflows: `{"applicationSpec": {...}, "updateStrategy": {...}}`.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ApplyBody {
    application_spec: Option<RestApplication>,
    update_strategy: Option<RestStrategy>,
}

#[derive(Deserialize, Default, Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RestApplication {
    #[serde(rename = "appID", default)]
    app_id: i32,
    #[serde(rename = "groupID", default)]
    group_id: i32,
    #[serde(default)]
    app_name: String,
    #[serde(default)]
    instance_name: String,
    replicas: Option<i32>,
    #[serde(skip_serializing)]
    template: Option<Value>,
}

async fn apply(State(ctx): Ctx, Path(ns): Path<String>, headers: HeaderMap, body: Bytes) -> Reply {
    triton_core::api::namespace("namespace", &ns, false)?;
    let b: ApplyBody = decode_body(&body)?;
    let spec = b
        .application_spec
        .ok_or_else(|| FieldError::new("applicationSpec", "must be set"))?;
    guard(
        &ctx,
        &headers,
        "deployflow.DeployFlow/Apply",
        &ns,
        Target::default(),
    )
    .await?;
    let req = ApplyRequest {
        namespace: ns,
        app_id: spec.app_id,
        group_id: spec.group_id,
        app_name: spec.app_name.clone(),
        instance: spec.instance_name.clone(),
        replicas: spec.replicas,
        template: spec.template.clone(),
        strategy: Some(b.update_strategy.unwrap_or_default().update()),
        last_applied: serde_json::to_value(&spec).unwrap_or_default(),
    };
    let d = ctx.apply(req).await?;
    Ok(deploy_reply(&ctx, StatusCode::CREATED, d))
}

async fn instances(State(ctx): Ctx, Path(ns): Path<String>, headers: HeaderMap) -> Reply {
    triton_core::api::namespace("namespace", &ns, false)?;
    guard(
        &ctx,
        &headers,
        "application.Application/Gets",
        &ns,
        Target::default(),
    )
    .await?;
    let v = ctx.app_gets(&ns)?;
    Ok(ok(StatusCode::OK, instances_json(&v)))
}

fn instances_json(v: &[triton_proto::application::Instance]) -> Value {
    Value::Array(v.iter().map(instance_json).collect())
}

fn instance_json(i: &triton_proto::application::Instance) -> Value {
    json!({"namespace": i.namespace, "name": i.name, "availableReplicas": i.available_replicas,
        "replicas": i.replicas, "status": i.status, "appID": i.app_id, "groupID": i.group_id,
        "image": i.image, "cpu": i.cpu, "memory": i.memory, "requestCPU": i.request_cpu,
        "requestMemory": i.request_memory, "updateRevision": i.update_revision})
}

async fn instance(
    State(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    names(&ns, &name)?;
    guard(
        &ctx,
        &headers,
        "application.Application/Get",
        &ns,
        Target::cloneset(&name),
    )
    .await?;
    Ok(ok(StatusCode::OK, instance_json(&ctx.app_get(&ns, &name)?)))
}

async fn delete_instance(
    State(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    names(&ns, &name)?;
    guard(
        &ctx,
        &headers,
        "application.Application/Delete",
        &ns,
        Target::cloneset(&name),
    )
    .await?;
    ctx.app_delete(&ns, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn restart(
    State(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    names(&ns, &name)?;
    let s: RestStrategy = decode_body(&body)?;
    guard(
        &ctx,
        &headers,
        "application.Application/Restart",
        &ns,
        Target::cloneset(&name),
    )
    .await?;
    let deploy = ctx
        .start_non_update(&ns, &name, NonUpdate::Restart, Some(&s.non_update()))
        .await?;
    Ok(ok(StatusCode::CREATED, json!({"deployName": deploy})))
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase")]
struct ScaleBody {
    replicas: Option<i32>,
    non_update_strategy: Option<RestStrategy>,
}

async fn scale(
    State(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    names(&ns, &name)?;
    let b: ScaleBody = decode_body(&body)?;
    let replicas = b
        .replicas
        .ok_or_else(|| FieldError::new("replicas", "must be set"))?;
    guard(
        &ctx,
        &headers,
        "application.Application/Scale",
        &ns,
        Target::cloneset(&name),
    )
    .await?;
    let s = b.non_update_strategy.unwrap_or_default().non_update();
    let deploy = ctx
        .start_non_update(&ns, &name, NonUpdate::Scale(replicas), Some(&s))
        .await?;
    Ok(ok(StatusCode::CREATED, json!({"deployName": deploy})))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RollbackBody {
    deploy_name: Option<String>,
    update_strategy: Option<RestStrategy>,
}

async fn rollback(
    State(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    names(&ns, &name)?;
    let b: RollbackBody = decode_body(&body)?;
    let target = Target {
        cloneset: Some(&name),
        deployflow: b.deploy_name.as_deref().filter(|d| !d.is_empty()),
        pod: None,
    };
    guard(
        &ctx,
        &headers,
        "application.Application/Rollback",
        &ns,
        target,
    )
    .await?;
    let s = b.update_strategy.unwrap_or_default().update();
    let (deploy, to) = ctx
        .rollback(&ns, &name, b.deploy_name.as_deref().unwrap_or(""), Some(&s))
        .await?;
    Ok(ok(
        StatusCode::CREATED,
        json!({"deployName": deploy, "rollbackTo": to}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodQuery {
    instance_name: Option<String>,
    ip: Option<String>,
    no_sort: Option<bool>,
}

async fn pods(State(ctx): Ctx, Path(ns): Path<String>, headers: HeaderMap, uri: Uri) -> Reply {
    let q: PodQuery = match uri.query() {
        None => PodQuery::default(),
        Some(q) => {
            serde_urlencoded::from_str(q).map_err(|e| FieldError::new("query", e.to_string()))?
        }
    };
    triton_core::api::namespace("namespace", &ns, false)?;
    guard(&ctx, &headers, "pod.Pod/Gets", &ns, Target::default()).await?;
    let f = triton_proto::pod::PodFilter {
        namespace: ns,
        instance_name: q.instance_name.unwrap_or_default(),
        ip: q.ip.unwrap_or_default(),
    };
    let v = ctx.pod_gets(&f, q.no_sort.unwrap_or(false))?;
    Ok(ok(
        StatusCode::OK,
        Value::Array(v.iter().map(pod_json).collect()),
    ))
}

fn pod_json(p: &triton_proto::pod::PodInfo) -> Value {
    json!({"namespace": p.namespace, "name": p.name, "instanceName": p.instance_name,
        "image": p.image, "cpu": p.cpu, "memory": p.memory, "guaranteedCPU": p.guaranteed_cpu,
        "guaranteedMemory": p.guaranteed_memory, "containerName": p.container_name,
        "podIP": p.pod_ip, "status": p.status, "hostIP": p.host_ip,
        "updateRevision": p.update_revision})
}

async fn pod(
    State(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    names(&ns, &name)?;
    guard(&ctx, &headers, "pod.Pod/Get", &ns, Target::pod(&name)).await?;
    Ok(ok(StatusCode::OK, pod_json(&ctx.pod_get(&ns, &name)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_wrong_type_names_its_field() {
        let e = decode_body::<ScaleBody>(br#"{"replicas": "two"}"#).unwrap_err();
        assert_eq!(e.field, "replicas");
        let e = decode_body::<ApplyBody>(br#"{"applicationSpec": {"appID": -1.5}}"#).unwrap_err();
        assert_eq!(e.field, "applicationSpec.appID");
        let e = decode_body::<RestStrategy>(b"{not json").unwrap_err();
        assert_eq!(e.field, "body");
        let s: RestStrategy = decode_body(b"").unwrap();
        assert!(s.batch_size.is_none(), "an empty body is an empty strategy");
        let s: RestStrategy = decode_body(br#"{"batchSize": 2, "unknown": 1}"#).unwrap();
        assert_eq!(s.batch_size(), "2");
    }

    proptest! {
        #[test]
        fn any_body_decodes_or_names_a_field(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_body::<ApplyBody>(&body);
            let _ = decode_body::<ScaleBody>(&body);
            let _ = decode_body::<RollbackBody>(&body);
            if let Err(e) = decode_body::<RestStrategy>(&body) {
                prop_assert!(!e.field.is_empty());
            }
        }

        #[test]
        fn any_json_strategy_is_accepted_or_refused_with_a_field(
            batch in prop_oneof![any::<i64>().prop_map(|n| json!(n)), ".{0,8}".prop_map(|s| json!(s)), Just(json!(null)), Just(json!([1]))],
            batches in any::<i64>(),
            mode in ".{0,6}",
        ) {
            let body = json!({"batchSize": batch, "batches": batches, "mode": mode}).to_string();
            match decode_body::<RestStrategy>(body.as_bytes()) {
                Ok(s) => {
                    if let Err(e) = super::super::ops::non_update_strategy(&s.non_update()) {
                        prop_assert!(e.to_string().starts_with("strategy."), "{}", e);
                    }
                }
                Err(e) => prop_assert!(!e.field.is_empty()),
            }
        }
    }
}
