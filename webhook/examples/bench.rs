//! Load benchmark for triton-webhook: starts the release binary with fresh rcgen certificates,
//! waits until it answers /readyz, drives `/mutate-pods` over TLS from N keep-alive connections
//! with realistic CloneSet-pod AdmissionReviews, checks every answer, and prints throughput,
//! latency percentiles and the server's memory.
//!
//!   cargo build --release -p triton-webhook
//!   cargo run --release -p triton-webhook --example bench -- [--connections 64] [--seconds 10] [--warmup 2] [--rate 5000]
//!
//! Without --rate every connection sends its next review as soon as the previous is answered
//! (closed loop: maximum throughput, latency = queueing at saturation). With --rate R a pacer
//! thread hands out R sends per second on a fixed schedule, round-robin over the connections
//! (open loop), and latency is counted from each request's *scheduled* send time, not from when
//! it was actually sent: a server that falls behind delays the sends queued behind it, and that
//! delay is part of their latency (no coordinated omission). A connection behind schedule sends
//! at once until it has caught up. The delivered rate (answers received during the measured
//! window) is compared with the target, with a warning when it is more than 1% short. "send lag"
//! shows how late sends left against their schedule, "service time" the latency from the actual
//! send. Sends still owed 5 s (or --seconds) after the window are given up and counted as errors.
//!
//! Every answer is checked: HTTP 200, the AdmissionReview's uid equal to the request's, allowed,
//! and the JSON Patch the library computes for that review (an answer byte-identical to the
//! library's for that request passes without parsing). Anything else is an error, and the first
//! few are printed. A connection that fails is reconnected (each failure an error).
//!
//! Client and server share the machine: on 2 cores the figures are a lower bound for the server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const USAGE: &str = "usage: bench [--connections N] [--seconds N] [--warmup N] [--rate REVIEWS_PER_SECOND] [--server PATH]";
/// Mismatched answers printed in full; the rest are only counted.
const EXAMPLES: usize = 5;

struct Opts {
    connections: usize,
    seconds: u64,
    warmup: u64,
    rate: Option<f64>,
    server: PathBuf,
}

fn opts() -> anyhow::Result<Opts> {
    let exe = std::env::current_exe().context("locating the bench executable")?;
    let mut o = Opts {
        connections: 64,
        seconds: 10,
        warmup: 2,
        rate: None,
        // target/release/examples/bench -> target/release/triton-webhook
        server: exe
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("triton-webhook"))
            .unwrap_or_default(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--connections" => o.connections = val()?.parse().context("--connections N")?,
            "--seconds" => o.seconds = val()?.parse().context("--seconds N")?,
            "--warmup" => o.warmup = val()?.parse().context("--warmup N")?,
            "--server" => o.server = val()?.into(),
            "--rate" => o.rate = Some(val()?.parse().context("--rate REVIEWS_PER_SECOND")?),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    ensure!(o.connections > 0, "--connections must be at least 1");
    ensure!(o.seconds > 0, "--seconds must be at least 1");
    if let Some(r) = o.rate {
        ensure!(r.is_finite() && r > 0.0, "--rate must be a positive number");
    }
    Ok(o)
}

fn uid(i: usize) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

/// A pod as Kruise creates it for a tutorial-like CloneSet, in a v1 AdmissionReview.
fn review_body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid(i),
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
    .expect("a json! value serializes")
}

/// The answer the webhook library gives a review (its bytes), and its `response.patch`: every
/// answer must carry that patch.
fn expected(body: &[u8]) -> anyhow::Result<(Bytes, Value)> {
    let answer = triton_webhook::admission::review(body, None);
    let v: Value = serde_json::from_slice(&answer.body)?;
    let patch = v["response"]["patch"].clone();
    ensure!(
        !patch.is_null(),
        "the library does not patch the benchmark's review: {v}"
    );
    Ok((Bytes::from(answer.body), patch))
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

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// What the workers share.
struct Shared {
    tls: Arc<rustls::ClientConfig>,
    addr: String,
    bodies: Vec<Bytes>,
    /// The library's answer to each body, byte for byte: equal bytes need no parsing.
    answers: Vec<Bytes>,
    patch: Value,
    measure_from: Instant,
    stop_at: Instant,
    /// Open loop: sends still owed this long after `stop_at` (a server that fell behind) are
    /// given up, as errors.
    give_up_at: Instant,
}

/// What one connection measured.
struct Stats {
    /// Microseconds from the scheduled send (closed loop: the send) to the whole answer.
    latency: Histogram<u64>,
    /// Microseconds from the actual send to the whole answer.
    service: Histogram<u64>,
    /// Microseconds the send was behind its schedule.
    lag: Histogram<u64>,
    /// Requests scheduled in the measured window.
    scheduled: u64,
    /// Answers received during the measured window, whenever they were scheduled (the delivered
    /// rate).
    delivered: u64,
    ok: u64,
    /// Answers that arrived but were wrong (status, uid, allowed, patch).
    mismatched: u64,
    /// Requests that got no answer (connection failed).
    failed: u64,
    /// Scheduled in the window but not sent before giving up.
    unsent: u64,
    reconnects: u64,
    examples: Vec<String>,
}

impl Stats {
    fn new() -> Self {
        Self {
            latency: histogram(),
            service: histogram(),
            lag: histogram(),
            scheduled: 0,
            delivered: 0,
            ok: 0,
            mismatched: 0,
            failed: 0,
            unsent: 0,
            reconnects: 0,
            examples: Vec::new(),
        }
    }

    fn add(&mut self, o: Stats) {
        let _ = self.latency.add(o.latency);
        let _ = self.service.add(o.service);
        let _ = self.lag.add(o.lag);
        self.scheduled += o.scheduled;
        self.delivered += o.delivered;
        self.ok += o.ok;
        self.mismatched += o.mismatched;
        self.failed += o.failed;
        self.unsent += o.unsent;
        self.reconnects += o.reconnects;
        for e in o.examples {
            if self.examples.len() < EXAMPLES {
                self.examples.push(e);
            }
        }
    }

    fn errors(&self) -> u64 {
        self.mismatched + self.failed + self.unsent
    }

    fn example(&mut self, e: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(e);
        }
    }
}

async fn connect(
    tls: &Arc<rustls::ClientConfig>,
    addr: &str,
) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn post(body: Bytes) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("/mutate-pods")
        .header("content-type", "application/json")
        .header("host", "127.0.0.1")
        .body(Full::new(body))
        .expect("a valid request")
}

/// Checks one answer: 200, the request's uid, allowed, the expected patch. `Err` says what is wrong.
fn check(status: u16, body: &[u8], uid: &str, patch: &Value) -> Result<(), String> {
    let text = || {
        String::from_utf8_lossy(body)
            .chars()
            .take(300)
            .collect::<String>()
    };
    if status != 200 {
        return Err(format!("HTTP {status}: {}", text()));
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON ({e}): {}", text()))?;
    let r = &v["response"];
    if r["uid"] != uid {
        return Err(format!("uid {} for request {uid}", r["uid"]));
    }
    if r["allowed"] != true {
        return Err(format!("not allowed: {}", text()));
    }
    if r["patchType"] != "JSONPatch" || r["patch"] != *patch {
        return Err(format!("unexpected patch for {uid}: {}", text()));
    }
    Ok(())
}

/// An answer exactly the library's for request `n` is right; anything else is checked field by
/// field, to say what is wrong.
fn verdict(s: &Shared, n: usize, status: u16, body: &[u8]) -> Result<(), String> {
    if status == 200 && body == s.answers[n] {
        return Ok(());
    }
    check(status, body, &uid(n), &s.patch)
}

/// Open loop: hands out the schedule. Send k is due at `start + k / rate` and goes to connection
/// `k % connections`, which sends it as soon as it is free. A thread sleeping with nanosleep
/// rather than tokio's millisecond timer, so sends are due to the microsecond; a pacer that
/// wakes late still hands out the due time, so lateness is measured, never hidden.
fn pacer(rate: f64, start: Instant, stop_at: Instant, to: Vec<mpsc::UnboundedSender<Instant>>) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut due = start;
    let mut k = 0usize;
    while due < stop_at {
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // A worker that has stopped (giving up) no longer listens; nothing else to do.
        let _ = to[k % to.len()].send(due);
        k += 1;
        due = start + interval.mul_f64(k as f64);
    }
}

/// A request gets this long for its answer before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One keep-alive connection's share of the load; `schedule` is `None` in the closed loop.
async fn worker(
    c: usize,
    s: Arc<Shared>,
    mut schedule: Option<mpsc::UnboundedReceiver<Instant>>,
) -> Stats {
    let mut st = Stats::new();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut i = c;
    loop {
        let scheduled = match schedule.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(due) => due,
                None => break,
            },
            None => {
                let now = Instant::now();
                if now >= s.stop_at {
                    break;
                }
                now
            }
        };
        if let Some(rx) = schedule.as_mut()
            && Instant::now() >= s.give_up_at
        {
            // Sends the server never let us make: errors, not silently dropped.
            rx.close();
            let mut owed = vec![scheduled];
            while let Some(due) = rx.recv().await {
                owed.push(due);
            }
            let owed = owed.iter().filter(|d| **d >= s.measure_from).count() as u64;
            st.scheduled += owed;
            st.unsent += owed;
            break;
        }
        let measured = scheduled >= s.measure_from;
        if measured {
            st.scheduled += 1;
        }
        let n = i % s.bodies.len();
        i += 1;

        let ready = match sender.as_mut() {
            Some(tx) => tx.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            if sender.take().is_some() {
                st.reconnects += 1;
            }
            match connect(&s.tls, &s.addr).await {
                Ok(tx) => sender = Some(tx),
                Err(e) => {
                    if measured {
                        st.failed += 1;
                        st.example(format!("connect: {e:#}"));
                    }
                    // Do not spin on a server that refuses: back off a little.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(tx) = sender.as_mut() else { continue };
        let sent = Instant::now();
        let exchange = async {
            let resp = tx.send_request(post(s.bodies[n].clone())).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        let done = Instant::now();
        if answer.is_ok() && done >= s.measure_from && done < s.stop_at {
            st.delivered += 1;
        }
        if !measured {
            if answer.is_err() {
                sender = None;
            }
            continue;
        }
        match answer {
            Ok((status, body)) => match verdict(&s, n, status, &body) {
                Ok(()) => {
                    st.ok += 1;
                    let us = |d: Duration| (d.as_micros() as u64).max(1);
                    st.latency.saturating_record(us(done - scheduled));
                    st.service.saturating_record(us(done - sent));
                    st.lag
                        .saturating_record(us(sent.saturating_duration_since(scheduled)));
                }
                Err(why) => {
                    st.mismatched += 1;
                    st.example(why);
                }
            },
            Err(e) => {
                st.failed += 1;
                st.example(format!("request failed: {e:#}"));
                sender = None;
            }
        }
    }
    st
}

/// Polls GET /readyz over TLS until it answers 200.
async fn wait_ready(
    tls: &Arc<rustls::ClientConfig>,
    addr: &str,
    server: &mut std::process::Child,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.try_wait()? {
            bail!("triton-webhook exited with {status} before it was ready");
        }
        let attempt = async {
            let mut tx = connect(tls, addr).await?;
            let req = hyper::Request::get("/readyz")
                .header("host", "127.0.0.1")
                .body(Full::new(Bytes::new()))?;
            anyhow::Ok(tx.send_request(req).await?.status())
        };
        let last = match attempt.await {
            Ok(status) if status == 200 => return Ok(()),
            Ok(status) => format!("/readyz answered {status}"),
            Err(e) => format!("{e:#}"),
        };
        ensure!(
            Instant::now() < deadline,
            "triton-webhook was not ready on {addr} within 10 s: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = opts()?;
    ensure!(
        o.server.exists(),
        "{} not found: run `cargo build --release -p triton-webhook` first, or pass --server",
        o.server.display()
    );

    // Certificates.
    let dir = std::env::temp_dir().join(format!("triton-webhook-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&key, &ca)?;
    std::fs::write(dir.join("tls.crt"), leaf.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;

    // Server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
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
        .with_context(|| format!("starting {}", o.server.display()))?;
    let result = run(&o, &ca, port, &mut server).await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (stats, idle, loaded) = result?;
    report(&o, &stats, idle, loaded);
    if stats.errors() > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn run(
    o: &Opts,
    ca: &CertifiedIssuer<'static, KeyPair>,
    port: u16,
    server: &mut std::process::Child,
) -> anyhow::Result<(Stats, (u64, u64), (u64, u64))> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem().as_bytes())?)?;
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_ready(&tls, &addr, server).await?;
    let idle = rss_kib(server.id());

    let bodies: Vec<Bytes> = (0..256).map(|i| Bytes::from(review_body(i))).collect();
    let mut answers = Vec::new();
    for body in &bodies {
        answers.push(expected(body)?.0);
    }
    let patch = expected(&bodies[0])?.1;
    let measure_from = Instant::now() + Duration::from_secs(o.warmup);
    let stop_at = measure_from + Duration::from_secs(o.seconds);
    let shared = Arc::new(Shared {
        tls,
        addr,
        bodies,
        answers,
        patch,
        measure_from,
        stop_at,
        give_up_at: stop_at + Duration::from_secs(o.seconds.max(5)),
    });
    let mut schedules = Vec::new();
    let tasks: Vec<_> = (0..o.connections)
        .map(|c| {
            let schedule = o.rate.map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                schedules.push(tx);
                rx
            });
            tokio::spawn(worker(c, shared.clone(), schedule))
        })
        .collect();
    if let Some(rate) = o.rate {
        let start = Instant::now();
        std::thread::spawn(move || pacer(rate, start, stop_at, schedules));
    }
    let mut stats = Stats::new();
    for t in tasks {
        stats.add(t.await?);
    }
    Ok((stats, idle, rss_kib(server.id())))
}

fn report(o: &Opts, st: &Stats, idle: (u64, u64), loaded: (u64, u64)) {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
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
        review_body(0).len()
    );
    println!(
        "  requests          {} in the window: {} ok, {} errors ({} wrong answers, {} failed, {} never sent), {} reconnects",
        st.scheduled,
        st.ok,
        st.errors(),
        st.mismatched,
        st.failed,
        st.unsent,
        st.reconnects
    );
    let delivered = st.delivered as f64 / o.seconds as f64;
    match o.rate {
        Some(r) => println!("  delivered         {delivered:.0} reviews/s (target {r:.0})"),
        None => println!("  throughput        {delivered:.0} reviews/s"),
    }
    let from = if o.rate.is_some() {
        "from the scheduled send"
    } else {
        "from the send"
    };
    println!("  latency {from}:");
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
        println!("    {name:<6}          {:.3} ms", ms(&st.latency, q));
    }
    println!(
        "    max             {:.3} ms",
        st.latency.max() as f64 / 1000.0
    );
    if o.rate.is_some() {
        println!(
            "  service time      p50 {:.3} / p99 {:.3} ms (from the actual send)",
            ms(&st.service, 0.5),
            ms(&st.service, 0.99)
        );
        println!(
            "  send lag          p50 {:.3} / p99 {:.3} ms behind schedule",
            ms(&st.lag, 0.5),
            ms(&st.lag, 0.99)
        );
    }
    println!(
        "  server RSS        {:.1} MiB idle, {:.1} MiB after load (peak {:.1} MiB)",
        idle.0 as f64 / 1024.0,
        loaded.0 as f64 / 1024.0,
        loaded.1 as f64 / 1024.0
    );
    if let Some(r) = o.rate
        && delivered < r * 0.99
    {
        println!(
            "WARNING: delivered {delivered:.0} reviews/s, {:.1}% below the target {r:.0}: the server (or this client, on the same cores) could not keep up; the latencies include the backlog",
            100.0 * (1.0 - delivered / r)
        );
    }
    for e in &st.examples {
        println!("ERROR: {e}");
    }
}
