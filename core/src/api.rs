//! The decisions of the gRPC and REST API, as pure functions: request validation (every refusal
//! names the field), paging, the `Next` target and its refusals, the scale direction, the
//! "may a release start" check (preSteps) and when a `Watch` ends.
//!
//! The API layer (in `triton-controller`) maps proto and JSON requests onto these and their
//! errors onto status codes: [`FieldError`] → `InvalidArgument`/400, [`Refusal`] →
//! `FailedPrecondition`/409.

use std::fmt;

use crate::release::{self, Action, BatchPhase, BatchSize, CurrentBatch};

/// A malformed request field: `InvalidArgument` (REST 400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path in the request, e.g. `deploy.name` or `strategy.batchSize`.
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

/// A well-formed request the release's state does not allow: `FailedPrecondition` (REST 409).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A patch (Next, Continue, Pause, Resume, Cancel) on a finished release.
    Finished { phase: String },
    /// `Next` before the release reached the state its spec asks for.
    NotSatisfied { why: String },
    /// Deleting a release that has not finished.
    Unfinished { phase: String },
    /// Starting a release on a CloneSet another running release holds.
    Busy { holder: String },
    /// Deleting a CloneSet a running release holds.
    Held { holder: String },
    /// Anything else, explained.
    Other(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Finished { phase } => write!(
                f,
                "changes on a finished deploy is not allowed (the release ended {phase})"
            ),
            Refusal::NotSatisfied { why } => {
                write!(f, "last batch or stage is not finished yet: {why}")
            }
            Refusal::Unfinished { phase } => write!(
                f,
                "deleting a not finished deploy is not allowed (phase {phase}); cancel it first"
            ),
            Refusal::Busy { holder } => write!(
                f,
                "last deploy {holder} in progress; pause it to replace it with an update or rollback, or cancel it"
            ),
            Refusal::Held { holder } => write!(
                f,
                "deleting an application owned by an in-progress deploy {holder} is not allowed"
            ),
            Refusal::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for Refusal {}

/// The page size when a request gives none (or 0).
pub const DEFAULT_PAGE_SIZE: i32 = 10;
/// The largest page a request may ask for.
pub const MAX_PAGE_SIZE: i32 = 1000;

/// Kubernetes object names the API accepts: a DNS subdomain (lowercase letters, digits, '-' and
/// '.', at most 253 characters, starting and ending with a letter or digit).
pub fn object_name(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if s.len() > 253 {
        return Err(FieldError::new(field, "must be at most 253 characters"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !s.chars().all(ok_char) || !ends_ok(s.chars().next()) || !ends_ok(s.chars().last()) {
        return Err(FieldError::new(
            field,
            format!(
                "{s:?} is not a valid name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
            ),
        ));
    }
    Ok(())
}

/// A namespace: a DNS label. `allow_empty` for filters, where "" means every namespace.
pub fn namespace(field: &str, s: &str, allow_empty: bool) -> Result<(), FieldError> {
    if s.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err(FieldError::new(field, "must not be empty"))
        };
    }
    dns_label(field, s)
}

/// A DNS label (an instance name names a CloneSet and is a label value).
pub fn dns_label(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    let valid = s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{s:?} is not a DNS label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
            ),
        ))
    }
}

/// `batchSize`: "" (unset), a number of pods ("2") or a percentage ("50%").
pub fn batch_size(field: &str, s: &str) -> Result<Option<BatchSize>, FieldError> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || {
        FieldError::new(
            field,
            format!(
                "{s:?} is neither a number of pods (0 to 100000) nor a percentage (\"0%\" to \"100%\")"
            ),
        )
    };
    let digits = |t: &str| !t.is_empty() && t.len() <= 6 && t.bytes().all(|b| b.is_ascii_digit());
    match s.strip_suffix('%') {
        Some(p) if digits(p) => match p.parse::<i32>() {
            Ok(p) if p <= 100 => Ok(Some(BatchSize::Percent(p))),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
        None if digits(s) => match s.parse::<i32>() {
            Ok(n) if n <= 100_000 => Ok(Some(BatchSize::Count(n))),
            _ => Err(bad()),
        },
        None => Err(bad()),
    }
}

/// An integer field in `0..=max`.
pub fn bounded(field: &str, v: i32, max: i32) -> Result<i32, FieldError> {
    if (0..=max).contains(&v) {
        Ok(v)
    } else {
        Err(FieldError::new(
            field,
            format!("{v} is out of range (0 to {max})"),
        ))
    }
}

/// `mode`: "" (the default, manual), `auto` or `manual`.
pub fn mode(field: &str, s: &str) -> Result<(), FieldError> {
    match s {
        "" | "auto" | "manual" => Ok(()),
        other => Err(FieldError::new(
            field,
            format!("{other:?} is not a mode (auto or manual)"),
        )),
    }
}

/// `stage` of a target or strategy: "" (the batch's default waiting point), `Smoked`, `Baking`
/// or `Baked`, the stages a release can be asked to reach.
pub fn stage(field: &str, s: &str) -> Result<Option<BatchPhase>, FieldError> {
    match s {
        "" => Ok(None),
        "Smoked" | "Baking" | "Baked" => Ok(BatchPhase::parse(s)),
        other => Err(FieldError::new(
            field,
            format!("{other:?} is not a stage (Smoked, Baking or Baked)"),
        )),
    }
}

/// An `action` filter: "" (all) or an action name.
pub fn action(field: &str, s: &str) -> Result<Option<Action>, FieldError> {
    Ok(Some(match s {
        "" => return Ok(None),
        "create" => Action::Create,
        "update" => Action::Update,
        "rollback" => Action::Rollback,
        "restart" => Action::Restart,
        "scale_in" => Action::ScaleIn,
        "scale_out" => Action::ScaleOut,
        other => {
            return Err(FieldError::new(
                field,
                format!(
                    "{other:?} is not an action (create, update, rollback, restart, scale_in or scale_out)"
                ),
            ));
        }
    }))
}

/// A validated page: `start` items skipped, at most `size` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub start: usize,
    pub size: usize,
}

/// Validates `start` and `pageSize` (0 means [`DEFAULT_PAGE_SIZE`]; the original returned an
/// empty list for it).
pub fn page(field_prefix: &str, start: i32, page_size: i32) -> Result<Page, FieldError> {
    if start < 0 {
        return Err(FieldError::new(
            format!("{field_prefix}start"),
            format!("{start} must not be negative"),
        ));
    }
    let size = match page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
        n => {
            return Err(FieldError::new(
                format!("{field_prefix}pageSize"),
                format!(
                    "{n} is out of range (0 for the default {DEFAULT_PAGE_SIZE}, up to {MAX_PAGE_SIZE})"
                ),
            ));
        }
    };
    Ok(Page {
        start: start as usize,
        size: size as usize,
    })
}

/// What the list order needs to know of an item.
pub trait Listed {
    /// Creation time, seconds since the epoch (0 when unknown).
    fn created(&self) -> i64;
    fn name(&self) -> &str;
}

/// Sorts newest first (ties by name), then returns the page.
pub fn paginate<T: Listed>(mut items: Vec<T>, page: Page) -> Vec<T> {
    items.sort_by(|a, b| {
        b.created()
            .cmp(&a.created())
            .then_with(|| a.name().cmp(b.name()))
    });
    items.into_iter().skip(page.start).take(page.size).collect()
}

/// What `Next` and `Watch` know of a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseState {
    /// The current (last) batch, if one was planned.
    pub current: Option<CurrentBatch>,
    /// Planned batches (`status.batches`).
    pub total_batches: i32,
    pub finished: bool,
    pub auto: bool,
    /// The spec's `stage` and `batches`.
    pub stage: Option<BatchPhase>,
    pub batches: i32,
}

impl ReleaseState {
    /// StateSatisfied of the spec's own target.
    pub fn spec_satisfied(&self) -> bool {
        release::state_satisfied(
            self.current,
            self.total_batches,
            self.finished,
            self.stage,
            self.batches,
        )
    }
}

/// The `(batches, stage)` that `Next` writes, or why it may not move (reference §3.5).
pub fn next(s: &ReleaseState, phase: &str) -> Result<(i32, BatchPhase), Refusal> {
    if s.finished {
        return Err(Refusal::Finished {
            phase: phase.to_string(),
        });
    }
    let Some(cur) = s.current else {
        return Err(Refusal::NotSatisfied {
            why: format!("the release has no batch yet (phase {})", or_new(phase)),
        });
    };
    if cur.phase.is_failed() {
        return Err(Refusal::NotSatisfied {
            why: format!(
                "batch {} is {:?}; fix the cause and resume",
                cur.batch, cur.phase
            ),
        });
    }
    if cur.canary && cur.phase == BatchPhase::Baked {
        // Between the canary's bake and batch 2's planning: a Next now would aim at the canary.
        return Err(Refusal::NotSatisfied {
            why: "the canary is baked and batch 2 is being prepared; try again".into(),
        });
    }
    if !s.spec_satisfied() {
        return Err(Refusal::NotSatisfied {
            why: format!(
                "batch {} is {:?}, short of the requested {} of batch {}",
                cur.batch,
                cur.phase,
                s.stage
                    .map_or("default stage".to_string(), |p| format!("{p:?}")),
                s.batches
            ),
        });
    }
    Ok(release::next_target(cur, s.total_batches, s.auto))
}

fn or_new(phase: &str) -> &str {
    if phase.is_empty() { "New" } else { phase }
}

/// Whether a `Watch` has seen enough: the release finished or reached the target (the request's,
/// else the spec's).
pub fn watch_done(s: &ReleaseState, target: Option<(Option<BatchPhase>, i32)>) -> bool {
    if s.finished {
        return true;
    }
    match target {
        Some((stage, batches)) => {
            release::state_satisfied(s.current, s.total_batches, s.finished, stage, batches)
        }
        None => s.spec_satisfied(),
    }
}

/// The action of a Scale request: `scale_out` when the replicas do not shrink, else `scale_in`.
pub fn scale_action(requested: i32, current: i32) -> Action {
    if requested >= current {
        Action::ScaleOut
    } else {
        Action::ScaleIn
    }
}

/// The running release that holds a CloneSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    pub paused: bool,
}

/// preSteps (reference §3.1): a new release of a CloneSet held by a running one is refused,
/// unless the holder is paused and the new action changes the revision (the new release then
/// aborts the paused one).
pub fn may_start(holder: Option<&Holder>, action: Action) -> Result<(), Refusal> {
    match holder {
        Some(h) if !(h.paused && action.is_revision_changing()) => Err(Refusal::Busy {
            holder: h.name.clone(),
        }),
        _ => Ok(()),
    }
}

/// The part of a revision name after its last '-' (the API's short revision).
pub fn short_revision(rev: &str) -> &str {
    rev.rsplit('-').next().unwrap_or(rev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use BatchPhase::*;

    fn state(batch: i32, phase: BatchPhase, canary: bool) -> ReleaseState {
        ReleaseState {
            current: Some(CurrentBatch {
                batch,
                phase,
                canary,
            }),
            total_batches: 3,
            finished: false,
            auto: true,
            stage: None,
            batches: 1,
        }
    }

    #[test]
    fn next_walks_the_tutorial() {
        // Canary Smoked (the spec's default waiting point) → Baking → Baked → all batches.
        assert_eq!(
            next(&state(1, Smoked, true), "BatchStarted"),
            Ok((1, Baking))
        );
        let mut s = state(1, Baking, true);
        s.stage = Some(Baking);
        assert_eq!(next(&s, "BatchStarted"), Ok((1, Baked)));
        // The canary is baked and batch 2 prepared: auto mode releases every batch.
        let mut after = state(2, Pending, false);
        after.stage = Some(Baked);
        assert_eq!(next(&after, "BatchStarted"), Ok((3, Baked)));
    }

    #[test]
    fn next_waits_for_batch_two_after_a_baked_canary() {
        let mut s = state(1, Baked, true);
        s.stage = Some(Baked);
        assert!(matches!(
            next(&s, "BatchFinished"),
            Err(Refusal::NotSatisfied { .. })
        ));
    }

    #[test]
    fn next_is_refused_before_the_requested_stage() {
        let mut s = state(1, Smoking, true);
        s.stage = Some(Smoked);
        let err = next(&s, "BatchStarted").unwrap_err();
        assert!(matches!(err, Refusal::NotSatisfied { .. }));
        assert!(
            err.to_string()
                .starts_with("last batch or stage is not finished yet")
        );
    }

    #[test]
    fn next_is_refused_on_a_finished_release_and_a_failed_batch() {
        let mut s = state(3, Baked, false);
        s.finished = true;
        assert_eq!(
            next(&s, "Success"),
            Err(Refusal::Finished {
                phase: "Success".into()
            })
        );
        assert!(matches!(
            next(&state(1, SmokeFailed, true), "BatchStarted"),
            Err(Refusal::NotSatisfied { .. })
        ));
        let mut none = state(1, Smoked, true);
        none.current = None;
        assert!(matches!(next(&none, ""), Err(Refusal::NotSatisfied { .. })));
    }

    #[test]
    fn next_in_manual_mode_releases_one_batch() {
        let mut s = state(2, Baked, false);
        s.auto = false;
        s.batches = 2;
        assert_eq!(next(&s, "BatchFinished"), Ok((2, Baked)));
    }

    #[test]
    fn watch_ends_at_its_target_or_the_end() {
        let s = state(1, Baking, true);
        assert!(watch_done(&s, Some((Some(Baking), 1))));
        assert!(!watch_done(&s, Some((Some(Baked), 1))));
        assert!(!watch_done(&s, Some((Some(Baked), 3))));
        let mut done = s;
        done.finished = true;
        assert!(watch_done(&done, Some((Some(Baked), 3))));
    }

    #[test]
    fn batch_size_accepts_numbers_and_percentages_only() {
        assert_eq!(batch_size("b", ""), Ok(None));
        assert_eq!(batch_size("b", "2"), Ok(Some(BatchSize::Count(2))));
        assert_eq!(batch_size("b", "50%"), Ok(Some(BatchSize::Percent(50))));
        for bad in [
            "-1", "101%", "x", "1.5", "%", " 2", "2 ", "100001", "1e3", "+3",
        ] {
            let e = batch_size("strategy.batchSize", bad).unwrap_err();
            assert_eq!(e.field, "strategy.batchSize", "{bad}");
        }
    }

    #[test]
    fn page_defaults_and_bounds() {
        assert_eq!(page("", 0, 0), Ok(Page { start: 0, size: 10 }));
        assert_eq!(page("", 5, 3), Ok(Page { start: 5, size: 3 }));
        assert_eq!(page("filter.", -1, 0).unwrap_err().field, "filter.start");
        assert_eq!(page("filter.", 0, -2).unwrap_err().field, "filter.pageSize");
        assert_eq!(
            page("filter.", 0, 1001).unwrap_err().field,
            "filter.pageSize"
        );
    }

    struct It(i64, &'static str);
    impl Listed for It {
        fn created(&self) -> i64 {
            self.0
        }
        fn name(&self) -> &str {
            self.1
        }
    }

    #[test]
    fn paginate_sorts_newest_first_then_by_name() {
        let items = vec![It(1, "a"), It(3, "c"), It(3, "b"), It(2, "d")];
        let names = |v: Vec<It>| v.iter().map(|i| i.1).collect::<Vec<_>>();
        let all = Page { start: 0, size: 10 };
        assert_eq!(names(paginate(items, all)), ["b", "c", "d", "a"]);
        let items = vec![It(1, "a"), It(3, "c"), It(3, "b"), It(2, "d")];
        assert_eq!(
            names(paginate(items, Page { start: 1, size: 2 })),
            ["c", "d"]
        );
        let items = vec![It(1, "a")];
        assert!(paginate(items, Page { start: 1, size: 2 }).is_empty());
    }

    #[test]
    fn names_and_labels() {
        assert!(object_name("deploy.name", "12122-sample-10010-df").is_ok());
        assert_eq!(
            object_name("deploy.name", "").unwrap_err().reason,
            "must not be empty"
        );
        assert!(object_name("deploy.name", "Bad").is_err());
        assert!(object_name("deploy.name", "-a").is_err());
        assert!(namespace("deploy.namespace", "", true).is_ok());
        assert!(namespace("deploy.namespace", "", false).is_err());
        assert!(dns_label("x", &"a".repeat(64)).is_err());
        assert!(stage("target.stage", "Smoking").is_err());
        assert_eq!(stage("target.stage", "Baked"), Ok(Some(Baked)));
        assert!(mode("strategy.mode", "fast").is_err());
        assert_eq!(
            action("filter.action", "scale_in"),
            Ok(Some(Action::ScaleIn))
        );
        assert!(action("filter.action", "delete").is_err());
        assert!(bounded("replicas", -1, 100_000).is_err());
    }

    #[test]
    fn a_running_holder_blocks_unless_paused_and_the_new_release_changes_the_revision() {
        let h = Holder {
            name: "old".into(),
            paused: false,
        };
        assert!(matches!(
            may_start(Some(&h), Action::Update),
            Err(Refusal::Busy { .. })
        ));
        let p = Holder {
            name: "old".into(),
            paused: true,
        };
        assert!(may_start(Some(&p), Action::Rollback).is_ok());
        assert!(may_start(Some(&p), Action::Restart).is_err());
        assert!(may_start(None, Action::Restart).is_ok());
        assert_eq!(scale_action(3, 3), Action::ScaleOut);
        assert_eq!(scale_action(2, 3), Action::ScaleIn);
        assert_eq!(short_revision("sample-6ddf9b7cf4"), "6ddf9b7cf4");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any string: accepted exactly when it is a number of pods (≤ 100000) or a
            /// percentage (≤ 100%), else refused naming the field; never a panic.
            #[test]
            fn batch_size_accepts_exactly_numbers_and_percentages(s in ".{0,10}") {
                let digits = |t: &str| !t.is_empty() && t.len() <= 6 && t.bytes().all(|b| b.is_ascii_digit());
                let expected = if s.is_empty() {
                    Some(None)
                } else if let Some(p) = s.strip_suffix('%') {
                    (digits(p) && p.parse::<i32>().is_ok_and(|p| p <= 100))
                        .then(|| Some(BatchSize::Percent(p.parse().unwrap())))
                } else {
                    (digits(&s) && s.parse::<i32>().is_ok_and(|n| n <= 100_000))
                        .then(|| Some(BatchSize::Count(s.parse().unwrap())))
                };
                match (batch_size("strategy.batchSize", &s), expected) {
                    (Ok(got), Some(want)) => prop_assert_eq!(got, want),
                    (Err(e), None) => prop_assert_eq!(e.field, "strategy.batchSize"),
                    (got, want) => prop_assert!(false, "{s:?}: got {got:?}, expected {want:?}"),
                }
            }

            #[test]
            fn numeric_batch_sizes_round_trip(n in 0i32..=100_000, p in 0i32..=100) {
                prop_assert_eq!(batch_size("b", &n.to_string()), Ok(Some(BatchSize::Count(n))));
                prop_assert_eq!(batch_size("b", &format!("{p}%")), Ok(Some(BatchSize::Percent(p))));
            }

            /// Names, namespaces, stages, modes, actions and pages: any input is accepted or
            /// refused with its field named, never a panic.
            #[test]
            fn validators_name_the_field_they_refuse(s in "\\PC{0,300}", start in any::<i32>(), size in any::<i32>()) {
                for (field, r) in [
                    ("n", object_name("n", &s)),
                    ("ns", namespace("ns", &s, true)),
                    ("l", dns_label("l", &s)),
                    ("m", mode("m", &s)),
                    ("st", stage("st", &s).map(|_| ())),
                    ("a", action("a", &s).map(|_| ())),
                ] {
                    if let Err(e) = r {
                        prop_assert_eq!(e.field.as_str(), field);
                        prop_assert!(!e.reason.is_empty());
                    }
                }
                match page("filter.", start, size) {
                    Ok(p) => prop_assert!(p.size >= 1 && p.size <= MAX_PAGE_SIZE as usize),
                    Err(e) => prop_assert!(e.field == "filter.start" || e.field == "filter.pageSize"),
                }
            }

            /// A valid object name is a DNS subdomain.
            #[test]
            fn generated_names_are_accepted(s in "[a-z0-9]([a-z0-9.-]{0,60}[a-z0-9])?") {
                prop_assert!(object_name("n", &s).is_ok());
            }
        }
    }
}
