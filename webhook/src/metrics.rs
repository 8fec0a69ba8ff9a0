//! Prometheus metrics: request count and latency by outcome (a bounded label), certificate reloads.

use std::time::Duration;

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::admission::Outcome;

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    pub outcome: Outcome,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("triton_webhook");
        let requests = Family::<Labels, Counter>::default();
        // 25 µs .. ~0.8 s
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000025, 2.0, 16))
        });
        registry.register(
            "admission_requests",
            "AdmissionReviews answered, by outcome",
            requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an AdmissionReview, by outcome",
            latency.clone(),
        );
        Self {
            registry,
            requests,
            latency,
        }
    }
}

impl Metrics {
    pub fn observe(&self, outcome: Outcome, elapsed: Duration) {
        let labels = Labels { outcome };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
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
    fn requests_are_counted_by_outcome() {
        let m = Metrics::default();
        m.observe(Outcome::Patched, Duration::from_micros(80));
        m.observe(Outcome::Patched, Duration::from_micros(90));
        m.observe(Outcome::Invalid, Duration::from_micros(10));
        let text = m.encode();
        assert!(
            text.contains(r#"triton_webhook_admission_requests_total{outcome="patched"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"triton_webhook_admission_requests_total{outcome="invalid"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"triton_webhook_admission_duration_seconds_count{outcome="patched"} 2"#
            ),
            "{text}"
        );
    }
}
