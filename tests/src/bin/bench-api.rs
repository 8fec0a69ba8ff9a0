//! API benchmark, run inside the local control plane:
//!
//!   TRITON_BUILD_PROFILE=release tests/cluster/run --triton -- \
//!     cargo run --release --offline -p triton-e2e --bin bench-api
//!
//! Flags: `--releases 100` `--cold-releases 20` `--burst-releases 20` `--get-clients 16`
//! `--get-seconds 10` `--streams 1000` `--watch-channels 10`.
//!
//! Measures the gRPC API of a *standby* triton-controller started with authentication and
//! authorization on (TokenReview + SubjectAccessReview, answers cached for
//! `--api-auth-ttl`, 10 s), called with the token of a ServiceAccount bound to ClusterRole
//! `triton-release-operator`:
//!
//! 1. `Next` round trip, one call per canary waiting at `Smoked` (tutorial-like DeployFlows of 3
//!    replicas, canary 1, auto mode, interval 0), after one `Get` that caches the token.
//!    `--releases`: the token and the call's access decision (`patch` on that DeployFlow) cached,
//!    by a `Continue` without target (refused with InvalidArgument after the authorization, no
//!    write) just before; each call once the previous release has reacted (batch 1 Baking).
//!    `--cold-releases`: the same, but only the token cached (a `Get` of the DeployFlow just
//!    before), so the call makes one SubjectAccessReview. `--burst-releases`: cached, calls back
//!    to back while the controller reacts to the previous ones. For comparison, the two
//!    API-server calls `Next` makes (GET, merge patch with resourceVersion), sent directly with
//!    the admin credentials, on the DeployFlows and on a ConfigMap.
//! 2. `Get` latency and throughput: a closed loop of C clients, one HTTP/2 channel each.
//! 3. N concurrent `Watch` streams on one DeployFlow, with a target it does not reach: the
//!    standby's extra resident memory once every stream has its first message; the fan-out
//!    latency of one change (`Pause` through the harness controller's plaintext API) to every
//!    stream; the open-stream gauge `triton_controller_api_streams` before, while open, and
//!    after the streams are closed.
//!
//! Prints the figures and a summary against the targets (Next p99 < 20 ms, Get > 5,000/s,
//! 1,000 streams < 50 MiB extra RSS); a missed target prints MISS, it does not fail the run.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kube::api::ListParams;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use triton_e2e::api::*;
use triton_e2e::deployflow::{Flow, deployflows, summary, tutorial};
use triton_e2e::*;

/// The standby's gRPC, REST and admin ports (private to the run's network namespace).
const STANDBY_PORTS: (u16, u16, u16) = (18099, 18088, 18000);
/// The harness's HTTP/2 server (hyper) allows this many concurrent streams per connection.
const H2_STREAMS_PER_CONNECTION: usize = 200;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_micros().max(1) as u64);
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn max_ms(h: &Histogram<u64>) -> f64 {
    h.max() as f64 / 1000.0
}

fn spread(h: &Histogram<u64>) -> String {
    format!(
        "{} calls, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        h.len(),
        ms(h, 0.5),
        ms(h, 0.9),
        ms(h, 0.99),
        max_ms(h)
    )
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm in stat")
        .1
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// The value of an unlabelled metric on a controller's admin `/metrics`.
async fn metric(admin: &str, name: &str) -> Result<f64, String> {
    let out = tokio::process::Command::new("curl")
        .args(["-fsS", &format!("http://{admin}/metrics")])
        .output()
        .await
        .map_err(|e| format!("run curl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse::<f64>().ok()).flatten()
        })
        .ok_or_else(|| format!("{name} not in /metrics"))
}

/// The tutorial DeployFlow as release `name` (its own instance), 3 replicas in batches of 1
/// behind a canary of 1, auto mode, no interval: its canary waits at Smoked for `Next`.
fn release(name: &str) -> Value {
    let mut t = tutorial();
    t["metadata"]["labels"]["app.kubernetes.io/instance"] = json!(name);
    t["spec"]["application"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] = json!(name);
    t["metadata"]["name"] = json!(name);
    t["spec"]["application"]["instanceName"] = json!(name);
    t["spec"]["application"]["replicas"] = json!(3);
    t["spec"]["updateStrategy"] = json!({
        "batchSize": 1, "canary": 1, "mode": "auto", "batchIntervalSeconds": 0,
    });
    t
}

fn current(s: &Value) -> (i64, String) {
    let c = s["conditions"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .unwrap_or_default();
    (
        c["batch"].as_i64().unwrap_or(0),
        c["phase"].as_str().unwrap_or("").to_string(),
    )
}

/// Waits until every DeployFlow of `ns` named in `names` has its current batch `batch` `phase`.
async fn wait_all(client: &kube::Client, ns: &str, names: &[String], batch: i64, phase: &str) {
    let api = deployflows(client, ns);
    eventually(
        &format!("{} DeployFlows at batch {batch} {phase}", names.len()),
        Duration::from_secs(300),
        || async {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut waiting = Vec::new();
            for name in names {
                let Some(d) = list
                    .items
                    .iter()
                    .find(|d| d.metadata.name.as_deref() == Some(name))
                else {
                    waiting.push(format!("{name}: absent"));
                    continue;
                };
                let s = &d.data["status"];
                if current(s) != (batch, phase.to_string()) {
                    waiting.push(format!("{name}: {}", summary(s)));
                }
            }
            if waiting.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} not yet, e.g. {}",
                    waiting.len(),
                    waiting
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            }
        },
    )
    .await;
}

/// One Watch stream's record: the instants of the messages after the first, and whether each
/// showed status.paused.
type Received = Vec<(Instant, bool)>;

#[tokio::main]
async fn main() {
    let client = client().await;
    let n_warm = arg("--releases", 100);
    let n_cold = arg("--cold-releases", 20);
    let n_burst = arg("--burst-releases", 20);
    let get_clients = arg("--get-clients", 16);
    let get_seconds = arg("--get-seconds", 10) as u64;
    let n_streams = arg("--streams", 1000);
    let watch_channels = arg("--watch-channels", 10).max(1);

    let ns = namespace(&client, "bench-api").await;
    let token = service_account_token(&client, &ns, "bench", true, None).await;
    let standby = Standby::start(STANDBY_PORTS, None).await;
    let pid = standby.pid().expect("the standby controller's pid");
    let ch = channel(&standby.grpc).await;
    let mut df = DeployFlowClient::new(ch.clone());

    // ---- (1) Next ---------------------------------------------------------------------------
    // Groups, in this order: `settled` (token and decision cached; each call once the previous
    // release has reacted), `cold` (token cached, one SubjectAccessReview; settled too),
    // `burst` (cached, back to back while the controller reacts to the previous calls).
    let groups = [("settled", n_warm), ("cold", n_cold), ("burst", n_burst)];
    let mut names: Vec<(String, &str)> = Vec::new();
    for (group, n) in groups {
        for i in 0..n {
            names.push((format!("{group}-{i}"), group));
        }
    }
    let all: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let mut flows = Vec::new();
    for name in &all {
        flows.push(Flow::create(&client, &ns, release(name)).await);
    }
    wait_all(&client, &ns, &all, 1, "Smoked").await;

    // One Get first: the token review is cached from here on (for the TTL).
    df.get(with_token(
        pb::DeployMetaRequest {
            deploy: meta(&ns, &all[0]),
        },
        &token,
    ))
    .await
    .unwrap_or_else(|e| panic!("Get (auth warm-up) {}: {e}", all[0]));

    let (mut next_settled, mut next_cold, mut next_burst) = (histogram(), histogram(), histogram());
    for ((name, group), flow) in names.iter().zip(&flows) {
        if *group == "cold" {
            // Only the token (and `get` on this DeployFlow) cached.
            df.get(with_token(
                pb::DeployMetaRequest {
                    deploy: meta(&ns, name),
                },
                &token,
            ))
            .await
            .unwrap_or_else(|e| panic!("Get {name}: {e}"));
        } else {
            // Caches the token and the decision `patch deployflows/<name>`: Continue is
            // authorized before its empty target is refused, and writes nothing.
            let r = df
                .r#continue(with_token(
                    pb::ContinueRequest {
                        deploy: meta(&ns, name),
                        target: None,
                    },
                    &token,
                ))
                .await;
            match r {
                Err(s) if s.code() == tonic::Code::InvalidArgument => {}
                other => panic!("Continue without target on {name} (auth warm-up): {other:?}"),
            }
        }
        let t0 = Instant::now();
        let reply = df
            .next(with_token(
                pb::NextRequest {
                    deploy: meta(&ns, name),
                },
                &token,
            ))
            .await;
        let took = t0.elapsed();
        reply.unwrap_or_else(|e| panic!("Next {name}: {e}"));
        match *group {
            "settled" => record(&mut next_settled, took),
            "cold" => record(&mut next_cold, took),
            _ => record(&mut next_burst, took),
        }
        if *group != "burst" {
            // The controller's reaction (gate, pull-in, status) is over before the next call.
            flow.wait_batch(1, "Baking", Duration::from_secs(60)).await;
        }
    }
    // Every canary moves on to Baking and stays there (the spec asks for batch 1 Baking).
    wait_all(&client, &ns, &all, 1, "Baking").await;

    // The same two API-server calls `Next` makes (GET, then a merge patch with the
    // resourceVersion as precondition), sent directly by this client with the admin
    // credentials: on the DeployFlows (a spec write like Next's, here batchIntervalSeconds,
    // which a release waiting within its batch 1 does not use) and, for scale, on a ConfigMap.
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), &ns);
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "bench"}})).unwrap();
    cms.create(&kube::api::PostParams::default(), &cm)
        .await
        .expect("create ConfigMap bench");
    let dfs = deployflows(&client, &ns);
    let (mut direct_df, mut direct_cm) = (histogram(), histogram());
    for (i, name) in all.iter().take(n_warm).enumerate() {
        let t0 = Instant::now();
        let live = dfs.get(name).await.expect("get DeployFlow");
        let patch = json!({
            "metadata": {"resourceVersion": live.metadata.resource_version},
            "spec": {"updateStrategy": {"batchIntervalSeconds": 1}},
        });
        dfs.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("patch DeployFlow");
        record(&mut direct_df, t0.elapsed());

        let t0 = Instant::now();
        let live = cms.get("bench").await.expect("get ConfigMap");
        let patch = json!({"metadata": {"resourceVersion": live.metadata.resource_version},
            "data": {"seq": i.to_string()}});
        cms.patch(
            "bench",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("patch ConfigMap");
        record(&mut direct_cm, t0.elapsed());
    }

    // ---- (2) Get closed loop ----------------------------------------------------------------
    let target = all[0].clone();
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(get_seconds);
    let mut loops = Vec::new();
    for _ in 0..get_clients {
        let mut c = DeployFlowClient::new(channel(&standby.grpc).await);
        let (ns, target, token) = (ns.clone(), target.clone(), token.clone());
        loops.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = c
                    .get(with_token(
                        pb::DeployMetaRequest {
                            deploy: meta(&ns, &target),
                        },
                        &token,
                    ))
                    .await;
                match r {
                    Ok(_) => record(&mut h, t0.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("Get failed: {e}");
                        }
                    }
                }
            }
            (h, errors)
        }));
    }
    let mut get = histogram();
    let mut get_errors = 0;
    for l in loops {
        let (h, e) = l.await.expect("a Get loop");
        get.add(&h).expect("merge histograms");
        get_errors += e;
    }
    let get_wall = start.elapsed().as_secs_f64();
    let get_cpu = cpu_seconds(pid) - cpu0;
    let get_rate = get.len() as f64 / get_wall;

    // ---- (3) Watch streams ------------------------------------------------------------------
    let watched = all[all.len() - 1].clone();
    let streams_before = eventually(
        "the standby's open-stream gauge",
        Duration::from_secs(10),
        || metric(&standby.admin, "triton_controller_api_streams"),
    )
    .await;
    let rss_before = rss_kib(pid);
    let mut clients = Vec::new();
    for _ in 0..watch_channels {
        clients.push(DeployFlowClient::new(channel(&standby.grpc).await));
    }
    // A target the release does not reach while the benchmark runs.
    let request = pb::WatchRequest {
        deploy: meta(&ns, &watched),
        target: Some(pb::TargetState {
            stage: "Baked".into(),
            batches: 3,
        }),
    };
    let (opened_tx, mut opened_rx) = mpsc::channel::<()>(n_streams.max(1));
    let (done_tx, mut done_rx) = mpsc::channel::<Received>(n_streams.max(1));
    let (close_tx, close_rx) = watch::channel(false);
    // At most this many opens in flight, so the first calls cache the access decisions before
    // the rest arrive (the authorizer does not coalesce concurrent misses).
    let opening = std::sync::Arc::new(Semaphore::new(64));
    let open_start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n_streams {
        let mut c = clients[i % watch_channels].clone();
        let (request, token) = (request.clone(), token.clone());
        let (opened_tx, done_tx, mut close_rx) =
            (opened_tx.clone(), done_tx.clone(), close_rx.clone());
        let opening = opening.clone();
        tasks.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await.expect("semaphore");
            let mut stream = c
                .watch(with_token(request, &token))
                .await
                .unwrap_or_else(|e| panic!("Watch stream {i}: {e}"))
                .into_inner();
            match stream.message().await {
                Ok(Some(_)) => {}
                other => panic!("Watch stream {i} first message: {other:?}"),
            }
            drop(permit);
            let _ = opened_tx.send(()).await;
            let mut got: Received = Vec::new();
            let mut reported = false;
            loop {
                tokio::select! {
                    m = stream.message() => match m {
                        Ok(Some(r)) => {
                            let paused = r.deploy.is_some_and(|d| d.paused);
                            got.push((Instant::now(), paused));
                            if paused && !reported {
                                reported = true;
                                let _ = done_tx.send(std::mem::take(&mut got)).await;
                            }
                        }
                        other => panic!("Watch stream {i} ended: {other:?}"),
                    },
                    _ = close_rx.changed() => break,
                }
            }
            drop(stream);
        }));
    }
    drop((opened_tx, done_tx));
    let open_deadline = Instant::now() + Duration::from_secs(120);
    for n in 0..n_streams {
        tokio::time::timeout_at(open_deadline.into(), opened_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out: {n} of {n_streams} Watch streams open"))
            .expect("a stream task ended before its first message");
    }
    let open_wall = open_start.elapsed();
    let rss_open = rss_kib(pid);
    let streams_open = eventually(
        &format!("the open-stream gauge at {n_streams} more"),
        Duration::from_secs(10),
        || async {
            let v = metric(&standby.admin, "triton_controller_api_streams").await?;
            if v >= streams_before + n_streams as f64 {
                Ok(v)
            } else {
                Err(format!("{v}"))
            }
        },
    )
    .await;

    // One change: Pause through the harness controller (plaintext, no auth); its spec write
    // reaches the streams first, then the leader's status.paused.
    let mut harness = DeployFlowClient::new(channel(&grpc_addr()).await);
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut pause = harness
        .pause(pb::DeployMetaRequest {
            deploy: meta(&ns, &watched),
        })
        .await
        .unwrap_or_else(|e| panic!("Pause {watched}: {e}"))
        .into_inner();
    let pause_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(pause_deadline.into(), pause.message()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("Pause stream of {watched}: {e}"),
            Err(_) => panic!("timed out waiting for {watched} to show status.paused"),
        }
    }
    let pause_done = t0.elapsed();
    let (mut fan_first, mut fan_paused) = (histogram(), histogram());
    for n in 0..n_streams {
        let got = tokio::time::timeout_at(pause_deadline.into(), done_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("timed out: {n} of {n_streams} Watch streams received status.paused")
            })
            .expect("a stream task ended before status.paused");
        let after: Vec<&(Instant, bool)> = got.iter().filter(|(at, _)| *at >= t0).collect();
        let first = after.first().expect("an update after the Pause");
        let paused = after.iter().find(|(_, p)| *p).expect("the paused update");
        record(&mut fan_first, first.0 - t0);
        record(&mut fan_paused, paused.0 - t0);
    }
    let fan_cpu = cpu_seconds(pid) - cpu0;

    close_tx.send(true).expect("stream tasks listen");
    for t in tasks {
        t.await.expect("a stream task");
    }
    drop(clients);
    let close_start = Instant::now();
    let streams_after = eventually(
        "the open-stream gauge back to its value before the streams",
        Duration::from_secs(30),
        || async {
            let v = metric(&standby.admin, "triton_controller_api_streams").await?;
            if v <= streams_before {
                Ok(v)
            } else {
                Err(format!("{v}"))
            }
        },
    )
    .await;
    let close_wall = close_start.elapsed();
    let rss_after = rss_kib(pid);
    let extra_mib = (rss_open as f64 - rss_before as f64) / 1024.0;

    // ---- Report -----------------------------------------------------------------------------
    println!(
        "triton-controller API benchmark (local control plane, 2 cores shared by every component \
         and this client); a standby controller, gRPC in plaintext, auth on (TokenReview + \
         SubjectAccessReview, answers cached 10 s), ServiceAccount token bound to \
         triton-release-operator"
    );
    println!(
        "  (1) Next, one call per canary waiting at Smoked (tutorial-like, 3 replicas, canary 1, auto, interval 0); auth cache warmed by one Get first"
    );
    println!(
        "      token and decision cached, each call after the previous release reacted: {}",
        spread(&next_settled)
    );
    if !next_cold.is_empty() {
        println!(
            "      first call on its DeployFlow (token cached, one SubjectAccessReview), settled: {}",
            spread(&next_cold)
        );
    }
    if !next_burst.is_empty() {
        println!(
            "      token and decision cached, back to back (the controller reacting meanwhile): {}",
            spread(&next_burst)
        );
    }
    println!(
        "      for comparison, the API-server calls Next makes (GET + merge patch), sent directly with admin credentials:"
    );
    println!("        spec write of a DeployFlow: {}", spread(&direct_df));
    println!("        data write of a ConfigMap:  {}", spread(&direct_cm));
    println!(
        "  (2) Get, closed loop, {get_clients} clients x 1 HTTP/2 channel, {get_seconds} s: {} calls ({get_errors} errors), {:.0} calls/s; p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; standby CPU {:.1} s ({:.0} % of a core)",
        get.len(),
        get_rate,
        ms(&get, 0.5),
        ms(&get, 0.99),
        max_ms(&get),
        get_cpu,
        100.0 * get_cpu / get_wall
    );
    println!(
        "  (3) {n_streams} Watch streams on one DeployFlow over {watch_channels} HTTP/2 channels (the server allows {H2_STREAMS_PER_CONNECTION} streams per connection), all open with a first message in {:.2} s",
        open_wall.as_secs_f64()
    );
    println!(
        "      standby RSS: {:.1} MiB before, {:.1} MiB with the streams open (+{:.1} MiB, {:.1} KiB per stream), {:.1} MiB after closing them",
        rss_before as f64 / 1024.0,
        rss_open as f64 / 1024.0,
        extra_mib,
        (rss_open as f64 - rss_before as f64) / n_streams.max(1) as f64,
        rss_after as f64 / 1024.0
    );
    println!(
        "      one change (Pause via the harness controller; its Pause call returned after {:.1} ms), per stream from the call:",
        pause_done.as_secs_f64() * 1000.0
    );
    println!(
        "        first update (the spec write):  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(&fan_first, 0.5),
        ms(&fan_first, 0.99),
        max_ms(&fan_first)
    );
    println!(
        "        status.paused update:           p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; standby CPU {:.2} s",
        ms(&fan_paused, 0.5),
        ms(&fan_paused, 0.99),
        max_ms(&fan_paused),
        fan_cpu
    );
    println!(
        "      triton_controller_api_streams: {streams_before} before, {streams_open} open, {streams_after} {:.2} s after closing",
        close_wall.as_secs_f64()
    );

    let verdict = |ok: bool| if ok { "ok" } else { "MISS" };
    let next_p99 = ms(&next_settled, 0.99);
    println!();
    println!("  {:<44} {:>16} {:>14}  ", "summary", "measured", "target");
    println!(
        "  {:<44} {:>13.1} ms {:>14}  {}",
        "Next p99 (auth on, token cached)",
        next_p99,
        "< 20 ms",
        verdict(next_p99 < 20.0)
    );
    println!(
        "  {:<44} {:>11.0} /s {:>14}  {}",
        format!("Get throughput ({get_clients} clients)"),
        get_rate,
        "> 5,000/s",
        verdict(get_rate > 5000.0)
    );
    println!(
        "  {:<44} {:>12.1} MiB {:>14}  {}",
        format!("{n_streams} Watch streams, extra RSS"),
        extra_mib,
        "< 50 MiB",
        verdict(extra_mib < 50.0)
    );

    standby.stop().await;
}
