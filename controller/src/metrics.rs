//! Prometheus metrics with bounded labels: transitions by phase, reconcile latency, API errors.

use std::fmt::Write;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
    transitions: Family<PhaseLabels, Counter>,
    reconcile: Histogram,
    errors: Family<ErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("triton_controller");
        let transitions = Family::<PhaseLabels, Counter>::default();
        let reconcile = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let errors = Family::<ErrorLabels, Counter>::default();
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
        Self {
            registry,
            transitions,
            reconcile,
            errors,
        }
    }
}

impl Metrics {
    pub fn transition(&self, _from: DeployPhase, to: DeployPhase, _took: Duration) {
        self.transitions
            .get_or_create(&PhaseLabels { phase: Phase(to) })
            .inc();
    }
    pub fn reconciled(&self, took: Duration) {
        self.reconcile.observe(took.as_secs_f64());
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
