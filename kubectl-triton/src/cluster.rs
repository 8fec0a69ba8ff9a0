//! The user's cluster: a client from their kubeconfig and context, errors worded as kubectl words
//! them, and the API's operations run with the user's credentials (namespace-scoped caches
//! instead of the controller's cluster-wide ones).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use tokio::sync::{broadcast, watch};
use triton_controller::api::{self, ApiContext, ApiError, Change};
use triton_controller::raw::{RawCloneSet, RawDeployFlow};
use triton_core::names::INSTANCE_LABEL;

/// Where to connect, as kubectl's global flags say.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Target {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG", hide_env = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// A failure, as the user should read it, and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::new(format!("{e:#}"))
    }
}

/// kubectl's wording for an API-server error (`Error from server (Forbidden): …`).
pub fn from_kube(context: &str, e: &kube::Error) -> Failure {
    match e {
        kube::Error::Api(s) => {
            let reason = if s.reason.is_empty() {
                format!("{}", s.code)
            } else {
                s.reason.clone()
            };
            Failure::new(format!("Error from server ({reason}): {}", s.message))
        }
        other => Failure::new(format!("{context}: {other}")),
    }
}

/// The API's own error text (the same refusals a PaaS gets over gRPC), and kubectl's wording
/// for what the API server said.
pub fn from_api(e: ApiError) -> Failure {
    match e {
        ApiError::Kube { context, source } => from_kube(&context, &source),
        ApiError::Forbidden(m) => Failure::new(format!("Error from server (Forbidden): {m}")),
        other => Failure::new(other.to_string()),
    }
}

pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

impl Cluster {
    pub async fn connect(t: &Target) -> Result<Cluster, Failure> {
        let opts = KubeConfigOptions {
            context: t.context.clone(),
            ..Default::default()
        };
        let no_config = |e: &dyn std::fmt::Display| Failure::new(format!("no usable kubeconfig: {e}"));
        let config = match &t.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| {
                    Failure::new(format!("reading kubeconfig {}: {e}", path.display()))
                })?;
                Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| no_config(&e))?
            }
            None if t.context.is_some() => Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| no_config(&e))?,
            None => Config::infer().await.map_err(|e| no_config(&e))?,
        };
        let namespace = t
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        triton_core::api::namespace("namespace", &namespace, false)
            .map_err(|e| Failure::new(e.to_string()))?;
        let client = Client::try_from(config)
            .map_err(|e| Failure::new(format!("building the client: {e}")))?;
        Ok(Cluster { client, namespace })
    }
}

/// A namespace-scoped cache fed by a watch, the DeployFlow one also feeding `changes`.
struct Reflected<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    synced: watch::Receiver<Option<Result<(), String>>>,
}

fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
    tap: impl Fn(&K, bool) + Send + 'static,
) -> Reflected<K>
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
    let store = writer.as_reader();
    let (tx, synced) = watch::channel(None);
    let fut = watcher(api, cfg)
        .default_backoff()
        .reflect(writer)
        .for_each(move |ev| {
            match ev {
                Ok(watcher::Event::InitDone) => {
                    tx.send_replace(Some(Ok(())));
                }
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => tap(&o, false),
                Ok(watcher::Event::Delete(o)) => tap(&o, true),
                Ok(watcher::Event::Init) => {}
                Err(e) => {
                    // RBAC and a missing CRD do not heal by retrying: say so at once.
                    let fatal = match &e {
                        watcher::Error::InitialListFailed(kube::Error::Api(s))
                        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => {
                            s.code == 403 || s.code == 404 || s.code == 401
                        }
                        _ => false,
                    };
                    if fatal && tx.borrow().is_none() {
                        let msg = match &e {
                            watcher::Error::InitialListFailed(err)
                            | watcher::Error::WatchStartFailed(err) => {
                                from_kube("listing", err).message
                            }
                            other => other.to_string(),
                        };
                        tx.send_replace(Some(Err(msg)));
                    }
                }
            }
            async {}
        });
    tokio::spawn(fut);
    Reflected { store, synced }
}

async fn synced(
    what: &str,
    mut rx: watch::Receiver<Option<Result<(), String>>>,
    timeout: Duration,
) -> Result<(), Failure> {
    let r = tokio::time::timeout(timeout, rx.wait_for(|s| s.is_some())).await;
    match r {
        Ok(Ok(v)) => match v.clone() {
            Some(Err(m)) => Err(Failure::new(m)),
            _ => Ok(()),
        },
        _ => Err(Failure::new(format!(
            "timed out after {}s listing {what} (is the API server reachable?)",
            timeout.as_secs()
        ))),
    }
}

/// What an action reads before it writes.
pub enum Scope<'a> {
    /// One DeployFlow (next, continue, pause, resume, cancel).
    Release(&'a str),
    /// A new release of an application: the namespace's DeployFlows (who holds the CloneSet),
    /// the CloneSet, and its pods (restart, scale, rollback).
    Application(&'a str),
}

/// The API's operations over caches of what `scope` needs, filled with the user's credentials.
pub async fn api_context(c: &Cluster, scope: Scope<'_>) -> Result<Arc<ApiContext>, Failure> {
    let ns = c.namespace.as_str();
    let (changes, _) = broadcast::channel(api::CHANGE_BUFFER);
    let tap = changes.clone();
    let df_cfg = match scope {
        Scope::Release(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
        Scope::Application(_) => watcher::Config::default(),
    };
    let dfs = reflect(
        Api::<RawDeployFlow>::namespaced(c.client.clone(), ns),
        df_cfg,
        move |o: &RawDeployFlow, deleted| {
            if tap.receiver_count() > 0 {
                let _ = tap.send(Change::new(Arc::new(o.clone()), deleted));
            }
        },
    );
    let timeout = Duration::from_secs(30);
    let (clonesets, pods) = match scope {
        Scope::Release(_) => (
            Writer::<RawCloneSet>::default().as_reader(),
            Writer::<Pod>::default().as_reader(),
        ),
        Scope::Application(app) => {
            let cs = reflect(
                Api::<RawCloneSet>::namespaced(c.client.clone(), ns),
                watcher::Config::default().fields(&format!("metadata.name={app}")),
                |_, _| {},
            );
            let pods = reflect(
                Api::<Pod>::namespaced(c.client.clone(), ns),
                watcher::Config::default().labels(&format!("{INSTANCE_LABEL}={app}")),
                |_, _| {},
            );
            synced("clonesets", cs.synced, timeout).await?;
            synced("pods", pods.synced, timeout).await?;
            (cs.store, pods.store)
        }
    };
    synced("deployflows", dfs.synced, timeout).await?;
    Ok(Arc::new(ApiContext {
        client: c.client.clone(),
        deployflows: dfs.store,
        clonesets,
        pods,
        changes,
        auth: None,
        streams: Default::default(),
        max_streams: i64::MAX,
        starting: Default::default(),
    }))
}
