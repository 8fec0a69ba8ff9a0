//! triton-controller: the DeployFlow release engine.
//!
//! * [`crd`]: the DeployFlow types (and [`crdgen`], the checked-in CRD YAML);
//! * [`reconcile`]: one step of the release state machine per event;
//! * [`gates`]: pulls in gated pods no release holds back;
//! * [`observe`]: pod phases, batch attribution and pull-in checks (pure);
//! * `triton_core::release`: the batch arithmetic and predicates (pure).

pub mod crd;
pub mod crdgen;
pub mod gates;
pub mod metrics;
pub mod observe;
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
use kube::api::{Api, DynamicObject};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use triton_core::names::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

use crate::crd::DeployFlow;
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
}

fn managed() -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
}

fn store<K>(api: Api<K>, cfg: watcher::Config) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, cfg))
        .default_backoff()
        .touched_objects();
    (reader, async move {
        stream.for_each(|_| async {}).await;
    })
}

/// DeployFlows (unfinished) of the CloneSet instance a labelled object belongs to.
fn deployflows_of(
    dfs: &Store<DeployFlow>,
    ns: Option<String>,
    instance: Option<&String>,
) -> Vec<ObjectRef<DeployFlow>> {
    dfs.state()
        .iter()
        .filter(|d| {
            d.namespace() == ns && instance.is_none_or(|i| &d.spec.application.instance_name == i)
        })
        .filter(|d| !d.status.as_ref().is_some_and(|s| s.finished))
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let (pods, pods_task) = store(Api::<Pod>::all(client.clone()), managed());
    let (services, services_task) = store(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let (slices, slices_task) = store(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
    );
    tokio::spawn(pods_task);
    tokio::spawn(services_task);
    tokio::spawn(slices_task);

    let reporter = Reporter {
        controller: args.name.clone(),
        instance: args.pod_name.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pods.clone(),
        services: services.clone(),
        slices: slices.clone(),
        deployflows: Default::default(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: Default::default(),
    });

    let dfs_api = Api::<DeployFlow>::all(client.clone());
    // A cache of its own for the mappers and the gate controller (the controller's own store
    // never reported ready in kube-runtime 5 when read from outside the controller).
    let (df_store, dfs_task) = store(dfs_api.clone(), watcher::Config::default());
    tokio::spawn(dfs_task);
    let _ = ctx.deployflows.set(df_store.clone());
    let df_controller = Controller::new(dfs_api.clone(), watcher::Config::default());
    let (for_pods, for_slices) = (df_store.clone(), df_store.clone());
    let df_controller = df_controller
        .owns_with(
            Api::<DynamicObject>::all_with(client.clone(), &reconcile::cloneset_resource()),
            reconcile::cloneset_resource(),
            managed(),
        )
        .watches(Api::<Pod>::all(client.clone()), managed(), move |pod| {
            deployflows_of(
                &for_pods,
                pod.namespace(),
                pod.labels().get("app.kubernetes.io/instance"),
            )
        })
        .watches(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
            move |slice| deployflows_of(&for_slices, slice.namespace(), None),
        )
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|_| async {});

    let pods_for_dfs = pods.clone();
    let gate_controller = Controller::new(Api::<Pod>::all(client.clone()), managed())
        .watches(
            dfs_api,
            watcher::Config::default(),
            move |df: DeployFlow| {
                let instance = df.spec.application.instance_name.clone();
                pods_for_dfs
                    .state()
                    .iter()
                    .filter(|p| {
                        p.namespace() == df.namespace()
                            && p.labels().get("app.kubernetes.io/instance") == Some(&instance)
                    })
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(gates::reconcile, gates::error_policy, ctx.clone())
        .for_each(|_| async {});

    let ready = Arc::new(AtomicBool::new(false));
    {
        let ready = ready.clone();
        let (pods, services, slices, dfs) = (
            pods.clone(),
            services.clone(),
            slices.clone(),
            df_store.clone(),
        );
        tokio::spawn(async move {
            let _ = pods.wait_until_ready().await;
            tracing::info!(cache = "pods", "cache synced");
            let _ = services.wait_until_ready().await;
            tracing::info!(cache = "services", "cache synced");
            let _ = slices.wait_until_ready().await;
            tracing::info!(cache = "endpointslices", "cache synced");
            let _ = dfs.wait_until_ready().await;
            ready.store(true, Ordering::SeqCst);
            tracing::info!("caches synced; ready");
        });
    }
    tokio::spawn(admin(args.admin_listen, ready, ctx.clone()));
    tracing::info!(admin = %args.admin_listen, "triton-controller running");
    if !args.leader_elect {
        tokio::join!(df_controller, gate_controller);
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
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "triton-controller")
        .with_namespace(&args.leader_election_namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration.as_secs())
        .with_grace(args.lease_grace.as_secs())
        .build()
        .await?;
    let (mut leading, election) = manager.watch().await;
    tracing::info!(%identity, namespace = %args.leader_election_namespace, "waiting to lead (Lease triton-controller)");
    while !*leading.borrow_and_update() {
        leading.changed().await?;
    }
    tracing::info!(%identity, "became the leader");
    tokio::select! {
        _ = async { tokio::join!(df_controller, gate_controller) } => {
            tracing::info!("stopped");
            drop(leading);
            let _ = election.await;
            Ok(())
        }
        _ = async { while leading.changed().await.is_ok() && *leading.borrow() {} } => {
            anyhow::bail!("lost the Lease; exiting so that a single leader reconciles")
        }
    }
}

async fn admin(addr: SocketAddr, ready: Arc<AtomicBool>, ctx: Arc<Context>) {
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
        let (ready, ctx) = (ready.clone(), ctx.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (ready, ctx) = (ready.clone(), ctx.clone());
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
                            if let Some(dfs) = ctx.deployflows.get() {
                                ctx.metrics.set_releases(
                                    dfs.state()
                                        .iter()
                                        .map(|d| d.status.clone().unwrap_or_default().phase),
                                );
                            }
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
}
