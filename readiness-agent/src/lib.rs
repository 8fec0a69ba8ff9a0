//! triton-agent: the per-pod readiness agent.
//!
//! Two threads: the probe thread (probe with blocking calls, feed the [`verdict::Verdict`],
//! publish the [`report::Snapshot`] in place) and a current-thread tokio runtime for the
//! [`report::Reporter`] (report on change and as a heartbeat, retrying with backoff). A controller
//! outage only delays reports; probing never stops.
//!
//! Why a thread for probing rather than a task: a probe as tokio I/O wakes the runtime four times
//! (the timer twice, connect, answer) and, measured, cost about four times the CPU of the same
//! probe as blocking calls on a thread that wakes once per period (README, "triton-agent"); the
//! runtime now sleeps between reports. And a blocking probe allocates nothing.

pub mod backoff;
pub mod config;
pub mod logging;
pub mod probe;
pub mod report;
pub mod target;
pub mod token;
pub mod verdict;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{debug, info};

pub use config::{Args, Config};

use crate::probe::Prober;
use crate::report::{Reporter, Snapshot};
use crate::token::TokenFile;
use crate::verdict::Verdict;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading --controller-ca {path}: {source}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("configuring TLS for {controller}: {source}")]
    ConfigureTls {
        controller: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("--controller-ca is only for an https:// controller (got {0})")]
    CaWithoutTls(String),
    #[error("reading the token file {path}: {source}")]
    ReadToken {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the token file {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error("the token in {path} has characters an HTTP header cannot carry")]
    BadToken { path: PathBuf },
    #[error("report failed: {:?}: {}", .0.code(), status_message(.0))]
    Report(#[source] tonic::Status),
    #[error("installing the signal handlers: {0}")]
    Signal(#[source] io::Error),
    #[error("starting the probe thread: {0}")]
    SpawnProbe(#[source] io::Error),
    #[error("the probe thread stopped")]
    ProbeStopped,
}

/// The status message, or its transport cause when the message is only a summary.
fn status_message(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Error {
    /// A few fixed values, for logs (and metrics, were there any).
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadCa { .. } | Error::ConfigureTls { .. } | Error::CaWithoutTls(_) => "config",
            Error::ReadToken { .. } | Error::EmptyToken { .. } | Error::BadToken { .. } => "token",
            Error::Report(status) => match status.code() {
                tonic::Code::Unauthenticated => "unauthenticated",
                tonic::Code::PermissionDenied => "permission_denied",
                tonic::Code::Unavailable => "unavailable",
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => "timeout",
                _ => "rejected",
            },
            Error::Signal(_) | Error::SpawnProbe(_) | Error::ProbeStopped => "internal",
        }
    }
}

/// Probes and reports until `shutdown` completes (or the probe thread dies, which is an error).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    info!(
        target = %config.target,
        controller = %config.controller.uri(),
        pod = %config.pod.name,
        namespace = %config.pod.namespace,
        period = ?config.period,
        timeout = ?config.timeout,
        success_threshold = config.thresholds.success,
        failure_threshold = config.thresholds.failure,
        heartbeat = ?config.heartbeat,
        "triton-agent starting"
    );
    let start = SystemTime::now();
    let (tx, rx) = watch::channel(Snapshot::initial(start));
    let reporter = Reporter::new(
        config.controller,
        TokenFile::new(config.token_file),
        config.pod,
        config.target.to_string(),
        config.heartbeat,
    );
    let probes = Probes {
        prober: Prober::new(config.target, config.timeout),
        verdict: Verdict::new(config.thresholds, start),
    };
    let period = config.period;
    std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || probe_loop(probes, period, &tx))
        .map_err(Error::SpawnProbe)?;
    tokio::select! {
        () = shutdown => {
            info!("shutting down");
            Ok(())
        }
        // The reporter returns only when the probe thread is gone.
        () = reporter.run(rx) => Err(Error::ProbeStopped),
    }
}

/// Probes every `period` (a slow probe delays the next rather than bunching them) until the
/// reporter is gone.
fn probe_loop(mut probes: Probes, period: Duration, verdicts: &watch::Sender<Snapshot>) {
    let mut next = Instant::now();
    while !verdicts.is_closed() {
        probes.probe_and_publish(verdicts);
        let now = Instant::now();
        next = (next + period).max(now);
        std::thread::sleep(next - now);
    }
}

/// The probe thread's state: the prober and the verdict.
pub struct Probes {
    pub prober: Prober,
    pub verdict: Verdict,
}

impl Probes {
    /// Probes once and publishes the result in place, notifying the reporter when the verdict
    /// changed or on the first probe. Allocates nothing once the message buffer is large enough.
    pub fn probe_and_publish(&mut self, verdicts: &watch::Sender<Snapshot>) {
        let outcome = self.prober.probe();
        let step = self.verdict.observe(outcome.success(), SystemTime::now());
        verdicts.send_if_modified(|s| {
            s.healthy = self.verdict.healthy();
            s.reason = outcome.reason();
            self.prober.describe(outcome, &mut s.message);
            s.consecutive = self.verdict.consecutive();
            s.since = self.verdict.since();
            if step.changed {
                info!(healthy = s.healthy, reason = s.reason, detail = %s.message, "verdict changed");
            } else if step.report {
                info!(healthy = s.healthy, reason = s.reason, detail = %s.message, "first probe");
            } else {
                debug!(healthy = s.healthy, reason = s.reason, detail = %s.message, "probed");
            }
            step.report
        });
    }
}

/// Completes on SIGTERM (the kubelet stopping the pod) or SIGINT.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
