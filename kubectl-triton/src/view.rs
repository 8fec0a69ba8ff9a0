//! What `kubectl triton get` and `list` show: pure functions from objects (a DeployFlow, its
//! CloneSet, its pods, the namespace's EndpointSlices) and a clock to styled lines. No client
//! here, so every line is unit-tested.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use triton_controller::crd::{BatchCondition, DeployFlow};
use triton_controller::observe::{self, CloneSetView};
use triton_core::names::{HEALTHY_CONDITION, INSTANCE_LABEL, READY_GATE};
use triton_core::release::{BatchPhase, DeployPhase};

/// A part of the cluster the user may not be allowed to read: shown as a note, not an error.
pub type Readable<T> = Result<T, String>;

/// Everything one picture of a release is drawn from.
pub struct Snapshot {
    pub df: DeployFlow,
    /// `Ok(None)`: the CloneSet does not exist (yet, or any more).
    pub cloneset: Readable<Option<CloneSetView>>,
    /// The pods of the release's instance.
    pub pods: Readable<Vec<Pod>>,
    pub slices: Readable<Vec<EndpointSlice>>,
}

/// When a batch phase was first seen by this process (for phases the status has no timestamp
/// for, while `--watch` runs).
pub type Seen = HashMap<(i32, BatchPhase), Timestamp>;

/// A styled piece of a line.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub style: Style,
    pub text: String,
}

pub type Line = Vec<Span>;

/// The label of an EndpointSlice that names its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Text from the cluster (messages, reasons) as one printable line: control characters (a
/// newline would break the redraw's line count, an ESC would reach the terminal) become spaces.
fn clean(text: String) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        text
    }
}

fn plain(text: impl Into<String>) -> Span {
    Span {
        style: Style::new(),
        text: clean(text.into()),
    }
}

fn styled(style: Style, text: impl Into<String>) -> Span {
    Span {
        style,
        text: clean(text.into()),
    }
}

/// The columns a text takes on a terminal (wide characters take two).
pub fn width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

const GREEN: Style = AnsiColor::Green.on_default();
const RED: Style = AnsiColor::Red.on_default().bold();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const BLUE: Style = AnsiColor::Cyan.on_default();
const DIM: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();

/// Lines as text: with ANSI colours on a terminal, plain otherwise (the symbols are kept).
pub fn render(lines: &[Line], colour: bool) -> String {
    let mut out = String::new();
    for line in lines {
        for s in line {
            if colour && s.style != Style::new() {
                let _ = write!(out, "{}{}{:#}", s.style, s.text, s.style);
            } else {
                out.push_str(&s.text);
            }
        }
        out.push('\n');
    }
    out
}

/// A line cut to `max` terminal columns (the last one an ellipsis), so a redraw never wraps.
pub fn fit(line: &Line, max: usize) -> Line {
    let total: usize = line.iter().map(|s| width(&s.text)).sum();
    if total <= max {
        return line.clone();
    }
    let mut left = max.saturating_sub(1);
    let mut out = Vec::new();
    for s in line {
        let mut text = String::new();
        for c in s.text.chars() {
            let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
            if w > left {
                left = 0;
                break;
            }
            left -= w;
            text.push(c);
        }
        if !text.is_empty() {
            out.push(Span {
                style: s.style,
                text,
            });
        }
        if left == 0 {
            break;
        }
    }
    if max > 0 {
        out.push(plain("…"));
    }
    out
}

/// A duration as kubectl prints ages: 45s, 3m12s, 2h5m, 3d4h.
pub fn age(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn since(t: &Time, now: Timestamp) -> SignedDuration {
    now.duration_since(t.0)
}

fn phase_style(p: DeployPhase) -> (Style, &'static str) {
    match p {
        DeployPhase::Success => (GREEN, "✔"),
        DeployPhase::Failed | DeployPhase::Aborted => (RED, "✖"),
        DeployPhase::Canceled => (YELLOW, "⊘"),
        DeployPhase::Pending | DeployPhase::Initializing => (DIM, "○"),
        _ => (BLUE, "◷"),
    }
}

fn batch_style(p: BatchPhase, paused: bool) -> (Style, &'static str) {
    match p {
        BatchPhase::Baked => (GREEN, "✔"),
        p if p.is_failed() => (RED, "✖"),
        BatchPhase::Pending => (DIM, "○"),
        BatchPhase::Smoked if paused => (YELLOW, "⏸"),
        _ => (BLUE, "◷"),
    }
}

/// The one-line state of a release: phase, batch N/M and its phase, paused, finished replicas.
pub fn summary(df: &DeployFlow) -> String {
    let st = df.status.clone().unwrap_or_default();
    let mut s = format!("{:?}", st.phase);
    if let Some(c) = st.conditions.as_ref().and_then(|c| c.last()) {
        let canary = if c.canary { " (canary)" } else { "" };
        let _ = write!(s, ", batch {}/{}{canary} {:?}", c.batch, st.batches, c.phase);
    }
    let _ = write!(
        s,
        ", {}/{} replicas finished",
        st.finished_replicas, df.spec.application.replicas
    );
    if st.paused && !st.finished {
        s.push_str(", paused");
    }
    if let Some(m) = st.message.as_deref().filter(|m| !m.is_empty()) {
        let _ = write!(s, ": {m}");
    }
    s
}

/// The time a batch entered the phase it is in, from its status, else when it was first seen.
fn phase_since(c: &BatchCondition, seen: &Seen) -> Option<Timestamp> {
    let from_status = match c.phase {
        BatchPhase::Smoking => c.smoke_started_at.as_ref().or(c.started_at.as_ref()),
        BatchPhase::Baking => c.pulled_in_at.as_ref(),
        BatchPhase::Baked => c.finished_at.as_ref(),
        _ => None,
    };
    from_status
        .map(|t| t.0)
        .or_else(|| seen.get(&(c.batch, c.phase)).copied())
}

/// Which Services' EndpointSlices list the pod, and whether it is ready there.
fn endpoints_of(pod: &str, slices: &[EndpointSlice]) -> Vec<(String, bool)> {
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    for s in slices {
        let service = s
            .labels()
            .get(SERVICE_NAME_LABEL)
            .cloned()
            .unwrap_or_else(|| s.name_any());
        for e in s.endpoints.iter().flatten() {
            let ours = e
                .target_ref
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("Pod") && r.name.as_deref() == Some(pod));
            if ours {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
                let v = out.entry(service.clone()).or_default();
                *v |= ready;
            }
        }
    }
    out.into_iter().collect()
}

/// One pod's line (after the tree prefix).
fn pod_line(
    name: &str,
    info: Option<&triton_controller::crd::PodInfo>,
    pod: Option<&Pod>,
    pods_readable: bool,
    slices: &Readable<Vec<EndpointSlice>>,
) -> Line {
    let mut l = Vec::new();
    let Some(pod) = pod else {
        // In the status only: gone from the cluster (deleted, or replaced by a scale in), or
        // not readable by this user (then only what the status says).
        l.push(styled(DIM, format!("· pod {name}")));
        if let Some(i) = info.filter(|i| !i.phase.is_empty()) {
            l.push(styled(DIM, format!("  {}", i.phase)));
        }
        if let Some(i) = info.filter(|i| !i.pull_in_status.is_empty()) {
            l.push(styled(DIM, format!("  {}", i.pull_in_status)));
        }
        if pods_readable {
            l.push(styled(DIM, "  (gone)"));
        }
        return l;
    };
    let ready = observe::is_true(pod, "Ready");
    let failing = observe::is_failing(pod);
    let (style, sym) = if observe::is_terminating(pod) {
        (DIM, "⌫")
    } else if failing {
        (RED, "✖")
    } else if ready {
        (GREEN, "✔")
    } else if observe::is_smoked(pod) {
        (YELLOW, "◑")
    } else {
        (BLUE, "◷")
    };
    l.push(styled(style, format!("{sym} pod {name}")));
    l.push(plain(format!("  {}", observe::pod_phase(pod))));
    if observe::is_terminating(pod) {
        l.push(styled(DIM, "  Terminating"));
    }
    if observe::has_gate(pod) {
        let gate = observe::condition(pod, READY_GATE).unwrap_or("unset");
        let text = if gate == "True" { "gate open" } else { "gate closed" };
        l.push(styled(if gate == "True" { GREEN } else { YELLOW }, format!("  {text}")));
    }
    if let Some(i) = info.filter(|i| !i.pull_in_status.is_empty()) {
        let s = if i.pull_in_status == observe::PULL_IN_SUCCEEDED {
            GREEN
        } else if i.pull_in_status == observe::PULL_IN_FAILED {
            RED
        } else {
            YELLOW
        };
        l.push(styled(s, format!("  {}", i.pull_in_status)));
    }
    match slices {
        Ok(slices) => {
            let eps = endpoints_of(name, slices);
            if eps.is_empty() {
                l.push(styled(DIM, "  in no endpoints"));
            } else {
                // Ready endpoints get traffic; a not-ready one is listed but gets none.
                let (serving, listed): (Vec<_>, Vec<_>) = eps.iter().partition(|(_, r)| *r);
                if !serving.is_empty() {
                    let names: Vec<String> = serving.iter().map(|(s, _)| format!("svc/{s}")).collect();
                    l.push(plain(format!("  in {}", names.join(", "))));
                }
                if !listed.is_empty() {
                    let names: Vec<String> = listed.iter().map(|(s, _)| format!("svc/{s}")).collect();
                    l.push(styled(YELLOW, format!("  not ready in {}", names.join(", "))));
                }
            }
        }
        Err(_) => {}
    }
    let restarts = observe::restarts(pod);
    if restarts > 0 {
        l.push(styled(RED, format!("  {restarts} restarts")));
    }
    if observe::has_agent(pod) {
        match observe::condition(pod, HEALTHY_CONDITION) {
            Some("True") => l.push(styled(GREEN, "  agent healthy")),
            Some(_) => {
                let why = observe::agent_failure(pod).unwrap_or_else(|| {
                    format!(
                        "agent: {}",
                        observe::condition_reason(pod, HEALTHY_CONDITION).unwrap_or("not healthy")
                    )
                });
                l.push(styled(if failing { RED } else { YELLOW }, format!("  {why}")));
            }
            None => l.push(styled(YELLOW, "  agent: no report yet")),
        }
    }
    if !ready && (failing || !observe::is_smoked(pod)) {
        l.push(styled(
            if failing { RED } else { DIM },
            format!("  ({})", observe::not_ready_reason(pod)),
        ));
    }
    l
}

/// The tree of one release.
pub fn tree(s: &Snapshot, now: Timestamp, seen: &Seen) -> Vec<Line> {
    let df = &s.df;
    let st = df.status.clone().unwrap_or_default();
    let ns = df.namespace().unwrap_or_default();
    let base = df.spec.base();
    let mode = if df.spec.auto() { "auto" } else { "manual" };
    let (pstyle, psym) = phase_style(st.phase);
    let mut lines: Vec<Line> = Vec::new();

    lines.push(vec![
        styled(BOLD, format!("DeployFlow {ns}/{}", df.name_any())),
        plain(format!("  {} · {mode} · ", df.spec.action.as_str())),
        styled(pstyle, format!("{psym} {:?}", st.phase)),
    ]);
    let mut facts = vec![format!(
        "batch {}/{}",
        st.conditions.as_ref().and_then(|c| c.last()).map_or(0, |c| c.batch),
        st.batches
    )];
    facts.push(format!(
        "{}/{} replicas finished",
        st.finished_replicas, df.spec.application.replicas
    ));
    if let Some(t) = st.started_at.as_ref() {
        let end = st.finished_at.as_ref().map_or(now, |f| f.0);
        facts.push(format!("running {}", age(end.duration_since(t.0))));
    }
    if !st.finished {
        // Auto mode runs on by itself (but for a canary's stops, which the message names).
        match df.spec.stage() {
            Some(p) => facts.push(format!("target: batch {} {p:?}", base.batches)),
            None if df.spec.auto() => {}
            None => facts.push(format!("target: batch {}", base.batches)),
        }
    }
    lines.push(vec![plain(format!("  {}", facts.join(" · ")))]);
    if st.paused && !st.finished {
        let why = st
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "paused by request".into());
        lines.push(vec![styled(YELLOW, format!("  ⏸ paused: {why}"))]);
    } else if let Some(m) = st.message.as_deref().filter(|m| !m.is_empty()) {
        let style = if st.phase == DeployPhase::Failed { RED } else { Style::new() };
        lines.push(vec![styled(style, format!("  message: {m}"))]);
    }

    // The CloneSet.
    let instance = &df.spec.application.instance_name;
    match &s.cloneset {
        Ok(Some(cs)) => {
            let rev = cs
                .status
                .update_revision
                .as_deref()
                .map(triton_core::api::short_revision)
                .unwrap_or("-");
            lines.push(vec![plain(format!(
                "  CloneSet {instance}: {} replicas · {} updated · {} ready · revision {rev}",
                cs.spec.replicas, cs.status.updated_replicas, cs.status.ready_replicas
            ))]);
        }
        Ok(None) => lines.push(vec![styled(DIM, format!("  CloneSet {instance}: not found"))]),
        Err(e) => lines.push(vec![styled(DIM, format!("  CloneSet {instance}: {e}"))]),
    }

    // The batches, each with its pods, then the pods of no batch.
    let pods: HashMap<String, &Pod> = match &s.pods {
        Ok(p) => p.iter().map(|p| (p.name_any(), p)).collect(),
        Err(_) => HashMap::new(),
    };
    let conditions = st.conditions.clone().unwrap_or_default();
    let mut in_batch: std::collections::HashSet<String> = Default::default();
    let planned = st.batches.max(conditions.last().map_or(0, |c| c.batch));
    let mut nodes: Vec<(Line, Vec<Line>)> = Vec::new();
    for c in &conditions {
        let (style, sym) = batch_style(c.phase, st.paused);
        let mut head = vec![styled(
            style,
            format!(
                "{sym} batch {}{} {:?}",
                c.batch,
                if c.canary { " (canary)" } else { "" },
                c.phase
            ),
        )];
        head.push(plain(format!(
            "  {} pod{}",
            c.batch_size,
            if c.batch_size == 1 { "" } else { "s" }
        )));
        if c.failed_replicas > 0 {
            head.push(styled(RED, format!("  {} failed", c.failed_replicas)));
        }
        if let (Some(a), Some(b)) = (c.started_at.as_ref(), c.finished_at.as_ref()) {
            head.push(styled(DIM, format!("  took {}", age(b.0.duration_since(a.0)))));
        } else if let Some(t) = phase_since(c, seen) {
            head.push(styled(DIM, format!("  {:?} for {}", c.phase, age(now.duration_since(t)))));
        }
        let mut children = Vec::new();
        for p in c.pods.iter().flatten() {
            in_batch.insert(p.name.clone());
            children.push(pod_line(&p.name, Some(p), pods.get(&p.name).copied(), s.pods.is_ok(), &s.slices));
        }
        for p in c.pods_to_delete.iter().flatten() {
            in_batch.insert(p.clone());
            let state = match (&s.pods, pods.contains_key(p)) {
                (Err(_), _) => "",
                (Ok(_), false) => "  deleted",
                (Ok(_), true) => "  to delete",
            };
            children.push(vec![styled(DIM, format!("⌫ pod {p}{state}"))]);
        }
        nodes.push((head, children));
    }
    // Batches still to come.
    if !st.finished {
        let last = conditions.last();
        for b in (last.map_or(0, |c| c.batch) + 1)..=planned {
            let mut head = vec![styled(DIM, format!("○ batch {b} Pending"))];
            if b == last.map_or(0, |c| c.batch) + 1
                && let Some(l) = last.filter(|l| l.phase == BatchPhase::Baked)
                && let Some(f) = l.finished_at.as_ref()
                && df.spec.auto()
            {
                let interval = std::time::Duration::from_secs(base.batch_interval_seconds.max(0) as u64);
                let elapsed = since(f, now).unsigned_abs();
                if let Some(wait) =
                    triton_core::release::interval_wait(interval, elapsed, true, l.canary)
                {
                    head.push(styled(
                        YELLOW,
                        format!("  starts in {}", age(SignedDuration::try_from(wait).unwrap_or_default())),
                    ));
                }
            }
            nodes.push((head, Vec::new()));
        }
    }
    if let Ok(all) = &s.pods {
        let mut others: Vec<&Pod> = all
            .iter()
            .filter(|p| !in_batch.contains(&p.name_any()))
            .filter(|p| p.labels().get(INSTANCE_LABEL) == Some(instance))
            .collect();
        others.sort_by_key(|p| p.name_any());
        if !others.is_empty() {
            let head = vec![plain(format!(
                "pods outside this release's batches: {}",
                others.len()
            ))];
            let children = others
                .iter()
                .map(|p| pod_line(&p.name_any(), None, Some(p), true, &s.slices))
                .collect();
            nodes.push((head, children));
        }
    }
    for (i, (head, children)) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        let mut l = vec![plain(if last { "  └─ " } else { "  ├─ " })];
        l.extend(head.iter().cloned());
        lines.push(l);
        for (j, child) in children.iter().enumerate() {
            let stem = if last { "     " } else { "  │  " };
            let fork = if j + 1 == children.len() { "└─ " } else { "├─ " };
            let mut l = vec![plain(format!("{stem}{fork}"))];
            l.extend(child.iter().cloned());
            lines.push(l);
        }
    }
    for (what, r) in [
        ("pods", s.pods.as_ref().err()),
        ("endpoints", s.slices.as_ref().err()),
    ] {
        if let Some(e) = r {
            lines.push(vec![styled(DIM, format!("  ({what} not shown: {e})"))]);
        }
    }
    lines
}

/// `list`: one row per release.
pub fn list(dfs: &[DeployFlow], all_namespaces: bool, now: Timestamp) -> String {
    let mut rows: Vec<Vec<String>> = vec![];
    let mut head = vec![];
    if all_namespaces {
        head.push("NAMESPACE".to_string());
    }
    head.extend(
        ["NAME", "ACTION", "INSTANCE", "PHASE", "BATCH", "REPLICAS", "PAUSED", "AGE"]
            .map(String::from),
    );
    rows.push(head);
    for df in dfs {
        let st = df.status.clone().unwrap_or_default();
        let mut r = vec![];
        if all_namespaces {
            r.push(df.namespace().unwrap_or_default());
        }
        let batch = match st.conditions.as_ref().and_then(|c| c.last()) {
            Some(c) => format!("{}/{} {:?}", c.batch, st.batches, c.phase),
            None => "-".into(),
        };
        r.extend([
            df.name_any(),
            df.spec.action.as_str().to_string(),
            df.spec.application.instance_name.clone(),
            format!("{:?}", st.phase),
            batch,
            format!("{}/{}", st.finished_replicas, df.spec.application.replicas),
            if st.paused && !st.finished { "yes" } else { "-" }.to_string(),
            df.metadata
                .creation_timestamp
                .as_ref()
                .map_or("-".into(), |t| age(since(t, now))),
        ]);
        rows.push(r);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
