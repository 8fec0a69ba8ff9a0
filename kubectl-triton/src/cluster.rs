//! The user's cluster: a client from their kubeconfig and context, errors worded as kubectl words
//! them, watches into caches, and the API's operations run with the user's credentials
//! (namespace-scoped caches instead of the controller's cluster-wide ones).

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
    /// Path to the kubeconfig file (default: the files $KUBECONFIG lists, merged, else
    /// ~/.kube/config).
    #[arg(long, global = true)]
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

/// A name given on the command line, checked before it goes into a URL or a selector.
pub fn name(what: &str, s: &str) -> Result<(), Failure> {
    triton_core::api::object_name(what, s).map_err(|e| Failure::new(e.to_string()))
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
        let no_config =
            |e: &dyn std::fmt::Display| Failure::new(format!("no usable kubeconfig: {e}"));
        let config = match &t.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| {
                    Failure::new(format!("reading kubeconfig {}: {e}", path.display()))
                })?;
                Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| no_config(&e))?
            }
            // $KUBECONFIG (several files merged, as kubectl does) or ~/.kube/config.
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

/// Where a watch stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Listing {
    /// Not listed yet (the last error, if the list failed and is being retried).
    Pending(Option<String>),
    /// In the cache; `Some` while the watch fails and is retried (it resumes by itself).
    Listed(Option<String>),
    /// Refused for good (RBAC, an unknown resource): kubectl's wording.
    Refused(String),
}

/// A namespace-scoped cache fed by a watch.
pub struct Reflected<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    pub store: Store<K>,
    pub listing: watch::Receiver<Listing>,
}

/// Watches `api` into a cache; `tap` sees every object the watch delivers (with whether it is
/// gone), `changed` is bumped on every event. Errors the API server gives for good (401, 403,
/// 404) before the first list end the wait for it; others are retried with backoff and shown.
pub fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
    tap: impl Fn(&K, bool) + Send + 'static,
    changed: Option<Arc<watch::Sender<u64>>>,
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
    let (tx, listing) = watch::channel(Listing::Pending(None));
    let fut = watcher(api, cfg)
        .default_backoff()
        .reflect(writer)
        .for_each(move |ev| {
            let bump = match ev {
                Ok(ev) => {
                    match &ev {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => tap(o, false),
                        watcher::Event::Delete(o) => tap(o, true),
                        watcher::Event::Init => {}
                        watcher::Event::InitDone => {}
                    }
                    let listed = matches!(ev, watcher::Event::InitDone)
                        || matches!(*tx.borrow(), Listing::Listed(_));
                    if listed {
                        tx.send_if_modified(|l| {
                            let new = Listing::Listed(None);
                            (*l != new).then(|| *l = new).is_some()
                        });
                    }
                    !matches!(ev, watcher::Event::Init | watcher::Event::InitApply(_))
                }
                Err(e) => {
                    let (fatal, msg) = match &e {
                        watcher::Error::InitialListFailed(err)
                        | watcher::Error::WatchStartFailed(err) => (
                            matches!(err, kube::Error::Api(s) if [401, 403, 404].contains(&s.code)),
                            from_kube("watching", err).message,
                        ),
                        other => (false, other.to_string()),
                    };
                    let new = match &*tx.borrow() {
                        Listing::Pending(_) if fatal => Listing::Refused(msg),
                        Listing::Pending(_) => Listing::Pending(Some(msg)),
                        Listing::Listed(_) => Listing::Listed(Some(msg)),
                        Listing::Refused(m) => Listing::Refused(m.clone()),
                    };
                    tx.send_replace(new);
                    true
                }
            };
            if bump && let Some(c) = &changed {
                c.send_modify(|n| *n += 1);
            }
            async {}
        });
    tokio::spawn(fut);
    Reflected { store, listing }
}

/// Waits until the watch has listed (`Err` when it is refused or `timeout` passes).
pub async fn listed(
    what: &str,
    mut rx: watch::Receiver<Listing>,
    timeout: Duration,
) -> Result<(), Failure> {
    // Some(refusal) once listed or refused; None on a timeout.
    let outcome = match tokio::time::timeout(
        timeout,
        rx.wait_for(|l| !matches!(l, Listing::Pending(_))),
    )
    .await
    {
        Ok(Ok(l)) => Some(match &*l {
            Listing::Refused(m) => Some(m.clone()),
            _ => None,
        }),
        _ => None,
    };
    let refused = match outcome {
        Some(None) => return Ok(()),
        Some(Some(m)) => Some(m),
        None => None,
    };
    if let Some(m) = refused {
        return Err(Failure::new(m));
    }
    let last = match &*rx.borrow() {
        Listing::Pending(Some(e)) => format!(": {e}"),
        _ => String::new(),
    };
    Err(Failure::new(format!(
        "listing {what} did not finish within {}s{last}",
        timeout.as_secs()
    )))
}

/// How long a command waits for its first lists.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(30);

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
        None,
    );
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
                None,
            );
            let pods = reflect(
                Api::<Pod>::namespaced(c.client.clone(), ns),
                watcher::Config::default().labels(&format!("{INSTANCE_LABEL}={app}")),
                |_, _| {},
                None,
            );
            listed("clonesets", cs.listing, LIST_TIMEOUT).await?;
            listed("pods", pods.listing, LIST_TIMEOUT).await?;
            (cs.store, pods.store)
        }
    };
    listed("deployflows", dfs.listing, LIST_TIMEOUT).await?;
    Ok(Arc::new(ApiContext::local(
        c.client.clone(),
        dfs.store,
        clonesets,
        pods,
        changes,
    )))
}
