//! AdmissionReview handling: request bytes in, status code and response bytes out. Pure and total:
//! every input gets a well-formed answer, never a panic or a 5xx.
//!
//! * a body that is not an `admission.k8s.io/v1` AdmissionReview with a request: HTTP 400 and an
//!   AdmissionReview whose response is `invalid` (allowed: false) with the reason;
//! * a review whose object is not a Pod, or an operation other than CREATE: allowed, unchanged
//!   (the webhook configuration should never send these; allowing is the safe answer);
//! * a pod that cannot be decoded: HTTP 200, allowed: false, with the reason;
//! * a managed pod with the agent annotation while the agent is not enabled: allowed: false,
//!   code 403, the message says the agent is not available and to remove the annotation;
//! * a managed pod with a bad agent annotation: allowed: false, code 400, the message names the
//!   annotation;
//! * otherwise allowed, with a JSON Patch when something is injected.

use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::mutate::{AgentSettings, Decision, MutateError, mutate};

/// The outcome of one review, a bounded label for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Allowed with a patch.
    Patched,
    /// Allowed without a patch (unmanaged, or already up to date).
    Allowed,
    /// Refused: the pod is managed but asks for something invalid.
    Denied,
    /// The request itself was malformed.
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

/// The answer to one HTTP request carrying an AdmissionReview.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub outcome: Outcome,
    pub body: Vec<u8>,
    /// Why the request was refused or rejected, for the log.
    pub reason: Option<String>,
}

const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";

/// Reviews a pod-creation AdmissionReview. `agent` is `None` unless the readiness agent is
/// enabled (see [`mutate`]).
pub fn review(body: &[u8], agent: Option<&AgentSettings>) -> Answer {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return invalid(format!("the body is not an AdmissionReview: {e}")),
    };
    if review.types.api_version != REVIEW_API_VERSION || review.types.kind != "AdmissionReview" {
        return invalid(format!(
            "unsupported apiVersion/kind {:?}/{:?}: only {REVIEW_API_VERSION}/AdmissionReview is served",
            review.types.api_version, review.types.kind
        ));
    }
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => return invalid("the AdmissionReview has no request".into()),
    };
    let response = AdmissionResponse::from(&request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    if !is_pod || request.operation != Operation::Create || request.sub_resource.is_some() {
        return answer(response, Outcome::Allowed, None);
    }
    let Some(object) = request.object else {
        return answer(
            response.deny("the pod CREATE review carries no object"),
            Outcome::Denied,
            Some("no object".into()),
        );
    };
    let pod: Pod = match object.try_parse() {
        Ok(p) => p,
        Err(e) => {
            let reason = format!("the object is not a valid Pod: {e}");
            return answer(response.deny(&reason), Outcome::Denied, Some(reason));
        }
    };
    match mutate(&pod, agent) {
        Ok(Decision::NotManaged | Decision::UpToDate) => answer(response, Outcome::Allowed, None),
        Ok(Decision::Patch(patch)) => match response.clone().with_patch(patch) {
            Ok(r) => answer(r, Outcome::Patched, None),
            Err(e) => {
                let reason = format!("could not serialize the patch: {e}");
                answer(response.deny(&reason), Outcome::Denied, Some(reason))
            }
        },
        Err(e) => {
            let reason = e.to_string();
            let mut response = response.deny(&reason);
            (response.result.code, response.result.reason) = match e {
                MutateError::BadAgentAnnotation(_) => (400, "BadRequest".into()),
                MutateError::AgentUnavailable => (403, "Forbidden".into()),
            };
            answer(response, Outcome::Denied, Some(reason))
        }
    }
}

fn answer(response: AdmissionResponse, outcome: Outcome, reason: Option<String>) -> Answer {
    let body = serde_json::to_vec(&response.into_review()).unwrap_or_else(|e| {
        // Cannot happen for these types; still answer with valid JSON.
        format!(r#"{{"error":"serializing the response failed: {e}"}}"#).into_bytes()
    });
    Answer {
        status: 200,
        outcome,
        body,
        reason,
    }
}

/// An `invalid` answer (HTTP 400) for a request we cannot read.
pub fn invalid(reason: String) -> Answer {
    let mut answer = answer(
        AdmissionResponse::invalid(&reason),
        Outcome::Invalid,
        Some(reason),
    );
    answer.status = 400;
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use triton_core::names::READY_GATE;

    fn review_of(object: Value, operation: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default",
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kruise-system:kruise-manager"},
                "object": object,
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn managed_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "sample-", "labels": {"managed-by": "triton-io"},
                "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "sample", "uid": "1", "controller": true}]},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}
        })
    }

    fn response(answer: &Answer) -> Value {
        let v: Value = serde_json::from_slice(&answer.body).expect("answers are JSON");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        v["response"].clone()
    }

    #[test]
    fn managed_pod_create_is_patched_with_the_gate() {
        let answer = review(&review_of(managed_pod(), "CREATE"), None);
        assert_eq!((answer.status, answer.outcome), (200, Outcome::Patched));
        let resp = response(&answer);
        assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(resp["allowed"], true);
        assert_eq!(resp["patchType"], "JSONPatch");
        // kube serializes the patch bytes as a JSON array of numbers, which the API server's
        // decoder reads like a base64 string (the e2e tests check it with the real one).
        let bytes: Vec<u8> = serde_json::from_value(resp["patch"].clone()).expect("patch bytes");
        let patch: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/spec/readinessGates", "value": [{"conditionType": READY_GATE}]}])
        );
    }

    #[test]
    fn update_is_allowed_unchanged() {
        let answer = review(&review_of(managed_pod(), "UPDATE"), None);
        assert_eq!(answer.outcome, Outcome::Allowed);
        assert!(response(&answer).get("patch").is_none());
    }

    #[test]
    fn bad_agent_annotation_is_denied_with_the_annotation_named() {
        let mut pod = managed_pod();
        pod["metadata"]["annotations"] = json!({"apps.triton.io/agent": "gopher://x"});
        let answer = review(&review_of(pod, "CREATE"), Some(&AgentSettings::default()));
        assert_eq!((answer.status, answer.outcome), (200, Outcome::Denied));
        let resp = response(&answer);
        assert_eq!(resp["allowed"], false);
        assert_eq!(resp["status"]["code"], 400, "{resp}");
        assert!(
            resp["status"]["message"]
                .as_str()
                .unwrap()
                .contains("apps.triton.io/agent"),
            "{resp}"
        );
    }

    fn annotated_managed_pod() -> Value {
        let mut pod = managed_pod();
        pod["metadata"]["annotations"] = json!({"apps.triton.io/agent": "http://:8080/healthz"});
        pod
    }

    #[test]
    fn agent_annotation_is_denied_with_403_when_the_agent_is_not_enabled() {
        let answer = review(&review_of(annotated_managed_pod(), "CREATE"), None);
        assert_eq!((answer.status, answer.outcome), (200, Outcome::Denied));
        let resp = response(&answer);
        assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(resp["allowed"], false);
        assert!(resp.get("patch").is_none(), "{resp}");
        assert_eq!(resp["status"]["code"], 403, "{resp}");
        assert_eq!(
            resp["status"]["message"],
            "the annotation apps.triton.io/agent asks for the triton-agent readiness sidecar, \
             which this cluster's Triton does not inject (--enable-agent=false); remove the annotation"
        );
    }

    #[test]
    fn agent_annotation_is_patched_with_the_sidecar_when_the_agent_is_enabled() {
        let answer = review(
            &review_of(annotated_managed_pod(), "CREATE"),
            Some(&AgentSettings::default()),
        );
        assert_eq!((answer.status, answer.outcome), (200, Outcome::Patched));
        let resp = response(&answer);
        let bytes: Vec<u8> = serde_json::from_value(resp["patch"].clone()).expect("patch bytes");
        let patch: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            patch
                .as_array()
                .unwrap()
                .iter()
                .any(|op| op["path"] == "/spec/containers/-"
                    && op["value"]["name"] == "triton-agent"),
            "{patch}"
        );
    }

    #[test]
    fn garbage_is_invalid_with_400_and_a_reason() {
        for body in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
        ] {
            let answer = review(body, None);
            assert_eq!(
                (answer.status, answer.outcome),
                (400, Outcome::Invalid),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            let resp = response(&answer);
            assert_eq!(resp["allowed"], false);
            assert!(!resp["status"]["message"].as_str().unwrap().is_empty());
        }
    }

    #[test]
    fn v1beta1_review_is_invalid() {
        let mut body: Value = serde_json::from_slice(&review_of(managed_pod(), "CREATE")).unwrap();
        body["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let answer = review(&serde_json::to_vec(&body).unwrap(), None);
        assert_eq!(answer.outcome, Outcome::Invalid);
    }

    #[test]
    fn undecodable_pod_is_denied_with_a_reason() {
        let answer = review(
            &review_of(
                json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": "nope"}}),
                "CREATE",
            ),
            None,
        );
        assert_eq!(answer.outcome, Outcome::Denied);
        assert!(
            response(&answer)["status"]["message"]
                .as_str()
                .unwrap()
                .contains("not a valid Pod")
        );
    }

    #[test]
    fn non_pod_kind_is_allowed_unchanged() {
        let mut body: Value =
            serde_json::from_slice(&review_of(json!({"metadata": {"name": "x"}}), "CREATE"))
                .unwrap();
        body["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
        let answer = review(&serde_json::to_vec(&body).unwrap(), None);
        assert_eq!(answer.outcome, Outcome::Allowed);
    }
}
