//! The DeployFlow custom resource (`apps.triton.io/v1alpha1`), field for field as the original
//! (reference §1), plus `observedGeneration`, `message` and `pullInTimeoutSeconds`.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use triton_core::release::{Action, BatchPhase, BatchSize, DeployPhase};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "apps.triton.io",
    version = "v1alpha1",
    kind = "DeployFlow",
    plural = "deployflows",
    singular = "deployflow",
    shortname = "df",
    namespaced,
    status = "DeployFlowStatus",
    printcolumn = r#"{"name":"REPLICAS","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"UPDATED_READY_REPLICAS","type":"integer","jsonPath":".status.updatedReadyReplicas"}"#,
    printcolumn = r#"{"name":"FINISHED_REPLICAS","type":"integer","jsonPath":".status.finishedReplicas"}"#,
    printcolumn = r#"{"name":"PHASE","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"BATCHES","type":"integer","jsonPath":".status.batches"}"#,
    printcolumn = r#"{"name":"CURRENT_BATCH_SIZE","type":"integer","jsonPath":".status.conditions[-1].batchSize"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"UPDATE_AT","type":"date","jsonPath":".status.updatedAt","priority":1}"#,
    printcolumn = r#"{"name":"PODS","type":"string","jsonPath":".status.pods","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DeployFlowSpec {
    /// create, update, rollback, restart, scale_in or scale_out.
    pub action: Action,
    pub application: ApplicationSpec,
    /// Batching for create, update and rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
    /// Batching for restart, scale_in and scale_out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_update_strategy: Option<NonUpdateStrategy>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// Goes into the label `app`.
    #[serde(rename = "appID")]
    #[x_kube(validation = Rule::new("self >= 0").message("appID must not be negative (it is the label app)"))]
    pub app_id: i64,
    /// Goes into the label `group`.
    #[serde(rename = "groupID")]
    #[x_kube(validation = Rule::new("self >= 0").message("groupID must not be negative (it is the label group)"))]
    pub group_id: i64,
    /// Goes into the label `app.kubernetes.io/name`.
    #[x_kube(validation = Rule::new("size(self) <= 63 && self.matches('^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$')").message("appName must be a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub app_name: String,
    /// Name of the CloneSet (in the DeployFlow's namespace) and the label `app.kubernetes.io/instance`.
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 63 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("instanceName must be a non-empty DNS label of at most 63 characters (lowercase letters, digits and '-'): it names the CloneSet"))]
    pub instance_name: String,
    /// Accepted for compatibility; the CloneSet selector is always the default label set.
    pub selector: LabelSelector,
    /// Pod template of the CloneSet, validated with the Kubernetes pod template schema (a type
    /// error such as a number where a string belongs is refused at admission).
    pub template: PodTemplateSpec,
    /// Desired final number of pods.
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100000").message("replicas must be between 0 and 100000"))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_array")]
    pub volume_claim_templates: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_label: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BaseStrategy {
    /// true pauses the release, false resumes it; unset has no opinion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// true cancels the release.
    #[serde(default)]
    pub canceled: bool,
    /// Pods per batch: a number or a percentage of replicas (rounded up). Unset: one batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_percent")]
    pub batch_size: Option<IntOrString>,
    /// Minimum seconds between a batch's end and the next batch's start.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 604800").message("batchIntervalSeconds must be between 0 and 604800 (a week)"))]
    pub batch_interval_seconds: i32,
    /// auto or manual (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['', 'auto', 'manual']").message("mode must be auto or manual"))]
    pub mode: Option<String>,
    /// Number of batches the user allows to run (manual gate).
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100000").message("batches must be between 0 and 100000"))]
    pub batches: i32,
    /// Seconds a batch may take to become ready (its pods ContainersReady) before it is
    /// SmokeFailed and the release pauses (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 86400").message("smokeTimeoutSeconds must be between 1 and 86400"))]
    pub smoke_timeout_seconds: Option<i32>,
}

fn one() -> i32 {
    1
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    #[serde(flatten)]
    pub base: BaseStrategy,
    /// Do not hold new pods out of Service endpoints.
    #[serde(default)]
    pub no_pull_in: bool,
    /// Size of the canary (first) batch; 0: none.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100000").message("canary must be between 0 and 100000"))]
    pub canary: i32,
    /// Desired stage of the canary batch: Smoked, Baking or Baked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['', 'Smoked', 'Baking', 'Baked']").message("stage must be Smoked, Baking or Baked"))]
    pub stage: Option<String>,
    /// Seconds a pulled-in pod may take to appear ready in its Services' EndpointSlices (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 86400").message("pullInTimeoutSeconds must be between 1 and 86400"))]
    pub pull_in_timeout_seconds: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NonUpdateStrategy {
    #[serde(flatten)]
    pub base: BaseStrategy,
    /// restart: exactly these pods; scale_in: these pods first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_to_delete: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployFlowStatus {
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub replicas_to_process: i32,
    #[serde(default)]
    pub available_replicas: i32,
    #[serde(default)]
    pub updated_replicas: i32,
    #[serde(default)]
    pub updated_ready_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// One per batch; the last is the current batch.
    #[serde(default)]
    pub conditions: Option<Vec<BatchCondition>>,
    /// Every pod attributed to a batch of this release.
    #[serde(default)]
    pub pods: Option<Vec<String>>,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub phase: DeployPhase,
    #[serde(default)]
    pub finished: bool,
    #[serde(default)]
    pub batches: i32,
    #[serde(default)]
    pub finished_batches: i32,
    #[serde(default)]
    pub finished_replicas: i32,
    #[serde(default)]
    pub failed_replicas: i32,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub updated_at: Option<Time>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The CloneSet's spec.replicas when the release started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_at_start: Option<i32>,
    /// restart, scale_in, scale_out: the CloneSet's pods when the release started (new pods of
    /// the same revision are told apart from them by name, not by creation time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_at_start: Option<Vec<String>>,
    /// Pods already on the update revision when the release started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_start: Option<i32>,
    /// Why the release waits, failed or was refused something. Always written (null when
    /// cleared) so the status merge patch removes a stale message.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchCondition {
    pub batch: i32,
    pub batch_size: i32,
    pub canary: bool,
    pub phase: BatchPhase,
    #[serde(default)]
    pub failed_replicas: i32,
    #[serde(default)]
    pub pods: Option<Vec<PodInfo>>,
    pub started_at: Option<Time>,
    pub pulled_in_at: Option<Time>,
    pub finished_at: Option<Time>,
    /// When the smoke test (re)started: the batch start, or the last resume after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_started_at: Option<Time>,
    /// The pods this batch's finish deletes, decided (and written here) before the CloneSet
    /// write that deletes them, so a retried step never picks other pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_to_delete: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    pub name: String,
    pub ip: String,
    pub port: i32,
    /// Ready, ContainersReady, Failed, Outdated, or the pod's phase.
    pub phase: String,
    /// "", PullInSucceeded or PullInFailed.
    #[serde(default)]
    pub pull_in_status: String,
}

fn preserve_unknown_array(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}})
}

fn int_or_percent(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            "rule": "type(self) == int ? self >= 0 && self <= 100000 : self.matches('^([0-9]{1,5}|([0-9]{1,2}|100)%)$')",
            "message": "batchSize must be a number of pods from 0 to 100000 or a percentage from 0% to 100%, such as \"30%\""
        }]
    })
}

impl DeployFlowSpec {
    /// The strategy fields shared by both strategies, for this action.
    pub fn base(&self) -> BaseStrategy {
        if self.action.is_revision_changing() {
            self.update_strategy
                .clone()
                .map(|s| s.base)
                .unwrap_or_else(empty_base)
        } else {
            self.non_update_strategy
                .clone()
                .map(|s| s.base)
                .unwrap_or_else(empty_base)
        }
    }

    pub fn batch_size(&self) -> Option<BatchSize> {
        match self.base().batch_size? {
            IntOrString::Int(n) => (n >= 0).then_some(BatchSize::Count(n)),
            IntOrString::String(s) => BatchSize::parse_str(&s),
        }
    }

    pub fn auto(&self) -> bool {
        self.base().mode.as_deref() == Some("auto")
    }

    /// Canary size when the action can have one.
    pub fn canary(&self) -> i32 {
        if self.action.is_revision_changing() {
            self.update_strategy.as_ref().map_or(0, |s| s.canary)
        } else {
            0
        }
    }

    pub fn stage(&self) -> Option<BatchPhase> {
        self.update_strategy
            .as_ref()
            .and_then(|s| s.stage.as_deref())
            .and_then(BatchPhase::parse)
    }

    /// Whether new pods are held out of Service endpoints until their batch is baked.
    pub fn pull_in(&self) -> bool {
        self.action.is_revision_changing()
            && !self.update_strategy.as_ref().is_some_and(|s| s.no_pull_in)
    }

    pub fn pull_in_timeout(&self) -> std::time::Duration {
        let secs = self
            .update_strategy
            .as_ref()
            .and_then(|s| s.pull_in_timeout_seconds)
            .unwrap_or(60);
        std::time::Duration::from_secs(secs.max(1) as u64)
    }

    pub fn smoke_timeout(&self) -> std::time::Duration {
        let secs = self.base().smoke_timeout_seconds.unwrap_or(600);
        std::time::Duration::from_secs(secs.max(1) as u64)
    }

    /// The JSON key of the strategy this action uses.
    pub fn strategy_key(&self) -> &'static str {
        if self.action.is_revision_changing() {
            "updateStrategy"
        } else {
            "nonUpdateStrategy"
        }
    }

    /// Whether the strategy object this action uses is present in the spec.
    pub fn has_strategy(&self) -> bool {
        if self.action.is_revision_changing() {
            self.update_strategy.is_some()
        } else {
            self.non_update_strategy.is_some()
        }
    }

    pub fn pods_to_delete(&self) -> Vec<String> {
        self.non_update_strategy
            .as_ref()
            .and_then(|s| s.pods_to_delete.clone())
            .unwrap_or_default()
    }

    pub fn batch_interval(&self) -> std::time::Duration {
        let secs = self.base().batch_interval_seconds.max(0) as u64;
        // As the original: scale_in waits at least 1 s so re-created pods are not attributed to the next batch.
        let secs = if self.action == Action::ScaleIn {
            secs.max(1)
        } else {
            secs
        };
        std::time::Duration::from_secs(secs)
    }
}

/// An absent strategy: batches 0, manual, no batch size (reference §1.3).
fn empty_base() -> BaseStrategy {
    BaseStrategy {
        batches: 0,
        ..BaseStrategy::default()
    }
}

impl DeployFlowStatus {
    pub fn current(&self) -> Option<&BatchCondition> {
        self.conditions.as_ref().and_then(|c| c.last())
    }
    pub fn current_mut(&mut self) -> Option<&mut BatchCondition> {
        self.conditions.as_mut().and_then(|c| c.last_mut())
    }
}
