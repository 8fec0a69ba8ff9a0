//! The verdict after the success and failure thresholds, with kubelet's meanings: unhealthy
//! until `success` consecutive successes, then healthy until `failure` consecutive failures.

use std::time::SystemTime;

/// Consecutive probe results needed to change the verdict (both at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub success: u32,
    pub failure: u32,
}

/// The probe results seen so far, reduced to what the thresholds need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    thresholds: Thresholds,
    healthy: bool,
    /// The last probe's result; `None` before the first probe.
    last: Option<bool>,
    /// Consecutive probes with the last result.
    consecutive: u32,
    /// When the verdict last changed (the agent's start until the first change).
    since: SystemTime,
}

/// What one probe result did to the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The verdict flipped.
    pub changed: bool,
    /// The controller should hear of it now: a flip, or the very first probe (so the controller
    /// learns the agent's state without waiting for a heartbeat).
    pub report: bool,
}

impl Verdict {
    /// Unhealthy, no probe yet, since `start`.
    pub fn new(thresholds: Thresholds, start: SystemTime) -> Self {
        Self {
            thresholds,
            healthy: false,
            last: None,
            consecutive: 0,
            since: start,
        }
    }

    /// Feeds one probe result seen at `now`.
    pub fn observe(&mut self, success: bool, now: SystemTime) -> Step {
        let first = self.last.is_none();
        if self.last == Some(success) {
            self.consecutive = self.consecutive.saturating_add(1);
        } else {
            self.last = Some(success);
            self.consecutive = 1;
        }
        let needed = if success {
            self.thresholds.success
        } else {
            self.thresholds.failure
        };
        let changed = self.healthy != success && self.consecutive >= needed;
        if changed {
            self.healthy = success;
            self.since = now;
        }
        Step {
            changed,
            report: changed || first,
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Consecutive probes with the last probe's result (0 before the first probe).
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    pub fn since(&self) -> SystemTime {
        self.since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn verdict(success: u32, failure: u32) -> Verdict {
        Verdict::new(Thresholds { success, failure }, at(0))
    }

    /// Feeds results one second apart from t=1 and returns the steps.
    fn feed(v: &mut Verdict, results: &[bool]) -> Vec<Step> {
        results
            .iter()
            .enumerate()
            .map(|(i, r)| v.observe(*r, at(i as u64 + 1)))
            .collect()
    }

    const CHANGE: Step = Step {
        changed: true,
        report: true,
    };
    const FIRST: Step = Step {
        changed: false,
        report: true,
    };
    const QUIET: Step = Step {
        changed: false,
        report: false,
    };

    #[test]
    fn starts_unhealthy_since_the_start() {
        let v = verdict(1, 3);
        assert!(!v.healthy());
        assert_eq!((v.consecutive(), v.since()), (0, at(0)));
    }

    #[test]
    fn one_success_makes_it_healthy_with_the_default_threshold() {
        let mut v = verdict(1, 3);
        assert_eq!(feed(&mut v, &[true]), [CHANGE]);
        assert!(v.healthy());
        assert_eq!((v.consecutive(), v.since()), (1, at(1)));
    }

    #[test]
    fn a_first_failure_is_reported_though_the_verdict_stays_unhealthy() {
        let mut v = verdict(1, 3);
        assert_eq!(feed(&mut v, &[false, false]), [FIRST, QUIET]);
        assert!(!v.healthy());
        assert_eq!((v.consecutive(), v.since()), (2, at(0)));
    }

    #[test]
    fn healthy_needs_success_threshold_consecutive_successes() {
        let mut v = verdict(3, 1);
        let steps = feed(&mut v, &[true, true, false, true, true, true]);
        assert_eq!(steps, [FIRST, QUIET, QUIET, QUIET, QUIET, CHANGE]);
        assert!(v.healthy());
        assert_eq!(v.since(), at(6));
    }

    #[test]
    fn unhealthy_needs_failure_threshold_consecutive_failures() {
        let mut v = verdict(1, 3);
        let steps = feed(&mut v, &[true, false, false, true, false, false, false]);
        assert_eq!(steps, [CHANGE, QUIET, QUIET, QUIET, QUIET, QUIET, CHANGE]);
        assert!(!v.healthy());
        assert_eq!((v.consecutive(), v.since()), (3, at(7)));
    }

    #[test]
    fn results_past_the_threshold_do_not_change_it_again() {
        let mut v = verdict(1, 2);
        let steps = feed(&mut v, &[true, true, true, false, false, false, false]);
        assert_eq!(steps, [CHANGE, QUIET, QUIET, QUIET, CHANGE, QUIET, QUIET]);
        assert_eq!((v.consecutive(), v.since()), (4, at(5)));
    }

    #[test]
    fn consecutive_saturates_instead_of_overflowing() {
        let mut v = verdict(1, 1);
        v.observe(true, at(1));
        v.consecutive = u32::MAX;
        assert_eq!(v.observe(true, at(2)), QUIET);
        assert_eq!(v.consecutive(), u32::MAX);
    }
}
