//! The HTTPS server on 127.0.0.1 (no cluster): routes and status codes, metrics, certificate
//! reload from disk, graceful shutdown, and the limits on what a client can hold: handshake,
//! header, body and idle timeouts and the connection cap.
//!
//! Timing tests use short timeouts and wait for the outcome with a bounded wait (reading until
//! the server closes, under `tokio::time::timeout`); each also checks the close did not come
//! before its timeout, so a server closing at once for another reason fails them too.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use triton_webhook::server::{App, Limits, serve};
use triton_webhook::tls::ReloadingCert;

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Far longer than any test runs: a limit a test does not exercise.
const NEVER: Duration = Duration::from_secs(600);
/// The short timeout a test exercises.
const SHORT: Duration = Duration::from_millis(300);
/// How long a test waits for something that must happen.
const BOUND: Duration = Duration::from_secs(10);

struct Fixture {
    addr: String,
    ca_pem: String,
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: std::path::PathBuf,
    cert: Arc<ReloadingCert>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_leaf(dir: &Path, ca: &CertifiedIssuer<'static, KeyPair>) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    for (name, contents) in [("tls.key", key.serialize_pem()), ("tls.crt", cert.pem())] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    cert.der().to_vec()
}

/// The server with generous limits except those a test sets.
fn limits() -> Limits {
    Limits {
        tls_handshake_timeout: NEVER,
        header_read_timeout: NEVER,
        body_read_timeout: NEVER,
        idle_timeout: NEVER,
        max_connections: 1024,
        max_body_bytes: 4096,
    }
}

async fn start() -> Fixture {
    start_with(limits()).await
}

async fn start_with(limits: Limits) -> Fixture {
    let dir = std::env::temp_dir().join(format!(
        "triton-webhook-serving-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    write_leaf(&dir, &ca);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = ReloadingCert::load(&dir.join("tls.crt"), &dir.join("tls.key"), provider).unwrap();
    cert.spawn_watcher(Duration::from_millis(100));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cert.server_config()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stop_rx) = watch::channel(false);
    let app = App::new(None, limits);
    let server = tokio::spawn(serve(
        app,
        listener,
        Some(acceptor),
        stop_rx,
        Duration::from_secs(2),
    ));
    Fixture {
        addr,
        ca_pem: ca.pem(),
        ca,
        dir,
        cert,
        stop,
        server,
    }
}

impl Fixture {
    fn tls_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    async fn tls_with_alpn(&self, alpn: &[&[u8]]) -> TlsStream {
        let tcp = TcpStream::connect(&self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(self.tls_config(alpn))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap()
    }

    async fn tls(&self) -> TlsStream {
        self.tls_with_alpn(&[]).await
    }

    /// The leaf certificate a new connection is served, DER.
    async fn served(&self) -> Vec<u8> {
        let stream = self.tls().await;
        stream.get_ref().1.peer_certificates().unwrap()[0]
            .as_ref()
            .to_vec()
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(self.tls().await))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Reads until the server closes the connection (EOF, or the reset / missing TLS close_notify a
/// dropped connection gives), within `bound`. Returns what was read and when the close came.
/// Panics if the connection is still open after `bound`.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), bound: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read_all)
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open for {bound:?}"));
    got
}

/// Reads until `got` satisfies `done`, within `bound`.
async fn read_until(
    stream: &mut (impl AsyncRead + Unpin),
    bound: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !done(&got) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(bound, read).await;
    got
}

/// A whole HTTP/1.1 response to GET /healthz ("ok", so it ends with it).
fn healthz_answered(got: &[u8]) -> bool {
    got.starts_with(b"HTTP/1.1 200") && got.ends_with(b"\r\n\r\nok")
}

fn pod_review() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "userInfo": {}, "namespace": "default",
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": {"managed-by": "triton-io"},
                    "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "c", "uid": "1"}]},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn routes_answer_with_the_right_status_codes_and_metrics_count_them() {
    let f = start().await;
    let json = "application/json";
    let (status, body) = f.request("POST", "/mutate-pods", json, pod_review()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("JSONPatch"), "{body}");
    assert_eq!(
        f.request("POST", "/mutate-pods", json, b"{not json".to_vec())
            .await
            .0,
        400
    );
    assert_eq!(
        f.request("POST", "/mutate-pods", "text/plain", pod_review())
            .await
            .0,
        415
    );
    assert_eq!(
        f.request("POST", "/mutate-pods", json, vec![b' '; 10_000])
            .await
            .0,
        413
    );
    assert_eq!(f.request("GET", "/mutate-pods", json, vec![]).await.0, 405);
    assert_eq!(f.request("GET", "/nowhere", json, vec![]).await.0, 404);
    assert_eq!(
        f.request("GET", "/healthz", json, vec![]).await,
        (200, "ok".to_string())
    );
    assert_eq!(
        f.request("GET", "/readyz", json, vec![]).await,
        (200, "ok".to_string())
    );
    let (_, metrics) = f.request("GET", "/metrics", json, vec![]).await;
    assert!(
        metrics.contains(r#"triton_webhook_admission_requests_total{outcome="patched"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"triton_webhook_admission_requests_total{outcome="invalid"} 3"#),
        "{metrics}"
    );
    // The server is still serving after all that.
    assert_eq!(
        f.request("POST", "/mutate-pods", json, pod_review())
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn rewritten_certificate_files_are_served_to_new_connections_and_broken_ones_are_not() {
    let f = start().await;
    let before = f.served().await;
    let new = write_leaf(&f.dir, &f.ca);
    assert_ne!(before, new, "the test wrote a different certificate");
    let deadline = Instant::now() + BOUND;
    let mut served = f.served().await;
    while served == before {
        assert!(
            Instant::now() < deadline,
            "the served certificate did not change within {BOUND:?} of the files being rewritten"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        served = f.served().await;
    }
    assert_eq!(served, new, "the served certificate is the one written");

    // A broken file is read, refused, and the last good certificate stays.
    let failed = f.cert.counts().failed;
    std::fs::write(f.dir.join("tls.crt"), "garbage").unwrap();
    let deadline = Instant::now() + BOUND;
    while f.cert.counts().failed == failed {
        assert!(
            Instant::now() < deadline,
            "the broken certificate file was not read within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.served().await, new);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let mut f = start().await;
    assert_eq!(
        f.request("GET", "/healthz", "text/plain", vec![]).await.0,
        200
    );
    f.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut f.server)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
    assert!(
        TcpStream::connect(&f.addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn a_client_that_never_sends_a_client_hello_is_dropped_after_the_handshake_timeout() {
    let f = start_with(Limits {
        tls_handshake_timeout: SHORT,
        ..limits()
    })
    .await;
    let mut tcp = TcpStream::connect(&f.addr).await.unwrap();
    let opened = Instant::now();
    let got = read_until_closed(&mut tcp, BOUND).await;
    assert!(got.is_empty(), "nothing is sent to a silent client");
    assert!(
        opened.elapsed() >= SHORT - Duration::from_millis(50),
        "closed after {:?}, before the handshake timeout",
        opened.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_sends_no_request_after_the_handshake_is_dropped_after_the_header_timeout() {
    let f = start_with(Limits {
        header_read_timeout: SHORT,
        ..limits()
    })
    .await;
    let mut tls = f.tls().await;
    let opened = Instant::now();
    let got = read_until_closed(&mut tls, BOUND).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(
        opened.elapsed() >= SHORT - Duration::from_millis(50),
        "closed after {:?}, before the header timeout",
        opened.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_sends_part_of_its_request_headers_is_dropped_after_the_header_timeout() {
    let f = start_with(Limits {
        header_read_timeout: SHORT,
        ..limits()
    })
    .await;
    let mut tls = f.tls().await;
    // A first request answered, so the connection is past its first-request deadline and only
    // hyper's header timer can end it.
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut tls, BOUND, healthz_answered).await;
    assert!(healthz_answered(&got), "{}", String::from_utf8_lossy(&got));
    tls.write_all(b"POST /mutate-pods HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let sent = Instant::now();
    read_until_closed(&mut tls, BOUND).await;
    assert!(
        sent.elapsed() >= SHORT - Duration::from_millis(50),
        "closed after {:?}, before the header timeout",
        sent.elapsed()
    );
}

#[tokio::test]
async fn a_request_whose_body_does_not_arrive_gets_408() {
    let f = start_with(Limits {
        body_read_timeout: SHORT,
        ..limits()
    })
    .await;
    let mut tls = f.tls().await;
    tls.write_all(
        b"POST /mutate-pods HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"apiVersi",
    )
    .await
    .unwrap();
    let sent = Instant::now();
    let got = read_until(&mut tls, BOUND, |got| {
        got.windows(4).any(|w| w == b"\r\n\r\n")
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        sent.elapsed() >= SHORT - Duration::from_millis(50),
        "answered after {:?}, before the body timeout",
        sent.elapsed()
    );
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let f = start_with(Limits {
        idle_timeout: SHORT,
        ..limits()
    })
    .await;
    let mut tls = f.tls().await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut tls, BOUND, healthz_answered).await;
    assert!(healthz_answered(&got), "{}", String::from_utf8_lossy(&got));
    let answered = Instant::now();
    let more = read_until_closed(&mut tls, BOUND).await;
    assert!(more.is_empty(), "{}", String::from_utf8_lossy(&more));
    assert!(
        answered.elapsed() >= SHORT - Duration::from_millis(50),
        "closed after {:?}, before the idle timeout",
        answered.elapsed()
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let f = start_with(Limits {
        idle_timeout: SHORT,
        ..limits()
    })
    .await;
    let tls = f.tls_with_alpn(&[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    let mut conn = tokio::spawn(conn);
    let req = hyper::Request::get("https://127.0.0.1/healthz")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        &b"ok"[..]
    );
    let answered = Instant::now();
    // The client's connection task ends when the server has sent GOAWAY and closed.
    tokio::time::timeout(BOUND, &mut conn)
        .await
        .unwrap_or_else(|_| panic!("the idle HTTP/2 connection was still open after {BOUND:?}"))
        .unwrap()
        .ok();
    assert!(
        answered.elapsed() >= SHORT - Duration::from_millis(50),
        "closed after {:?}, before the idle timeout",
        answered.elapsed()
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let f = start_with(Limits {
        max_connections: 2,
        ..limits()
    })
    .await;
    let first = f.tls().await;
    let _second = f.tls().await;
    let config = f.tls_config(&[]);
    let addr = f.addr.clone();
    let mut third = tokio::spawn(async move {
        let tcp = TcpStream::connect(&addr).await.unwrap();
        tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap()
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "a third connection was served while two were open"
    );
    drop(first);
    let mut third = tokio::time::timeout(BOUND, third)
        .await
        .expect("the third connection is served once the first closes")
        .unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut third, BOUND, healthz_answered).await;
    assert!(healthz_answered(&got), "{}", String::from_utf8_lossy(&got));
}
