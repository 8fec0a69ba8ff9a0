//! Faults in combination during releases of every kind (tests/cluster/run --triton; one test in
//! its own binary). Two triton-controller replicas run (leader election); per set, in a
//! namespace of its own, seven releases run at once: a create, a manual update, an auto update,
//! a restart, a scale in with podsToDelete, a rollback and an update canceled mid-way. Meanwhile
//! rounds of random subsets of the two controller replicas, triton-webhook, kruise-manager and
//! kube-apiserver are killed (SIGKILL) and started again.
//!
//! Afterwards every release has reached the phase it reaches without faults, every CloneSet has
//! its target number of pods on the expected images, the pod named in podsToDelete is gone and
//! no other pod of that release was deleted, every gated pod is Ready and pulled in, and no
//! Service of an application being updated, restarted, rolled back or scaled in ever had fewer
//! ready endpoints than its release allows (2 of 3), checked on every change an EndpointSlice
//! watch delivered. The seed, the faults and the checks are printed.
//!
//! CHAOS_SEED replays a run; CHAOS_ROUNDS sets the rounds (default 5: round r always includes
//! component r mod 5, so each is killed at least once); CHAOS_SETS the sets of seven releases
//! (default 1; `make chaos` runs 20: 140 releases).
//!
//!   tests/cluster/run --triton -- cargo test --offline -p triton-e2e --test chaos -- --ignored --nocapture

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher;
use serde_json::json;
use triton_e2e::deployflow::{Flow, flow};
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(600);

/// A small deterministic generator (xorshift), seeded from the clock or CHAOS_SEED.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Component {
    name: &'static str,
    pattern: &'static str,
    start: &'static str,
    env: &'static [(&'static str, &'static str)],
}

/// The second controller replica's addresses (the first has the harness's).
const SECOND: &[(&str, &str)] = &[
    ("TRITON_CONTROLLER_ADMIN_OVERRIDE", "127.0.0.1:8011"),
    ("TRITON_CONTROLLER_GRPC_LISTEN", "127.0.0.1:8111"),
    ("TRITON_CONTROLLER_REST_LISTEN", "127.0.0.1:8112"),
    ("TRITON_CONTROLLER_AGENT_LISTEN", "127.0.0.1:8113"),
];

const COMPONENTS: [Component; 5] = [
    Component {
        name: "triton-controller-a",
        pattern: "triton-controller --admin-listen=127.0.0.1:8000",
        start: "TRITON_CONTROLLER_START",
        env: &[],
    },
    Component {
        name: "triton-controller-b",
        pattern: "triton-controller --admin-listen=127.0.0.1:8011",
        start: "TRITON_CONTROLLER_START",
        env: SECOND,
    },
    Component {
        name: "triton-webhook",
        pattern: "triton-webhook --listen",
        start: "TRITON_WEBHOOK_START",
        env: &[],
    },
    Component {
        name: "kruise-manager",
        pattern: "kruise-manager --kubeconfig",
        start: "TRITON_KRUISE_START",
        env: &[],
    },
    Component {
        name: "kube-apiserver",
        pattern: "kube-apiserver --etcd-servers",
        start: "TRITON_APISERVER_START",
        env: &[],
    },
];

/// kube-controller-manager, the cluster's Endpoints and EndpointSlice controllers: not a fault
/// this test injects, but restarted after each API-server restart, as an operator would. Its
/// controllers can keep a stale cache after the API server comes back
/// (kubernetes/kubernetes#124547): here once, "EndpointSlice informer cache is out of date" for
/// minutes, slices listing deleted pods' IPs, four releases paused at pull-in (Triton's defined
/// outcome for a pod that never becomes a ready endpoint, but not this test's subject).
const KCM: Component = Component {
    name: "kube-controller-manager",
    pattern: "kube-controller-manager --kubeconfig",
    start: "TRITON_KCM_START",
    env: &[],
};

async fn restart_kcm() {
    signal_processes("-KILL", KCM.pattern).await;
    eventually(
        "kube-controller-manager gone",
        Duration::from_secs(10),
        || async {
            if running(&KCM) {
                Err("still running")
            } else {
                Ok(())
            }
        },
    )
    .await;
    start(&KCM);
    eventually(
        "kube-controller-manager healthy",
        Duration::from_secs(60),
        || async {
            let ok = tokio::process::Command::new("curl")
                .args(["-fsSk", "https://127.0.0.1:10257/healthz"])
                .output()
                .await
                .is_ok_and(|o| o.status.success());
            if ok { Ok(()) } else { Err("/healthz not ok") }
        },
    )
    .await;
    eprintln!("chaos: kube-controller-manager restarted after the API server");
}

/// Controller replicas that exited by themselves (restarted by `restart_exited_controllers`).
static SELF_EXITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn running(c: &Component) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", c.pattern])
        .output()
        .unwrap()
        .status
        .success()
}

/// Starts a component and waits until its start script has exec'd it (so that a check right
/// after never takes the script for a missing process).
fn start(c: &Component) {
    let mut cmd = tokio::process::Command::new(testenv_var(c.start));
    for (k, v) in c.env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", c.name));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !running(c) {
        assert!(
            std::time::Instant::now() < deadline,
            "{} started within 10 s",
            c.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The API server ready and serving DeployFlows.
async fn api_up(client: &kube::Client) -> Result<(), String> {
    let readyz = http::Request::get("/readyz").body(Vec::new()).unwrap();
    client
        .request_text(readyz)
        .await
        .map_err(|e| format!("API server /readyz: {e}"))?;
    Api::<kube::api::DynamicObject>::all_with(
        client.clone(),
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "apps.triton.io",
            "v1alpha1",
            "DeployFlow",
        )),
    )
    .list_metadata(&kube::api::ListParams::default().limit(1))
    .await
    .map(|_| ())
    .map_err(|e| format!("DeployFlows not served yet: {e}"))
}

async fn api_ready(client: &kube::Client) {
    eventually("the API server ready", Duration::from_secs(120), || {
        api_up(client)
    })
    .await;
}

/// Starts a controller replica that exited, as its kubelet would: a replica that loses the
/// Lease exits by design (one that could not renew it while the API server was down, or was
/// refused right after its restart, before the API server's authorizer had synced).
fn restart_exited_controllers() {
    for c in &COMPONENTS[..2] {
        if !running(c) {
            SELF_EXITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "chaos: {} exited (it lost the Lease); restarted, as its kubelet would",
                c.name
            );
            start(c);
        }
    }
}

async fn healthy(client: &kube::Client) {
    eventually(
        "every component healthy again",
        Duration::from_secs(180),
        || async {
            api_up(client).await?;
            restart_exited_controllers();
            for (what, addr, path) in [
                (
                    "triton-controller-a",
                    testenv_var("TRITON_CONTROLLER_ADMIN"),
                    "/readyz",
                ),
                (
                    "triton-controller-b",
                    "127.0.0.1:8011".to_string(),
                    "/readyz",
                ),
                (
                    "triton-webhook",
                    testenv_var("TRITON_WEBHOOK_ADMIN"),
                    "/readyz",
                ),
                ("kruise-manager", "127.0.0.1:8400".to_string(), "/readyz"),
            ] {
                if !http_ok(&addr, path).await {
                    return Err(format!("{what} not ready"));
                }
            }
            Ok(())
        },
    )
    .await;
}

async fn service(client: &kube::Client, ns: &str, name: &str) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"chaos": "watched"}},
        "spec": {"selector": {"app.kubernetes.io/instance": name}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
}

/// An application of 3 pods on `image`, released and behind a Service, before the faults.
async fn app(client: &kube::Client, ns: &str, name: &str, images: &[&str]) {
    service(client, ns, name).await;
    for (i, image) in images.iter().enumerate() {
        let action = if i == 0 { "create" } else { "update" };
        let df = Flow::create(
            client,
            ns,
            flow(
                &format!("{name}-v{}", i + 1),
                name,
                action,
                3,
                image,
                json!({"batchSize": 3, "mode": "auto"}),
            ),
        )
        .await;
        df.wait_phase("Success", LONG).await;
    }
}

/// One set: seven releases in a namespace of its own.
struct Set {
    ns: String,
    releases: Vec<(Flow, &'static str)>,
    rst_before: Vec<String>,
    scl_before: Vec<String>,
    victim: String,
}

const V1: &str = "nginx:1.25";
const V2: &str = "nginx:1.26";

async fn prepare(client: &kube::Client, i: u64) -> (String, Vec<String>, Vec<String>) {
    let ns = namespace(client, &format!("chaos-{i}")).await;
    futures::future::join_all([
        app(client, &ns, "upd", &[V1]),
        app(client, &ns, "upa", &[V1]),
        app(client, &ns, "rst", &[V1]),
        app(client, &ns, "scl", &[V1]),
        app(client, &ns, "rbk", &[V1, V2]),
        app(client, &ns, "cnl", &[V1]),
    ])
    .await;
    let pod_api = Api::<Pod>::namespaced(client.clone(), &ns);
    let rst = live_names(&pods(&pod_api, "app.kubernetes.io/instance=rst").await);
    let scl = live_names(&pods(&pod_api, "app.kubernetes.io/instance=scl").await);
    for svc in ["upd", "upa", "rst", "scl", "rbk", "cnl"] {
        wait_ready_endpoints(client, &ns, svc, 3, LONG).await;
    }
    (ns, rst, scl)
}

async fn start_releases(
    client: &kube::Client,
    ns: String,
    rst_before: Vec<String>,
    scl_before: Vec<String>,
) -> Set {
    let victim = scl_before[0].clone();
    let auto = json!({"batchSize": 1, "mode": "auto", "batchIntervalSeconds": 4});
    // A rollback carries the earlier release's application (what gRPC Rollback copies).
    let rollback = flow("rbk-back", "rbk", "rollback", 3, V1, auto.clone());
    let mut scale = auto.clone();
    scale["podsToDelete"] = json!([victim]);
    let manifests = [
        (
            flow("new-v1", "new", "create", 3, V1, auto.clone()),
            "Success",
        ),
        (
            flow(
                "upd-v2",
                "upd",
                "update",
                3,
                V2,
                json!({"batchSize": 1, "mode": "manual", "batches": 3, "batchIntervalSeconds": 4}),
            ),
            "Success",
        ),
        (
            flow("upa-v2", "upa", "update", 3, V2, auto.clone()),
            "Success",
        ),
        (
            flow("rst-r", "rst", "restart", 3, V1, auto.clone()),
            "Success",
        ),
        (flow("scl-in", "scl", "scale_in", 2, V1, scale), "Success"),
        (rollback, "Success"),
        (
            flow(
                "cnl-v2",
                "cnl",
                "update",
                3,
                V2,
                json!({"batchSize": 1, "mode": "manual", "batches": 1}),
            ),
            "Canceled",
        ),
    ];
    let mut releases = Vec::new();
    for (m, phase) in manifests {
        releases.push((Flow::create(client, &ns, m).await, phase));
    }
    Set {
        ns,
        releases,
        rst_before,
        scl_before,
        victim,
    }
}

/// Per Service (namespace/name): fewest ready endpoints seen and changes seen, from a watch of
/// the EndpointSlices of the watched Services; every delivered change is a sample.
type Fewest = Arc<Mutex<BTreeMap<String, (usize, usize)>>>;

fn watch_endpoints(client: &kube::Client) -> (Fewest, tokio::task::JoinHandle<()>) {
    let fewest: Fewest = Default::default();
    let out = fewest.clone();
    let api = Api::<EndpointSlice>::all(client.clone());
    let task = tokio::spawn(async move {
        // slice (ns/name) -> (service key, ready pods); a relist replaces it at InitDone.
        let mut slices: HashMap<String, (String, BTreeSet<String>)> = HashMap::new();
        let mut listing: Option<HashMap<String, (String, BTreeSet<String>)>> = None;
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let mut touched: BTreeSet<String> = BTreeSet::new();
            let entry = |s: &EndpointSlice| -> Option<(String, (String, BTreeSet<String>))> {
                let ns = s.metadata.namespace.clone()?;
                let svc = s
                    .metadata
                    .labels
                    .as_ref()?
                    .get("kubernetes.io/service-name")?
                    .clone();
                let ready = s
                    .endpoints
                    .iter()
                    .flatten()
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    .filter_map(|e| e.target_ref.as_ref().and_then(|r| r.name.clone()))
                    .collect();
                Some((
                    format!("{ns}/{}", s.metadata.name.clone()?),
                    (format!("{ns}/{svc}"), ready),
                ))
            };
            match ev {
                Ok(watcher::Event::Init) => listing = Some(HashMap::new()),
                Ok(watcher::Event::InitApply(s)) => {
                    if let (Some(l), Some((k, v))) = (listing.as_mut(), entry(&s)) {
                        l.insert(k, v);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(l) = listing.take() {
                        touched.extend(slices.values().map(|(svc, _)| svc.clone()));
                        slices = l;
                        touched.extend(slices.values().map(|(svc, _)| svc.clone()));
                    }
                }
                Ok(watcher::Event::Apply(s)) => {
                    if let Some((k, v)) = entry(&s) {
                        touched.insert(v.0.clone());
                        slices.insert(k, v);
                    }
                }
                Ok(watcher::Event::Delete(s)) => {
                    if let Some((k, v)) = entry(&s) {
                        touched.insert(v.0);
                        slices.remove(&k);
                    }
                }
                // The API server is down: nothing to read, the watcher retries.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
            let mut f = out.lock().unwrap();
            for svc in touched {
                let ready: BTreeSet<&String> = slices
                    .values()
                    .filter(|(s, _)| *s == svc)
                    .flat_map(|(_, r)| r)
                    .collect();
                let e = f.entry(svc).or_insert((usize::MAX, 0));
                e.0 = e.0.min(ready.len());
                e.1 += 1;
            }
        }
    });
    (fewest, task)
}

#[tokio::test]
#[ignore = "kills components of the control plane: make test runs it in a control plane of its own"]
async fn releases_of_every_kind_survive_components_killed_in_combination() {
    let client = client().await;
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    // Odd: xorshift stays at 0 from a 0 seed.
    let seed: u64 = env(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    ) | 1;
    let rounds = env("CHAOS_ROUNDS", 5);
    let sets = env("CHAOS_SETS", 1).max(1);
    eprintln!(
        "chaos: seed {seed} (CHAOS_SEED={seed} replays it), {rounds} rounds, {sets} set(s) of 7 releases"
    );
    let mut rng = Rng(seed);

    // The second controller replica: both hold the Lease in turn.
    start(&COMPONENTS[1]);
    healthy(&client).await;

    // The applications, released once before the faults.
    let prepared = futures::stream::iter((0..sets).map(|i| prepare(&client, i)))
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    eprintln!("chaos: {sets} set(s) of 6 applications ready");
    let (fewest, sampler) = watch_endpoints(&client);
    let mut all = Vec::new();
    for (ns, rst, scl) in prepared {
        all.push(start_releases(&client, ns, rst, scl).await);
    }
    let flows: Vec<&Flow> = all
        .iter()
        .flat_map(|s| s.releases.iter().map(|(f, _)| f))
        .collect();
    eprintln!("chaos: {} releases started", flows.len());

    // Faults.
    let mut canceled = false;
    let mut hit = BTreeSet::new();
    for round in 0..rounds {
        let mut chosen: Vec<&Component> = COMPONENTS.iter().filter(|_| rng.below(2) == 1).collect();
        let must = &COMPONENTS[(round % COMPONENTS.len() as u64) as usize];
        if !chosen.iter().any(|c| c.name == must.name) {
            chosen.push(must);
        }
        let down = Duration::from_millis(300 + rng.below(1700));
        let names: Vec<&str> = chosen.iter().map(|c| c.name).collect();
        let states = futures::future::join_all(flows.iter().map(|df| df.get_opt())).await;
        let mut in_flight = 0;
        for (df, s) in flows.iter().zip(states) {
            if s.is_some_and(|o| o["status"]["finished"] != true) {
                in_flight += 1;
                hit.insert(format!("{}/{}", df.ns, df.name));
            }
        }
        eprintln!(
            "chaos: round {round}: kill {names:?}, down {down:?}; {in_flight} releases in flight"
        );
        for c in &chosen {
            // A controller replica may have exited since the last check (it lost the Lease):
            // it is down either way; every other component must have been running.
            let killed = signal_processes("-KILL", c.pattern).await;
            assert!(
                killed || c.name.starts_with("triton-controller"),
                "{} was running",
                c.name
            );
        }
        for c in &chosen {
            eventually(
                &format!("{} gone", c.name),
                Duration::from_secs(10),
                || async {
                    let alive = std::process::Command::new("pgrep")
                        .args(["-f", c.pattern])
                        .output()
                        .unwrap();
                    if alive.status.success() {
                        Err(String::from_utf8_lossy(&alive.stdout).to_string())
                    } else {
                        Ok(())
                    }
                },
            )
            .await;
        }
        tokio::time::sleep(down).await;
        // The API server first, as a cluster brings it back; kruise-manager, like any pod whose
        // start fails against a missing API server, would be restarted by its kubelet, which
        // this control plane does not have.
        chosen.sort_by_key(|c| c.name != "kube-apiserver");
        for c in &chosen {
            start(c);
            if c.name == "kube-apiserver" {
                api_ready(&client).await;
                restart_kcm().await;
            }
        }
        healthy(&client).await;
        if !canceled {
            // Cancel each set's last release mid-way, between faults.
            for set in &all {
                let (cancel, _) = set.releases.last().unwrap();
                cancel.wait_batch(2, "Pending", LONG).await;
                cancel
                    .patch_strategy("updateStrategy", json!({"canceled": true}))
                    .await;
            }
            canceled = true;
        }
        tokio::time::sleep(Duration::from_millis(500 + rng.below(2000))).await;
    }
    eprintln!(
        "chaos: {} of {} releases were in flight during a fault",
        hit.len(),
        flows.len()
    );
    let missed: Vec<String> = flows
        .iter()
        .map(|f| format!("{}/{}", f.ns, f.name))
        .filter(|k| !hit.contains(k))
        .collect();
    assert!(
        missed.is_empty(),
        "every release was running during at least one fault; not: {missed:?}"
    );

    // Every release reaches the phase it would have reached without faults.
    for set in &all {
        for (df, phase) in &set.releases {
            let s = df.wait("finished", LONG, |s| s["finished"] == true).await;
            assert_eq!(s["phase"], *phase, "{}/{}: {s}", df.ns, df.name);
        }
    }
    eprintln!("chaos: check: every release reached its phase (6 Success and 1 Canceled per set)");

    // Pods: the targets, no pod more or less; podsToDelete honoured; every gated pod Ready.
    for set in &all {
        let pod_api = Api::<Pod>::namespaced(client.clone(), &set.ns);
        for (instance, target, image) in [
            ("new", 3, V1),
            ("upd", 3, V2),
            ("upa", 3, V2),
            ("rst", 3, V1),
            ("scl", 2, V1),
            ("rbk", 3, V1),
            ("cnl", 3, ""),
        ] {
            let selector = format!("app.kubernetes.io/instance={instance}");
            let got: Vec<Pod> = eventually(
                &format!("{}: {instance}: {target} pods, all Ready", set.ns),
                LONG,
                || async {
                    let p = pods(&pod_api, &selector).await;
                    let l: Vec<Pod> = p
                        .into_iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .collect();
                    if l.len() == target && l.iter().all(|p| is_true(p, "Ready")) {
                        Ok(l)
                    } else {
                        Err(live_names(&l))
                    }
                },
            )
            .await;
            for p in &got {
                let gated = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.readiness_gates.as_ref())
                    .is_some_and(|g| g.iter().any(|g| g.condition_type == "apps.triton.io/ready"));
                assert!(
                    gated,
                    "{}: {instance}: {:?} carries the gate",
                    set.ns, p.metadata.name
                );
                assert!(
                    is_true(p, "apps.triton.io/ready"),
                    "{}: {instance}: {:?} pulled in",
                    set.ns,
                    p.metadata.name
                );
            }
            let images: Vec<&str> = got
                .iter()
                .filter_map(|p| p.spec.as_ref()?.containers[0].image.as_deref())
                .collect();
            if instance == "cnl" {
                assert_eq!(
                    images.iter().filter(|i| **i == V2).count(),
                    1,
                    "{}: cnl: batch 1 only: {images:?}",
                    set.ns
                );
            } else {
                assert!(
                    images.iter().all(|i| *i == image),
                    "{}: {instance}: every pod on {image}: {images:?}",
                    set.ns
                );
            }
            let now = live_names(&got);
            if instance == "rst" {
                assert!(
                    now.iter().all(|n| !set.rst_before.contains(n)),
                    "{}: restart replaced every pod: {now:?} vs {:?}",
                    set.ns,
                    set.rst_before
                );
            }
            if instance == "scl" {
                assert!(
                    !now.contains(&set.victim),
                    "{}: {} deleted",
                    set.ns,
                    set.victim
                );
                let kept: Vec<&String> = set
                    .scl_before
                    .iter()
                    .filter(|n| **n != set.victim)
                    .collect();
                assert_eq!(
                    now.iter().collect::<Vec<_>>(),
                    kept,
                    "{}: no other pod deleted",
                    set.ns
                );
            }
        }
    }
    eprintln!("chaos: check: pod counts, images, podsToDelete, restarts, gates and Ready");

    // Ready endpoints: never fewer than the release allows.
    sampler.abort();
    assert!(
        sampler.await.unwrap_err().is_cancelled(),
        "the endpoint watch ran to the end"
    );
    let fewest = fewest.lock().unwrap().clone();
    for set in &all {
        for svc in ["upd", "upa", "rst", "scl", "rbk", "cnl"] {
            let key = format!("{}/{svc}", set.ns);
            let (min, changes) = fewest.get(&key).copied().unwrap_or((usize::MAX, 0));
            assert!(
                changes >= 2 && min != usize::MAX,
                "{key}: its EndpointSlices were watched ({changes} changes)"
            );
            assert!(
                min >= 2,
                "{key}: batches of 1 of 3 keep at least 2 ready endpoints; fewest seen {min}"
            );
        }
    }
    // Every replica that exited by itself said why: it lost the Lease, not a crash.
    let log = std::fs::read_to_string(format!(
        "{}/logs/triton-controller.log",
        testenv_var("TRITON_TESTENV_DIR")
    ))
    .expect("the controllers' log");
    assert!(
        !log.contains("panicked at"),
        "a controller replica panicked (see its log)"
    );
    let exits = SELF_EXITS.load(std::sync::atomic::Ordering::Relaxed);
    let said = log.matches("lost the Lease").count();
    assert!(
        said >= exits,
        "{exits} replicas exited by themselves; {said} said they lost the Lease"
    );
    eprintln!(
        "chaos: check: no controller panic; {exits} replica exits, each after losing the Lease (a kubelet restarts them)"
    );
    let changes: usize = fewest.values().map(|(_, c)| c).sum();
    let min = fewest
        .iter()
        .filter(|(k, _)| all.iter().any(|s| k.starts_with(&format!("{}/", s.ns))))
        .map(|(_, (m, _))| *m)
        .min()
        .unwrap_or(0);
    eprintln!(
        "chaos: check: fewest ready endpoints of any Service of a running release: {min} ({changes} EndpointSlice changes watched)"
    );
}
