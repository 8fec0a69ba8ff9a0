//! Events (events.k8s.io/v1) on DeployFlows.
//!
//! Not kube-runtime's `Recorder`, for two reasons found at scale:
//! - it folds Events by reason and action only, so "batch 2 Baking" published after "batch 1
//!   Pending" became a series of "batch 1 Pending" (count 2): users lost every transition but
//!   the first. Here, as in client-go's recorder, an Event repeats (its series count grows) only
//!   when its reason *and* note repeat; a new note is a new Event;
//! - it sweeps its whole cache on every publish under a write lock: O(Events of the last
//!   6 minutes) per Event, which made a thousand releases O(N²). Here the sweep runs at most
//!   once a minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

/// How long a published Event is remembered for folding repeats into it (kube-runtime's and
/// client-go's figure).
const TTL: Duration = Duration::from_secs(6 * 60);
/// How often remembered Events past their TTL are dropped.
const SWEEP: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    namespace: Option<String>,
    regarding: (Option<String>, Option<String>),
    type_: &'static str,
    reason: String,
    note: Option<String>,
    action: String,
}

struct Published {
    name: String,
    count: i32,
    last: Instant,
}

fn hash(key: &Key) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
    cache: Arc<Mutex<Cache>>,
}

/// Keyed by a hash of the `Key`: a thousand releases' Events of the last 6 minutes are tens of
/// thousands of notes, kept as 8 bytes each.
struct Cache {
    events: HashMap<u64, Published>,
    swept: Instant,
}

/// What a publish does: create a new Event, or count a repeat of one already published.
#[derive(Debug, PartialEq, Eq)]
enum Write {
    Create,
    Repeat { name: String, count: i32 },
}

impl Cache {
    fn decide(&mut self, key: &Key, now: Instant) -> Write {
        let key = hash(key);
        if now.duration_since(self.swept) >= SWEEP {
            self.events.retain(|_, p| now.duration_since(p.last) < TTL);
            self.swept = now;
        }
        match self.events.get(&key) {
            Some(p) if now.duration_since(p.last) < TTL => Write::Repeat {
                name: p.name.clone(),
                count: p.count + 1,
            },
            _ => Write::Create,
        }
    }

    fn published(&mut self, key: Key, name: String, count: i32, now: Instant) {
        self.events.insert(
            hash(&key),
            Published {
                name,
                count,
                last: now,
            },
        );
    }
}

/// The most bytes the API server takes in an Event's note.
const NOTE_MAX: usize = 1024;

/// A note cut to what the API server takes (a longer one is refused, and the Event lost): its
/// head and its tail, where our notes say what to do, around an ellipsis.
fn fit_note(note: &str) -> String {
    if note.len() <= NOTE_MAX {
        return note.to_string();
    }
    const MARK: &str = " … ";
    let half = (NOTE_MAX - MARK.len()) / 2;
    let mut head = half;
    while !note.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = note.len() - half;
    while !note.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}{MARK}{}", &note[..head], &note[tail..])
}

impl Recorder {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Recorder {
            client,
            reporter,
            cache: Arc::new(Mutex::new(Cache {
                events: HashMap::new(),
                swept: Instant::now(),
            })),
        }
    }

    /// Publishes `ev` about `reference`: a new Event, or, when the same reason and note were
    /// published about it within 6 minutes, that Event's series count + 1.
    pub async fn publish(
        &self,
        ev: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        self.publish_keyed(ev, reference, true).await
    }

    /// Like `publish`, but repeats are folded by reason alone: for a retried failure whose text
    /// changes between attempts (a timestamp, another connection error), one Event whose series
    /// grows rather than one Event per retry. The note is the first failure's; the log has each.
    pub async fn publish_folded(
        &self,
        ev: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        self.publish_keyed(ev, reference, false).await
    }

    async fn publish_keyed(
        &self,
        ev: &Event,
        reference: &ObjectReference,
        by_note: bool,
    ) -> Result<(), kube::Error> {
        let type_ = match ev.type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key = Key {
            namespace: reference.namespace.clone(),
            regarding: (reference.name.clone(), reference.uid.clone()),
            type_,
            reason: ev.reason.clone(),
            note: if by_note { ev.note.clone() } else { None },
            action: ev.action.clone(),
        };
        let ns = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api = Api::<K8sEvent>::namespaced(self.client.clone(), &ns);
        let decided = self.lock().decide(&key, Instant::now());
        if let Write::Repeat { name, count } = decided {
            let patch = serde_json::json!({"series": EventSeries {
                count,
                last_observed_time: MicroTime(jiff::Timestamp::now()),
            }});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.lock().published(key, name, count, Instant::now());
                    return Ok(());
                }
                // Expired or deleted meanwhile: a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let now = jiff::Timestamp::now();
        let name = format!(
            "{}.{:x}",
            reference
                .name
                .as_deref()
                .unwrap_or(&self.reporter.controller),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            note: ev.note.as_deref().map(fit_note),
            metadata: ObjectMeta {
                namespace: Some(ns),
                name: Some(name.clone()),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(type_.into()),
            related: ev.secondary.clone(),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.lock().published(key, name, 1, Instant::now());
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_longer_than_the_api_server_takes_keeps_its_head_and_tail() {
        assert_eq!(fit_note("short"), "short");
        // Multi-byte characters across both cuts.
        let long = format!(
            "head {} tail: remove the finalizer by hand",
            "é".repeat(2000)
        );
        let fit = fit_note(&long);
        assert!(fit.len() <= NOTE_MAX, "{} bytes", fit.len());
        assert!(fit.starts_with("head "), "{fit}");
        assert!(fit.ends_with("remove the finalizer by hand"), "{fit}");
        assert!(fit.contains(" … "));
        let exact = "x".repeat(NOTE_MAX);
        assert_eq!(fit_note(&exact), exact);
    }

    fn key(reason: &str, note: &str) -> Key {
        Key {
            namespace: Some("ns".into()),
            regarding: (Some("df".into()), Some("uid".into())),
            type_: "Normal",
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
        }
    }

    #[test]
    fn a_repeat_needs_the_same_reason_and_note_within_the_ttl() {
        let t0 = Instant::now();
        let mut c = Cache {
            events: HashMap::new(),
            swept: t0,
        };
        let a = key("BatchPhaseChanged", "batch 1 Pending");
        assert_eq!(c.decide(&a, t0), Write::Create);
        c.published(a.clone(), "df.1".into(), 1, t0);
        // Another note of the same reason is an Event of its own.
        assert_eq!(
            c.decide(&key("BatchPhaseChanged", "batch 2 Baking"), t0),
            Write::Create
        );
        // The same note again: the series grows.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            c.decide(&a, t1),
            Write::Repeat {
                name: "df.1".into(),
                count: 2
            }
        );
        c.published(a.clone(), "df.1".into(), 2, t1);
        // Past the TTL (swept or not), a new Event.
        assert_eq!(c.decide(&a, t1 + TTL), Write::Create);
        assert!(c.events.is_empty(), "the sweep dropped the expired Event");
    }

    #[test]
    fn the_sweep_runs_at_most_once_a_minute() {
        let t0 = Instant::now();
        let mut c = Cache {
            events: HashMap::new(),
            swept: t0,
        };
        c.published(key("R", "old"), "df.1".into(), 1, t0);
        let later = t0 + TTL + Duration::from_secs(1);
        c.swept = later - Duration::from_secs(1);
        // Swept a second ago: the expired Event stays until the next sweep, but is not reused.
        assert_eq!(c.decide(&key("R", "new"), later), Write::Create);
        assert_eq!(c.events.len(), 1);
        assert_eq!(c.decide(&key("R", "old"), later), Write::Create);
        assert_eq!(c.decide(&key("R", "new"), later + SWEEP), Write::Create);
        assert!(c.events.is_empty());
    }
}
