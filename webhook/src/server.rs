//! HTTPS (and plain admin) serving, routing and graceful shutdown.
//!
//! No client can hold a connection, or the memory behind it, for ever ([`Limits`]): a TLS
//! handshake must finish within `tls_handshake_timeout`; a request's headers must arrive within
//! `header_read_timeout` (the first request's counted from the end of the handshake, later ones
//! by hyper's HTTP/1 header timer); its body within `body_read_timeout`; a connection with no
//! request in flight for `idle_timeout` is closed (HTTP/2 with GOAWAY); and at most
//! `max_connections` are open per listener — beyond that no connection is accepted (new ones
//! wait in the kernel's listen backlog) until one closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Outcome};
use crate::metrics::Metrics;
use crate::mutate::AgentSettings;

/// Path the API server posts pod AdmissionReviews to.
pub const MUTATE_PATH: &str = "/mutate-pods";

/// What one client may hold, and for how long (the flags of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Per listener.
    pub max_connections: u32,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 1024,
            max_body_bytes: 3 * 1024 * 1024,
        }
    }
}

/// Shared state of the webhook.
pub struct App {
    /// The readiness-agent injection settings; `None` unless the agent is enabled.
    pub agent: Option<AgentSettings>,
    pub metrics: Metrics,
    pub limits: Limits,
    draining: AtomicBool,
}

impl App {
    pub fn new(agent: Option<AgentSettings>, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            agent,
            metrics: Metrics::default(),
            limits,
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
            let max = self.limits.max_body_bytes;
            let read = Limited::new(req.into_body(), max).collect();
            match tokio::time::timeout(self.limits.body_read_timeout, read).await {
                Ok(Ok(body)) => admission::review(&body.to_bytes(), self.agent.as_ref()),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    let mut a = admission::invalid(format!("body larger than {max} bytes"));
                    a.status = StatusCode::PAYLOAD_TOO_LARGE.as_u16();
                    a
                }
                Ok(Err(e)) => admission::invalid(format!("reading the body failed: {e}")),
                Err(_) => {
                    let mut a = admission::invalid(format!(
                        "the body did not arrive within {:?}",
                        self.limits.body_read_timeout
                    ));
                    a.status = StatusCode::REQUEST_TIMEOUT.as_u16();
                    a
                }
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
    let limits = app.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut at_cap = false;
    loop {
        // A free slot before accepting: at the cap, new connections wait in the listen backlog.
        if slots.available_permits() == 0 && !at_cap {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached: accepting again when a connection closes"
            );
        }
        at_cap = slots.available_permits() == 0;
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
            _ = stopped(&mut shutdown) => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        tokio::spawn(connection(
            app.clone(),
            tcp,
            peer,
            tls.clone(),
            builder.clone(),
            shutdown.clone(),
            permit,
        ));
    }
    drop(listener);
    // Every connection holds a slot until it is closed: all slots free means all drained.
    tokio::select! {
        _ = slots.acquire_many(limits.max_connections) => {}
        _ = tokio::time::sleep(grace) => tracing::warn!(?grace, "connections still open after the grace period"),
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: nobody can ask for a stop any more, so wait for ever.
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One accepted connection: TLS handshake (bounded), then HTTP until it closes.
async fn connection(
    app: Arc<App>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    mut shutdown: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve_http(app, tcp, peer, true, &builder, shutdown).await;
    };
    let timeout = app.limits.tls_handshake_timeout;
    tokio::select! {
        handshake = tokio::time::timeout(timeout, acceptor.accept(tcp)) => match handshake {
            Ok(Ok(stream)) => serve_http(app, stream, peer, false, &builder, shutdown).await,
            Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, ?timeout, "TLS handshake timed out: connection closed"),
        },
        _ = stopped(&mut shutdown) => {}
    }
}

/// What the requests on one connection tell its timer, in atomics: the request path never wakes
/// the timer task, which looks only when its deadline comes.
struct Activity {
    opened: Instant,
    started: AtomicU64,
    in_flight: AtomicUsize,
    /// When the last request finished, in microseconds after `opened`.
    last_done_us: AtomicU64,
}

/// A request in flight on its connection, while it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::SeqCst);
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let done = self.0.opened.elapsed().as_micros() as u64;
        self.0.last_done_us.store(done, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves HTTP/1 or HTTP/2 on one connection until the client closes it, it breaks, it sends no
/// first request within the header-read timeout, it stays idle for the idle timeout, or the
/// server shuts down.
async fn serve_http<IO>(
    app: Arc<App>,
    io: IO,
    peer: SocketAddr,
    admin: bool,
    builder: &auto::Builder<TokioExecutor>,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = app.limits;
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        started: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        last_done_us: AtomicU64::new(0),
    });
    let requests = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let app = app.clone();
        let request = InFlight::start(&requests);
        async move {
            let _request = request;
            Ok::<_, Infallible>(app.handle(req, admin).await)
        }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    // Until the first request arrives, hyper has no timer running (it is still reading the first
    // bytes to tell HTTP/1 from HTTP/2), so the header-read timeout is enforced here (or the idle
    // timeout, if shorter: the connection has been idle since it opened).
    let first = limits.header_read_timeout.min(limits.idle_timeout);
    let timer = tokio::time::sleep_until((activity.opened + first).into());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = timer.as_mut() => {
                let now = Instant::now();
                if activity.started.load(Ordering::SeqCst) == 0 {
                    tracing::debug!(%peer, timeout = ?first, "no request within the header-read timeout: connection closed");
                    return;
                }
                let next = if activity.in_flight.load(Ordering::SeqCst) > 0 {
                    now + limits.idle_timeout
                } else {
                    let done = Duration::from_micros(activity.last_done_us.load(Ordering::SeqCst));
                    activity.opened + done + limits.idle_timeout
                };
                if next <= now {
                    let timeout = limits.idle_timeout;
                    tracing::debug!(%peer, ?timeout, "idle: closing the connection");
                    break;
                }
                timer.as_mut().reset(next.into());
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
    conn.as_mut().graceful_shutdown();
    // Requests in flight finish (their bodies are bounded by the body-read timeout); a client
    // that does not take the close is dropped.
    let drain = limits.body_read_timeout + limits.header_read_timeout;
    if let Ok(Err(error)) = tokio::time::timeout(drain, conn).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Bind { addr, source })
}
