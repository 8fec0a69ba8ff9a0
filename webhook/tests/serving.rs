//! The HTTPS server on 127.0.0.1 (no cluster): routes and status codes, metrics, certificate
//! reload from disk, and graceful shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::watch;
use triton_webhook::server::{App, serve};
use triton_webhook::tls::ReloadingCert;

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

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

async fn start() -> Fixture {
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
    let app = App::new(None, 4096);
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
    async fn tls(&self) -> TlsStream {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = TcpStream::connect(&self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap()
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
