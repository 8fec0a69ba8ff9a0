//! triton-controller: the DeployFlow release engine.
//!
//! * [`crd`]: the DeployFlow types (and [`crdgen`], the checked-in CRD YAML);
//! * [`engine`]: the release steps as pure functions (status + effects), unit-tested;
//! * [`reconcile`]: the executor that reads the caches and applies an engine decision;
//! * [`gates`]: pulls in gated pods no release holds back;
//! * [`observe`]: pod phases, batch attribution and pull-in checks (pure);
//! * `triton_core::release`: the batch arithmetic and predicates (pure).

pub mod agent;
pub mod api;
pub mod crd;
pub mod crdgen;
pub mod engine;
pub mod events;
pub mod gates;
pub mod index;
pub mod metrics;
pub mod observe;
pub mod raw;
pub mod reconcile;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use triton_core::names::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

use crate::raw::{RawCloneSet, RawDeployFlow};
use crate::reconcile::Context;

/// Triton's release controller: reconciles DeployFlows (apps.triton.io/v1alpha1), drives their
/// CloneSets batch by batch and pulls pods into Service endpoints once their batch is baked.
#[derive(Parser, Debug, Clone)]
#[command(name = "triton-controller", version, about, long_about = None)]
pub struct Args {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "TRITON_CONTROLLER_ADMIN_LISTEN",
        default_value = "0.0.0.0:8000"
    )]
    pub admin_listen: SocketAddr,
    /// Log format: json or text.
    #[arg(long, env = "TRITON_CONTROLLER_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
    /// Name reported on Events (the Deployment's name).
    #[arg(
        long,
        env = "TRITON_CONTROLLER_NAME",
        default_value = "triton-controller"
    )]
    pub name: String,
    /// This replica's name, reported on Events and used as its leader-election identity.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Reconcile only while holding the Lease `triton-controller` (one leader among replicas).
    #[arg(long, env = "TRITON_CONTROLLER_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "triton-system")]
    pub leader_election_namespace: String,
    /// How long a leader's Lease is valid without renewal (whole seconds).
    #[arg(long, env = "TRITON_CONTROLLER_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: std::time::Duration,
    /// How long before expiry the leader renews (whole seconds, less than the duration).
    #[arg(long, env = "TRITON_CONTROLLER_LEASE_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub lease_grace: std::time::Duration,
    /// Address of the gRPC API (packages deployflow, application, pod; reflection; health).
    #[arg(
        long,
        env = "TRITON_CONTROLLER_GRPC_LISTEN",
        default_value = "0.0.0.0:8099"
    )]
    pub grpc_listen: SocketAddr,
    /// Address of the REST API (/api/v1).
    #[arg(
        long,
        env = "TRITON_CONTROLLER_REST_LISTEN",
        default_value = "0.0.0.0:8088"
    )]
    pub rest_listen: SocketAddr,
    /// PEM certificate (chain) the API serves over TLS; re-read when the file changes.
    #[arg(long, env = "TRITON_CONTROLLER_API_TLS_CERT", requires = "api_tls_key")]
    pub api_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --api-tls-cert.
    #[arg(long, env = "TRITON_CONTROLLER_API_TLS_KEY", requires = "api_tls_cert")]
    pub api_tls_key: Option<std::path::PathBuf>,
    /// Serve the API in plaintext without authentication or authorization: anyone who reaches
    /// the ports may drive every release. For a local demo only.
    #[arg(long, env = "TRITON_CONTROLLER_INSECURE_ANONYMOUS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub insecure_anonymous: bool,
    /// How long a token review and an access review are trusted.
    #[arg(long, env = "TRITON_CONTROLLER_API_AUTH_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub api_auth_ttl: std::time::Duration,
    /// Connections each API listener serves at once; more wait in the listen backlog.
    #[arg(long, env = "TRITON_CONTROLLER_API_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub api_max_connections: u32,
    /// Streams (Watch, ListAndWatch, Pause, Resume, Cancel) this replica serves at once; more
    /// are refused with ResourceExhausted.
    #[arg(long, env = "TRITON_CONTROLLER_API_MAX_STREAMS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub api_max_streams: u32,
    /// Address of the agent service (gRPC `agent.Agent/Report` from each pod's triton-agent);
    /// TLS with the API's certificate when given. Reports are always authenticated (the
    /// pod-bound token), also with --insecure-anonymous.
    #[arg(
        long,
        env = "TRITON_CONTROLLER_AGENT_LISTEN",
        default_value = "0.0.0.0:8097"
    )]
    pub agent_listen: SocketAddr,
    /// How long a pod's readiness agent may be silent before the pod is marked
    /// `apps.triton.io/healthy=False` (reason AgentSilent); agents are asked for a heartbeat
    /// every third of it.
    #[arg(long, env = "TRITON_CONTROLLER_AGENT_STALENESS", default_value = "60s", value_parser = humantime::parse_duration)]
    pub agent_staleness: std::time::Duration,
    /// Audiences a caller's token must be for (comma-separated); empty: the API server's own.
    #[arg(long, env = "TRITON_CONTROLLER_API_AUDIENCES", value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    /// Reconciles run at once, per controller (DeployFlows; pod gates); 0: no limit.
    #[arg(long, env = "TRITON_CONTROLLER_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,
    /// Requests per second to the API server from reconciles, Events and the gRPC/REST API's
    /// calls; 0: no limit. The Lease and the readiness agents' heartbeats are outside it.
    #[arg(long, env = "TRITON_CONTROLLER_KUBE_QPS", default_value_t = 200)]
    pub kube_qps: u32,
    /// The limit's window: at most --kube-burst requests in each window of
    /// --kube-burst/--kube-qps seconds (a fixed window: a burst may reach twice this across a
    /// window's edge).
    #[arg(long, env = "TRITON_CONTROLLER_KUBE_BURST", default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..))]
    pub kube_burst: u32,
}

/// The API's certificate, loaded (and validated) before anything listens.
fn api_tls(args: &Args) -> anyhow::Result<Option<Arc<triton_core::tls::ReloadingCert>>> {
    anyhow::ensure!(
        !(args.insecure_anonymous && args.api_tls_cert.is_some()),
        "--insecure-anonymous serves plaintext; it cannot be combined with --api-tls-cert"
    );
    match (&args.api_tls_cert, &args.api_tls_key) {
        (Some(cert), Some(key)) => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let c = triton_core::tls::ReloadingCert::load(cert, key, provider)
                .map_err(|e| anyhow::anyhow!("the API certificate: {e}"))?;
            c.spawn_watcher(std::time::Duration::from_secs(10));
            Ok(Some(c))
        }
        _ => Ok(None),
    }
}

/// Binds the agent service's listener and serves it.
async fn start_agent_service(
    args: &Args,
    tls: Option<Arc<triton_core::tls::ReloadingCert>>,
    client: Client,
    pods: Store<Pod>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.agent_staleness >= std::time::Duration::from_secs(3),
        "--agent-staleness must be at least 3s"
    );
    if tls.is_none() && !args.insecure_anonymous {
        tracing::warn!(
            agent = %args.agent_listen,
            "the agent service serves plaintext: agents' tokens cross the network in clear; give --api-tls-cert and --api-tls-key"
        );
    }
    let listener = api::serve::bind(args.agent_listen, "agent service").await?;
    let svc = agent::AgentService::new(client, pods, args.agent_staleness);
    let router = tonic::service::Routes::new(
        triton_proto::agent::agent_server::AgentServer::from_arc(svc)
            .max_decoding_message_size(agent::MAX_REPORT_BYTES),
    )
    .into_axum_router();
    tokio::spawn(api::serve::serve(
        listener,
        tls.clone(),
        router,
        "agent service",
        args.api_max_connections as usize,
    ));
    tracing::info!(agent = %args.agent_listen, tls = tls.is_some(), staleness = ?args.agent_staleness, "agent service listening");
    Ok(())
}

/// Binds both API listeners (failing at start when a port is taken) and serves them.
async fn start_api(
    args: &Args,
    tls: Option<Arc<triton_core::tls::ReloadingCert>>,
    ctx: Arc<api::ApiContext>,
) -> anyhow::Result<()> {
    if args.insecure_anonymous {
        tracing::warn!(
            grpc = %args.grpc_listen, rest = %args.rest_listen,
            "INSECURE: --insecure-anonymous serves the API in plaintext with NO authentication or authorization; anyone who reaches these ports can drive every release. Use it for a local demo only."
        );
    } else if tls.is_none() {
        tracing::warn!(
            grpc = %args.grpc_listen, rest = %args.rest_listen,
            "the API authenticates callers but serves plaintext: bearer tokens cross the network in clear; give --api-tls-cert and --api-tls-key"
        );
    }
    let grpc = api::serve::bind(args.grpc_listen, "gRPC API").await?;
    let rest = api::serve::bind(args.rest_listen, "REST API").await?;
    let grpc_router = api::serve::grpc_router(ctx.clone()).await?;
    let rest_router = api::rest::router(ctx);
    let max = args.api_max_connections as usize;
    tokio::spawn(api::serve::serve(
        grpc,
        tls.clone(),
        grpc_router,
        "gRPC API",
        max,
    ));
    tokio::spawn(api::serve::serve(
        rest,
        tls.clone(),
        rest_router,
        "REST API",
        max,
    ));
    tracing::info!(grpc = %args.grpc_listen, rest = %args.rest_listen, tls = tls.is_some(), auth = !args.insecure_anonymous, "API listening");
    Ok(())
}

fn managed() -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
}

/// One reflector per kind, shared: a cache, one trigger stream per controller that reacts to the
/// kind (every object the watch delivers, deletions included), a flag that turns true once the
/// first list is in the cache, and the future that keeps them fed.
///
/// Not kube-runtime's `store_shared`/`ReflectHandle`: a handle looks each event's object up in
/// the store, so a deletion (no longer in it) is dropped and the handle returns `Pending` without
/// a waker, stalling that controller's trigger for good; and `Store::wait_until_ready` keeps a
/// single waker per store, so a second waiter (our readiness) could sleep for ever.
///
/// The index files each object by namespace and `instance_of` (see `index.rs`). Objects are
/// cached without their managedFields and what `prune` drops.
#[allow(clippy::type_complexity)]
fn shared<K>(
    api: Api<K>,
    cfg: watcher::Config,
    subscribers: usize,
    instance_of: fn(&K) -> Option<String>,
    prune: fn(&mut K),
    thin: fn(&K, bool) -> K,
    tap: impl Fn(&K, bool) + Send + 'static,
) -> (
    Store<K>,
    Arc<index::Index>,
    Vec<futures::channel::mpsc::Receiver<K>>,
    watch::Receiver<bool>,
    impl Future<Output = ()> + Send,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let writer = Writer::<K>::default();
    let reader = writer.as_reader();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..subscribers)
        .map(|_| futures::channel::mpsc::channel(TRIGGER_BUFFER))
        .unzip();
    let (tx, rx) = watch::channel(false);
    let kind = K::kind(&()).to_string();
    let store = reader.clone();
    let idx = Arc::new(index::Index::default());
    let filed = idx.clone();
    // A (re)list: its objects are sent once the store holds them (at InitDone), with every
    // object the list no longer has, as a deletion the watch never delivered.
    let mut listing: Option<(Vec<Arc<K>>, Vec<K>)> = None;
    let fut = watcher(api, cfg)
        .default_backoff()
        // Nothing here reads managedFields: about a third of a pod's bytes in the cache.
        .modify(move |o| {
            o.meta_mut().managed_fields = None;
            prune(o);
        })
        .reflect(writer)
        .for_each(move |ev| {
            // Each object with whether it is gone.
            let mut out: Vec<(K, bool)> = Vec::new();
            match ev {
                Ok(watcher::Event::Init) => listing = Some((store.state(), Vec::new())),
                Ok(watcher::Event::InitApply(o)) => match listing.as_mut() {
                    Some((_, listed)) => listed.push(o),
                    None => out.push((o, false)),
                },
                Ok(watcher::Event::InitDone) => {
                    if let Some((before, listed)) = listing.take() {
                        let keys: std::collections::HashSet<ObjectRef<K>> =
                            listed.iter().map(ObjectRef::from_obj).collect();
                        out.extend(
                            before
                                .iter()
                                .filter(|o| !keys.contains(&ObjectRef::from_obj(o.as_ref())))
                                .map(|o| ((**o).clone(), true)),
                        );
                        out.extend(listed.into_iter().map(|o| (o, false)));
                    }
                    tx.send_replace(true);
                }
                Ok(watcher::Event::Apply(o)) => out.push((o, false)),
                Ok(watcher::Event::Delete(o)) => out.push((o, true)),
                // Retried with backoff; an RBAC or CRD problem must not be silent.
                Err(error) => tracing::warn!(kind = %kind, %error, "watch failed; retrying"),
            }
            for (o, deleted) in &out {
                filed.update(
                    o.meta().namespace.as_deref().unwrap_or_default(),
                    o.meta().name.as_deref().unwrap_or_default(),
                    instance_of(o),
                    *deleted,
                );
                tap(o, *deleted);
            }
            let mut senders = senders.clone();
            async move {
                use futures::SinkExt;
                for (o, deleted) in out {
                    // A trigger needs only what names the object and what the event mappers
                    // read; the reconcile reads the cache.
                    let o = thin(&o, deleted);
                    for s in senders.iter_mut() {
                        // Backpressure: a slow controller slows the watch, memory stays bounded.
                        let _ = s.send(o.clone()).await;
                    }
                }
            }
        });
    (reader, idx, receivers, rx, fut)
}

/// Objects queued per controller before the watch waits for it.
const TRIGGER_BUFFER: usize = 1024;

/// The unfinished DeployFlows of the instance a labelled object belongs to (all of the
/// namespace when `instance` is `None`), read from the untyped cache through its index.
fn deployflows_of(
    dfs: &Store<RawDeployFlow>,
    by: &index::Index,
    ns: Option<String>,
    instance: Option<&String>,
) -> Vec<ObjectRef<RawDeployFlow>> {
    let Some(ns) = ns else { return Vec::new() };
    let names = match instance {
        Some(i) => by.of(&ns, i),
        None => by.in_namespace(&ns),
    };
    index::objects(dfs, &ns, names)
        .iter()
        .filter(|d| d.data["status"]["finished"] != json!(true))
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// The instance a pod belongs to (its label).
fn pod_instance(p: &Pod) -> Option<String> {
    p.labels().get(INSTANCE_LABEL).cloned()
}

/// The instance a DeployFlow releases.
fn df_instance(d: &RawDeployFlow) -> Option<String> {
    d.data["spec"]["application"]["instanceName"]
        .as_str()
        .map(str::to_string)
}

fn no_instance<K>(_: &K) -> Option<String> {
    None
}

fn keep<K>(_: &mut K) {}

/// What names an object (an `ObjectRef`) and the labels the event mappers read.
fn thin_meta(m: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        labels: m.labels.clone(),
        ..Default::default()
    }
}

/// What the controller never reads of a pod, dropped before the pod enters the cache (at
/// thousands of pods the cache is most of the controller's memory): volumes, tolerations,
/// affinity, and of each container its environment, mounts, probes, command and lifecycle. The
/// image, ports and resources (the API's PodInfo), gates, labels, annotations and the status
/// stay.
fn prune_pod(p: &mut Pod) {
    if let Some(spec) = p.spec.as_mut() {
        spec.volumes = None;
        spec.tolerations = None;
        spec.affinity = None;
        spec.topology_spread_constraints = None;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            c.env = None;
            c.env_from = None;
            c.volume_mounts = None;
            c.volume_devices = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.lifecycle = None;
            c.command = None;
            c.args = None;
        }
    }
}

fn thin_pod(p: &Pod, _: bool) -> Pod {
    Pod {
        metadata: thin_meta(&p.metadata),
        ..Default::default()
    }
}

/// A slice's trigger keeps the names of the pods it lists (the mapper finds their releases).
fn thin_slice(s: &EndpointSlice, _: bool) -> EndpointSlice {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::Endpoint;
    EndpointSlice {
        metadata: thin_meta(&s.metadata),
        endpoints: s.endpoints.as_ref().map(|eps| {
            eps.iter()
                .map(|e| Endpoint {
                    target_ref: e.target_ref.as_ref().map(|r| ObjectReference {
                        name: r.name.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    }
}

fn thin_service(s: &Service, _: bool) -> Service {
    Service {
        metadata: thin_meta(&s.metadata),
        ..Default::default()
    }
}

fn thin_cloneset(c: &RawCloneSet, _: bool) -> RawCloneSet {
    RawCloneSet {
        metadata: thin_meta(&c.metadata),
        data: serde_json::Value::Null,
    }
}

/// A DeployFlow's trigger keeps the instance it releases and a digest of what decides which pods
/// it holds back (the gate controller maps on both, see `gates::GateFilter`); a deletion has no
/// digest.
fn thin_deployflow(d: &RawDeployFlow, deleted: bool) -> RawDeployFlow {
    let digest = (!deleted).then(|| gates::hold_digest(&d.data).to_string());
    RawDeployFlow {
        metadata: thin_meta(&d.metadata),
        data: json!({"spec": {"application": {"instanceName": d.data["spec"]["application"]["instanceName"]}},
            gates::DIGEST_FIELD: digest}),
    }
}

/// A stream that yields once each time `leading` turns true (and never ends).
fn on_leading(leading: watch::Receiver<bool>) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(leading, |mut rx| async move {
        loop {
            if rx.changed().await.is_err() {
                futures::future::pending::<()>().await;
            }
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Connections are file descriptors: up to the hard limit (the soft one is often 1024).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "open-files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
    }
    let metrics = Arc::new(metrics::Metrics::default());
    let config = kube::Config::infer().await?;
    let counted = metrics.clone();
    // Every request names its sender, so the API server's audit log and its logs show the
    // controller's requests as its own (kube's client sends no User-Agent).
    let count =
        tower::util::MapRequestLayer::new(move |mut req: http::Request<kube::client::Body>| {
            counted.kube_request(req.method(), req.uri());
            req.headers_mut().entry(http::header::USER_AGENT).or_insert(
                http::HeaderValue::from_static(concat!(
                    "triton-controller/",
                    env!("CARGO_PKG_VERSION")
                )),
            );
            req
        });
    // Outside the rate limit: Lease renewals (a busy leader must not lose the Lease queueing
    // behind its own writes) and the readiness agents' heartbeats (bounded by the pods, one per
    // pod every third of --agent-staleness; queued behind reconciles they would go stale).
    let unlimited = kube::client::ClientBuilder::try_from(config.clone())?
        .with_layer(&count)
        .build();
    let client = {
        let builder = kube::client::ClientBuilder::try_from(config)?.with_layer(&count);
        let limit = (args.kube_qps > 0).then(|| {
            let burst = args.kube_burst.max(1);
            tower::limit::RateLimitLayer::new(
                burst as u64,
                std::time::Duration::from_secs_f64(burst as f64 / args.kube_qps as f64),
            )
        });
        builder
            .with_layer(&tower::util::option_layer(limit))
            .build()
    };
    let api_tls = api_tls(&args)?;
    let (changes, _) = tokio::sync::broadcast::channel(api::CHANGE_BUFFER);
    let tap = changes.clone();
    let (pods, pods_by, mut pods_sub, pods_synced, pods_task) = shared(
        Api::<Pod>::all(client.clone()),
        managed(),
        2,
        pod_instance,
        prune_pod,
        thin_pod,
        |_, _| {},
    );
    let (slices, slices_by, mut slices_sub, slices_synced, slices_task) = shared(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        1,
        no_instance,
        keep,
        thin_slice,
        |_, _| {},
    );
    let (clonesets, _, mut cs_sub, cs_synced, cs_task) = shared(
        Api::<RawCloneSet>::all(client.clone()),
        watcher::Config::default(),
        1,
        no_instance,
        keep,
        thin_cloneset,
        |_, _| {},
    );
    let (services, services_by, _, services_synced, services_task) = shared(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        0,
        no_instance,
        keep,
        thin_service,
        |_, _| {},
    );
    let (dfs, dfs_by, mut dfs_sub, dfs_synced, dfs_task) = shared(
        Api::<RawDeployFlow>::all(client.clone()),
        watcher::Config::default(),
        2,
        df_instance,
        keep,
        thin_deployflow,
        move |o: &RawDeployFlow, deleted| {
            // Decoded once here for every open stream; nothing to do when none is open.
            if tap.receiver_count() > 0 {
                let _ = tap.send(api::Change::new(Arc::new(o.clone()), deleted));
            }
        },
    );
    fn ok<K>(
        s: futures::channel::mpsc::Receiver<K>,
    ) -> impl futures::Stream<Item = Result<K, watcher::Error>> {
        s.map(Ok)
    }
    tokio::spawn(pods_task);
    tokio::spawn(slices_task);
    tokio::spawn(cs_task);
    tokio::spawn(dfs_task);
    tokio::spawn(services_task);

    let reporter = Reporter {
        controller: args.name.clone(),
        instance: args.pod_name.clone(),
    };
    let failpoint = std::env::var("TRITON_CONTROLLER_FAILPOINT")
        .ok()
        .and_then(|s| reconcile::Failpoint::parse(&s));
    if let Some(fp) = &failpoint {
        tracing::warn!(
            ?fp,
            "TRITON_CONTROLLER_FAILPOINT is set: this controller aborts at it (a test hook)"
        );
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pods.clone(),
        services: services.clone(),
        slices: slices.clone(),
        clonesets: clonesets.clone(),
        deployflows: dfs.clone(),
        index: reconcile::Indexes {
            pods: pods_by.clone(),
            deployflows: dfs_by.clone(),
            services: services_by,
            slices: slices_by,
        },
        recorder: events::Recorder::new(client.clone(), reporter),
        metrics,
        backoff: Default::default(),
        leading: AtomicBool::new(!args.leader_elect),
        failpoint,
        opened: Default::default(),
        written: Default::default(),
        written_at: Default::default(),
        cs_written: Default::default(),
        reported: Default::default(),
        synced: vec![
            ("pods", pods_synced),
            ("services", services_synced),
            ("endpointslices", slices_synced),
            ("clonesets", cs_synced),
            ("deployflows", dfs_synced),
        ],
        agent_staleness: args.agent_staleness,
        leading_since: std::sync::atomic::AtomicI64::new(if args.leader_elect {
            0
        } else {
            jiff::Timestamp::now().as_second()
        }),
    });
    let (leading_tx, leading_rx) = watch::channel(!args.leader_elect);

    let (for_pods, for_cs, for_slices) = (dfs.clone(), dfs.clone(), dfs.clone());
    let for_slices_pods = pods.clone();
    let (by_pods, by_cs, by_slices) = (dfs_by.clone(), dfs_by.clone(), dfs_by.clone());
    let config = kube::runtime::controller::Config::default().concurrency(args.concurrency);
    let df_controller = Controller::for_stream(ok(dfs_sub.remove(0)), dfs.clone())
        .with_config(config.clone())
        .watches_stream(ok(pods_sub.remove(0)), move |pod: Pod| {
            deployflows_of(
                &for_pods,
                &by_pods,
                pod.namespace(),
                pod.labels().get(INSTANCE_LABEL),
            )
        })
        .watches_stream(ok(cs_sub.remove(0)), move |cs: RawCloneSet| {
            deployflows_of(&for_cs, &by_cs, cs.namespace(), Some(&cs.name_any()))
        })
        .watches_stream(ok(slices_sub.remove(0)), move |slice: EndpointSlice| {
            // The releases of the pods it lists (a pull-in waits for its pods to be listed
            // ready), not every release of the namespace.
            let ns = slice.namespace();
            let mut instances: Vec<String> = slice
                .endpoints
                .iter()
                .flatten()
                .filter_map(|e| e.target_ref.as_ref()?.name.clone())
                .filter_map(|pod| {
                    let key = ObjectRef::<Pod>::new(&pod).within(ns.as_deref()?);
                    pod_instance(&*for_slices_pods.get(&key)?)
                })
                .collect();
            instances.sort();
            instances.dedup();
            instances
                .iter()
                .flat_map(|i| deployflows_of(&for_slices, &by_slices, ns.clone(), Some(i)))
                .collect::<Vec<_>>()
        })
        .reconcile_all_on(on_leading(leading_rx.clone()))
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|_| async {});

    let pods_for_dfs = pods.clone();
    let changed = gates::GateFilter::default();
    let gate_controller = Controller::for_stream(ok(pods_sub.remove(0)), pods.clone())
        .with_config(config)
        .watches_stream(ok(dfs_sub.remove(0)), move |df: RawDeployFlow| {
            // Only a change of what decides the hold re-checks the release's pods (a status
            // write of a waiting message, say, does not).
            if !changed.changed(&df) {
                return Vec::new();
            }
            let (Some(ns), Some(instance)) = (df.namespace(), df_instance(&df)) else {
                return Vec::new();
            };
            index::objects(&pods_for_dfs, &ns, pods_by.of(&ns, &instance))
                .iter()
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_all_on(on_leading(leading_rx))
        .shutdown_on_signal()
        .run(gates::reconcile, gates::error_policy, ctx.clone())
        .for_each(|_| async {});

    let ready = Arc::new(AtomicBool::new(false));
    {
        let (ready, ctx) = (ready.clone(), ctx.clone());
        tokio::spawn(async move {
            ctx.synced().await;
            ready.store(true, Ordering::SeqCst);
            tracing::info!("caches synced; ready");
        });
    }
    let api_ctx = Arc::new(api::ApiContext {
        client: client.clone(),
        deployflows: dfs.clone(),
        clonesets: clonesets.clone(),
        pods: pods.clone(),
        changes,
        auth: (!args.insecure_anonymous).then(|| {
            api::auth::Authorizer::new(
                client.clone(),
                args.api_auth_ttl,
                args.api_audiences.clone(),
            )
        }),
        streams: Default::default(),
        max_streams: args.api_max_streams as i64,
        starting: Default::default(),
    });
    start_api(&args, api_tls.clone(), api_ctx.clone()).await?;
    start_agent_service(&args, api_tls, unlimited.clone(), pods.clone()).await?;
    tokio::spawn(admin(args.admin_listen, ready, ctx.clone(), api_ctx));
    tracing::info!(admin = %args.admin_listen, "triton-controller running");
    let controllers = async { tokio::join!(df_controller, gate_controller) };
    if !args.leader_elect {
        controllers.await;
        tracing::info!("stopped");
        return Ok(());
    }
    let identity = args.pod_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    anyhow::ensure!(
        args.lease_grace < args.lease_duration,
        "--lease-grace must be shorter than --lease-duration"
    );
    // Building the manager reads (or creates) the Lease: retried while the API server is
    // unreachable (a controller started together with a restarting API server used to exit).
    let mut delay = std::time::Duration::from_millis(200);
    let manager = loop {
        match kube_lease_manager::LeaseManagerBuilder::new(unlimited.clone(), "triton-controller")
            .with_namespace(&args.leader_election_namespace)
            .with_identity(&identity)
            .with_duration(args.lease_duration.as_secs())
            .with_grace(args.lease_grace.as_secs())
            .build()
            .await
        {
            Ok(m) => break m,
            // The API server refuses for good (RBAC, a namespace that does not exist): say so
            // and exit, so the pod shows it (CrashLoopBackOff) instead of waiting in silence.
            Err(kube_lease_manager::LeaseManagerError::KubeError(kube::Error::Api(s)))
                if (400..500).contains(&s.code) && s.code != 429 =>
            {
                anyhow::bail!(
                    "the Lease triton-controller in namespace {} as {identity}: {} ({}); \
                     grant get, create and patch on leases there, or fix --leader-election-namespace",
                    args.leader_election_namespace,
                    s.message,
                    s.code
                );
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "cannot reach the API server for the Lease triton-controller yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    };
    let (mut leading, election) = manager.watch().await;
    tracing::info!(%identity, namespace = %args.leader_election_namespace, "waiting to lead (Lease triton-controller)");
    let lead = async {
        while !*leading.borrow_and_update() {
            leading.changed().await?;
        }
        tracing::info!(%identity, "became the leader");
        ctx.leading_since
            .store(jiff::Timestamp::now().as_second(), Ordering::SeqCst);
        ctx.leading.store(true, Ordering::SeqCst);
        let _ = leading_tx.send(true);
        while leading.changed().await.is_ok() && *leading.borrow() {}
        anyhow::Ok(())
    };
    tokio::select! {
        _ = controllers => {
            tracing::info!("stopped");
            drop(leading);
            let _ = election.await;
            Ok(())
        }
        r = lead => {
            r?;
            anyhow::bail!("lost the Lease; exiting so that a single leader reconciles")
        }
    }
}

async fn admin(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    ctx: Arc<Context>,
    api_ctx: Arc<api::ApiContext>,
) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%addr, %error, "cannot bind the admin address");
            std::process::exit(1);
        }
    };
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (ready, ctx, api_ctx) = (ready.clone(), ctx.clone(), api_ctx.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (ready, ctx, api_ctx) = (ready.clone(), ctx.clone(), api_ctx.clone());
                async move {
                    let (status, body) = match req.uri().path() {
                        "/healthz" => (StatusCode::OK, "ok".to_string()),
                        "/readyz" if ready.load(Ordering::SeqCst) => {
                            (StatusCode::OK, "ok".to_string())
                        }
                        "/readyz" => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "caches not synced".to_string(),
                        ),
                        "/metrics" => {
                            ctx.metrics
                                .set_releases(ctx.deployflows.state().iter().map(|d| {
                                    serde_json::from_value(d.data["status"]["phase"].clone())
                                        .unwrap_or_default()
                                }));
                            ctx.metrics.set_api_streams(api_ctx.open_streams());
                            (StatusCode::OK, ctx.metrics.encode())
                        }
                        other => (StatusCode::NOT_FOUND, format!("no such path: {other}")),
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Sets up `tracing` to stdout, as JSON or text.
pub fn init_logging(format: &str) {
    triton_core::logging::init(format);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn a_pruned_pod_keeps_what_the_steps_and_the_api_read() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {INSTANCE_LABEL: "app"}},
            "spec": {
                "containers": [{"name": "main", "image": "nginx:1.25",
                    "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": "1"}},
                    "env": [{"name": "X", "value": "1"}],
                    "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                    "readinessProbe": {"tcpSocket": {"port": 80}}}],
                "readinessGates": [{"conditionType": "apps.triton.io/ready"}],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "tolerations": [{"key": "k", "operator": "Exists"}]
            },
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        prune_pod(&mut pod);
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(v["spec"]["containers"][0]["image"], "nginx:1.25");
        assert_eq!(v["spec"]["containers"][0]["ports"][0]["containerPort"], 80);
        assert_eq!(
            v["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
        assert!(observe::has_gate(&pod));
        assert!(observe::is_true(&pod, "Ready"));
        assert_eq!(pod_instance(&pod).as_deref(), Some("app"));
        for gone in ["env", "volumeMounts", "readinessProbe"] {
            assert!(
                v["spec"]["containers"][0].get(gone).is_none(),
                "{gone}: {v}"
            );
        }
        assert!(v["spec"].get("volumes").is_none() && v["spec"].get("tolerations").is_none());
    }

    #[test]
    fn triggers_keep_what_the_event_mappers_read() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "7",
                "labels": {"kubernetes.io/service-name": "svc"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": "p1", "namespace": "ns"}}]
        }))
        .unwrap();
        let t = thin_slice(&slice, false);
        assert_eq!(ObjectRef::from_obj(&t), ObjectRef::from_obj(&slice));
        assert_eq!(t.labels(), slice.labels());
        let targets: Vec<_> = t
            .endpoints
            .iter()
            .flatten()
            .filter_map(|e| e.target_ref.as_ref()?.name.clone())
            .collect();
        assert_eq!(targets, ["p1"]);
        let df: RawDeployFlow = serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "ns"},
            "spec": {"application": {"instanceName": "app", "replicas": 3}},
            "status": {"phase": "Success"}
        }))
        .unwrap();
        let t = thin_deployflow(&df, false);
        assert_eq!(ObjectRef::from_obj(&t), ObjectRef::from_obj(&df));
        assert_eq!(df_instance(&t).as_deref(), Some("app"));
        assert!(t.data.get("status").is_none());
        assert_eq!(
            t.data[gates::DIGEST_FIELD].as_str(),
            Some(gates::hold_digest(&df.data).to_string().as_str()),
            "the gate controller's filter reads the digest"
        );
        let gone = thin_deployflow(&df, true);
        assert!(gone.data[gates::DIGEST_FIELD].is_null(), "a deletion has none");
    }
}
