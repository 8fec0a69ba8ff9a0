//! Prometheus metrics with bounded labels: transitions by phase, reconcile latency, API errors.

use std::fmt::Write;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use triton_core::release::DeployPhase;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Phase(pub DeployPhase);

impl EncodeLabelValue for Phase {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(if self.0 == DeployPhase::New {
            "New"
        } else {
            self.0.as_str()
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: Phase,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub resource: &'static str,
}

/// The resources the controller's client touches; anything else is counted as "other", so the
/// label set stays bounded whatever a URL holds.
const RESOURCES: [&str; 12] = [
    "pods",
    "deployflows",
    "clonesets",
    "controllerrevisions",
    "services",
    "endpointslices",
    "events",
    "leases",
    "tokenreviews",
    "subjectaccessreviews",
    "namespaces",
    "customresourcedefinitions",
];

/// The verb and resource of a request to the Kubernetes API, from its method and URL:
/// `/api/v1/namespaces/{ns}/pods/{name}/status` is a `patch` (or get…) of `pods`; a collection
/// GET is a `list`, or a `watch` with `watch=true`.
pub fn classify(method: &http::Method, uri: &http::Uri) -> RequestLabels {
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // Past the group and version: ["api", v] or ["apis", group, v].
    let rest: &[&str] = match segs.first() {
        Some(&"api") => segs.get(2..).unwrap_or(&[]),
        Some(&"apis") => segs.get(3..).unwrap_or(&[]),
        _ => &[],
    };
    // namespaces/{ns}/{resource}…; a bare namespaces[/{name}] is the namespace itself.
    let rest = match rest {
        ["namespaces", _, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    let resource = rest
        .first()
        .and_then(|r| RESOURCES.iter().find(|k| *k == r))
        .copied()
        .unwrap_or("other");
    let named = rest.len() > 1;
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    RequestLabels { verb, resource }
}

pub struct Metrics {
    registry: Registry,
    releases: Family<PhaseLabels, Gauge>,
    transitions: Family<PhaseLabels, Counter>,
    transition_latency: Histogram,
    reconcile: Histogram,
    errors: Family<ErrorLabels, Counter>,
    undecodable: Counter,
    api_streams: Gauge,
    kube_requests: Family<RequestLabels, Counter>,
    gate_reconciles: Counter,
}

/// Every phase, so the releases gauge reports zeros too.
const PHASES: [DeployPhase; 9] = [
    DeployPhase::New,
    DeployPhase::Pending,
    DeployPhase::Initializing,
    DeployPhase::BatchStarted,
    DeployPhase::BatchFinished,
    DeployPhase::Success,
    DeployPhase::Failed,
    DeployPhase::Aborted,
    DeployPhase::Canceled,
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("triton_controller");
        let releases = Family::<PhaseLabels, Gauge>::default();
        let transitions = Family::<PhaseLabels, Counter>::default();
        let transition_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let reconcile = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let errors = Family::<ErrorLabels, Counter>::default();
        let undecodable = Counter::default();
        let api_streams = Gauge::default();
        let kube_requests = Family::<RequestLabels, Counter>::default();
        let gate_reconciles = Counter::default();
        registry.register(
            "kube_requests",
            "Requests this controller sent to the Kubernetes API server, by verb and resource \
             (Events, Lease renewals and API-caller reviews included)",
            kube_requests.clone(),
        );
        registry.register(
            "gate_reconciles",
            "Pod readiness-gate reconciles",
            gate_reconciles.clone(),
        );
        registry.register(
            "api_streams",
            "Open API streams (Watch, ListAndWatch, Pause, Resume, Cancel)",
            api_streams.clone(),
        );
        registry.register(
            "undecodable_deployflows",
            "DeployFlows skipped because the controller cannot read them (see their Invalid Events)",
            undecodable.clone(),
        );
        registry.register("releases", "DeployFlows by phase", releases.clone());
        registry.register(
            "phase_transitions",
            "DeployFlow phase transitions, by the phase entered",
            transitions.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time of one DeployFlow reconcile, writes included",
            reconcile.clone(),
        );
        registry.register(
            "api_errors",
            "Failed reconciles, by what failed",
            errors.clone(),
        );
        registry.register(
            "transition_latency_seconds",
            "Time from the event that enabled a phase change to its status write",
            transition_latency.clone(),
        );
        Self {
            registry,
            releases,
            transitions,
            transition_latency,
            reconcile,
            errors,
            undecodable,
            api_streams,
            kube_requests,
            gate_reconciles,
        }
    }
}

impl Metrics {
    /// A phase change; `took` runs from the reconcile's start (the enabling event's delivery)
    /// to the status write.
    pub fn transition(&self, to: DeployPhase, took: Duration) {
        self.transitions
            .get_or_create(&PhaseLabels { phase: Phase(to) })
            .inc();
        self.transition_latency.observe(took.as_secs_f64());
    }

    /// Sets the releases-by-phase gauge from the current DeployFlows' phases.
    pub fn set_releases(&self, phases: impl IntoIterator<Item = DeployPhase>) {
        let mut counts = std::collections::HashMap::new();
        for p in phases {
            *counts.entry(p).or_insert(0i64) += 1;
        }
        for p in PHASES {
            let n = counts.get(&p).copied().unwrap_or(0);
            self.releases
                .get_or_create(&PhaseLabels { phase: Phase(p) })
                .set(n);
        }
    }
    pub fn set_api_streams(&self, n: i64) {
        self.api_streams.set(n);
    }
    pub fn reconciled(&self, took: Duration) {
        self.reconcile.observe(took.as_secs_f64());
    }
    /// Counts one request to the API server (called by the client's request layer).
    pub fn kube_request(&self, method: &http::Method, uri: &http::Uri) {
        self.kube_requests
            .get_or_create(&classify(method, uri))
            .inc();
    }
    pub fn gate_reconciled(&self) {
        self.gate_reconciles.inc();
    }
    pub fn undecodable(&self) {
        self.undecodable.inc();
    }
    pub fn api_error(&self, category: &'static str) {
        self.errors.get_or_create(&ErrorLabels { category }).inc();
    }
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(method: &str, uri: &str) -> (&'static str, &'static str) {
        let c = classify(&method.parse().unwrap(), &uri.parse().unwrap());
        (c.verb, c.resource)
    }

    #[test]
    fn requests_are_classified_by_verb_and_resource() {
        assert_eq!(
            class("GET", "/api/v1/namespaces/a/pods/p1"),
            ("get", "pods")
        );
        assert_eq!(
            class(
                "PATCH",
                "/api/v1/namespaces/a/pods/p1/status?fieldManager=x"
            ),
            ("patch", "pods")
        );
        assert_eq!(
            class("GET", "/api/v1/pods?labelSelector=managed-by%3Dtriton-io"),
            ("list", "pods")
        );
        assert_eq!(
            class(
                "GET",
                "/api/v1/pods?allowWatchBookmarks=true&watch=true&resourceVersion=5"
            ),
            ("watch", "pods")
        );
        assert_eq!(
            class(
                "PATCH",
                "/apis/apps.triton.io/v1alpha1/namespaces/a/deployflows/d/status"
            ),
            ("patch", "deployflows")
        );
        assert_eq!(
            class(
                "PUT",
                "/apis/apps.kruise.io/v1alpha1/namespaces/a/clonesets/c"
            ),
            ("update", "clonesets")
        );
        assert_eq!(
            class("POST", "/apis/events.k8s.io/v1/namespaces/a/events"),
            ("create", "events")
        );
        assert_eq!(class("GET", "/api/v1/namespaces/a"), ("get", "namespaces"));
        assert_eq!(
            class("POST", "/apis/authentication.k8s.io/v1/tokenreviews"),
            ("create", "tokenreviews")
        );
        assert_eq!(
            class("GET", "/apis/x.io/v1/namespaces/a/secrets/s"),
            ("get", "other")
        );
        assert_eq!(class("GET", "/version"), ("list", "other"));
    }

    #[test]
    fn releases_by_phase_and_transitions_are_exported() {
        let m = Metrics::default();
        m.set_releases([
            DeployPhase::Success,
            DeployPhase::Success,
            DeployPhase::BatchStarted,
        ]);
        m.transition(DeployPhase::Success, Duration::from_millis(3));
        let text = m.encode();
        assert!(
            text.contains(r#"triton_controller_releases{phase="Success"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"triton_controller_releases{phase="Canceled"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"triton_controller_phase_transitions_total{phase="Success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("triton_controller_transition_latency_seconds_count 1"),
            "{text}"
        );
    }
}
