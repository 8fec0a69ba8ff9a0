//! Logging to stdout, text or JSON, filtered by `RUST_LOG` (default `info`).
//!
//! Like `triton_core::logging`, but with the `Targets` filter (`info,h2=debug`: levels per
//! target prefix) instead of `EnvFilter`, whose regex engine would add ~0.3 MiB to the binary.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The filter from `RUST_LOG`; `info` when unset, and when unparsable (with a warning, once the
/// subscriber is installed).
fn filter(rust_log: Option<&str>) -> (Targets, Option<String>) {
    let default = Targets::new().with_default(LevelFilter::INFO);
    match rust_log.map(str::parse::<Targets>) {
        None => (default, None),
        Some(Ok(targets)) => (targets, None),
        Some(Err(e)) => (default, Some(e.to_string())),
    }
}

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (targets, bad) = filter(rust_log.as_deref());
    let layer = tracing_subscriber::fmt::layer().with_target(false);
    let registry = tracing_subscriber::registry().with(targets);
    match format {
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).init(),
        LogFormat::Text => registry.with(layer).init(),
    }
    if let Some(error) = bad {
        tracing::warn!(%error, rust_log, "ignoring RUST_LOG; logging at info");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_sets_levels_per_target_and_defaults_to_info() {
        let (t, bad) = filter(None);
        assert!(bad.is_none());
        assert_eq!(t.default_level(), Some(LevelFilter::INFO));
        let (t, bad) = filter(Some("warn,triton_agent=debug"));
        assert!(bad.is_none());
        assert!(t.would_enable("triton_agent::report", &tracing::Level::DEBUG));
        assert!(!t.would_enable("h2", &tracing::Level::INFO));
        let (t, bad) = filter(Some("triton_agent=loud"));
        assert!(bad.is_some());
        assert_eq!(t.default_level(), Some(LevelFilter::INFO));
    }
}
