//! HTTPS (and plain admin) serving, routing and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Outcome};
use crate::metrics::Metrics;
use crate::mutate::AgentSettings;

/// Path the API server posts pod AdmissionReviews to.
pub const MUTATE_PATH: &str = "/mutate-pods";
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared state of the webhook.
pub struct App {
    /// The readiness-agent injection settings; `None` unless the agent is enabled.
    pub agent: Option<AgentSettings>,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    draining: AtomicBool,
}

impl App {
    pub fn new(agent: Option<AgentSettings>, max_body_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            agent,
            metrics: Metrics::default(),
            max_body_bytes,
            draining: AtomicBool::new(false),
        })
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Routes one request. `admin` listeners serve only health and metrics.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        admin: bool,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
            (&Method::GET, "/readyz") if self.draining.load(Ordering::SeqCst) => {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
            }
            (&Method::GET, "/readyz") => text(StatusCode::OK, "ok"),
            (&Method::GET, "/metrics") => {
                let mut r = text(StatusCode::OK, &self.metrics.encode());
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            (&Method::POST, MUTATE_PATH) if !admin => self.mutate(req).await,
            (_, MUTATE_PATH) if !admin => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST with an AdmissionReview",
            ),
            _ => text(StatusCode::NOT_FOUND, &format!("no such path: {path}")),
        }
    }

    async fn mutate(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let start = Instant::now();
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.starts_with("application/json"));
        let answer = if !json {
            let mut a = admission::invalid("Content-Type must be application/json".into());
            a.status = StatusCode::UNSUPPORTED_MEDIA_TYPE.as_u16();
            a
        } else {
            match Limited::new(req.into_body(), self.max_body_bytes)
                .collect()
                .await
            {
                Ok(body) => admission::review(&body.to_bytes(), self.agent.as_ref()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    let mut a = admission::invalid(format!(
                        "body larger than {} bytes",
                        self.max_body_bytes
                    ));
                    a.status = StatusCode::PAYLOAD_TOO_LARGE.as_u16();
                    a
                }
                Err(e) => admission::invalid(format!("reading the body failed: {e}")),
            }
        };
        let elapsed = start.elapsed();
        self.metrics.observe(answer.outcome, elapsed);
        match (&answer.reason, answer.outcome) {
            (Some(reason), Outcome::Invalid) => {
                tracing::warn!(outcome = answer.outcome.as_str(), %reason, "malformed admission request")
            }
            (Some(reason), _) => {
                tracing::info!(outcome = answer.outcome.as_str(), %reason, "pod refused")
            }
            (None, _) => tracing::debug!(
                outcome = answer.outcome.as_str(),
                micros = elapsed.as_micros() as u64,
                "reviewed"
            ),
        }
        let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
        *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST);
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves `app` on `listener` (TLS when `tls` is given) until `shutdown` turns true, then lets
/// open connections finish for up to `grace`.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let admin = tls.is_none();
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let svc = hyper::service::service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(req, admin).await) }
        });
        match &tls {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let conn = builder
                                .serve_connection(TokioIo::new(stream), svc)
                                .into_owned();
                            if let Err(error) = watcher.watch(conn).await {
                                tracing::debug!(%peer, %error, "connection ended with an error");
                            }
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            None => {
                let conn = builder
                    .serve_connection(TokioIo::new(tcp), svc)
                    .into_owned();
                let watched = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = watched.await;
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!(?grace, "connections still open after the grace period"),
    }
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Bind { addr, source })
}
