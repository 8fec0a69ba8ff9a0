//! The agent service: each pod's `triton-agent` reports its application's health here (gRPC
//! `agent.Agent/Report`, on `--agent-listen`), and the controller records it as the pod
//! condition `apps.triton.io/healthy`, which the release engine and the gate controller read and
//! which survives a controller restart.
//!
//! A report is accepted only for the pod its token is bound to: the projected ServiceAccount
//! token (audience `triton-agent`) is checked with a TokenReview, whose `user.extra` carries the
//! pod's name and UID. Any replica serves reports; the Lease holder marks the pods whose agent
//! fell silent (`AgentSilent`, see [`silent`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;
use tonic::{Request, Response, Status};
use triton_core::names::{AGENT_ANNOTATION, AGENT_AUDIENCE, HEALTHY_CONDITION};
use triton_proto::agent::{HealthReport, ReportReply, agent_server::Agent};

/// The reason recorded while a pod's app has not been healthy yet (its agent's first failures
/// are a start, not a failure: the smoke timeout bounds them).
pub const STARTING: &str = "Starting";
/// The reason the Lease holder records when a pod's agent has been silent too long.
pub const AGENT_SILENT: &str = "AgentSilent";
/// The `user.extra` keys of a pod-bound ServiceAccount token.
const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
/// Longer tokens are refused unread.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The largest report decoded (a report is a few hundred bytes).
pub const MAX_REPORT_BYTES: usize = 16 * 1024;
/// The longest pause between an agent's retries (triton-agent's backoff cap).
pub const AGENT_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Token reviews sent at once (the API server's budget is shared with the release engine).
const MAX_REVIEWS_IN_FLIGHT: usize = 64;
/// How long a refused token stays refused without a new review.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// An agent's reason, kept only when it is a short CamelCase word and not one the controller
/// reserves (`Starting`, `AgentSilent`); else `fallback`.
fn clean_reason(reason: &str, fallback: &str) -> String {
    let ok = !reason.is_empty()
        && reason.len() <= 64
        && reason.starts_with(|c: char| c.is_ascii_uppercase())
        && reason.chars().all(|c| c.is_ascii_alphanumeric())
        && reason != STARTING
        && reason != AGENT_SILENT;
    if ok {
        reason.to_string()
    } else {
        fallback.to_string()
    }
}

/// The pod a token is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Reads the bound pod from a TokenReview's user: `system:serviceaccount:<ns>:<sa>` and the
/// pod claims in `extra`.
pub fn bound_pod(
    username: &str,
    extra: &std::collections::BTreeMap<String, Vec<String>>,
) -> Option<BoundPod> {
    let mut parts = username
        .strip_prefix("system:serviceaccount:")?
        .splitn(2, ':');
    let namespace = parts.next()?.to_string();
    let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
    Some(BoundPod {
        namespace,
        name: first(POD_NAME_KEY)?,
        uid: first(POD_UID_KEY)?,
    })
}

/// The `exp` claim of a JWT (seconds since the epoch), read without verifying it: only to cache
/// the TokenReview's answer no longer than the token lives.
pub fn jwt_expiry(token: &str) -> Option<i64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_i64()
}

/// The condition a report asks for, given the pod's current one: `None` when nothing needs
/// writing (same status, reason and message, and the heartbeat recorded recently enough).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Healthy {
    pub status: &'static str,
    pub reason: String,
    pub message: String,
    /// Whether the status changes (lastTransitionTime is then now).
    pub transition: bool,
}

/// What a report writes. Before the pod was ever healthy, an unhealthy report is `Starting`;
/// after, the agent's reason (a failure the release acts on).
pub fn condition_for(
    current: Option<(&str, &str, &str)>,
    last_probe_age: Option<Duration>,
    refresh: Duration,
    healthy: bool,
    reason: &str,
    message: &str,
) -> Option<Healthy> {
    // A pod that was healthy once: True now, or False for a reason other than starting (a
    // failure, or a silence, which followed reports).
    let was_healthy_once =
        current.is_some_and(|(s, r, _)| s == "True" || (r != STARTING && !r.is_empty()));
    let status = if healthy { "True" } else { "False" };
    let reason = match (healthy, was_healthy_once) {
        (true, _) => clean_reason(reason, "ProbeSucceeded"),
        (false, false) => STARTING.to_string(),
        (false, true) => clean_reason(reason, "ProbeFailed"),
    };
    let message: String = message.chars().take(512).collect();
    let same = current.is_some_and(|(s, r, m)| s == status && r == reason && m == message);
    let fresh = last_probe_age.is_some_and(|age| age < refresh);
    if same && fresh {
        return None;
    }
    Some(Healthy {
        status,
        transition: current.is_none_or(|(s, _, _)| s != status),
        reason,
        message,
    })
}

/// Whether a pod's agent has gone silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// No heartbeat recorded (no report yet), or already marked silent.
    Unknown,
    /// The last heartbeat is older than the staleness window.
    Silent(Duration),
    /// Heard from recently; silent unless a heartbeat comes within this time.
    CheckIn(Duration),
}

/// Reads the heartbeat recorded in the condition's lastProbeTime.
pub fn silence(pod: &Pod, now: jiff::Timestamp, staleness: Duration) -> Silence {
    let Some(c) = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == HEALTHY_CONDITION))
    else {
        return Silence::Unknown;
    };
    // Already marked; or never healthy yet (Starting: the smoke timeout bounds that wait, and
    // a silence must keep meaning "was healthy, then went quiet").
    if matches!(c.reason.as_deref(), Some(AGENT_SILENT) | Some(STARTING)) {
        return Silence::Unknown;
    }
    let Some(probed) = c.last_probe_time.as_ref() else {
        return Silence::Unknown;
    };
    let age = Duration::try_from(now.duration_since(probed.0)).unwrap_or_default();
    if age >= staleness {
        Silence::Silent(age)
    } else {
        Silence::CheckIn(staleness - age)
    }
}

type Reviewed = (Result<BoundPod, String>, Instant);

/// The gRPC agent service.
pub struct AgentService {
    pub client: Client,
    pub pods: Store<Pod>,
    /// How long an agent may be silent before its pod is marked AgentSilent.
    pub staleness: Duration,
    tokens: Mutex<HashMap<crate::api::auth::Digest, Reviewed>>,
    reviews: tokio::sync::Semaphore,
}

impl AgentService {
    pub fn new(client: Client, pods: Store<Pod>, staleness: Duration) -> Arc<Self> {
        Arc::new(AgentService {
            client,
            pods,
            staleness,
            tokens: Mutex::default(),
            reviews: tokio::sync::Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
        })
    }

    /// The heartbeat the agents are asked for: a third of the staleness window.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs((self.staleness / 3).as_secs().max(1))
    }

    async fn review(&self, token: &str) -> Result<BoundPod, Status> {
        let key = crate::api::auth::digest(&[token.as_bytes()]);
        if let Some((r, until)) = self.tokens.lock().expect("lock").get(&key)
            && Instant::now() < *until
        {
            return r.clone().map_err(Status::unauthenticated);
        }
        let _slot = self.reviews.acquire().await.expect("never closed");
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![AGENT_AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Status::unavailable(format!("reviewing the agent's token: {e}")))?;
        let st = reviewed.status.unwrap_or_default();
        let audience_ok = st.audiences.iter().flatten().any(|a| a == AGENT_AUDIENCE);
        let result = match (st.authenticated, st.user) {
            (Some(true), Some(u)) if audience_ok => bound_pod(
                u.username.as_deref().unwrap_or_default(),
                &u.extra.unwrap_or_default(),
            )
            .ok_or_else(|| {
                "the token is not bound to a pod (use a projected ServiceAccount token)".to_string()
            }),
            (Some(true), Some(_)) => Err(format!(
                "the token is not for the audience {AGENT_AUDIENCE}"
            )),
            _ => Err(format!(
                "the agent's token is not valid{}",
                st.error.map(|e| format!(": {e}")).unwrap_or_default()
            )),
        };
        // Trusted until the token expires, and re-checked at least every minute (a deleted
        // pod's token stops working).
        let now_s = jiff::Timestamp::now().as_second();
        let ttl = match &result {
            Ok(_) => jwt_expiry(token)
                .map(|exp| Duration::from_secs(exp.saturating_sub(now_s).max(0) as u64))
                .unwrap_or_default()
                .min(Duration::from_secs(60)),
            // A refusal is not trusted to an unverified expiry.
            Err(_) => NEGATIVE_TTL,
        };
        let mut tokens = self.tokens.lock().expect("lock");
        if tokens.len() >= 10_000 {
            let now = Instant::now();
            tokens.retain(|_, (_, until)| *until > now);
            if tokens.len() >= 10_000 {
                tokens.clear();
            }
        }
        tokens.insert(key, (result.clone(), Instant::now() + ttl));
        result.map_err(Status::unauthenticated)
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn report(&self, req: Request<HealthReport>) -> Result<Response<ReportReply>, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES)
            .map(String::from)
            .ok_or_else(|| {
                Status::unauthenticated("no bearer token (the projected triton-agent token)")
            })?;
        let r = req.into_inner();
        // What the report names is checked before its token costs a review.
        let valid = triton_core::api::dns_label("namespace", &r.namespace).is_ok()
            && triton_core::api::object_name("pod", &r.pod).is_ok()
            && !r.pod_uid.is_empty()
            && r.pod_uid.len() <= 64
            && r.reason.len() <= 256
            && r.message.len() <= 4096;
        if !valid {
            return Err(Status::invalid_argument(
                "a report names its pod (namespace, name, UID) and keeps reason and message short",
            ));
        }
        let bound = self.review(&token).await?;
        if (
            bound.namespace.as_str(),
            bound.name.as_str(),
            bound.uid.as_str(),
        ) != (r.namespace.as_str(), r.pod.as_str(), r.pod_uid.as_str())
        {
            return Err(Status::permission_denied(format!(
                "the token is bound to pod {}/{} ({}), not {}/{} ({})",
                bound.namespace, bound.name, bound.uid, r.namespace, r.pod, r.pod_uid
            )));
        }
        let cached = self.pods.get(&ObjectRef::new(&r.pod).within(&r.namespace));
        let pod = match cached.filter(|p| p.metadata.uid.as_deref() == Some(r.pod_uid.as_str())) {
            Some(p) => p,
            None => Arc::new(
                Api::<Pod>::namespaced(self.client.clone(), &r.namespace)
                    .get(&r.pod)
                    .await
                    .map_err(|e| {
                        Status::not_found(format!("pod {}/{}: {e}", r.namespace, r.pod))
                    })?,
            ),
        };
        if pod.metadata.uid.as_deref() != Some(r.pod_uid.as_str()) {
            return Err(Status::not_found(format!(
                "pod {}/{} ({}) is gone",
                r.namespace, r.pod, r.pod_uid
            )));
        }
        if !pod.annotations().contains_key(AGENT_ANNOTATION) {
            return Err(Status::failed_precondition(format!(
                "pod {}/{} has no annotation {AGENT_ANNOTATION}",
                r.namespace, r.pod
            )));
        }
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == HEALTHY_CONDITION));
        let now = jiff::Timestamp::now();
        let age = current
            .and_then(|c| c.last_probe_time.as_ref())
            .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok());
        let want = condition_for(
            current.map(|c| {
                (
                    c.status.as_str(),
                    c.reason.as_deref().unwrap_or(""),
                    c.message.as_deref().unwrap_or(""),
                )
            }),
            age,
            self.heartbeat(),
            r.healthy,
            &r.reason,
            &r.message,
        );
        if let Some(h) = want {
            let transition = if h.transition {
                Some(Time(now))
            } else {
                current.and_then(|c| c.last_transition_time.clone())
            };
            let patch = json!({
                "metadata": {"uid": r.pod_uid},
                "status": {"conditions": [{
                    "type": HEALTHY_CONDITION, "status": h.status, "reason": h.reason,
                    "message": h.message, "lastProbeTime": Time(now), "lastTransitionTime": transition,
                }]}
            });
            Api::<Pod>::namespaced(self.client.clone(), &r.namespace)
                .patch_status(&r.pod, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .map_err(|e| match e {
                    kube::Error::Api(s) if s.code == 404 || s.code == 409 => {
                        Status::not_found(format!("pod {}/{} is gone", r.namespace, r.pod))
                    }
                    e => Status::unavailable(format!("recording the pod's health: {e}")),
                })?;
            tracing::debug!(pod = %format!("{}/{}", r.namespace, r.pod), status = h.status, reason = %h.reason, "agent report recorded");
        }
        Ok(Response::new(ReportReply {
            heartbeat_seconds: self.heartbeat().as_secs() as i32,
        }))
    }
}

/// Marks a silent agent's pod `healthy=False` (`AgentSilent`), by the Lease holder.
/// The cached pod's resourceVersion is the precondition: a report another replica recorded
/// meanwhile wins (409), and the pod is looked at again with it.
pub async fn mark_silent(client: &Client, pod: &Pod, age: Duration) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == HEALTHY_CONDITION));
    let transition = match current {
        Some(c) if c.status == "False" => c.last_transition_time.clone(),
        _ => Some(Time(jiff::Timestamp::now())),
    };
    let patch = json!({
        "metadata": {"uid": pod.metadata.uid, "resourceVersion": pod.metadata.resource_version},
        "status": {"conditions": [{
            "type": HEALTHY_CONDITION, "status": "False", "reason": AGENT_SILENT,
            "message": format!("no report from triton-agent for {}s (agent stopped, unreachable, or refused)", age.as_secs()),
            "lastTransitionTime": transition,
        }]}
    });
    match Api::<Pod>::namespaced(client.clone(), &ns)
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_pod_comes_from_the_service_account_and_the_pod_claims() {
        let extra = [
            (POD_NAME_KEY.to_string(), vec!["p".to_string()]),
            (POD_UID_KEY.to_string(), vec!["u".to_string()]),
        ]
        .into();
        assert_eq!(
            bound_pod("system:serviceaccount:ns:default", &extra),
            Some(BoundPod {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into()
            })
        );
        assert_eq!(bound_pod("alice", &extra), None);
        assert_eq!(
            bound_pod("system:serviceaccount:ns:default", &Default::default()),
            None
        );
    }

    #[test]
    fn a_jwt_expiry_is_read_from_its_payload() {
        use base64::Engine;
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1900000000}"#);
        assert_eq!(jwt_expiry(&format!("h.{p}.s")), Some(1_900_000_000));
        assert_eq!(jwt_expiry("garbage"), None);
    }

    #[test]
    fn unhealthy_before_the_first_success_is_starting_and_after_it_a_failure() {
        let r = Duration::from_secs(20);
        let first = condition_for(None, None, r, false, "HTTPStatus", "503").unwrap();
        assert_eq!(
            (first.status, first.reason.as_str(), first.transition),
            ("False", STARTING, true)
        );
        let up = condition_for(
            Some(("False", STARTING, "503")),
            Some(r),
            r,
            true,
            "",
            "200",
        )
        .unwrap();
        assert_eq!((up.status, up.reason.as_str()), ("True", "ProbeSucceeded"));
        let down = condition_for(
            Some(("True", "ProbeSucceeded", "200")),
            None,
            r,
            false,
            "HTTPStatus",
            "500",
        )
        .unwrap();
        assert_eq!((down.status, down.reason.as_str()), ("False", "HTTPStatus"));
        // Same verdict, recent heartbeat: nothing to write; an old one: refreshed.
        assert_eq!(
            condition_for(
                Some(("True", "ProbeSucceeded", "200")),
                Some(Duration::from_secs(1)),
                r,
                true,
                "",
                "200"
            ),
            None
        );
        assert!(
            condition_for(
                Some(("True", "ProbeSucceeded", "200")),
                Some(Duration::from_secs(30)),
                r,
                true,
                "",
                "200"
            )
            .is_some()
        );
    }

    #[test]
    fn reserved_or_odd_reasons_from_an_agent_are_not_taken_as_given() {
        let r = Duration::from_secs(20);
        let forged = condition_for(
            Some(("True", "ProbeSucceeded", "")),
            None,
            r,
            false,
            STARTING,
            "x",
        )
        .unwrap();
        assert_eq!(
            forged.reason, "ProbeFailed",
            "an agent cannot hide a failure as Starting"
        );
        let long = condition_for(
            Some(("True", "ProbeSucceeded", "")),
            None,
            r,
            false,
            &"A".repeat(100),
            "x",
        )
        .unwrap();
        assert_eq!(long.reason, "ProbeFailed");
        let silent = condition_for(
            Some(("True", "ProbeSucceeded", "")),
            None,
            r,
            false,
            AGENT_SILENT,
            "x",
        )
        .unwrap();
        assert_eq!(silent.reason, "ProbeFailed");
    }

    fn pod_with(reason: &str, probed_secs_ago: i64) -> Pod {
        let now = jiff::Timestamp::now();
        let probed = now - jiff::SignedDuration::from_secs(probed_secs_ago);
        let status = if reason == "ProbeSucceeded" {
            "True"
        } else {
            "False"
        };
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"conditions": [
            {"type": HEALTHY_CONDITION, "status": status, "reason": reason,
             "lastProbeTime": probed.to_string()}]}}))
        .unwrap()
    }

    #[test]
    fn silence_is_judged_on_pods_that_were_healthy_once_from_their_last_heartbeat() {
        let now = jiff::Timestamp::now();
        let w = Duration::from_secs(60);
        assert!(matches!(
            silence(&pod_with("ProbeSucceeded", 61), now, w),
            Silence::Silent(_)
        ));
        assert!(matches!(
            silence(&pod_with("ProbeSucceeded", 10), now, w),
            Silence::CheckIn(d) if d > Duration::from_secs(45) && d <= Duration::from_secs(51)
        ));
        assert!(matches!(
            silence(&pod_with("HTTPStatus", 61), now, w),
            Silence::Silent(_)
        ));
        assert_eq!(
            silence(&pod_with(STARTING, 600), now, w),
            Silence::Unknown,
            "a starting pod is bounded by the smoke timeout"
        );
        assert_eq!(
            silence(&pod_with(AGENT_SILENT, 600), now, w),
            Silence::Unknown,
            "already marked"
        );
    }
}
