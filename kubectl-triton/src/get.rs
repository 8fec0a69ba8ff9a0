//! `get` (once, or `--watch`: redrawn in place on every watch event) and `list`.

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::ResourceExt;
use tokio::sync::watch;
use triton_controller::crd::DeployFlow;
use triton_controller::observe::CloneSetView;
use triton_controller::raw::{RawCloneSet, RawDeployFlow};
use triton_controller::reconcile::decode;
use triton_core::names::INSTANCE_LABEL;
use triton_core::release::DeployPhase;

use crate::cluster::{Cluster, Failure, from_kube};
use crate::view::{self, Readable, Seen, Snapshot};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The tree (colour on a terminal).
    Tree,
    /// The DeployFlow as the API server has it.
    Json,
    Yaml,
}

/// Whether to colour: a terminal, and neither NO_COLOR nor TERM=dumb.
pub fn colour() -> bool {
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").as_deref() != Ok("dumb")
}

fn unreadable(ns: &str, name: &str, e: serde_json::Error) -> Failure {
    Failure::new(format!(
        "deployflow {ns}/{name} cannot be read as a DeployFlow: {e}"
    ))
}

fn readable<T>(what: &str, r: Result<T, kube::Error>) -> Readable<T> {
    r.map_err(|e| from_kube(&format!("reading {what}"), &e).message)
}

/// The pieces of a release's picture, read once.
async fn snapshot(c: &Cluster, raw: &RawDeployFlow) -> Result<Snapshot, Failure> {
    let ns = c.namespace.as_str();
    let df = decode(raw).map_err(|e| unreadable(ns, &raw.name_any(), e))?;
    let instance = df.spec.application.instance_name.clone();
    let cs = readable(
        "the CloneSet",
        Api::<RawCloneSet>::namespaced(c.client.clone(), ns)
            .get_opt(&instance)
            .await,
    )
    .map(|o| o.map(cloneset_view));
    let pods = readable(
        "pods",
        Api::<Pod>::namespaced(c.client.clone(), ns)
            .list(&ListParams::default().labels(&format!("{INSTANCE_LABEL}={instance}")))
            .await,
    )
    .map(|l| l.items);
    let slices = readable(
        "endpointslices",
        Api::<EndpointSlice>::namespaced(c.client.clone(), ns)
            .list(&ListParams::default())
            .await,
    )
    .map(|l| l.items);
    Ok(Snapshot {
        df,
        cloneset: cs,
        pods,
        slices,
    })
}

fn cloneset_view(cs: RawCloneSet) -> CloneSetView {
    CloneSetView::from_value(serde_json::to_value(cs).unwrap_or_default()).unwrap_or_default()
}

async fn read_raw(c: &Cluster, name: &str) -> Result<RawDeployFlow, Failure> {
    Api::<RawDeployFlow>::namespaced(c.client.clone(), &c.namespace)
        .get(name)
        .await
        .map_err(|e| from_kube(&format!("reading deployflow {}/{name}", c.namespace), &e))
}

pub async fn get(c: &Cluster, name: &str, output: Output, watch: bool) -> Result<i32, Failure> {
    triton_core::api::object_name("NAME", name).map_err(|e| Failure::new(e.to_string()))?;
    let raw = read_raw(c, name).await?;
    match output {
        Output::Json | Output::Yaml if !watch => {
            let text = match output {
                Output::Json => serde_json::to_string_pretty(&raw).expect("serializable") + "\n",
                _ => serde_yaml::to_string(&raw).expect("serializable"),
            };
            print!("{text}");
            return Ok(0);
        }
        Output::Json | Output::Yaml => {
            return Err(Failure::new(
                "--watch draws the tree; use `kubectl get df NAME -w -o json` for a stream of objects",
            ));
        }
        Output::Tree => {}
    }
    if !watch {
        let s = snapshot(c, &raw).await?;
        print!("{}", view::render(&view::tree(&s, Timestamp::now(), &Seen::new()), colour()));
        return Ok(0);
    }
    watch_tree(c, name, raw).await
}

/// A namespaced watch into a store, bumping `changed` on every event; `Err` when it cannot list.
fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
    changed: Arc<watch::Sender<u64>>,
) -> (Store<K>, watch::Receiver<Option<Result<(), String>>>)
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
    let (tx, rx) = watch::channel(None);
    let fut = watcher(api, cfg)
        .default_backoff()
        .reflect(writer)
        .for_each(move |ev| {
            match ev {
                Ok(watcher::Event::Init) | Ok(watcher::Event::InitApply(_)) => {}
                Ok(watcher::Event::InitDone) => {
                    tx.send_replace(Some(Ok(())));
                    changed.send_modify(|n| *n += 1);
                }
                Ok(_) => changed.send_modify(|n| *n += 1),
                Err(e) => {
                    if tx.borrow().as_ref().is_none_or(|s| s.is_err()) {
                        let msg = match &e {
                            watcher::Error::InitialListFailed(err)
                            | watcher::Error::WatchStartFailed(err) => {
                                from_kube("watching", err).message
                            }
                            other => other.to_string(),
                        };
                        tx.send_replace(Some(Err(msg)));
                        changed.send_modify(|n| *n += 1);
                    }
                }
            }
            async {}
        });
    tokio::spawn(fut);
    (store, rx)
}

fn state<K: kube::Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    synced: &watch::Receiver<Option<Result<(), String>>>,
) -> Readable<Vec<K>> {
    match &*synced.borrow() {
        Some(Err(e)) => Err(e.clone()),
        _ => Ok(store.state().iter().map(|o| (**o).clone()).collect()),
    }
}

/// Draws frames in place on a terminal: the cursor goes back to the frame's first line, each
/// line is rewritten and cleared to its end, and what is left below is cleared; one write per
/// frame, so nothing flickers. Piped, each changed frame is printed after a timestamp.
struct Screen {
    tty: bool,
    colour: bool,
    height: usize,
    last: String,
}

impl Screen {
    fn draw(&mut self, lines: &[view::Line]) {
        let width = if self.tty {
            terminal_size::terminal_size().map_or(usize::MAX, |(w, _)| w.0 as usize)
        } else {
            usize::MAX
        };
        let rows = if self.tty {
            terminal_size::terminal_size().map_or(usize::MAX, |(_, h)| h.0 as usize)
        } else {
            usize::MAX
        };
        let mut fitted: Vec<view::Line> = lines.iter().map(|l| view::fit(l, width)).collect();
        if fitted.len() >= rows {
            let keep = rows.saturating_sub(2);
            let hidden = fitted.len() - keep;
            fitted.truncate(keep);
            fitted.push(vec![view::Span {
                style: anstyle::Style::new().dimmed(),
                text: format!("… {hidden} more lines (enlarge the terminal)"),
            }]);
        }
        let text = view::render(&fitted, self.colour);
        if text == self.last {
            return;
        }
        let mut out = String::new();
        if self.tty {
            if self.height > 0 {
                out.push_str(&format!("\x1b[{}A\r", self.height));
            }
            for line in text.lines() {
                out.push_str(line);
                out.push_str("\x1b[K\n");
            }
            out.push_str("\x1b[J");
        } else {
            out.push_str(&format!("--- {}\n", jiff::Zoned::now().strftime("%H:%M:%S")));
            out.push_str(&text);
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
        self.height = fitted.len();
        self.last = text;
    }
}

async fn watch_tree(c: &Cluster, name: &str, first: RawDeployFlow) -> Result<i32, Failure> {
    let ns = c.namespace.clone();
    let df0 = decode(&first).map_err(|e| unreadable(&ns, name, e))?;
    let instance = df0.spec.application.instance_name.clone();
    let (changed_tx, mut changed) = watch::channel(0u64);
    let changed_tx = Arc::new(changed_tx);
    let (dfs, dfs_ok) = reflect(
        Api::<RawDeployFlow>::namespaced(c.client.clone(), &ns),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
        changed_tx.clone(),
    );
    let (css, css_ok) = reflect(
        Api::<RawCloneSet>::namespaced(c.client.clone(), &ns),
        watcher::Config::default().fields(&format!("metadata.name={instance}")),
        changed_tx.clone(),
    );
    let (pods, pods_ok) = reflect(
        Api::<Pod>::namespaced(c.client.clone(), &ns),
        watcher::Config::default().labels(&format!("{INSTANCE_LABEL}={instance}")),
        changed_tx.clone(),
    );
    let (slices, slices_ok) = reflect(
        Api::<EndpointSlice>::namespaced(c.client.clone(), &ns),
        watcher::Config::default(),
        changed_tx.clone(),
    );
    let tty = std::io::stdout().is_terminal();
    let mut screen = Screen {
        tty,
        colour: colour(),
        height: 0,
        last: String::new(),
    };
    let mut seen = Seen::new();
    let mut latest = df0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        // The newest copy (the first GET until the watch has listed).
        let listed = matches!(&*dfs_ok.borrow(), Some(Ok(())));
        if listed {
            match dfs.state().first() {
                Some(raw) => {
                    latest = decode(raw).map_err(|e| unreadable(&ns, name, e))?;
                }
                None => {
                    eprintln!("deployflow {ns}/{name} was deleted");
                    return Ok(1);
                }
            }
        } else if let Some(Err(e)) = &*dfs_ok.borrow() {
            return Err(Failure::new(e.clone()));
        }
        let now = Timestamp::now();
        for c in latest.status.iter().flat_map(|s| s.conditions.iter().flatten()) {
            seen.entry((c.batch, c.phase)).or_insert(now);
        }
        let cloneset = match &*css_ok.borrow() {
            Some(Err(e)) => Err(e.clone()),
            _ => Ok(css.state().first().map(|o| cloneset_view((**o).clone()))),
        };
        let snap = Snapshot {
            df: latest.clone(),
            cloneset,
            pods: state(&pods, &pods_ok),
            slices: state(&slices, &slices_ok),
        };
        screen.draw(&view::tree(&snap, now, &seen));
        let st = latest.status.clone().unwrap_or_default();
        if listed && st.finished {
            return Ok(if st.phase == DeployPhase::Success { 0 } else { 1 });
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return Ok(1) },
            // The clock only (elapsed times, interval countdown): nothing is read.
            _ = tick.tick(), if tty => {},
            _ = &mut ctrl_c => return Ok(130),
        }
    }
}

pub async fn list(c: &Cluster, all: bool, output: Output) -> Result<i32, Failure> {
    let api: Api<RawDeployFlow> = if all {
        Api::all(c.client.clone())
    } else {
        Api::namespaced(c.client.clone(), &c.namespace)
    };
    let items = api
        .list(&ListParams::default())
        .await
        .map_err(|e| from_kube("listing deployflows", &e))?
        .items;
    match output {
        Output::Json => {
            let v = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            println!("{}", serde_json::to_string_pretty(&v).expect("serializable"));
            return Ok(0);
        }
        Output::Yaml => {
            let v = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            print!("{}", serde_yaml::to_string(&v).expect("serializable"));
            return Ok(0);
        }
        Output::Tree => {}
    }
    let mut dfs: Vec<DeployFlow> = Vec::new();
    let mut unreadable = 0;
    for raw in &items {
        match decode(raw) {
            Ok(df) => dfs.push(df),
            Err(_) => unreadable += 1,
        }
    }
    if dfs.is_empty() && unreadable == 0 {
        if all {
            eprintln!("No DeployFlows found.");
        } else {
            eprintln!("No DeployFlows found in {} namespace.", c.namespace);
        }
        return Ok(0);
    }
    dfs.sort_by(|a, b| {
        (a.namespace(), &a.metadata.creation_timestamp, a.name_any()).cmp(&(
            b.namespace(),
            &b.metadata.creation_timestamp,
            b.name_any(),
        ))
    });
    print!("{}", view::list(&dfs, all, Timestamp::now()));
    if unreadable > 0 {
        eprintln!("({unreadable} DeployFlows could not be read and are not shown)");
    }
    Ok(0)
}
