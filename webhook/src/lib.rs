//! triton-webhook: the mutating admission webhook for pods of Triton-managed CloneSets.
//!
//! * [`mutate`]: the pure mutation (pod -> JSON Patch), idempotent;
//! * [`admission`]: AdmissionReview bytes -> answer bytes, total (never panics, never 5xx);
//! * [`tls`]: the serving certificate, reloaded when its files change;
//! * [`server`]: HTTPS + admin HTTP serving with timeouts, a connection cap and graceful shutdown;
//! * [`config`]: flags with environment fallbacks.

pub mod admission;
pub mod config;
pub mod metrics;
pub mod mutate;
pub mod server;
pub use triton_core::tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use config::Args;

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the serving certificate: {0}")]
    LoadCertificate(#[from] tls::TlsError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the webhook until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(args: Args) -> Result<(), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = tls::ReloadingCert::load(&args.tls_cert, &args.tls_key, provider)?;
    let _reloader = cert.spawn_watcher(args.cert_reload_interval);
    let acceptor = TlsAcceptor::from(Arc::new(cert.server_config()));
    let app = server::App::new(args.agent(), args.limits());

    let listener = server::bind(args.listen).await?;
    let admin = match args.admin_listen.0 {
        Some(addr) => Some(server::bind(addr).await?),
        None => None,
    };
    tracing::info!(
        listen = %args.listen,
        admin = ?args.admin_listen.0,
        cert = %args.tls_cert.display(),
        agent = args.enable_agent,
        limits = ?args.limits(),
        "triton-webhook serving"
    );
    if !args.enable_agent {
        tracing::info!(
            "readiness agent disabled (--enable-agent=false): pods annotated {} are refused",
            triton_core::names::AGENT_ANNOTATION
        );
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(server::serve(
        app.clone(),
        listener,
        Some(acceptor),
        stop_rx.clone(),
        args.shutdown_grace,
    ));
    if let Some(admin) = admin {
        tasks.spawn(server::serve(
            app.clone(),
            admin,
            None,
            stop_rx,
            args.shutdown_grace,
        ));
    }

    shutdown_signal().await;
    tracing::info!(grace = ?args.shutdown_grace, "shutting down: draining connections");
    app.start_draining();
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Sets up `tracing` to stdout, as JSON or text.
pub fn init_logging(format: &str) {
    triton_core::logging::init(format);
}
