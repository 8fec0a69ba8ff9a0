//! Controller benchmark, run inside the local control plane:
//!
//!   tests/cluster/run --triton --nodes 5 -- cargo run --release -p triton-e2e --bin bench-controller
//!
//! Prints: (1) reaction time over N canaries waiting at Smoked, each behind a Service: from a
//! gRPC `Next` to the canary listed ready in its Service's EndpointSlice (what users see: the
//! pod takes traffic), and to the controller's status write that records the verified pull-in; (2) the wall time of the tutorial release with
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
    eprintln!("[bench] deleting the {} namespaces of round {n} (waits until they are gone)…", names.len());
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
                .filter(|ns| ns.metadata.name.as_deref().is_some_and(|m| m.starts_with(&prefix)))
                .count();
            if left == 0 { Ok(()) } else { Err(format!("{left} left")) }
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
    let ns = namespace(&client, "bench-reaction").await;
    let mut flows = Vec::new();
    for i in 0..samples {
        let name = format!("r{i}");
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app.kubernetes.io/instance": name}, "ports": [{"port": 80}]}
        }))
        .unwrap();
        kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), &ns)
            .create(&Default::default(), &svc)
            .await
            .expect("create the sample's Service");
        flows.push(
            Flow::create(
                &client,
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
    for df in &flows {
        df.wait_batch(1, "Smoked", Duration::from_secs(120)).await;
    }
    let mut reaction = Vec::new();
    let mut to_endpoint = Vec::new();
    let (mut hop_gate, mut hop_ready, mut hop_slice) = (Vec::new(), Vec::new(), Vec::new());
    let mut grpc = triton_e2e::api::DeployFlowClient::new(
        triton_e2e::api::channel(&triton_e2e::api::grpc_addr()).await,
    );
    let slices_api = kube::Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(
        client.clone(),
        &ns,
    );
    for df in &flows {
        // The canary's EndpointSlice watch, listed before the call.
        let canary = df.status().await["conditions"][0]["pods"][0]["name"]
            .as_str()
            .expect("the canary pod")
            .to_string();
        let cfg =
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={}", df.name));
        let mut slices = watcher(slices_api.clone(), cfg).boxed();
        loop {
            match slices.next().await {
                Some(Ok(watcher::Event::InitDone)) => break,
                Some(Ok(_)) => {}
                other => panic!("watching slices of {}: {other:?}", df.name),
            }
        }
        // Watch first (initial list done), then patch, then time until the controller's write.
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", df.name));
        let mut events = watcher(df.api.clone(), cfg).boxed();
        loop {
            match events.next().await {
                Some(Ok(watcher::Event::InitDone)) => break,
                Some(Ok(_)) => {}
                other => panic!("watching {}: {other:?}", df.name),
            }
        }
        // The canary pod's watch, for the hops: gate True (Triton), Ready (kwok), endpoint (the
        // EndpointSlice controller).
        let cfg = watcher::Config::default().fields(&format!("metadata.name={canary}"));
        let pods_api = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns);
        let mut pod_events = watcher(pods_api, cfg).boxed();
        loop {
            match pod_events.next().await {
                Some(Ok(watcher::Event::InitDone)) => break,
                Some(Ok(_)) => {}
                other => panic!("watching pod {canary}: {other:?}"),
            }
        }
        let hops = tokio::spawn(async move {
            let cond = |p: &k8s_openapi::api::core::v1::Pod, t: &str| {
                p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                    cs.iter().any(|c| c.type_ == t && c.status == "True")
                })
            };
            let (mut gate, mut ready) = (None, None);
            while let Ok(Some(ev)) =
                tokio::time::timeout(Duration::from_secs(60), pod_events.next()).await
            {
                if let Ok(watcher::Event::Apply(p)) = ev {
                    if gate.is_none() && cond(&p, "apps.triton.io/ready") {
                        gate = Some(Instant::now());
                    }
                    if ready.is_none() && cond(&p, "Ready") {
                        ready = Some(Instant::now());
                    }
                    if gate.is_some() && ready.is_some() {
                        break;
                    }
                }
            }
            (gate.expect("the canary's gate True"), ready.expect("the canary Ready"))
        });
        let t0 = Instant::now();
        grpc.next(triton_e2e::api::pb::NextRequest {
            deploy: triton_e2e::api::meta(&df.ns, &df.name),
        })
        .await
        .expect("Next");
        let ready = |s: &k8s_openapi::api::discovery::v1::EndpointSlice| {
            s.endpoints.iter().flatten().any(|e| {
                e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(canary.as_str())
                    && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
            })
        };
        let t_endpoint = loop {
            let ev = tokio::time::timeout(Duration::from_secs(60), slices.next())
                .await
                .expect("the canary to become a ready endpoint");
            if let Some(Ok(watcher::Event::Apply(s))) = ev
                && ready(&s)
            {
                break Instant::now();
            }
        };
        to_endpoint.push((t_endpoint - t0).as_secs_f64() * 1000.0);
        let (t_gate, t_ready) = hops.await.expect("the pod watch");
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
        hop_gate.push(ms(t0, t_gate));
        hop_ready.push(ms(t_gate, t_ready));
        hop_slice.push(ms(t_ready, t_endpoint));
        let t1 = loop {
            let ev = tokio::time::timeout(Duration::from_secs(60), events.next())
                .await
                .expect("the controller to react");
            if let Some(Ok(watcher::Event::Apply(obj))) = ev
                && !obj.data["status"]["conditions"][0]["pulledInAt"].is_null()
            {
                break Instant::now();
            }
        };
        reaction.push((t1 - t0).as_secs_f64() * 1000.0);
    }
    reaction.sort_by(|a, b| a.partial_cmp(b).unwrap());
    to_endpoint.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for v in [&mut hop_gate, &mut hop_ready, &mut hop_slice] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }

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
    println!(
        "  reaction, gRPC Next -> canary a ready endpoint of its Service ({} samples): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        to_endpoint.len(),
        pct(&to_endpoint, 0.5),
        pct(&to_endpoint, 0.99),
        to_endpoint.last().unwrap()
    );
    println!(
        "    its hops, p50 / p99: Next -> gate True (Triton) {:.1} / {:.1} ms; gate True -> pod Ready (kwok) {:.1} / {:.1} ms; Ready -> ready endpoint (EndpointSlice controller) {:.1} / {:.1} ms",
        pct(&hop_gate, 0.5),
        pct(&hop_gate, 0.99),
        pct(&hop_ready, 0.5),
        pct(&hop_ready, 0.99),
        pct(&hop_slice, 0.5),
        pct(&hop_slice, 0.99),
    );
    println!(
        "  reaction, gRPC Next -> verified pull-in recorded in the status ({} samples): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        reaction.len(),
        pct(&reaction, 0.5),
        pct(&reaction, 0.99),
        reaction.last().unwrap()
    );
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
