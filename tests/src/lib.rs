//! Helpers for the end-to-end tests. Every test runs against the real control plane that
//! `tests/cluster/run` starts (kube-apiserver, etcd, kube-controller-manager, kube-scheduler,
//! kruise-manager and kwok), inside the private network namespace that script creates.

use std::fmt::Debug;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub mod api;
pub mod cloneset;
pub mod deployflow;
pub mod tls;

/// The pod CIDR of the local control plane; every address in it is local inside the namespace.
pub const POD_CIDR_PREFIX: &str = "10.244.";

/// Panics unless this process runs inside `tests/cluster/run`, so that no test ever sends traffic
/// to a real 10.244.x.y address on the host.
pub fn require_testenv() {
    assert_eq!(
        std::env::var("TRITON_TESTENV").as_deref(),
        Ok("1"),
        "end-to-end tests need the local control plane: run them with \
         `tests/cluster/run -- cargo test -p triton-e2e` (or `make test`)"
    );
    let probe: SocketAddr = "10.244.255.253:0".parse().expect("literal address");
    TcpListener::bind(probe).expect(
        "10.244.0.0/16 is not local here: refusing to run outside the network namespace made by tests/cluster/run",
    );
}

/// A client for the local control plane (admin kubeconfig from `KUBECONFIG`).
pub async fn client() -> Client {
    require_testenv();
    Client::try_default()
        .await
        .expect("kube client from KUBECONFIG")
}

/// Polls `probe` every 200 ms until it returns `Some`, or panics after `timeout` with a message
/// naming what was awaited and the last value observed.
pub async fn eventually<T, D, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    D: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, D>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() >= timeout {
                    panic!(
                        "timed out after {timeout:?} waiting for {what}; last observed: {last:?}"
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks that `check` keeps holding for `period` (polling every 200 ms); panics at the first
/// violation with its description.
pub async fn holds_for<F, Fut>(what: &str, period: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    while start.elapsed() < period {
        if let Err(violation) = check().await {
            panic!("expected {what} to hold for {period:?}, but: {violation}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates a fresh namespace named after the test and waits for its `default` ServiceAccount
/// (pods cannot be created before it exists).
pub async fn namespace(client: &Client, test: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{}-{}-{}",
        test.replace('_', "-")
            .chars()
            .take(40)
            .collect::<String>()
            .trim_end_matches('-'),
        std::process::id() % 10_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    eventually(
        &format!("ServiceAccount default in {name}"),
        Duration::from_secs(30),
        || async {
            sas.get_opt("default")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "absent".to_string())
        },
    )
    .await;
    name
}

/// The status of the pod condition `type_`, if the pod has it.
pub fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// Whether the pod condition `type_` is `"True"`.
pub fn is_true(pod: &Pod, type_: &str) -> bool {
    condition(pod, type_) == Some("True")
}

/// Names of the pods that are not terminating, sorted.
pub fn live_names(pods: &[Pod]) -> Vec<String> {
    let mut v: Vec<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    v.sort();
    v
}

/// Waits until the pod condition `type_` of `pod` is True.
pub async fn wait_pod_condition(api: &Api<Pod>, pod: &str, type_: &str, timeout: Duration) {
    eventually(&format!("pod {pod} {type_} True"), timeout, || async {
        let p = api.get(pod).await.map_err(|e| e.to_string())?;
        if is_true(&p, type_) {
            Ok(())
        } else {
            Err(format!("{type_} {:?}", condition(&p, type_)))
        }
    })
    .await;
}

/// Lists pods matching a label selector.
pub async fn pods(api: &Api<Pod>, selector: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(selector))
        .await
        .unwrap_or_else(|e| panic!("list pods {selector}: {e}"))
        .items
}

/// A dynamic API for any namespaced resource.
pub fn dynamic_api(
    client: &Client,
    ns: &str,
    group: &str,
    version: &str,
    kind: &str,
) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Endpoint addresses of a Service, from its EndpointSlices, split by the `ready` condition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub ready: Vec<String>,
    pub not_ready: Vec<String>,
}

pub async fn service_endpoints(client: &Client, ns: &str, service: &str) -> Endpoints {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .unwrap_or_else(|e| panic!("list EndpointSlices of {service}: {e}"));
    let mut out = Endpoints::default();
    for slice in list.items {
        for ep in slice.endpoints.unwrap_or_default() {
            let ready = ep
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(false);
            for addr in ep.addresses {
                if ready {
                    out.ready.push(addr)
                } else {
                    out.not_ready.push(addr)
                }
            }
        }
    }
    out.ready.sort();
    out.not_ready.sort();
    out
}

/// Whether `GET http://{addr}{path}` answers 2xx (health endpoints of the components).
pub async fn http_ok(addr: &str, path: &str) -> bool {
    tokio::process::Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", &format!("http://{addr}{path}")])
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// The body of `GET http://{addr}{path}` ("" when it fails).
pub async fn http_get(addr: &str, path: &str) -> String {
    tokio::process::Command::new("curl")
        .args(["-fsS", &format!("http://{addr}{path}")])
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Sends `signal` (e.g. "-TERM", "-KILL") to the processes whose command line contains
/// `pattern` (inside the run's PID namespace: only this cluster's processes). True if any.
pub async fn signal_processes(signal: &str, pattern: &str) -> bool {
    tokio::process::Command::new("pkill")
        .args([signal, "-f", pattern])
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// The value of an environment variable `tests/cluster/run` sets.
pub fn testenv_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by tests/cluster/run --triton"))
}

/// Waits until the Service has exactly `n` ready endpoint addresses, and returns its endpoints.
pub async fn wait_ready_endpoints(
    client: &Client,
    ns: &str,
    service: &str,
    n: usize,
    timeout: Duration,
) -> Endpoints {
    eventually(
        &format!("{n} ready endpoints of Service {service}"),
        timeout,
        || async {
            let eps = service_endpoints(client, ns, service).await;
            if eps.ready.len() == n {
                Ok(eps)
            } else {
                Err(eps)
            }
        },
    )
    .await
}

/// Every version of the watched objects, in the order the API server's watch delivered them,
/// recorded from before the test acts. Polling can miss a state that lasts milliseconds; the
/// history cannot (each write is one watch event), so ordering claims ("Ready only after the
/// gate", "never resumed by itself") are checked against it.
pub struct History<K> {
    seen: std::sync::Arc<std::sync::Mutex<Vec<K>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> History<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts watching and returns once the initial list is done, so every later write is seen.
    pub async fn start(api: Api<K>, config: kube::runtime::watcher::Config) -> Self {
        use futures::StreamExt;
        use kube::runtime::watcher::{self, Event};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut synced_tx = Some(synced_tx);
                let mut events = watcher::watcher(api, config).boxed();
                while let Some(ev) = events.next().await {
                    match ev {
                        Ok(Event::Apply(o) | Event::InitApply(o)) => seen.lock().unwrap().push(o),
                        Ok(Event::InitDone) => {
                            if let Some(tx) = synced_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => eprintln!("History watch error (the watcher retries): {e}"),
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(30), synced_rx)
            .await
            .expect("the watch's initial list within 30 s")
            .expect("the watch task is running");
        History { seen, task }
    }

    /// Every version recorded so far, oldest first.
    pub fn versions(&self) -> Vec<K> {
        self.seen.lock().unwrap().clone()
    }

    /// How many versions are recorded so far (a mark for `since`).
    pub fn mark(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The versions recorded after `mark`.
    pub fn since(&self, mark: usize) -> Vec<K> {
        self.seen.lock().unwrap()[mark..].to_vec()
    }
}

impl<K> Drop for History<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates the Service `manifest` (e.g. the tutorial's) in `ns`.
pub async fn create_service(client: &Client, ns: &str, mut manifest: serde_json::Value) {
    manifest["metadata"]["namespace"] = json!(ns);
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(manifest).unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
}

/// The harness's controller's /metrics, as (series, value) pairs.
pub async fn controller_metrics() -> Vec<(String, f64)> {
    let text = http_get(&testenv_var("TRITON_CONTROLLER_ADMIN"), "/metrics").await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The sum of the series whose name (with labels) starts with `prefix`.
pub fn metric_sum(metrics: &[(String, f64)], prefix: &str) -> f64 {
    metrics
        .iter()
        .filter(|(s, _)| s.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// DeployFlow reconciles of the harness's controller so far (its reconcile histogram's count).
pub async fn controller_reconciles() -> f64 {
    controller_metrics()
        .await
        .into_iter()
        .find(|(series, _)| series == "triton_controller_reconcile_duration_seconds_count")
        .map(|(_, v)| v)
        .expect("the reconcile count in /metrics")
}
