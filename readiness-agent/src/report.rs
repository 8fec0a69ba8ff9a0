//! Reporting to the controller's agent service: on every change of the verdict and as a
//! heartbeat, retried with jittered backoff for as long as it takes, always with the latest
//! verdict. An outage is logged when it starts (and when its cause changes) and when it ends.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};
use triton_proto::agent::agent_client::AgentClient;
use triton_proto::agent::{HealthReport, ReportReply};

use crate::Error;
use crate::backoff::Backoff;
use crate::config::Pod;
use crate::token::TokenFile;

/// The first retry's ceiling, doubling up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The latest verdict, written by the probe loop and read for each report.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub healthy: bool,
    pub reason: &'static str,
    pub message: String,
    pub consecutive: u32,
    pub since: SystemTime,
}

impl Snapshot {
    /// Before the first probe: unhealthy since the agent's start.
    pub fn initial(start: SystemTime) -> Self {
        Self {
            healthy: false,
            reason: "NotProbedYet",
            message: String::with_capacity(128),
            consecutive: 0,
            since: start,
        }
    }
}

/// Sends reports; owns the connection and the token.
pub struct Reporter {
    endpoint: Endpoint,
    /// Dropped after a failure so that the next attempt opens a fresh connection.
    channel: Option<Channel>,
    token: TokenFile,
    pod: Pod,
    target: String,
    /// The heartbeat asked for on the command line, and the one in force (the controller's
    /// reply may change it).
    default_heartbeat: Duration,
    heartbeat: Duration,
    backoff: Backoff,
    outage: Option<Outage>,
}

struct Outage {
    started: Instant,
    failures: u32,
    /// The category of the last failure logged at warn.
    logged: &'static str,
}

impl Reporter {
    pub fn new(
        endpoint: Endpoint,
        token: TokenFile,
        pod: Pod,
        target: String,
        heartbeat: Duration,
    ) -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self {
            endpoint,
            channel: None,
            token,
            pod,
            target,
            default_heartbeat: heartbeat,
            heartbeat,
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX, seed),
            outage: None,
        }
    }

    /// Reports after the first probe, then on every notified change and every heartbeat, until
    /// the probe loop goes away.
    pub async fn run(mut self, mut verdicts: watch::Receiver<Snapshot>) {
        if verdicts.changed().await.is_err() {
            return;
        }
        loop {
            self.deliver(&mut verdicts).await;
            let next = Instant::now() + self.heartbeat;
            tokio::select! {
                changed = verdicts.changed() => if changed.is_err() { return },
                () = sleep_until(next) => {}
            }
        }
    }

    /// Sends the latest verdict until the controller takes it.
    async fn deliver(&mut self, verdicts: &mut watch::Receiver<Snapshot>) {
        loop {
            let report = self.report_of(&verdicts.borrow_and_update());
            match self.send(report).await {
                Ok(reply) => {
                    self.recovered();
                    self.heartbeat = match u64::try_from(reply.heartbeat_seconds) {
                        Ok(secs) if secs > 0 => Duration::from_secs(secs),
                        _ => self.default_heartbeat,
                    };
                    return;
                }
                Err(e) => {
                    self.failed(&e);
                    sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    fn report_of(&self, s: &Snapshot) -> HealthReport {
        HealthReport {
            namespace: self.pod.namespace.clone(),
            pod: self.pod.name.clone(),
            pod_uid: self.pod.uid.clone(),
            healthy: s.healthy,
            reason: s.reason.into(),
            message: s.message.clone(),
            target: self.target.clone(),
            consecutive: i32::try_from(s.consecutive).unwrap_or(i32::MAX),
            since: Some(s.since.into()),
        }
    }

    async fn send(&mut self, report: HealthReport) -> Result<ReportReply, Error> {
        let bearer = self.token.bearer()?;
        let channel = self
            .channel
            .get_or_insert_with(|| self.endpoint.connect_lazy())
            .clone();
        let mut request = tonic::Request::new(report);
        request.metadata_mut().insert("authorization", bearer);
        match AgentClient::new(channel).report(request).await {
            Ok(reply) => Ok(reply.into_inner()),
            Err(status) => {
                match status.code() {
                    // The token may have been rotated, or revoked: read it again.
                    Code::Unauthenticated => self.token.invalidate(),
                    // The controller answered: the connection is fine.
                    Code::PermissionDenied | Code::InvalidArgument | Code::NotFound => {}
                    _ => self.channel = None,
                }
                Err(Error::Report(status))
            }
        }
    }

    fn failed(&mut self, e: &Error) {
        let category = e.category();
        match &mut self.outage {
            None => {
                warn!(error = %e, "cannot report to the controller; retrying with backoff until it answers");
                self.outage = Some(Outage {
                    started: Instant::now(),
                    failures: 1,
                    logged: category,
                });
            }
            Some(outage) => {
                outage.failures += 1;
                if outage.logged != category {
                    warn!(error = %e, failures = outage.failures, "still cannot report to the controller, now for another reason");
                    outage.logged = category;
                } else {
                    debug!(error = %e, failures = outage.failures, "report failed again");
                }
            }
        }
    }

    fn recovered(&mut self) {
        self.backoff.reset();
        if let Some(outage) = self.outage.take() {
            info!(
                failures = outage.failures,
                outage = ?outage.started.elapsed(),
                "reporting to the controller again"
            );
        }
    }
}
