//! The agent against a stub of the controller's agent service and an application server, both
//! on 127.0.0.1: what it reports, when, with which token, and across a controller restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU16, AtomicU32, Ordering};
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use triton_proto::agent::agent_server::{Agent, AgentServer};
use triton_proto::agent::{HealthReport, ReportReply};

/// How long any expected report may take to arrive.
const WAIT: Duration = Duration::from_secs(10);

/// A report as the controller received it.
#[derive(Debug)]
struct Seen {
    authorization: Option<String>,
    report: HealthReport,
    /// Answered with Unauthenticated.
    refused: bool,
}

struct Stub {
    seen: mpsc::UnboundedSender<Seen>,
    heartbeat_seconds: Arc<AtomicI32>,
    refuse: Arc<AtomicU32>,
}

#[tonic::async_trait]
impl Agent for Stub {
    async fn report(
        &self,
        request: tonic::Request<HealthReport>,
    ) -> Result<tonic::Response<ReportReply>, tonic::Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let refused = self
            .refuse
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        let _ = self.seen.send(Seen {
            authorization,
            report: request.into_inner(),
            refused,
        });
        if refused {
            return Err(tonic::Status::unauthenticated("the stub refuses this one"));
        }
        Ok(tonic::Response::new(ReportReply {
            heartbeat_seconds: self.heartbeat_seconds.load(Ordering::Relaxed),
        }))
    }
}

/// The controller's agent service, stoppable and restartable on the same port.
struct Controller {
    port: u16,
    seen: mpsc::UnboundedReceiver<Seen>,
    tx: mpsc::UnboundedSender<Seen>,
    heartbeat_seconds: Arc<AtomicI32>,
    /// How many of the next reports to refuse.
    refuse: Arc<AtomicU32>,
    /// The serving certificate and key (PEM), for https.
    tls: Option<(String, String)>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Controller {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    async fn start_with(tls: Option<(String, String)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let mut c = Controller {
            port: listener.local_addr().unwrap().port(),
            seen,
            tx,
            heartbeat_seconds: Arc::default(),
            refuse: Arc::default(),
            tls,
            running: None,
        };
        c.serve(listener);
        c
    }

    fn serve(&mut self, listener: TcpListener) {
        let stub = Stub {
            seen: self.tx.clone(),
            heartbeat_seconds: self.heartbeat_seconds.clone(),
            refuse: self.refuse.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let mut builder = Server::builder();
        if let Some((cert, key)) = &self.tls {
            let identity = Identity::from_pem(cert, key);
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(identity))
                .unwrap();
        }
        let server = builder
            .add_service(AgentServer::new(stub))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            });
        let task = tokio::spawn(async move { server.await.expect("the stub server runs") });
        self.running = Some((stop, task));
    }

    async fn stop(&mut self) {
        let (stop, task) = self.running.take().expect("the stub is running");
        stop.send(()).unwrap();
        timeout(WAIT, task)
            .await
            .expect("the stub stops within 10s")
            .unwrap();
    }

    async fn restart(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next report matching `want`, skipping others.
    async fn report(&mut self, what: &str, want: impl Fn(&Seen) -> bool) -> Seen {
        let wait = async {
            loop {
                let seen = self.seen.recv().await.expect("the stub keeps its sender");
                if want(&seen) {
                    return seen;
                }
            }
        };
        match timeout(WAIT, wait).await {
            Ok(seen) => seen,
            Err(_) => panic!("no report {what} within {WAIT:?}"),
        }
    }
}

/// An application answering every GET with the current status.
struct App {
    port: u16,
    status: Arc<AtomicU16>,
}

impl App {
    async fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(status));
        let current = status.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let code = current.load(Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0; 512];
                    while !request.ends_with(b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        App { port, status }
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    fn target(&self) -> String {
        format!("http://:{}/healthz", self.port)
    }
}

/// A token directory; `write` replaces the token atomically, as the kubelet does.
struct Token(PathBuf);

impl Token {
    fn new(name: &str, content: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("triton-agent-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = Token(dir);
        t.write(content);
        t
    }

    fn write(&self, content: &str) {
        let tmp = self.0.join("token.tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(tmp, self.path()).unwrap();
    }

    fn path(&self) -> PathBuf {
        self.0.join("token")
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running agent; stopped (as by SIGTERM) when dropped.
struct Agent_(Option<oneshot::Sender<()>>);

impl Drop for Agent_ {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

fn agent(target: &str, controller: &str, token: &Path, extra: &[&str]) -> Agent_ {
    let token = token.to_str().unwrap();
    let flags = [
        "triton-agent",
        "--target",
        target,
        "--controller",
        controller,
        "--token-file",
        token,
        "--pod-name",
        "web-0",
        "--pod-namespace",
        "shop",
        "--pod-uid",
        "uid-1",
        "--period",
        "50ms",
        "--timeout",
        "1s",
    ];
    let args = triton_agent::Args::try_parse_from(flags.iter().chain(extra)).unwrap();
    let config = args.config().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(triton_agent::run(config, async {
        let _ = stopped.await;
    }));
    Agent_(Some(stop))
}

#[tokio::test]
async fn reports_the_first_probe_and_each_change_with_the_bearer_token() {
    let app = App::start(200).await;
    let mut controller = Controller::start().await;
    let token = Token::new("change", "token-1");
    let _agent = agent(
        &app.target(),
        &controller.address(),
        &token.path(),
        &["--failure-threshold", "2", "--heartbeat", "1h"],
    );

    let first = controller.report("after the first probe", |_| true).await;
    assert_eq!(first.authorization.as_deref(), Some("Bearer token-1"));
    let r = &first.report;
    assert_eq!(
        (r.namespace.as_str(), r.pod.as_str(), r.pod_uid.as_str()),
        ("shop", "web-0", "uid-1")
    );
    assert_eq!(r.target, app.target());
    assert!(r.healthy);
    assert_eq!(r.reason, "ProbeSucceeded");
    assert_eq!(
        r.message,
        format!("GET http://127.0.0.1:{}/healthz: 200", app.port)
    );
    assert_eq!(r.consecutive, 1);
    let healthy_since = r.since.unwrap();

    app.answer(503);
    let change = controller
        .report("of the change to unhealthy", |_| true)
        .await;
    let r = &change.report;
    assert!(!r.healthy, "the next report is the change: {r:?}");
    assert_eq!(r.reason, "HTTPStatus");
    assert_eq!(
        r.message,
        format!("GET http://127.0.0.1:{}/healthz: 503", app.port)
    );
    assert_eq!(r.consecutive, 2, "failure threshold 2");
    assert!(r.since.unwrap().seconds >= healthy_since.seconds);
    assert_ne!(r.since, Some(healthy_since));
}

#[tokio::test]
async fn heartbeats_repeat_the_verdict() {
    let app = App::start(200).await;
    let mut controller = Controller::start().await;
    let token = Token::new("heartbeat", "t");
    let _agent = agent(
        &app.target(),
        &controller.address(),
        &token.path(),
        &["--heartbeat", "100ms"],
    );
    for n in 0..4 {
        let seen = controller.report(&format!("number {n}"), |_| true).await;
        assert!(seen.report.healthy);
    }
}

#[tokio::test]
async fn the_controllers_heartbeat_interval_replaces_the_flag() {
    let app = App::start(200).await;
    let mut controller = Controller::start().await;
    controller.heartbeat_seconds.store(1, Ordering::Relaxed);
    let token = Token::new("reply-heartbeat", "t");
    let _agent = agent(
        &app.target(),
        &controller.address(),
        &token.path(),
        &["--heartbeat", "1h"],
    );
    for n in 0..3 {
        controller
            .report(&format!("number {n} (heartbeat 1s from the reply)"), |_| {
                true
            })
            .await;
    }
}

#[tokio::test]
async fn a_rotated_token_is_used_without_restarting() {
    let app = App::start(200).await;
    let mut controller = Controller::start().await;
    let token = Token::new("rotation", "old-token");
    let _agent = agent(
        &app.target(),
        &controller.address(),
        &token.path(),
        &["--heartbeat", "50ms"],
    );
    controller
        .report("with the old token", |s| {
            s.authorization.as_deref() == Some("Bearer old-token")
        })
        .await;
    token.write("new-token");
    controller
        .report("with the new token", |s| {
            s.authorization.as_deref() == Some("Bearer new-token")
        })
        .await;
    let next = controller.report("after the rotation", |_| true).await;
    assert_eq!(next.authorization.as_deref(), Some("Bearer new-token"));
}

#[tokio::test]
async fn after_a_controller_restart_it_reconnects_and_reports_what_changed_meanwhile() {
    let app = App::start(200).await;
    let mut controller = Controller::start().await;
    let token = Token::new("restart", "t");
    let _agent = agent(
        &app.target(),
        &controller.address(),
        &token.path(),
        &["--failure-threshold", "1", "--heartbeat", "100ms"],
    );
    controller
        .report("healthy before the restart", |s| s.report.healthy)
        .await;

    controller.stop().await;
    app.answer(500);
    controller.restart().await;
    let seen = controller
        .report("unhealthy after the restart", |s| !s.report.healthy)
        .await;
    assert_eq!(seen.report.reason, "HTTPStatus");
    assert_eq!(seen.authorization.as_deref(), Some("Bearer t"));
}

#[tokio::test]
async fn a_controller_that_is_down_at_start_gets_the_verdict_once_it_is_up() {
    let app = App::start(200).await;
    let mut controller = Controller::start().await;
    controller.stop().await;
    let token = Token::new("late", "t");
    let _agent = agent(
        &app.target(),
        &controller.address(),
        &token.path(),
        &["--heartbeat", "1h"],
    );
    controller.restart().await;
    let seen = controller
        .report("once the controller is up", |_| true)
        .await;
    assert!(seen.report.healthy);
}

#[tokio::test]
async fn reports_over_https_trusting_the_given_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let mut controller = Controller::start_with(Some((cert.pem(), key.serialize_pem()))).await;
    let app = App::start(200).await;
    let token = Token::new("tls", "tls-token");
    let ca_file = token.0.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let address = format!("https://localhost:{}", controller.port);
    let _agent = agent(
        &app.target(),
        &address,
        &token.path(),
        &["--controller-ca", ca_file.to_str().unwrap()],
    );
    let seen = controller.report("over https", |_| true).await;
    assert!(seen.report.healthy);
    assert_eq!(seen.authorization.as_deref(), Some("Bearer tls-token"));
}

#[tokio::test]
async fn a_refused_report_is_retried_until_the_controller_takes_it() {
    let app = App::start(200).await;
    let mut controller = Controller::start().await;
    controller.refuse.store(2, Ordering::Relaxed);
    let token = Token::new("refused", "t");
    let _agent = agent(
        &app.target(),
        &controller.address(),
        &token.path(),
        &["--heartbeat", "1h"],
    );
    for n in 1..=2 {
        let seen = controller
            .report(&format!("refused number {n}"), |_| true)
            .await;
        assert!(seen.refused);
    }
    let seen = controller
        .report("taken after two refusals", |_| true)
        .await;
    assert!(!seen.refused && seen.report.healthy, "{seen:?}");
}
