//! Controller benchmark, run inside the local control plane:
//!
//!   tests/cluster/run --triton --nodes 5 -- cargo run --release -p triton-e2e --bin bench-controller
//!
//! Prints: (1) reaction time over N canaries waiting at Smoked, each behind a Service: from a
//! gRPC `Next` to the canary listed ready in its Service's EndpointSlice (what users see: the
//! pod takes traffic), with the hops the bench sees on its pod watch (gate True, Ready),
//! and to the controller's status write that records the pull-in. Under `tests/cluster/run
//! --audit` it also splits each sample by the API server's audit log: every write on the path
//! (the `Next` spec patch, the gate, kwok's Ready, the slice) from its arrival to its
//! completion, and each component's reaction between them. With `--floor`, each sample is paired
//! with one of the floor: the same path for a controller that reacts in no time (the bench writes
//! a DeployFlow, then on the reply the gate of a one-replica CloneSet's pod, in a namespace of
//! its own), which bounds what a controller that records the user's `Next` before acting can do
//! on this machine;
//! (2) the wall time of the tutorial release with
//! intervals 0, `Next` sent as soon as each state is reached; (3) 100 concurrent DeployFlows of 3
//! replicas (auto, batches of 1): total time, failures, and triton-controller's peak resident
//! memory and CPU seconds (from /proc, visible inside the PID namespace); (4) the steady state
//! afterwards: every release finished, nothing changing, for --steady-seconds (60): the
//! controller's CPU seconds and DeployFlow reconciles (its reconcile histogram's count), which
//! must stay near zero (no periodic re-reconcile of finished releases).
//!
//! With `--scale 100,300,1000` it runs the scale table instead: for each N, N DeployFlows of 3
//! replicas (auto, batches of 1) created at once over namespaces of 25, and prints per N the
//! time to all finished, each release's time (median, slowest, slowest/median), DeployFlow and
//! gate reconciles per second, the controller's API requests per release (its own client-side
//! count, by verb), its CPU seconds (per release) and peak RSS; then the steady state with
//! everything finished. Each N runs alone: the previous round's namespaces are deleted first.
//! Needs nodes for the pods: `--nodes 5 --node-pods 1000`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use triton_e2e::deployflow::{Flow, flow, tutorial};
use triton_e2e::*;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn controller_proc() -> Option<(u64, f64)> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmdline);
        if cmd.contains("triton-controller")
            && cmd.contains("--admin-listen")
            && !cmd.starts_with("/bin/sh")
        {
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let hwm = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks: f64 = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
            return Some((hwm, ticks / 100.0));
        }
    }
    None
}

/// Wall-clock milliseconds since the epoch (comparable with the API server's audit log).
fn wall_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn wait_status(df: &Flow, pred: impl Fn(&Value) -> bool) -> Instant {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", df.name));
    let mut stream = watcher(df.api.clone(), cfg).applied_objects().boxed();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let next = tokio::time::timeout_at(deadline.into(), stream.next()).await;
        match next {
            Ok(Some(Ok(obj))) => {
                let v: Value = serde_json::to_value(&obj).unwrap();
                if pred(&v["status"]) {
                    return Instant::now();
                }
            }
            Ok(Some(Err(e))) => panic!("watching {}: {e}", df.name),
            Ok(None) | Err(_) => panic!("timed out watching DeployFlow {}", df.name),
        }
    }
}

fn batch_is(s: &Value, batch: i64, phase: &str) -> bool {
    let cur = s["conditions"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .unwrap_or_default();
    cur["batch"] == batch && cur["phase"] == phase
}

struct Row {
    n: usize,
    wall: f64,
    p50: f64,
    max: f64,
    ok: usize,
    reconciles: f64,
    gates: f64,
    requests: Vec<(&'static str, f64)>,
    cpu: f64,
    rss_mib: f64,
    /// Requests the API server served per release, every client, by verb and resource.
    served: Vec<(String, f64)>,
}

const VERBS: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];

fn requests_by_verb(m: &[(String, f64)]) -> Vec<(&'static str, f64)> {
    VERBS
        .iter()
        .map(|v| {
            let prefix = format!("triton_controller_kube_requests_total{{verb=\"{v}\"");
            (*v, metric_sum(m, &prefix))
        })
        .collect()
}

/// The API server's request counter (every client: Triton, Kruise, kwok, the scheduler,
/// kube-controller-manager, this benchmark), summed by resource and verb.
async fn apiserver_requests(client: &kube::Client) -> std::collections::HashMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap_or_default();
    let mut out = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |k: &str| {
            series
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let sub = label("subresource");
        let key = format!(
            "{} {}{}",
            label("verb"),
            label("resource"),
            if sub.is_empty() {
                String::new()
            } else {
                format!("/{sub}")
            }
        );
        *out.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    out
}

fn deployflows(client: &kube::Client) -> kube::Api<DynamicObject> {
    kube::Api::all_with(
        client.clone(),
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "apps.triton.io",
            "v1alpha1",
            "DeployFlow",
        )),
    )
}

/// N releases at once; returns the row of the table.
async fn scale_round(client: &kube::Client, n: usize) -> Row {
    let per_ns = 25;
    let mut namespaces = Vec::new();
    for i in 0..n.div_ceil(per_ns) {
        namespaces.push(namespace(client, &format!("scale-{n}-{i}")).await);
    }
    let round = format!("n{n}");
    // Watch first: each release's end is the first event that shows it finished.
    let cfg = watcher::Config::default().labels(&format!("bench-round={round}"));
    let mut events = watcher(deployflows(client), cfg).boxed();
    loop {
        match events.next().await {
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(Ok(_)) => {}
            other => panic!("watching the round's DeployFlows: {other:?}"),
        }
    }
    let m0 = controller_metrics().await;
    let a0 = apiserver_requests(client).await;
    let p0 = controller_proc();
    let start = Instant::now();
    let created: std::collections::HashMap<String, Instant> =
        futures::stream::iter((0..n).map(|i| {
            let (client, ns, round) = (
                client.clone(),
                namespaces[i / per_ns].clone(),
                round.clone(),
            );
            async move {
                let name = format!("s{i}");
                // On 2 cores kwok lags behind at a thousand releases: a pod's gate True to its Ready
                // took over a minute, past the default pullInTimeoutSeconds (60).
                let strategy = json!({"batchSize": 1, "mode": "auto", "pullInTimeoutSeconds": 900});
                let mut m = flow(&name, &name, "create", 3, "nginx", strategy);
                m["metadata"]["labels"]["bench-round"] = json!(round);
                let df = Flow::create(&client, &ns, m).await;
                (format!("{}/{}", df.ns, df.name), Instant::now())
            }
        }))
        .buffer_unordered(64)
        .collect()
        .await;
    let mut finished: std::collections::HashMap<String, (Instant, bool)> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(1800);
    while finished.len() < n {
        let ev = tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .unwrap_or_else(|_| panic!("{n} releases to finish in 30 min: {} did", finished.len()));
        let obj = match ev {
            Some(Ok(watcher::Event::Apply(o))) => o,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                eprintln!("[bench] watch: {e} (retrying)");
                continue;
            }
            None => panic!("the watch of the round's DeployFlows ended"),
        };
        if obj.data["status"]["finished"] == json!(true) {
            let key = format!(
                "{}/{}",
                obj.metadata.namespace.clone().unwrap_or_default(),
                obj.metadata.name.clone().unwrap_or_default()
            );
            let ok = obj.data["status"]["phase"] == "Success";
            finished.entry(key).or_insert((Instant::now(), ok));
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let m1 = controller_metrics().await;
    let a1 = apiserver_requests(client).await;
    let p1 = controller_proc();
    let mut served: Vec<(String, f64)> = a1
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - a0.get(k).copied().unwrap_or(0.0)) / n as f64,
            )
        })
        .filter(|(_, v)| *v >= 0.05)
        .collect();
    served.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    let mut times: Vec<f64> = finished
        .iter()
        .map(|(k, (t, _))| (*t - created[k]).as_secs_f64())
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let r0 = requests_by_verb(&m0);
    let requests = requests_by_verb(&m1)
        .into_iter()
        .zip(r0)
        .map(|((v, b), (_, a))| (v, b - a))
        .collect();
    let (cpu, rss_mib) = match (p0, p1) {
        (Some((_, c0)), Some((hwm, c1))) => (c1 - c0, hwm as f64 / 1024.0),
        _ => (f64::NAN, f64::NAN),
    };
    let d = |p: &str| metric_sum(&m1, p) - metric_sum(&m0, p);
    Row {
        n,
        wall,
        p50: pct(&times, 0.5),
        max: *times.last().unwrap(),
        ok: finished.values().filter(|(_, ok)| *ok).count(),
        reconciles: d("triton_controller_reconcile_duration_seconds_count"),
        gates: d("triton_controller_gate_reconciles_total"),
        requests,
        cpu,
        rss_mib,
        served,
    }
}

/// Deletes the namespaces of round `n` and waits until they (and their pods) are gone.
async fn clear_round(client: &kube::Client, n: usize) {
    let api = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let prefix = format!("scale-{n}-");
    let names: Vec<String> = api
        .list_metadata(&ListParams::default())
        .await
        .expect("list namespaces")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .filter(|name| name.starts_with(&prefix))
        .collect();
    eprintln!(
        "[bench] deleting the {} namespaces of round {n} (waits until they are gone)…",
        names.len()
    );
    for name in &names {
        let _ = api.delete(name, &Default::default()).await;
    }
    eventually(
        &format!("the namespaces of round {n} gone"),
        Duration::from_secs(900),
        || async {
            let left = api
                .list_metadata(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .filter(|ns| {
                    ns.metadata
                        .name
                        .as_deref()
                        .is_some_and(|m| m.starts_with(&prefix))
                })
                .count();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} left"))
            }
        },
    )
    .await;
}

async fn scale(client: &kube::Client, ns: &[usize], steady: usize) {
    let mut rows = Vec::new();
    for (i, &n) in ns.iter().enumerate() {
        eprintln!("[bench] {n} releases at once…");
        let row = scale_round(client, n).await;
        eprintln!("[bench] {n}: all finished in {:.1} s", row.wall);
        rows.push(row);
        if i + 1 < ns.len() {
            // Each N on its own: the round's namespaces go before the next round starts.
            clear_round(client, n).await;
        }
    }
    println!(
        "triton-controller scale (local control plane, 2 cores shared by every component; \
         3 replicas per release, auto, batches of 1)"
    );
    println!(
        "| N | all finished | Success | release p50 / slowest (ratio) | DF reconciles (/s) | gate reconciles | API requests per release ({}) | CPU s (per release) | peak RSS |",
        VERBS.join(" / ")
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let total: f64 = r.requests.iter().map(|(_, c)| c).sum();
        let by: Vec<String> = r
            .requests
            .iter()
            .map(|(_, c)| format!("{:.1}", c / r.n as f64))
            .collect();
        println!(
            "| {} | {:.1} s | {} | {:.1} / {:.1} s ({:.2}×) | {:.0} ({:.0}/s) | {:.0} | {:.1} ({}) | {:.1} ({:.3}) | {:.1} MiB |",
            r.n,
            r.wall,
            r.ok,
            r.p50,
            r.max,
            r.max / r.p50,
            r.reconciles,
            r.reconciles / r.wall,
            r.gates,
            total / r.n as f64,
            by.join(" / "),
            r.cpu,
            r.cpu / r.n as f64,
            r.rss_mib
        );
    }
    for r in &rows {
        let total: f64 = r.served.iter().map(|(_, v)| v).sum();
        let top: Vec<String> = r
            .served
            .iter()
            .take(12)
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect();
        println!(
            "  N={}: the API server served {total:.1} requests per release (every client); most: {}",
            r.n,
            top.join(", ")
        );
    }
    steady_state(client, steady).await;
    if rows.iter().any(|r| r.ok < r.n) {
        std::process::exit(1);
    }
}

/// Everything finished, nothing changing: what the controller does for `steady` seconds.
async fn steady_state(client: &kube::Client, steady: usize) {
    // Settle: the last releases' final writes and Events.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (m0, c0) = (controller_metrics().await, controller_proc());
    tokio::time::sleep(Duration::from_secs(steady as u64)).await;
    let (m1, c1) = (controller_metrics().await, controller_proc());
    let pods_total = kube::Api::<k8s_openapi::api::core::v1::Pod>::all(client.clone())
        .list_metadata(&ListParams::default().labels("managed-by=triton-io"))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0);
    let dfs_total = deployflows(client)
        .list_metadata(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0);
    let d = |p: &str| metric_sum(&m1, p) - metric_sum(&m0, p);
    match (c0, c1) {
        (Some((_, a)), Some((hwm, b))) => println!(
            "  steady state, {dfs_total} finished DeployFlows and {pods_total} managed pods, nothing changing for {steady} s: controller CPU {:.2} s ({:.2}% of a core), {} DeployFlow reconciles, {} gate reconciles, {} API requests besides watches, RSS peak {:.1} MiB",
            b - a,
            (b - a) / steady as f64 * 100.0,
            d("triton_controller_reconcile_duration_seconds_count"),
            d("triton_controller_gate_reconciles_total"),
            d("triton_controller_kube_requests_total")
                - d("triton_controller_kube_requests_total{verb=\"watch\""),
            hwm as f64 / 1024.0
        ),
        _ => println!("  triton-controller process not found in /proc"),
    }
}

/// What the reaction benchmark times on its watches: a canary's gate True, its Ready, its ready
/// endpoint in a slice (by pod), and the verified pull-in in the status (by DeployFlow).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Fact {
    Gate,
    Ready,
    Endpoint,
    PulledIn,
}

/// When (bench clock) each fact was first seen on the namespace's watches.
#[derive(Default)]
struct Seen {
    first: std::sync::Mutex<std::collections::HashMap<(Fact, String), Instant>>,
    /// Events seen per watch (pods, slices, DeployFlows): proof each watch is running.
    objects: [std::sync::atomic::AtomicUsize; 3],
    changed: tokio::sync::Notify,
}

impl Seen {
    fn start(
        client: &kube::Client,
        ns: &str,
    ) -> (std::sync::Arc<Seen>, Vec<tokio::task::JoinHandle<()>>) {
        use k8s_openapi::api::core::v1::Pod;
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        use std::sync::atomic::Ordering::Relaxed;
        let seen = std::sync::Arc::new(Seen::default());
        let condition = |p: &Pod, t: &str| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
        };
        let pods = watcher(
            kube::Api::<Pod>::namespaced(client.clone(), ns),
            Default::default(),
        );
        let s = seen.clone();
        let pods = tokio::spawn(pods.default_backoff().applied_objects().for_each(move |p| {
            if let Ok(p) = p {
                s.objects[0].fetch_add(1, Relaxed);
                let name = p.metadata.name.clone().unwrap_or_default();
                if condition(&p, "apps.triton.io/ready") {
                    s.mark(Fact::Gate, &name);
                }
                if condition(&p, "Ready") {
                    s.mark(Fact::Ready, &name);
                }
            }
            std::future::ready(())
        }));
        let slices = watcher(
            kube::Api::<EndpointSlice>::namespaced(client.clone(), ns),
            Default::default(),
        );
        let s = seen.clone();
        let slices = tokio::spawn(slices.default_backoff().applied_objects().for_each(
            move |slice| {
                if let Ok(slice) = slice {
                    s.objects[1].fetch_add(1, Relaxed);
                    for e in slice.endpoints.into_iter().flatten() {
                        if e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
                            && let Some(pod) = e.target_ref.and_then(|r| r.name)
                        {
                            s.mark(Fact::Endpoint, &pod);
                        }
                    }
                }
                std::future::ready(())
            },
        ));
        let flows = watcher(
            dynamic_api(client, ns, "apps.triton.io", "v1alpha1", "DeployFlow"),
            Default::default(),
        );
        let s = seen.clone();
        let flows = tokio::spawn(
            flows
                .default_backoff()
                .applied_objects()
                .for_each(move |df| {
                    if let Ok(df) = df {
                        s.objects[2].fetch_add(1, Relaxed);
                        if df.data["status"]["conditions"][0]["pods"][0]["pullInStatus"]
                            == "PullInSucceeded"
                        {
                            s.mark(
                                Fact::PulledIn,
                                &df.metadata.name.clone().unwrap_or_default(),
                            );
                        }
                    }
                    std::future::ready(())
                }),
        );
        (seen, vec![pods, slices, flows])
    }

    fn mark(&self, fact: Fact, key: &str) {
        let now = Instant::now();
        let new = match self.first.lock().unwrap().entry((fact, key.to_string())) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(now);
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
        };
        if new {
            self.changed.notify_waiters();
        }
    }

    /// Once the samples are set up: each watch (pods, slices, DeployFlows) sees at least `min`
    /// events, and nothing is past its gate but the objects of the `exempt` releases (the
    /// DeployFlow so named and its pods, `<name>-…`).
    async fn established(&self, min: [usize; 3], exempt: &[&str]) {
        for (i, kind) in ["pods", "EndpointSlices", "DeployFlows"].iter().enumerate() {
            eventually(
                &format!("the reaction watch on {kind} to see {} events", min[i]),
                Duration::from_secs(30),
                || async {
                    let n = self.objects[i].load(std::sync::atomic::Ordering::Relaxed);
                    if n >= min[i] { Ok(()) } else { Err(n) }
                },
            )
            .await;
        }
        let first = self.first.lock().unwrap();
        let early: Vec<_> = first
            .keys()
            .filter(|(_, key)| {
                !exempt
                    .iter()
                    .any(|p| key == p || key.starts_with(&format!("{p}-")))
            })
            .collect();
        assert!(
            early.is_empty(),
            "before any sample, the watches saw {early:?}"
        );
    }

    /// When `fact` was first seen for `key`; it must be after `since` (the sample's `Next`).
    async fn wait(&self, fact: Fact, key: &str, since: Instant) -> Instant {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(&at) = self.first.lock().unwrap().get(&(fact, key.to_string())) {
                assert!(at >= since, "{fact:?} of {key} seen before its Next");
                return at;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("timed out after 60 s waiting for {fact:?} of {key}");
            }
        }
    }
}

/// One path's samples (ms, sorted): end to end, and by hop as the bench sees them (to the gate
/// True, then to Ready, then to the ready endpoint); the warm-up samples apart; and, with the API
/// server's audit log (`tests/cluster/run --audit`), the hops as the API server saw them.
#[derive(Default)]
struct Path {
    to_endpoint: Vec<f64>,
    gate: Vec<f64>,
    ready: Vec<f64>,
    slice: Vec<f64>,
    audit: Option<(Rows, Rows)>,
    /// The warm-up samples, end to end (not counted above).
    warmup: Vec<f64>,
    samples: Vec<Sample>,
}

impl Path {
    /// Records a sample timed from `t0` (sent at wall-clock `wall0`): each stamp in ms after
    /// the call (`Seen::wait` asserts none precedes it); a hop between two watches (the pod's
    /// Ready, the slice) can come out negative.
    fn record(&mut self, warm: bool, t0: Instant, wall0: f64, at: [Instant; 4], sample: Sample) {
        let [reply, gate, ready, endpoint] =
            at.map(|t| t.duration_since(t0).as_secs_f64() * 1000.0);
        if warm {
            self.warmup.push(endpoint);
            return;
        }
        self.to_endpoint.push(endpoint);
        self.gate.push(gate);
        self.ready.push(ready - gate);
        self.slice.push(endpoint - ready);
        self.samples.push(Sample {
            sent: wall0,
            reply: wall0 + reply,
            gate: wall0 + gate,
            ready: wall0 + ready,
            endpoint: wall0 + endpoint,
            ..sample
        });
    }

    fn sort(&mut self) {
        for v in [
            &mut self.to_endpoint,
            &mut self.gate,
            &mut self.ready,
            &mut self.slice,
        ] {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        }
    }
}

/// One reaction run: Triton's path (gRPC `Next` to the canary a ready endpoint), the verified
/// pull-in recorded in the status (ms, sorted), and with `--floor` the floor's path.
struct Reaction {
    triton: Path,
    recorded: Vec<f64>,
    floor: Option<Path>,
    /// Each counted sample's end to end (ms), Triton's and its floor pair's.
    pairs: Vec<(f64, f64)>,
}

/// Samples timed first and not counted: they overlap the setup's last writes (the audit log
/// showed Kruise still updating pods and CloneSet statuses for a few hundred ms after the last
/// canary is Smoked, and the first samples 2-3x slower than the rest).
const WARMUP: usize = 5;

/// `samples` canaries waiting at Smoked, each behind its own Service; for each, a gRPC `Next`,
/// timed to the canary's gate True, Ready, ready endpoint, and the controller's status write
/// that records the verified pull-in. Each sample starts once the previous one's pull-in is
/// recorded (its release then waits for the next `Next`, at Baking). WARMUP more canaries are
/// timed first and told apart.
///
/// With `floor`, each sample is paired with one of the floor, what a controller that reacts in
/// no time would give: in a namespace of its own (so Triton's reconciles of the samples never
/// read its objects), the pod of a CloneSet of one replica with the same gate (Kruise reacts to
/// it as to a canary; it has no Triton label, so Triton neither caches nor touches it) behind
/// its own Service; the bench writes a DeployFlow there (an annotation on a
/// finished release, which Triton reads and leaves: the same object through the same CRD,
/// standing for the user's `Next` write, which the controller records before it acts) and, on
/// the reply, sets the pod's gate True itself, as the controller does. The rest of its path
/// (kwok, the EndpointSlice controller, the API server) is Triton's. The pair's order alternates.
async fn reaction(client: &kube::Client, samples: usize, floor: bool) -> Reaction {
    use k8s_openapi::api::core::v1::{Pod, Service};
    let ns = namespace(client, "bench-reaction").await;
    // The watches that time every sample, one per kind for the whole namespace, started before
    // anything is created in it; before the first `Next` the bench checks each has seen the
    // samples' objects (so it is established), and an event is timed when it arrives. Stopped
    // when the samples are done.
    let (seen, mut watches) = Seen::start(client, &ns);
    let floor_ns = match floor {
        true => Some(namespace(client, "bench-floor").await),
        false => None,
    };
    let floor_seen = floor_ns.as_deref().map(|fns| {
        let (s, w) = Seen::start(client, fns);
        watches.extend(w);
        s
    });
    let service = |ns: &str, name: &str, selector: Value| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "ports": [{"port": 80}]}
        }))
        .unwrap()
    };
    let services = kube::Api::<Service>::namespaced(client.clone(), &ns);
    let mut flows = Vec::new();
    for i in 0..WARMUP + samples {
        let name = format!("r{i}");
        services
            .create(
                &Default::default(),
                &service(&ns, &name, json!({"app.kubernetes.io/instance": name})),
            )
            .await
            .expect("create the sample's Service");
        flows.push(
            Flow::create(
                client,
                &ns,
                flow(
                    &name,
                    &name,
                    "create",
                    2,
                    "nginx",
                    json!({"batchSize": 1, "canary": 1, "mode": "auto"}),
                ),
            )
            .await,
        );
    }
    // The floor's CloneSets and Services; its pods' names once Kruise has created them.
    let floor_names: Vec<String> = (0..WARMUP + samples).map(|i| format!("f{i}")).collect();
    let mut floor_pod_names: Vec<String> = Vec::new();
    let mut floor_target = None;
    if let Some(fns) = &floor_ns {
        floor_target = Some(
            Flow::create(
                client,
                fns,
                flow(
                    "floor",
                    "floor",
                    "create",
                    1,
                    "nginx",
                    json!({"batchSize": 1, "mode": "auto"}),
                ),
            )
            .await,
        );
        let services = kube::Api::<Service>::namespaced(client.clone(), fns);
        for name in &floor_names {
            services
                .create(
                    &Default::default(),
                    &service(fns, name, json!({FLOOR_LABEL: name})),
                )
                .await
                .expect("create the floor's Service");
            triton_e2e::cloneset::CloneSetSpec::new(name, 1)
                .readiness_gate("apps.triton.io/ready")
                .pod_label(FLOOR_LABEL, name)
                .create(client, fns)
                .await;
        }
    }
    for df in &flows {
        df.wait_batch(1, "Smoked", Duration::from_secs(120)).await;
    }
    let n = WARMUP + samples;
    seen.established([n, n, n], &[]).await;
    if let (Some(fns), Some(target), Some(floor_seen)) = (&floor_ns, &floor_target, &floor_seen) {
        wait_status(target, |s| s["phase"] == "Success").await;
        let pods = kube::Api::<Pod>::namespaced(client.clone(), fns);
        let by_name = eventually(
            &format!("{n} floor pods running, their containers ready, their gates not set"),
            Duration::from_secs(120),
            || async {
                let list = pods
                    .list(&ListParams::default().labels(FLOOR_LABEL))
                    .await
                    .map_err(|e| e.to_string())?;
                let waiting: std::collections::HashMap<String, String> = list
                    .items
                    .iter()
                    .filter(|p| {
                        let cond = |t: &str| {
                            p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .and_then(|cs| cs.iter().find(|c| c.type_ == t))
                                .map(|c| c.status.clone())
                        };
                        cond("ContainersReady").as_deref() == Some("True")
                            && cond("apps.triton.io/ready").is_none()
                    })
                    .map(|p| (p.labels()[FLOOR_LABEL].clone(), p.name_any()))
                    .collect();
                if waiting.len() == n && list.items.len() == n {
                    Ok(waiting)
                } else {
                    Err(format!(
                        "{} of {n} ({} pods)",
                        waiting.len(),
                        list.items.len()
                    ))
                }
            },
        )
        .await;
        floor_pod_names = floor_names.iter().map(|f| by_name[f].clone()).collect();
        // Its pods and Services; one DeployFlow, released (its pod and itself past the gate).
        floor_seen.established([n, n, 1], &["floor"]).await;
    }
    let mut recorded = Vec::new();
    let (mut triton, mut floor_path) = (Path::default(), Path::default());
    let mut pairs = Vec::new();
    let mut grpc = triton_e2e::api::DeployFlowClient::new(
        triton_e2e::api::channel(&triton_e2e::api::grpc_addr()).await,
    );
    // The floor's writes, named in the audit log.
    let floor_apis = match &floor_ns {
        Some(fns) => {
            let mut config = kube::Config::infer().await.expect("kube config");
            config.headers.push((
                http::header::USER_AGENT,
                http::HeaderValue::from_static(FLOOR_AGENT),
            ));
            let c = kube::Client::try_from(config).expect("the floor's client");
            Some((
                dynamic_api(&c, fns, "apps.triton.io", "v1alpha1", "DeployFlow"),
                kube::Api::<Pod>::namespaced(c, fns),
            ))
        }
        None => None,
    };
    for (i, df) in flows.iter().enumerate() {
        let warm = i < WARMUP;
        let canary = df.status().await["conditions"][0]["pods"][0]["name"]
            .as_str()
            .expect("the canary pod")
            .to_string();
        let (mut t_triton, mut t_floor) = (None, None);
        // The pair in turns: Triton first, then the floor first.
        for floor_turn in [i % 2 == 1, i % 2 == 0] {
            let (Some((floor_flows, floor_pods)), Some(floor_seen), true) =
                (&floor_apis, &floor_seen, floor_turn)
            else {
                if !floor_turn {
                    t_triton = Some(triton_sample(&mut grpc, &seen, df, &canary).await);
                }
                continue;
            };
            let pod = &floor_pod_names[i];
            let (t0, wall0) = (Instant::now(), wall_ms());
            floor_flows
                .patch(
                    "floor",
                    &Default::default(),
                    &kube::api::Patch::Merge(
                        json!({"metadata": {"annotations": {FLOOR_LABEL: pod}}}),
                    ),
                )
                .await
                .expect("the floor's DeployFlow write");
            let t_reply = Instant::now();
            floor_pods
                .patch_status(
                    pod,
                    &Default::default(),
                    &kube::api::Patch::Strategic(json!({"status": {"conditions": [{
                        "type": "apps.triton.io/ready", "status": "True", "reason": "Floor"
                    }]}})),
                )
                .await
                .expect("the floor's gate write");
            let t_gate = floor_seen.wait(Fact::Gate, pod, t0).await;
            let t_ready = floor_seen.wait(Fact::Ready, pod, t0).await;
            let t_endpoint = floor_seen.wait(Fact::Endpoint, pod, t0).await;
            t_floor = Some((t0, wall0, [t_reply, t_gate, t_ready, t_endpoint]));
        }
        let (t0, wall0, at, t1) = t_triton.expect("a Triton sample");
        if !warm {
            recorded.push(t1.duration_since(t0).as_secs_f64() * 1000.0);
        }
        let ms = |t0: Instant, t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;
        triton.record(
            warm,
            t0,
            wall0,
            at,
            Sample::new(TRITON_AGENT, &ns, &df.name, &canary, &df.name),
        );
        if let (Some((f0, fwall0, fat)), Some(fns)) = (t_floor, &floor_ns) {
            if !warm {
                pairs.push((ms(t0, at[3]), ms(f0, fat[3])));
            }
            floor_path.record(
                warm,
                f0,
                fwall0,
                fat,
                Sample::new(
                    FLOOR_AGENT,
                    fns,
                    "floor",
                    &floor_pod_names[i],
                    &floor_names[i],
                ),
            );
        }
    }
    for watch in watches {
        watch.abort();
    }
    recorded.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut paths = vec![&mut triton];
    if floor {
        paths.push(&mut floor_path);
    }
    for path in paths {
        path.sort();
        if let Some(log) = std::env::var_os("TRITON_AUDIT_LOG") {
            path.audit = audit_hops(std::path::Path::new(&log), &path.samples).await;
        }
    }
    Reaction {
        triton,
        recorded,
        floor: floor.then_some(floor_path),
        pairs,
    }
}

/// One Triton sample: a gRPC `Next` on `df`, timed until its canary's gate True, Ready, ready
/// endpoint (the reply first), and the verified pull-in recorded.
async fn triton_sample(
    grpc: &mut triton_e2e::api::DeployFlowClient,
    seen: &Seen,
    df: &Flow,
    canary: &str,
) -> (Instant, f64, [Instant; 4], Instant) {
    let (t0, wall0) = (Instant::now(), wall_ms());
    grpc.next(triton_e2e::api::pb::NextRequest {
        deploy: triton_e2e::api::meta(&df.ns, &df.name),
    })
    .await
    .expect("Next");
    let t_reply = Instant::now();
    let t_gate = seen.wait(Fact::Gate, canary, t0).await;
    let t_ready = seen.wait(Fact::Ready, canary, t0).await;
    let t_endpoint = seen.wait(Fact::Endpoint, canary, t0).await;
    let t1 = seen.wait(Fact::PulledIn, &df.name, t0).await;
    (t0, wall0, [t_reply, t_gate, t_ready, t_endpoint], t1)
}

/// The label of the floor's pods and Services, and the annotation of its DeployFlow writes.
const FLOOR_LABEL: &str = "bench.triton.io/floor";
/// The User-Agent of the floor's writes, and the controller's.
const FLOOR_AGENT: &str = "triton-bench-floor/1";
const TRITON_AGENT: &str = "triton-controller/";

/// What the bench saw of the path, each from the API server's completion of the write.
const BENCH_SEES: [&str; 3] = [
    "the Next reply (the controller answers once its write is done)",
    "the gate on its pod watch",
    "Ready on its pod watch",
];

/// Per sample, a figure per hop (ms).
type Rows = Vec<Vec<f64>>;

/// A reaction sample: the User-Agent of its first two writes (the DeployFlow's, the gate's), its
/// DeployFlow, its pod and Service, and when (wall-clock ms) the bench sent the first write, got
/// the reply, and saw the gate True, the pod Ready and the ready endpoint.
struct Sample {
    agent: &'static str,
    ns: String,
    deployflow: String,
    pod: String,
    service: String,
    sent: f64,
    reply: f64,
    gate: f64,
    ready: f64,
    endpoint: f64,
}

impl Sample {
    fn new(agent: &'static str, ns: &str, deployflow: &str, pod: &str, service: &str) -> Sample {
        Sample {
            agent,
            ns: ns.to_string(),
            deployflow: deployflow.to_string(),
            pod: pod.to_string(),
            service: service.to_string(),
            sent: 0.0,
            reply: 0.0,
            gate: 0.0,
            ready: 0.0,
            endpoint: 0.0,
        }
    }
}

/// The hops of a reaction sample as the API server saw them (its audit log), in order, from
/// the gate write on (the same for Triton's samples and the floor's); the last from the API
/// server's clock to the bench's (the same machine's).
const PATH_TAIL: [&str; 6] = [
    "its gate write",
    "kwok's reaction",
    "kwok's Ready write",
    "the EndpointSlice controller's reaction",
    "its slice write",
    "the bench's slice watch",
];

/// The floor's hops before the gate write (see PATH_TAIL).
const FLOOR_HOPS: [&str; 3] = [
    "the bench's call to its DeployFlow write's arrival",
    "the bench's DeployFlow write (an annotation)",
    "the bench's reaction (it sends on the reply)",
];

/// What the bench saw of the floor's path (see BENCH_SEES).
const FLOOR_SEES: [&str; 3] = [
    "the DeployFlow write's reply",
    "the gate on its pod watch",
    "Ready on its pod watch",
];

/// Triton's hops before the gate write (see PATH_TAIL); the first from the bench's clock to the
/// API server's.
const AUDIT_HOPS: [&str; 3] = [
    "the gRPC call to the Next write's arrival",
    "the Next spec write",
    "the controller's reaction (watch, step)",
];

/// Per sample, the AUDIT_HOPS (or FLOOR_HOPS) and PATH_TAIL in ms: each write from its arrival to its response's completion at
/// the API server, each reaction from that completion to the next write's arrival; and the
/// BENCH_SEES: from a response's completion to the bench seeing the change. The watch event can
/// leave before the response is complete, so a reaction or a view can be negative. `None` when
/// the log cannot be read.
async fn audit_hops(path: &std::path::Path, samples: &[Sample]) -> Option<(Rows, Rows)> {
    struct Write {
        agent: String,
        ns: String,
        verb: String,
        resource: String,
        sub: String,
        name: String,
        arrived: f64,
        done: f64,
    }
    let ms = |e: &Value, key: &str| {
        serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>(
            e[key].clone(),
        )
        .ok()
        .map(|t| t.0.as_microsecond() as f64 / 1000.0)
    };
    let namespaces: std::collections::HashSet<&str> =
        samples.iter().map(|s| s.ns.as_str()).collect();
    // The successful writes in the samples' namespaces, by arrival.
    let read = || -> Result<Vec<Write>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut writes = Vec::new();
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let o = &e["objectRef"];
            let code = e["responseStatus"]["code"].as_i64().unwrap_or(0);
            let ns = o["namespace"].as_str().unwrap_or_default();
            if !namespaces.contains(ns) || !(200..300).contains(&code) {
                continue;
            }
            let (Some(arrived), Some(done)) =
                (ms(&e, "requestReceivedTimestamp"), ms(&e, "stageTimestamp"))
            else {
                continue;
            };
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            writes.push(Write {
                agent: s(&e["userAgent"]),
                ns: ns.to_string(),
                verb: s(&e["verb"]),
                resource: s(&o["resource"]),
                sub: s(&o["subresource"]),
                name: s(&o["name"]),
                arrived,
                done,
            });
        }
        writes.sort_by(|a, b| a.arrived.partial_cmp(&b.arrived).unwrap());
        Ok(writes)
    };
    // Each write on the path is the first of its kind to arrive after the previous one arrived
    // (a component can react to the watch event before the previous response is complete).
    let map = |writes: &[Write], sample: &Sample| -> Result<(Vec<f64>, Vec<f64>), String> {
        let find =
            |agent: &str, resource: &str, sub: &str, name: &dyn Fn(&str) -> bool, after: f64| {
                writes.iter().find(|w| {
                    w.agent.starts_with(agent)
                        && w.ns == sample.ns
                        && w.resource == resource
                        && w.sub == sub
                        && name(&w.name)
                        && w.arrived >= after
                })
            };
        let (df, pod) = (&sample.deployflow, &sample.pod);
        let next = writes
            .iter()
            .find(|w| {
                w.agent.starts_with(sample.agent)
                    && w.ns == sample.ns
                    && w.resource == "deployflows"
                    && w.sub.is_empty()
                    && w.verb == "patch"
                    && w.name == *df
                    && w.arrived >= sample.sent
            })
            .ok_or(format!("no Next write on {df}"))?;
        let pod_named = |n: &str| n == pod;
        let gate = find(sample.agent, "pods", "status", &pod_named, next.arrived)
            .ok_or(format!("no gate write on {pod}"))?;
        let kwok = find("kwok/", "pods", "status", &pod_named, gate.arrived)
            .ok_or(format!("no kwok write on {pod} after its gate's"))?;
        // A Service's slices are named after it.
        let prefix = format!("{}-", sample.service);
        let slice = find(
            "kube-controller-manager/",
            "endpointslices",
            "",
            &|n: &str| n.starts_with(&prefix),
            kwok.arrived,
        )
        .ok_or(format!("no slice write for {df} after {pod} Ready"))?;
        Ok((
            vec![
                next.arrived - sample.sent,
                next.done - next.arrived,
                gate.arrived - next.done,
                gate.done - gate.arrived,
                kwok.arrived - gate.done,
                kwok.done - kwok.arrived,
                slice.arrived - kwok.done,
                slice.done - slice.arrived,
                sample.endpoint - slice.done,
            ],
            vec![
                sample.reply - next.done,
                sample.gate - gate.done,
                sample.ready - kwok.done,
            ],
        ))
    };
    // The log is written off the request path: complete once the last sample is in it. A sample not found is left out and counted; a log that cannot be read is told.
    let last = samples.last()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let writes = loop {
        match read() {
            Ok(writes) if map(&writes, last).is_ok() => break writes,
            Ok(writes) if Instant::now() >= deadline => break writes,
            Err(e) if Instant::now() >= deadline => {
                eprintln!("[bench] no audit-log breakdown: {e}");
                return None;
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let (mut rows, mut bench, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for sample in samples {
        match map(&writes, sample) {
            Ok((row, seen)) => {
                rows.push(row);
                bench.push(seen);
            }
            Err(e) => missing.push(e),
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "[bench] {} of {} samples not found in the audit log: {}",
            missing.len(),
            samples.len(),
            missing.join("; ")
        );
    }
    Some((rows, bench))
}

/// "name p50 / p99" for each column of `rows`.
fn columns(names: &[&str], rows: &[Vec<f64>]) -> String {
    let named: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut v: Vec<f64> = rows.iter().map(|row| row[i]).collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            format!("{name} {:.1} / {:.1}", pct(&v, 0.5), pct(&v, 0.99))
        })
        .collect();
    named.join("; ")
}

/// A path's figures: `what` it times, the names of its hops as the bench sees them (to the gate
/// True, to Ready, to the ready endpoint) and as the audit log shows them before the gate write
/// (PATH_TAIL follows).
fn print_path(what: &str, hops: [&str; 3], audit_hops: &[&str], bench_sees: &[&str], p: &Path) {
    println!(
        "  {what} ({} samples, after {} warm-up samples at {}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p.to_endpoint.len(),
        p.warmup.len(),
        p.warmup
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join("/"),
        pct(&p.to_endpoint, 0.5),
        pct(&p.to_endpoint, 0.99),
        p.to_endpoint.last().unwrap()
    );
    println!(
        "    its hops, p50 / p99: {} {:.1} / {:.1} ms; {} {:.1} / {:.1} ms; {} {:.1} / {:.1} ms",
        hops[0],
        pct(&p.gate, 0.5),
        pct(&p.gate, 0.99),
        hops[1],
        pct(&p.ready, 0.5),
        pct(&p.ready, 0.99),
        hops[2],
        pct(&p.slice, 0.5),
        pct(&p.slice, 0.99),
    );
    if let Some((rows, bench)) = p.audit.as_ref().filter(|(rows, _)| !rows.is_empty()) {
        let mut sum: Vec<f64> = rows.iter().map(|row| row.iter().sum()).collect();
        sum.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "    as the API server saw them (audit log, {} of the samples; a write from its arrival to its response's completion, a reaction from that completion to the next write's arrival), p50 / p99 ms: {}; the sum {:.1} / {:.1}",
            rows.len(),
            columns(&[audit_hops, &PATH_TAIL[..]].concat(), rows),
            pct(&sum, 0.5),
            pct(&sum, 0.99)
        );
        println!(
            "    the bench's own view, from the response's completion, p50 / p99 ms: {}",
            columns(bench_sees, bench)
        );
    }
}

fn print_reaction(r: &Reaction) {
    print_path(
        "reaction, gRPC Next -> canary a ready endpoint of its Service",
        [
            "Next -> gate True (Triton)",
            "gate True -> pod Ready (kwok)",
            "Ready -> ready endpoint (EndpointSlice controller)",
        ],
        &AUDIT_HOPS,
        &BENCH_SEES,
        &r.triton,
    );
    println!(
        "  reaction, gRPC Next -> verified pull-in recorded in the status ({} samples): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.recorded.len(),
        pct(&r.recorded, 0.5),
        pct(&r.recorded, 0.99),
        r.recorded.last().unwrap()
    );
    if let Some(floor) = &r.floor {
        print_path(
            "floor, a controller that reacts in no time: the bench's DeployFlow write, then on its reply its gate write -> a CloneSet's pod a ready endpoint of its Service",
            [
                "the DeployFlow write and the gate's -> gate True",
                "gate True -> pod Ready (kwok)",
                "Ready -> ready endpoint (EndpointSlice controller)",
            ],
            &FLOOR_HOPS,
            &FLOOR_SEES,
            floor,
        );
        let diff = |q: f64| pct(&r.triton.to_endpoint, q) - pct(&floor.to_endpoint, q);
        let mut paired: Vec<f64> = r.pairs.iter().map(|(t, f)| t - f).collect();
        paired.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let over = |v: &[f64]| v.iter().filter(|ms| **ms > 50.0).count();
        println!(
            "  Triton over the floor: p50 {:+.1} ms, p99 {:+.1} ms; pair by pair (each Triton sample less its floor sample, taken next to it), p50 {:+.1} ms, Triton slower in {} of {} pairs. Over 50 ms: Triton {} of {} samples, the floor {} of {}",
            diff(0.5),
            diff(0.99),
            pct(&paired, 0.5),
            paired.iter().filter(|d| **d > 0.0).count(),
            paired.len(),
            over(&r.triton.to_endpoint),
            r.triton.to_endpoint.len(),
            over(&floor.to_endpoint),
            floor.to_endpoint.len(),
        );
    }
}

#[tokio::main]
async fn main() {
    let client = client().await;
    let scale_ns: Vec<usize> = {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == "--scale")
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.split(',')
                    .map(|n| n.parse().expect("--scale takes N,N,…"))
                    .collect()
            })
            .unwrap_or_default()
    };
    if !scale_ns.is_empty() {
        scale(&client, &scale_ns, arg("--steady-seconds", 60)).await;
        return;
    }
    let samples = arg("--reaction-samples", 50);
    let concurrent = arg("--concurrent", 100);
    let steady = arg("--steady-seconds", 60);

    // (1) Reaction time.
    let floor = std::env::args().any(|a| a == "--floor");
    let reaction = reaction(&client, samples, floor).await;

    // (2) Tutorial wall time, intervals 0.
    let ns = namespace(&client, "bench-tutorial").await;
    let mut t = tutorial();
    t["spec"]["updateStrategy"]["batchIntervalSeconds"] = json!(0);
    let start = Instant::now();
    let df = Flow::create(&client, &ns, t).await;
    wait_status(&df, |s| batch_is(s, 1, "Smoked")).await;
    df.patch_strategy("updateStrategy", json!({"batches": 1, "stage": "Baking"}))
        .await;
    wait_status(&df, |s| batch_is(s, 1, "Baking")).await;
    df.patch_strategy("updateStrategy", json!({"stage": "Baked"}))
        .await;
    wait_status(&df, |s| batch_is(s, 2, "Pending")).await;
    df.patch_strategy("updateStrategy", json!({"batches": 3, "stage": "Baked"}))
        .await;
    wait_status(&df, |s| s["phase"] == "Success").await;
    let tutorial_wall = start.elapsed();

    // (3) Concurrent releases.
    let ns = namespace(&client, "bench-concurrent").await;
    let m0 = controller_metrics().await;
    let before = controller_proc();
    let start = Instant::now();
    let creates = (0..concurrent).map(|i| {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let name = format!("c{i}");
            Flow::create(
                &client,
                &ns,
                flow(
                    &name,
                    &name,
                    "create",
                    3,
                    "nginx",
                    json!({"batchSize": 1, "mode": "auto"}),
                ),
            )
            .await
        }
    });
    let flows: Vec<Flow> = futures::future::join_all(creates).await;
    let api = dynamic_api(&client, &ns, "apps.triton.io", "v1alpha1", "DeployFlow");
    let (succeeded, other) = eventually(
        &format!("{concurrent} DeployFlows finished"),
        Duration::from_secs(600),
        || async {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let phases: Vec<String> = list
                .items
                .iter()
                .map(|d: &DynamicObject| {
                    d.data["status"]["phase"].as_str().unwrap_or("").to_string()
                })
                .collect();
            let done = phases
                .iter()
                .filter(|p| ["Success", "Failed", "Canceled", "Aborted"].contains(&p.as_str()))
                .count();
            if done == flows.len() {
                let ok = phases.iter().filter(|p| *p == "Success").count();
                Ok((ok, done - ok))
            } else {
                Err(format!("{done}/{} finished", flows.len()))
            }
        },
    )
    .await;
    let total = start.elapsed();
    let after = controller_proc();
    let m1 = controller_metrics().await;

    println!(
        "triton-controller benchmark (local control plane, 2 cores shared by every component)"
    );
    print_reaction(&reaction);
    println!(
        "  tutorial release, intervals 0, Next sent as each state is reached: {:.2} s",
        tutorial_wall.as_secs_f64()
    );
    println!(
        "  {concurrent} concurrent DeployFlows x 3 replicas (auto, batches of 1): {:.1} s total, {succeeded} Success, {other} not",
        total.as_secs_f64()
    );
    match (before, after) {
        (Some((_, cpu0)), Some((hwm, cpu1))) => println!(
            "  triton-controller: peak RSS {:.1} MiB, CPU {:.1} s during the concurrent run ({:.1} s since start)",
            hwm as f64 / 1024.0,
            cpu1 - cpu0,
            cpu1
        ),
        _ => println!("  triton-controller process not found in /proc"),
    }
    let d = |p: &str| (metric_sum(&m1, p) - metric_sum(&m0, p)) / concurrent as f64;
    let by_verb: Vec<String> = requests_by_verb(&m1)
        .into_iter()
        .zip(requests_by_verb(&m0))
        .filter(|((_, b), (_, a))| b > a)
        .map(|((v, b), (_, a))| format!("{v} {:.1}", (b - a) / concurrent as f64))
        .collect();
    println!(
        "  per release: {:.1} DeployFlow reconciles, {:.1} gate reconciles, {:.1} API requests ({}), of which {:.1} DeployFlow patches (status and spec)",
        d("triton_controller_reconcile_duration_seconds_count"),
        d("triton_controller_gate_reconciles_total"),
        d("triton_controller_kube_requests_total"),
        by_verb.join(", "),
        d("triton_controller_kube_requests_total{verb=\"patch\",resource=\"deployflows\"}"),
    );
    steady_state(&client, steady).await;
    if other > 0 {
        std::process::exit(1);
    }
}
