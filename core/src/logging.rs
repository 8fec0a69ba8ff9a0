//! Logging setup shared by the binaries: `tracing` to stdout, JSON or text, filtered by
//! `RUST_LOG` (default `info`, with `kube` at `warn`).

/// Installs the global subscriber. `format` is "json" or "text".
pub fn init(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
