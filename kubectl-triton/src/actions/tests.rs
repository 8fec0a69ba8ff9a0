use super::*;
use serde_json::{Value, json};

fn df(rv: &str, uid: &str, strategy: Value, status: Value) -> DeployFlow {
    crate::fixtures::update_release(json!({"resourceVersion": rv, "uid": uid}), strategy, status)
}

fn at(batch: i32, phase: &str, canary: bool) -> Value {
    json!({"phase": "BatchStarted", "batches": 3,
        "conditions": [{"batch": batch, "batchSize": 1, "canary": canary, "phase": phase}]})
}

fn manual(batches: i32, stage: &str) -> Value {
    json!({"batchSize": 1, "mode": "manual", "batches": batches, "stage": stage})
}

const F: fn(u64) -> Followed = |floor| Followed {
    uid: "u1".into(),
    floor,
};

#[test]
fn a_copy_older_than_the_write_is_never_taken_for_the_answer() {
    // The target was already reached before the Next (that is why Next was allowed): the stale
    // copy satisfies the old spec, and must not end the wait.
    let stale = df("10", "u1", manual(1, "Smoked"), at(1, "Smoked", false));
    assert_eq!(verdict(Some(&stale), &F(11), Goal::Spec), Verdict::Wait);
    let written = df("11", "u1", manual(1, "Baking"), at(1, "Smoked", false));
    assert_eq!(verdict(Some(&written), &F(11), Goal::Spec), Verdict::Wait);
    let reached = df("12", "u1", manual(1, "Baking"), at(1, "Baking", false));
    assert_eq!(verdict(Some(&reached), &F(11), Goal::Spec), Verdict::Done);
}

#[test]
fn a_requested_target_is_waited_for_not_the_specs() {
    let d = df("12", "u1", manual(3, "Baked"), at(2, "Baked", false));
    assert_eq!(
        verdict(Some(&d), &F(1), Goal::Target(Some(BatchPhase::Baked), 2)),
        Verdict::Done
    );
    assert_eq!(
        verdict(Some(&d), &F(1), Goal::Target(Some(BatchPhase::Baked), 3)),
        Verdict::Wait
    );
}

#[test]
fn the_end_goal_waits_for_the_finish_and_a_bad_end_is_a_failure() {
    let running = df("5", "u1", json!({"mode": "auto"}), at(3, "Baked", false));
    assert_eq!(verdict(Some(&running), &F(0), Goal::End), Verdict::Wait);
    let mut ok = running.clone();
    let st = ok.status.as_mut().unwrap();
    st.finished = true;
    st.phase = DeployPhase::Success;
    assert_eq!(verdict(Some(&ok), &F(0), Goal::End), Verdict::Done);
    let mut canceled = ok.clone();
    let st = canceled.status.as_mut().unwrap();
    st.phase = DeployPhase::Canceled;
    st.message = Some("canceled by request".into());
    assert_eq!(
        verdict(Some(&canceled), &F(0), Goal::End),
        Verdict::Failed("it ended Canceled: canceled by request".into())
    );
    // A finished release ends every goal, a failed one as a failure.
    assert!(matches!(verdict(Some(&canceled), &F(0), Goal::Spec), Verdict::Failed(_)));
}

#[test]
fn a_failed_batch_that_paused_the_release_ends_the_wait() {
    let mut d = df("7", "u1", json!({"mode": "auto"}), at(1, "SmokeFailed", false));
    assert_eq!(verdict(Some(&d), &F(0), Goal::End), Verdict::Wait, "not paused yet");
    let st = d.status.as_mut().unwrap();
    st.paused = true;
    st.message = Some("batch 1 smoke failed: web-a (CrashLoopBackOff)".into());
    assert_eq!(
        verdict(Some(&d), &F(0), Goal::End),
        Verdict::Failed(
            "it paused: batch 1 SmokeFailed: batch 1 smoke failed: web-a (CrashLoopBackOff)".into()
        )
    );
}

#[test]
fn deletion_and_re_creation_end_the_wait() {
    let d = df("9", "u1", manual(1, "Baking"), at(1, "Smoked", false));
    assert_eq!(verdict(None, &F(9), Goal::Spec), Verdict::Failed("it was deleted".into()));
    let other = df("20", "u2", manual(1, "Baking"), at(1, "Baking", false));
    assert_eq!(
        verdict(Some(&other), &F(9), Goal::Spec),
        Verdict::Failed("it was deleted and created again".into()),
        "a new object of the same name is not the release we follow"
    );
    let mut deleting = d.clone();
    deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-29T12:00:00Z".parse().unwrap(),
    ));
    assert_eq!(
        verdict(Some(&deleting), &F(9), Goal::Spec),
        Verdict::Failed("it is being deleted".into())
    );
}

#[test]
fn only_a_baked_canary_of_a_running_release_makes_a_refused_next_worth_retrying() {
    let baked_canary = df("1", "u1", json!({"mode": "auto", "canary": 1}), at(1, "Baked", true));
    assert!(transient(Some(&baked_canary)));
    assert!(!transient(Some(&df("1", "u1", json!({}), at(1, "Baked", false)))));
    assert!(!transient(Some(&df("1", "u1", json!({}), at(1, "SmokeFailed", true)))));
    let mut done = baked_canary.clone();
    done.status.as_mut().unwrap().finished = true;
    assert!(!transient(Some(&done)));
    assert!(!transient(None));
}
