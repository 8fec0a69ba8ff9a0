//! Load benchmark for triton-webhook: starts the release binary with fresh rcgen certificates,
//! drives `/mutate-pods` over TLS from N keep-alive connections with realistic CloneSet-pod
//! AdmissionReviews, and prints throughput, latency percentiles and the server's memory.
//!
//!   cargo build --release -p triton-webhook
//!   cargo run --release -p triton-webhook --example bench -- [--connections 64] [--seconds 10] [--rate 5000]
//!
//! Without --rate every connection sends its next review as soon as the previous is answered
//! (closed loop: maximum throughput, latency = queueing at saturation). With --rate R the
//! connections together send R reviews/s on a fixed schedule (open loop). Latency is counted
//! from the actual send; how late sends were against the schedule (tokio's timer has 1 ms
//! granularity, and a slow server delays a connection's next send) is printed as "send lag", so
//! a server that falls behind cannot hide it.
//!
//! Client and server share the machine: on 2 cores the figures are a lower bound for the server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::json;

struct Opts {
    connections: usize,
    seconds: u64,
    warmup: u64,
    rate: Option<f64>,
    server: PathBuf,
}

fn opts() -> Opts {
    let mut o = Opts {
        connections: 64,
        seconds: 10,
        warmup: 2,
        rate: None,
        server: std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("triton-webhook"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| panic!("{a} needs a value"))
                .clone()
        };
        match a.as_str() {
            "--connections" => o.connections = val().parse().expect("--connections N"),
            "--seconds" => o.seconds = val().parse().expect("--seconds N"),
            "--warmup" => o.warmup = val().parse().expect("--warmup N"),
            "--server" => o.server = val().into(),
            "--rate" => o.rate = Some(val().parse().expect("--rate REVIEWS_PER_SECOND")),
            other => panic!(
                "unknown argument {other}; use --connections N --seconds N --warmup N --rate R --server PATH"
            ),
        }
    }
    o
}

/// A pod as Kruise creates it for a tutorial-like CloneSet, in a v1 AdmissionReview.
fn review_body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kruise-system:kruise-manager", "uid": "a3c1", "groups": ["system:serviceaccounts", "system:serviceaccounts:kruise-system", "system:authenticated"]},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "generateName": "sample-", "namespace": "default",
                    "labels": {"app": "12122", "group": "10010", "app.kubernetes.io/name": "sample", "app.kubernetes.io/instance": "12122-sample-10010",
                        "managed-by": "triton-io", "controller-revision-hash": "12122-sample-10010-6ddf9b7cf4", "apps.kruise.io/cloneset-instance-id": "x7k2p"},
                    "annotations": {"apps.kruise.io/generation": "3"},
                    "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "12122-sample-10010",
                        "uid": "1b6f1c2e-6d1d-4f7a-9f55-2a7c1f2d9b1e", "controller": true, "blockOwnerDeletion": true}]
                },
                "spec": {
                    "containers": [{
                        "name": "12122-sample-container", "image": "nginx:1.25",
                        "ports": [{"name": "app-port", "containerPort": 80, "protocol": "TCP"}],
                        "env": [{"name": "APP_ID", "value": "12122"}, {"name": "GROUP_ID", "value": "10010"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                        "readinessProbe": {"httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                        "volumeMounts": [{"name": "kube-api-access-x2v9d", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"
                    }],
                    "readinessGates": [{"conditionType": "InPlaceUpdateReady"}],
                    "volumes": [{"name": "kube-api-access-x2v9d", "projected": {"defaultMode": 420, "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                    "serviceAccountName": "default", "serviceAccount": "default", "securityContext": {}, "schedulerName": "default-scheduler",
                    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
                    "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
                },
                "status": {}
            },
            "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .unwrap()
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main]
async fn main() {
    let o = opts();
    assert!(
        o.server.exists(),
        "{} not found: run `cargo build --release -p triton-webhook` first",
        o.server.display()
    );

    // Certificates.
    let dir = std::env::temp_dir().join(format!("triton-webhook-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();

    // Server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(&o.server)
        .args([
            &format!("--listen=127.0.0.1:{port}"),
            "--admin-listen=off",
            &format!("--tls-cert={}", dir.join("tls.crt").display()),
            &format!("--tls-key={}", dir.join("tls.key").display()),
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start triton-webhook");
    let pid = server.id();

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let addr = format!("127.0.0.1:{port}");
    let start = Instant::now();
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "triton-webhook did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle = rss_kib(pid);

    let bodies: Arc<Vec<Bytes>> = Arc::new((0..256).map(|i| Bytes::from(review_body(i))).collect());
    let measure_from = Instant::now() + Duration::from_secs(o.warmup);
    let stop_at = measure_from + Duration::from_secs(o.seconds);
    let mut tasks = Vec::new();
    for c in 0..o.connections {
        let (tls, addr, bodies) = (tls.clone(), addr.clone(), bodies.clone());
        let (rate, connections) = (o.rate, o.connections);
        tasks.push(tokio::spawn(async move {
            let mut hist =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut errors = 0u64;
            let mut lag =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut i = c;
            // Open loop: this connection's share of the rate, phase-shifted per connection.
            let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
            let mut next = Instant::now()
                + interval
                    .map(|iv| iv.mul_f64(c as f64 / connections as f64))
                    .unwrap_or_default();
            loop {
                let now = Instant::now();
                if now >= stop_at {
                    break;
                }
                let scheduled = match interval {
                    Some(iv) => {
                        tokio::time::sleep_until(next.into()).await;
                        let s = next;
                        next += iv;
                        s
                    }
                    None => now,
                };
                let req = hyper::Request::post("/mutate-pods")
                    .header("content-type", "application/json")
                    .header("host", "127.0.0.1")
                    .body(Full::new(bodies[i % bodies.len()].clone()))
                    .unwrap();
                i += 1;
                let t0 = Instant::now();
                let late = t0.saturating_duration_since(scheduled);
                let ok = match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        status == 200 && body.windows(9).any(|w| w == b"JSONPatch")
                    }
                    Err(_) => false,
                };
                if t0 >= measure_from {
                    lag.record(late.as_micros().max(1) as u64).unwrap();
                    if ok {
                        hist.record(t0.elapsed().as_micros().max(1) as u64).unwrap();
                    } else {
                        errors += 1;
                    }
                }
            }
            (hist, lag, errors)
        }));
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut lag = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut errors = 0;
    for t in tasks {
        let (h, l, e) = t.await.unwrap();
        hist.add(h).unwrap();
        lag.add(l).unwrap();
        errors += e;
    }
    let loaded = rss_kib(pid);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let mode = match o.rate {
        Some(r) => format!("open loop at {r:.0} reviews/s"),
        None => "closed loop (as fast as answered)".to_string(),
    };
    println!(
        "triton-webhook benchmark: {} TLS keep-alive connections, {mode}, {} s measured after {} s warm-up",
        o.connections, o.seconds, o.warmup
    );
    println!(
        "  review size       {} bytes (CloneSet pod, gate injected)",
        bodies[0].len()
    );
    println!("  requests          {} ok, {} errors", hist.len(), errors);
    println!(
        "  throughput        {:.0} reviews/s",
        hist.len() as f64 / o.seconds as f64
    );
    println!("  latency p50       {:.3} ms", ms(0.50));
    println!("  latency p90       {:.3} ms", ms(0.90));
    println!("  latency p99       {:.3} ms", ms(0.99));
    println!("  latency p99.9     {:.3} ms", ms(0.999));
    println!("  latency max       {:.3} ms", hist.max() as f64 / 1000.0);
    if o.rate.is_some() {
        println!(
            "  send lag p50/p99  {:.3} / {:.3} ms behind schedule",
            lag.value_at_quantile(0.5) as f64 / 1000.0,
            lag.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
    println!(
        "  server RSS        {:.1} MiB idle, {:.1} MiB after load (peak {:.1} MiB)",
        idle.0 as f64 / 1024.0,
        loaded.0 as f64 / 1024.0,
        loaded.1 as f64 / 1024.0
    );
    if errors > 0 {
        std::process::exit(1);
    }
}
