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

pub struct Metrics {
    registry: Registry,
    releases: Family<PhaseLabels, Gauge>,
    transitions: Family<PhaseLabels, Counter>,
    transition_latency: Histogram,
    reconcile: Histogram,
    errors: Family<ErrorLabels, Counter>,
    undecodable: Counter,
    api_streams: Gauge,
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
