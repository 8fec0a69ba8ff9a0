//! The release arithmetic and state predicates of a DeployFlow, as pure functions (reference §2.4,
//! §3.5): phase weights, batch planning, MoveForward, StateSatisfied and the Next target.

use serde::{Deserialize, Serialize};

/// `spec.action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Rollback,
    Restart,
    ScaleIn,
    ScaleOut,
}

impl Action {
    /// The name as the DeployFlow spells it (`scale_in`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Rollback => "rollback",
            Action::Restart => "restart",
            Action::ScaleIn => "scale_in",
            Action::ScaleOut => "scale_out",
        }
    }

    /// create, update and rollback change the pod revision (and use `updateStrategy`).
    pub fn is_revision_changing(self) -> bool {
        matches!(self, Action::Create | Action::Update | Action::Rollback)
    }
}

/// `status.phase`. `New` is the empty string of a DeployFlow nobody has looked at yet.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum DeployPhase {
    #[default]
    #[serde(rename = "")]
    New,
    Pending,
    Initializing,
    BatchStarted,
    BatchFinished,
    Success,
    Failed,
    Aborted,
    Canceled,
}

impl DeployPhase {
    pub fn weight(self) -> u8 {
        match self {
            DeployPhase::New => 0,
            DeployPhase::Pending => 1,
            DeployPhase::Initializing => 2,
            DeployPhase::BatchStarted => 3,
            DeployPhase::BatchFinished => 4,
            _ => 10,
        }
    }
    pub fn is_terminal(self) -> bool {
        self.weight() == 10
    }
    pub fn as_str(self) -> &'static str {
        match self {
            DeployPhase::New => "",
            DeployPhase::Pending => "Pending",
            DeployPhase::Initializing => "Initializing",
            DeployPhase::BatchStarted => "BatchStarted",
            DeployPhase::BatchFinished => "BatchFinished",
            DeployPhase::Success => "Success",
            DeployPhase::Failed => "Failed",
            DeployPhase::Aborted => "Aborted",
            DeployPhase::Canceled => "Canceled",
        }
    }
}

/// Phase of one batch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum BatchPhase {
    #[default]
    Pending,
    Smoking,
    Smoked,
    Baking,
    Baked,
    SmokeFailed,
    BakeFailed,
}

impl BatchPhase {
    pub fn weight(self) -> u8 {
        match self {
            BatchPhase::Pending => 0,
            BatchPhase::Smoking => 1,
            BatchPhase::Smoked => 2,
            BatchPhase::Baking => 3,
            BatchPhase::Baked => 4,
            BatchPhase::SmokeFailed | BatchPhase::BakeFailed => 10,
        }
    }
    pub fn is_failed(self) -> bool {
        matches!(self, BatchPhase::SmokeFailed | BatchPhase::BakeFailed)
    }
    /// Parses a `stage` value; "" and unknown values are `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Pending" => BatchPhase::Pending,
            "Smoking" => BatchPhase::Smoking,
            "Smoked" => BatchPhase::Smoked,
            "Baking" => BatchPhase::Baking,
            "Baked" => BatchPhase::Baked,
            "SmokeFailed" => BatchPhase::SmokeFailed,
            "BakeFailed" => BatchPhase::BakeFailed,
            _ => return None,
        })
    }
}

/// `batchSize`: a number of pods or a percentage of `application.replicas`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSize {
    Count(i32),
    Percent(i32),
}

impl BatchSize {
    /// Parses an int-or-string value: `3`, `"3"` or `"30%"`.
    pub fn parse_str(s: &str) -> Option<Self> {
        match s.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse()
                .ok()
                .filter(|p: &i32| *p >= 0)
                .map(BatchSize::Percent),
            None => s
                .trim()
                .parse()
                .ok()
                .filter(|n: &i32| *n >= 0)
                .map(BatchSize::Count),
        }
    }

    /// The number of pods, percentages of `replicas` rounded up.
    pub fn resolve(self, replicas: i32) -> i32 {
        match self {
            BatchSize::Count(n) => n,
            BatchSize::Percent(p) => {
                ((replicas as i64 * p as i64 + 99) / 100).clamp(0, i32::MAX as i64) as i32
            }
        }
    }
}

/// The next batch to prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    /// Total planned batches (`status.batches`).
    pub batches: i32,
    /// Size of the batch to append.
    pub size: i32,
    /// Whether it is the canary batch.
    pub canary: bool,
}

/// PrepareNewBatch (reference §2.4). `canary` is the canary size, 0 when there is none (or the
/// action is not revision-changing). `None` when every replica is finished.
pub fn plan_next_batch(
    replicas: i32,
    replicas_to_process: i32,
    finished_replicas: i32,
    finished_batches: i32,
    batch_size: Option<BatchSize>,
    canary: i32,
) -> Option<BatchPlan> {
    let remaining = replicas_to_process.saturating_sub(finished_replicas);
    if remaining <= 0 {
        return None;
    }
    let bs = match batch_size.map(|b| b.resolve(replicas)) {
        Some(bs) if bs > 0 && bs < remaining => bs,
        _ => remaining,
    };
    if finished_batches == 0 {
        let (first, is_canary) = if canary > 0 && canary < remaining {
            (canary, true)
        } else {
            (bs, false)
        };
        let rest = replicas_to_process.saturating_sub(first);
        Some(BatchPlan {
            batches: div_ceil(rest, bs).saturating_add(1),
            size: first,
            canary: is_canary,
        })
    } else {
        Some(BatchPlan {
            batches: div_ceil(remaining, bs).saturating_add(finished_batches),
            size: bs,
            canary: false,
        })
    }
}

fn div_ceil(a: i32, b: i32) -> i32 {
    if a <= 0 || b <= 0 {
        0
    } else {
        ((a as i64 + b as i64 - 1) / b as i64) as i32
    }
}

/// What the predicates need to know about the current (last) batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrentBatch {
    /// 1-based batch number.
    pub batch: i32,
    pub phase: BatchPhase,
    pub canary: bool,
}

/// The user's desired state: `stage` and `batches` of the strategy, and the mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desired {
    pub stage: Option<BatchPhase>,
    pub batches: i32,
    pub auto: bool,
    /// Whether the release has a canary batch at all.
    pub canary_enabled: bool,
}

/// MoveForward (reference §2.4): may the current batch advance past its waiting point?
pub fn move_forward(current: Option<CurrentBatch>, paused: bool, desired: Desired) -> bool {
    let Some(cur) = current else { return false };
    if paused {
        return false;
    }
    if cur.canary {
        return desired.stage.unwrap_or(BatchPhase::Smoked).weight() > cur.phase.weight();
    }
    // After a canary, even auto mode waits once for the user before batch 2 starts.
    let first_after_canary =
        cur.batch == 2 && cur.phase == BatchPhase::Pending && desired.canary_enabled;
    if desired.auto && !first_after_canary {
        return true;
    }
    desired.batches >= cur.batch
}

/// StateSatisfied (reference §3.5): has the release reached (`stage`, `batches`)?
pub fn state_satisfied(
    current: Option<CurrentBatch>,
    total_batches: i32,
    finished: bool,
    stage: Option<BatchPhase>,
    batches: i32,
) -> bool {
    let Some(cur) = current else { return false };
    if batches >= total_batches && stage == Some(BatchPhase::Baked) {
        return finished;
    }
    match cur.batch.cmp(&batches) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => {
            let want = stage.unwrap_or(if cur.canary {
                BatchPhase::Smoked
            } else {
                BatchPhase::Baked
            });
            cur.phase.weight() >= want.weight()
        }
    }
}

/// The `(batches, stage)` that `Next` writes (reference §3.5).
pub fn next_target(current: CurrentBatch, total_batches: i32, auto: bool) -> (i32, BatchPhase) {
    if current.canary {
        return match current.phase {
            BatchPhase::Smoked => (1, BatchPhase::Baking),
            BatchPhase::Baking => (1, BatchPhase::Baked),
            _ => (1, BatchPhase::Smoked),
        };
    }
    if auto {
        (total_batches, BatchPhase::Baked)
    } else {
        (current.batch, BatchPhase::Baked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BatchPhase::*;

    fn sizes(
        replicas: i32,
        to_process: i32,
        batch_size: Option<BatchSize>,
        canary: i32,
    ) -> (i32, Vec<(i32, bool)>) {
        let (mut finished, mut batches, mut out, mut total) = (0, 0, vec![], 0);
        while let Some(plan) =
            plan_next_batch(replicas, to_process, finished, batches, batch_size, canary)
        {
            total = plan.batches;
            out.push((plan.size, plan.canary));
            finished += plan.size;
            batches += 1;
        }
        (total, out)
    }

    #[test]
    fn tutorial_three_replicas_batch_one_canary_one_gives_three_batches() {
        assert_eq!(
            sizes(3, 3, Some(BatchSize::Count(1)), 1),
            (3, vec![(1, true), (1, false), (1, false)])
        );
    }

    #[test]
    fn ten_replicas_thirty_percent_gives_3_3_3_1() {
        assert_eq!(
            sizes(10, 10, BatchSize::parse_str("30%"), 0),
            (4, vec![(3, false), (3, false), (3, false), (1, false)])
        );
    }

    #[test]
    fn unset_zero_or_oversized_batch_size_means_one_batch() {
        for bs in [
            None,
            Some(BatchSize::Count(0)),
            Some(BatchSize::Count(7)),
            Some(BatchSize::Percent(100)),
        ] {
            assert_eq!(sizes(5, 5, bs, 0), (1, vec![(5, false)]), "{bs:?}");
        }
    }

    #[test]
    fn canary_not_smaller_than_the_work_is_no_canary() {
        assert_eq!(
            sizes(2, 2, Some(BatchSize::Count(1)), 2),
            (2, vec![(1, false), (1, false)])
        );
    }

    #[test]
    fn canary_then_batches_of_two() {
        assert_eq!(
            sizes(7, 7, Some(BatchSize::Count(2)), 1),
            (4, vec![(1, true), (2, false), (2, false), (2, false)])
        );
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(BatchSize::Percent(10).resolve(3), 1);
        assert_eq!(BatchSize::Percent(50).resolve(5), 3);
        assert_eq!(BatchSize::parse_str("2"), Some(BatchSize::Count(2)));
        assert_eq!(BatchSize::parse_str("x"), None);
        assert_eq!(BatchSize::parse_str("-1%"), None);
    }

    #[test]
    fn nothing_left_plans_nothing() {
        assert_eq!(
            plan_next_batch(3, 3, 3, 3, Some(BatchSize::Count(1)), 0),
            None
        );
        assert_eq!(plan_next_batch(3, 0, 0, 0, None, 0), None);
    }

    fn cur(batch: i32, phase: BatchPhase, canary: bool) -> Option<CurrentBatch> {
        Some(CurrentBatch {
            batch,
            phase,
            canary,
        })
    }
    fn desired(
        stage: Option<BatchPhase>,
        batches: i32,
        auto: bool,
        canary_enabled: bool,
    ) -> Desired {
        Desired {
            stage,
            batches,
            auto,
            canary_enabled,
        }
    }

    #[test]
    fn canary_waits_at_smoked_until_stage_says_baking() {
        let d = desired(None, 1, true, true);
        assert!(
            move_forward(cur(1, Pending, true), false, d),
            "the canary starts on its own"
        );
        assert!(move_forward(cur(1, Smoking, true), false, d));
        assert!(
            !move_forward(cur(1, Smoked, true), false, d),
            "stops at Smoked"
        );
        assert!(move_forward(
            cur(1, Smoked, true),
            false,
            desired(Some(Baking), 1, true, true)
        ));
        assert!(
            !move_forward(
                cur(1, Baking, true),
                false,
                desired(Some(Baking), 1, true, true)
            ),
            "stops at Baking"
        );
        assert!(move_forward(
            cur(1, Baking, true),
            false,
            desired(Some(Baked), 1, true, true)
        ));
    }

    #[test]
    fn auto_mode_waits_once_after_the_canary_then_runs() {
        let d = desired(Some(Baked), 1, true, true);
        assert!(
            !move_forward(cur(2, Pending, false), false, d),
            "batch 2 waits for batches >= 2"
        );
        assert!(move_forward(
            cur(2, Pending, false),
            false,
            desired(Some(Baked), 3, true, true)
        ));
        assert!(
            move_forward(cur(3, Pending, false), false, d),
            "later batches run on their own"
        );
    }

    #[test]
    fn manual_mode_needs_batches_at_least_the_batch_number() {
        let d = desired(None, 1, false, false);
        assert!(move_forward(cur(1, Pending, false), false, d));
        assert!(!move_forward(cur(2, Pending, false), false, d));
        assert!(move_forward(
            cur(2, Pending, false),
            false,
            desired(None, 2, false, false)
        ));
    }

    #[test]
    fn paused_or_no_batch_never_moves() {
        assert!(!move_forward(
            cur(1, Pending, false),
            true,
            desired(None, 9, true, false)
        ));
        assert!(!move_forward(None, false, desired(None, 9, true, false)));
    }

    #[test]
    fn next_targets_follow_the_tutorial() {
        assert_eq!(
            next_target(cur(1, Smoked, true).unwrap(), 3, true),
            (1, Baking)
        );
        assert_eq!(
            next_target(cur(1, Baking, true).unwrap(), 3, true),
            (1, Baked)
        );
        assert_eq!(
            next_target(cur(1, Smoking, true).unwrap(), 3, true),
            (1, Smoked)
        );
        assert_eq!(
            next_target(cur(2, Pending, false).unwrap(), 3, true),
            (3, Baked)
        );
        assert_eq!(
            next_target(cur(2, Pending, false).unwrap(), 3, false),
            (2, Baked)
        );
    }

    #[test]
    fn state_satisfied_compares_batch_then_stage() {
        assert!(!state_satisfied(None, 3, false, Some(Baked), 1));
        assert!(
            state_satisfied(cur(1, Smoked, true), 3, false, None, 1),
            "empty stage means Smoked for a canary"
        );
        assert!(!state_satisfied(cur(1, Smoking, true), 3, false, None, 1));
        assert!(state_satisfied(
            cur(1, Baking, true),
            3,
            false,
            Some(Baking),
            1
        ));
        assert!(!state_satisfied(
            cur(1, Baking, true),
            3,
            false,
            Some(Baked),
            1
        ));
        assert!(
            state_satisfied(cur(2, Pending, false), 3, false, Some(Baked), 1),
            "a later batch satisfies an earlier target"
        );
        assert!(
            !state_satisfied(cur(2, Baked, false), 3, false, Some(Baked), 3),
            "the final target needs finished"
        );
        assert!(state_satisfied(
            cur(3, Baked, false),
            3,
            true,
            Some(Baked),
            3
        ));
    }

    #[test]
    fn phases_serialize_as_in_the_original() {
        assert_eq!(serde_json::to_string(&DeployPhase::New).unwrap(), r#""""#);
        assert_eq!(
            serde_json::to_string(&DeployPhase::BatchStarted).unwrap(),
            r#""BatchStarted""#
        );
        assert_eq!(
            serde_json::to_string(&Action::ScaleIn).unwrap(),
            r#""scale_in""#
        );
        assert_eq!(
            serde_json::to_string(&SmokeFailed).unwrap(),
            r#""SmokeFailed""#
        );
    }
}

/// The CloneSet fields a batch step writes (reference §2.5); `None` fields are left alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloneSetTarget {
    pub replicas: Option<i32>,
    pub partition: Option<i32>,
}

/// Inputs of the CloneSet patch at a batch's start or finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchStep {
    pub action: Action,
    /// `application.replicas`.
    pub replicas: i32,
    /// The batch size.
    pub size: i32,
    /// Replicas already on the update revision when the release started (update, rollback).
    pub updated_at_start: i32,
    /// `status.finishedReplicas` before this batch.
    pub finished: i32,
    /// The CloneSet's replica count when the release started (scale, restart).
    pub replicas_at_start: i32,
}

/// CloneSet target when a batch starts: surge (update, restart), grow (create, scale_out).
pub fn batch_start_target(s: BatchStep) -> CloneSetTarget {
    match s.action {
        Action::Create => CloneSetTarget {
            replicas: Some(s.finished.saturating_add(s.size)),
            partition: None,
        },
        Action::Update | Action::Rollback => CloneSetTarget {
            replicas: Some(s.replicas.saturating_add(s.size)),
            // Kruise keeps `partition` pods on the old revision: R - (already new) - (baked) holds
            // the rest back while the surge brings up `size` new pods.
            partition: Some(sub(s.replicas, &[s.updated_at_start, s.finished])),
        },
        Action::Restart => CloneSetTarget {
            replicas: Some(s.replicas.saturating_add(s.size)),
            partition: None,
        },
        Action::ScaleOut => CloneSetTarget {
            replicas: Some(
                s.replicas_at_start
                    .saturating_add(s.finished)
                    .saturating_add(s.size),
            ),
            partition: None,
        },
        Action::ScaleIn => CloneSetTarget::default(),
    }
}

/// CloneSet target when a batch finishes (after its pods are baked): drop the surge and retire
/// `size` old pods (update: partition down by `size`), or shrink (scale_in).
pub fn batch_finish_target(s: BatchStep) -> CloneSetTarget {
    match s.action {
        Action::Update | Action::Rollback => CloneSetTarget {
            replicas: Some(s.replicas),
            partition: Some(sub(s.replicas, &[s.updated_at_start, s.finished, s.size])),
        },
        Action::Restart => CloneSetTarget {
            replicas: Some(s.replicas),
            partition: None,
        },
        Action::ScaleIn => CloneSetTarget {
            replicas: Some(sub(s.replicas_at_start, &[s.finished, s.size]).max(s.replicas)),
            partition: None,
        },
        Action::Create | Action::ScaleOut => CloneSetTarget::default(),
    }
}

/// CloneSet target when a release is canceled with `finished` replicas baked: the surge or the
/// unbaked batch is removed and what was baked stays (DESIGN §2, decision 5).
pub fn cancel_target(s: BatchStep) -> CloneSetTarget {
    match s.action {
        Action::Create => CloneSetTarget {
            replicas: Some(s.finished),
            partition: None,
        },
        Action::Update | Action::Rollback => CloneSetTarget {
            replicas: Some(s.replicas),
            partition: Some(sub(s.replicas, &[s.updated_at_start, s.finished])),
        },
        Action::Restart => CloneSetTarget {
            replicas: Some(s.replicas),
            partition: None,
        },
        Action::ScaleOut => CloneSetTarget {
            replicas: Some(s.replicas_at_start.saturating_add(s.finished)),
            partition: None,
        },
        Action::ScaleIn => CloneSetTarget {
            replicas: Some(sub(s.replicas_at_start, &[s.finished])),
            partition: None,
        },
    }
}

/// `a` minus each of `b`, saturating, never below 0.
fn sub(a: i32, b: &[i32]) -> i32 {
    b.iter().fold(a, |acc, x| acc.saturating_sub(*x)).max(0)
}

/// Work size (`replicasToProcess`, reference §2.3).
pub fn replicas_to_process(
    action: Action,
    replicas: i32,
    updated_replicas: i32,
    current_replicas: i32,
    pods_to_delete: usize,
) -> i32 {
    match action {
        Action::Restart if pods_to_delete > 0 => pods_to_delete.min(i32::MAX as usize) as i32,
        Action::Restart => replicas,
        Action::ScaleIn | Action::ScaleOut => abs_diff(replicas, current_replicas),
        Action::Create | Action::Update | Action::Rollback => abs_diff(replicas, updated_replicas),
    }
}

fn abs_diff(a: i32, b: i32) -> i32 {
    a.abs_diff(b).min(i32::MAX as u32) as i32
}

#[cfg(test)]
mod patch_tests {
    #[test]
    fn extreme_inputs_saturate_instead_of_overflowing() {
        let s = BatchStep {
            action: Action::Update,
            replicas: i32::MAX,
            size: i32::MAX,
            updated_at_start: i32::MIN,
            finished: i32::MAX,
            replicas_at_start: i32::MIN,
        };
        for action in [
            Action::Create,
            Action::Update,
            Action::Restart,
            Action::ScaleIn,
            Action::ScaleOut,
        ] {
            let s = BatchStep { action, ..s };
            let _ = (
                batch_start_target(s),
                batch_finish_target(s),
                cancel_target(s),
            );
        }
        assert_eq!(
            replicas_to_process(Action::ScaleIn, i32::MAX, 0, i32::MIN, 0),
            i32::MAX
        );
        assert_eq!(BatchSize::Percent(i32::MAX).resolve(i32::MAX), i32::MAX);
        let plan = plan_next_batch(i32::MAX, i32::MAX, 0, 0, Some(BatchSize::Count(1)), 0).unwrap();
        assert_eq!(plan.size, 1);
    }

    use super::*;

    fn step(action: Action, replicas: i32, size: i32, finished: i32) -> BatchStep {
        BatchStep {
            action,
            replicas,
            size,
            updated_at_start: 0,
            finished,
            replicas_at_start: replicas,
        }
    }

    #[test]
    fn create_grows_batch_by_batch() {
        assert_eq!(
            batch_start_target(step(Action::Create, 3, 1, 0)).replicas,
            Some(1)
        );
        assert_eq!(
            batch_start_target(step(Action::Create, 3, 1, 2)).replicas,
            Some(3)
        );
        assert_eq!(
            batch_finish_target(step(Action::Create, 3, 1, 2)),
            CloneSetTarget::default()
        );
    }

    #[test]
    fn update_surges_then_retires_old_pods() {
        // R=4, batches of 2: surge to 6 holding 4 old, then back to 4 with 2 old kept.
        assert_eq!(
            batch_start_target(step(Action::Update, 4, 2, 0)),
            CloneSetTarget {
                replicas: Some(6),
                partition: Some(4)
            }
        );
        assert_eq!(
            batch_finish_target(step(Action::Update, 4, 2, 0)),
            CloneSetTarget {
                replicas: Some(4),
                partition: Some(2)
            }
        );
        assert_eq!(
            batch_start_target(step(Action::Update, 4, 2, 2)),
            CloneSetTarget {
                replicas: Some(6),
                partition: Some(2)
            }
        );
        assert_eq!(
            batch_finish_target(step(Action::Update, 4, 2, 2)),
            CloneSetTarget {
                replicas: Some(4),
                partition: Some(0)
            }
        );
    }

    #[test]
    fn scale_steps() {
        let out = BatchStep {
            action: Action::ScaleOut,
            replicas: 5,
            size: 1,
            updated_at_start: 0,
            finished: 1,
            replicas_at_start: 3,
        };
        assert_eq!(batch_start_target(out).replicas, Some(5));
        let inn = BatchStep {
            action: Action::ScaleIn,
            replicas: 1,
            size: 1,
            updated_at_start: 0,
            finished: 0,
            replicas_at_start: 3,
        };
        assert_eq!(batch_start_target(inn), CloneSetTarget::default());
        assert_eq!(batch_finish_target(inn).replicas, Some(2));
    }

    #[test]
    fn cancel_keeps_what_was_baked() {
        assert_eq!(
            cancel_target(step(Action::Create, 3, 1, 1)).replicas,
            Some(1)
        );
        assert_eq!(
            cancel_target(step(Action::Update, 4, 2, 2)),
            CloneSetTarget {
                replicas: Some(4),
                partition: Some(2)
            }
        );
    }

    #[test]
    fn work_sizes() {
        assert_eq!(replicas_to_process(Action::Create, 3, 0, 0, 0), 3);
        assert_eq!(replicas_to_process(Action::Update, 4, 1, 4, 0), 3);
        assert_eq!(replicas_to_process(Action::Restart, 4, 4, 4, 2), 2);
        assert_eq!(replicas_to_process(Action::ScaleIn, 2, 5, 5, 0), 3);
    }
}

/// What one pod of a batch looks like to the smoke test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodObservation {
    pub name: String,
    /// ContainersReady (or Ready).
    pub smoked: bool,
    /// Restarting and not ContainersReady, or phase Failed.
    pub failing: bool,
}

/// The outcome of a batch's smoke test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmokeVerdict {
    /// Not all of the batch's pods exist or are ready yet.
    Waiting,
    /// Every pod of the batch is up: the batch is Smoked.
    Smoked,
    /// These pods fail: the batch is SmokeFailed and the release pauses.
    Failed(Vec<String>),
}

/// Smoking → Smoked or SmokeFailed (DESIGN §2, decision 4): a failing pod fails the batch at
/// once; otherwise the batch is smoked when it has all its `size` pods, all up.
pub fn smoke_verdict(size: i32, pods: &[PodObservation]) -> SmokeVerdict {
    let failing: Vec<String> = pods
        .iter()
        .filter(|p| p.failing)
        .map(|p| p.name.clone())
        .collect();
    if !failing.is_empty() {
        SmokeVerdict::Failed(failing)
    } else if pods.len() as i32 == size && pods.iter().all(|p| p.smoked) {
        SmokeVerdict::Smoked
    } else {
        SmokeVerdict::Waiting
    }
}

/// How much longer the next batch must wait after the last one finished (`None`: start now).
/// No wait after a canary in auto mode (the original's rule). Status times have second
/// resolution, so a non-zero interval counts one more second from the stored time: batches are
/// then at least the interval apart in real time too.
pub fn interval_wait(
    interval: std::time::Duration,
    since_last_finished: std::time::Duration,
    auto: bool,
    last_was_canary: bool,
) -> Option<std::time::Duration> {
    if (auto && last_was_canary) || interval.is_zero() {
        return None;
    }
    let needed = interval + std::time::Duration::from_secs(1);
    (since_last_finished < needed).then(|| needed - since_last_finished)
}

#[cfg(test)]
mod verdict_tests {
    use super::*;
    use std::time::Duration;

    fn pod(name: &str, smoked: bool, failing: bool) -> PodObservation {
        PodObservation {
            name: name.into(),
            smoked,
            failing,
        }
    }

    #[test]
    fn a_batch_is_smoked_only_with_all_its_pods_up() {
        assert_eq!(
            smoke_verdict(2, &[pod("a", true, false)]),
            SmokeVerdict::Waiting,
            "one pod missing"
        );
        assert_eq!(
            smoke_verdict(2, &[pod("a", true, false), pod("b", false, false)]),
            SmokeVerdict::Waiting
        );
        assert_eq!(
            smoke_verdict(2, &[pod("a", true, false), pod("b", true, false)]),
            SmokeVerdict::Smoked
        );
    }

    #[test]
    fn one_failing_pod_fails_the_batch_at_once() {
        assert_eq!(
            smoke_verdict(3, &[pod("a", true, false), pod("b", false, true)]),
            SmokeVerdict::Failed(vec!["b".into()])
        );
    }

    #[test]
    fn intervals_count_a_whole_second_more_and_skip_after_an_auto_canary() {
        let ten = Duration::from_secs(10);
        assert_eq!(
            interval_wait(ten, Duration::from_secs(4), false, false),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            interval_wait(ten, Duration::from_secs(11), false, false),
            None
        );
        assert_eq!(
            interval_wait(ten, Duration::ZERO, true, true),
            None,
            "auto mode after the canary"
        );
        assert_eq!(
            interval_wait(ten, Duration::ZERO, false, true),
            Some(Duration::from_secs(11)),
            "manual waits"
        );
        assert_eq!(
            interval_wait(Duration::ZERO, Duration::ZERO, false, false),
            None
        );
    }
}

#[cfg(test)]
mod action_name_tests {
    use super::Action;

    #[test]
    fn action_names_are_the_serialized_names() {
        for a in [
            Action::Create,
            Action::Update,
            Action::Rollback,
            Action::Restart,
            Action::ScaleIn,
            Action::ScaleOut,
        ] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
    }
}

/// Pods named in one status message or Event at most; the rest are counted. A batch of a
/// 10,000-replica release has up to 10,000 pods: listing each would make a status of hundreds
/// of kilobytes, written on every change, and an unreadable message.
pub const NAMED_IN_MESSAGE: usize = 5;

/// `items` joined with `sep`, the first [`NAMED_IN_MESSAGE`] of them, then "and N more".
pub fn some_of(items: &[String], sep: &str) -> String {
    let shown = items.len().min(NAMED_IN_MESSAGE);
    let mut s = items[..shown].join(sep);
    if items.len() > shown {
        s.push_str(&format!("{sep}and {} more", items.len() - shown));
    }
    s
}

#[cfg(test)]
mod some_of_tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("web-{i}")).collect()
    }

    #[test]
    fn a_few_are_all_named_many_are_counted() {
        assert_eq!(some_of(&[], ", "), "");
        assert_eq!(some_of(&names(2), ", "), "web-0, web-1");
        assert_eq!(some_of(&names(5), "; "), "web-0; web-1; web-2; web-3; web-4");
        assert_eq!(
            some_of(&names(10_000), ", "),
            "web-0, web-1, web-2, web-3, web-4, and 9995 more"
        );
    }

    proptest::proptest! {
        #[test]
        fn the_message_stays_short_whatever_the_batch(n in 0usize..20_000, len in 1usize..200) {
            let items: Vec<String> = (0..n).map(|i| format!("{i:0len$}")).collect();
            let s = some_of(&items, ", ");
            proptest::prop_assert!(s.len() <= NAMED_IN_MESSAGE * (len.max(5) + 2) + 32);
        }
    }
}
