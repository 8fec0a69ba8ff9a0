//! `get` (once, or `--watch`: redrawn in place on every watch event) and `list`.

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use tokio::sync::watch;
use triton_controller::crd::DeployFlow;
use triton_controller::observe::CloneSetView;
use triton_controller::raw::{RawCloneSet, RawDeployFlow};
use triton_controller::reconcile::decode;
use triton_core::names::INSTANCE_LABEL;
use triton_core::release::DeployPhase;

use crate::cluster::{Cluster, Failure, LIST_TIMEOUT, Listing, Reflected, from_kube, listed, reflect};
use crate::view::{self, Readable, Seen, Snapshot};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The tree (colour on a terminal).
    Tree,
    /// The DeployFlow as the API server has it (without managedFields, as kubectl shows it).
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
    CloneSetView::from_raw(&cs).unwrap_or_default()
}

async fn read_raw(c: &Cluster, name: &str) -> Result<RawDeployFlow, Failure> {
    Api::<RawDeployFlow>::namespaced(c.client.clone(), &c.namespace)
        .get(name)
        .await
        .map_err(|e| from_kube(&format!("reading deployflow {}/{name}", c.namespace), &e))
}

pub async fn get(c: &Cluster, name: &str, output: Output, watch: bool) -> Result<i32, Failure> {
    if watch && output != Output::Tree {
        return Err(Failure::new(
            "--watch draws the tree; use `kubectl get df NAME -w -o json` for a stream of objects",
        ));
    }
    let raw = read_raw(c, name).await?;
    match output {
        Output::Json | Output::Yaml => {
            let text = match output {
                Output::Json => serde_json::to_string_pretty(&raw).expect("serializable") + "\n",
                _ => serde_yaml::to_string(&raw).expect("serializable"),
            };
            print!("{text}");
            return Ok(0);
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

fn state<K: kube::Resource<DynamicType = ()> + Clone>(r: &Reflected<K>) -> Readable<Vec<K>> {
    match &*r.listing.borrow() {
        Listing::Refused(e) => Err(e.clone()),
        _ => Ok(r.store.state().iter().map(|o| (**o).clone()).collect()),
    }
}

/// A watch that fails after its list (it retries by itself) as a note under the tree.
fn trouble(what: &str, l: &watch::Receiver<Listing>) -> Option<view::Line> {
    match &*l.borrow() {
        Listing::Listed(Some(e)) | Listing::Pending(Some(e)) => Some(vec![view::Span {
            style: anstyle::AnsiColor::Yellow.on_default(),
            text: format!("  (the watch of {what} fails, retrying: {e})"),
        }]),
        _ => None,
    }
}

/// Draws frames in place on a terminal: the cursor goes back to the frame's first line, each
/// line is rewritten and cleared to its end, and what is left below is cleared; one write per
/// frame, so nothing flickers. Piped, each changed frame is printed after a timestamp.
struct Screen {
    tty: bool,
    colour: bool,
    /// Lines of the frame on screen, and the terminal size it was drawn for.
    height: usize,
    size: Option<(usize, usize)>,
    last: String,
}

impl Screen {
    /// Draws a frame; `Err` when stdout is gone (a closed pipe).
    fn draw(&mut self, lines: &[view::Line]) -> std::io::Result<()> {
        let size = if self.tty {
            terminal_size::terminal_size().map(|(w, h)| (w.0 as usize, h.0 as usize))
        } else {
            None
        };
        // One column spare: a line as wide as the terminal leaves the cursor in its last
        // column, where the clear-to-end erases the line's last character on some terminals.
        let (cols, rows) = size.map_or((usize::MAX, usize::MAX), |(w, h)| (w.saturating_sub(1), h));
        let mut fitted: Vec<view::Line> = lines.iter().map(|l| view::fit(l, cols)).collect();
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
        if text == self.last && size == self.size {
            return Ok(());
        }
        let mut out = String::new();
        if self.tty {
            if size != self.size && self.height > 0 {
                // Resized: the old frame may have reflowed; start over on a clear screen.
                out.push_str("\x1b[H\x1b[2J");
            } else if self.height > 0 {
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
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        self.height = fitted.len();
        self.size = size;
        self.last = text;
        Ok(())
    }
}

async fn watch_tree(c: &Cluster, name: &str, first: RawDeployFlow) -> Result<i32, Failure> {
    let ns = c.namespace.clone();
    let df0 = decode(&first).map_err(|e| unreadable(&ns, name, e))?;
    let instance = df0.spec.application.instance_name.clone();
    let (changed_tx, mut changed) = watch::channel(0u64);
    let changed_tx = Some(Arc::new(changed_tx));
    let dfs = reflect(
        Api::<RawDeployFlow>::namespaced(c.client.clone(), &ns),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
        |_, _| {},
        changed_tx.clone(),
    );
    let css = reflect(
        Api::<RawCloneSet>::namespaced(c.client.clone(), &ns),
        watcher::Config::default().fields(&format!("metadata.name={instance}")),
        |_, _| {},
        changed_tx.clone(),
    );
    let pods = reflect(
        Api::<Pod>::namespaced(c.client.clone(), &ns),
        watcher::Config::default().labels(&format!("{INSTANCE_LABEL}={instance}")),
        |_, _| {},
        changed_tx.clone(),
    );
    let slices = reflect(
        Api::<EndpointSlice>::namespaced(c.client.clone(), &ns),
        watcher::Config::default(),
        |_, _| {},
        changed_tx.clone(),
    );
    // The first frame only once every watch has listed (or was refused): an empty cache is
    // not "no pods".
    listed("deployflows", dfs.listing.clone(), LIST_TIMEOUT).await?;
    for (what, l) in [
        ("clonesets", css.listing.clone()),
        ("pods", pods.listing.clone()),
        ("endpointslices", slices.listing.clone()),
    ] {
        // Refused: a note in the tree; slow: the tree shows what has arrived, with a note.
        let _ = listed(what, l, LIST_TIMEOUT).await;
    }
    let tty = std::io::stdout().is_terminal();
    let mut screen = Screen {
        tty,
        colour: colour(),
        height: 0,
        size: None,
        last: String::new(),
    };
    // When each batch phase was first seen; phases already there when the watch began are not
    // timed (their start is unknown to the watch).
    let mut seen = Seen::new();
    let mut untimed: std::collections::HashSet<(i32, triton_core::release::BatchPhase)> =
        Default::default();
    let mut first_frame = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let latest = match dfs.store.state().first() {
            Some(raw) => decode(raw).map_err(|e| unreadable(&ns, name, e))?,
            None => {
                eprintln!("deployflow {ns}/{name} was deleted");
                return Ok(1);
            }
        };
        let now = Timestamp::now();
        for c in latest.status.iter().flat_map(|s| s.conditions.iter().flatten()) {
            if first_frame {
                untimed.insert((c.batch, c.phase));
            } else if !untimed.contains(&(c.batch, c.phase)) {
                seen.entry((c.batch, c.phase)).or_insert(now);
            }
        }
        first_frame = false;
        let cloneset = match &*css.listing.borrow() {
            Listing::Refused(e) => Err(e.clone()),
            _ => Ok(css.store.state().first().map(|o| cloneset_view((**o).clone()))),
        };
        let snap = Snapshot {
            df: latest.clone(),
            cloneset,
            pods: state(&pods),
            slices: state(&slices),
        };
        let mut lines = view::tree(&snap, now, &seen);
        lines.extend(
            [
                trouble("the DeployFlow", &dfs.listing),
                trouble("the CloneSet", &css.listing),
                trouble("pods", &pods.listing),
                trouble("endpointslices", &slices.listing),
            ]
            .into_iter()
            .flatten(),
        );
        if screen.draw(&lines).is_err() {
            // The reader went away (a closed pipe).
            return Ok(0);
        }
        let st = latest.status.clone().unwrap_or_default();
        if st.finished {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListOutput {
    Table,
    /// A List of the DeployFlows as the API server has them.
    Json,
    Yaml,
}

pub async fn list(c: &Cluster, all: bool, output: ListOutput) -> Result<i32, Failure> {
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
        ListOutput::Json => {
            let v = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            println!("{}", serde_json::to_string_pretty(&v).expect("serializable"));
            return Ok(0);
        }
        ListOutput::Yaml => {
            let v = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            print!("{}", serde_yaml::to_string(&v).expect("serializable"));
            return Ok(0);
        }
        ListOutput::Table => {}
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
