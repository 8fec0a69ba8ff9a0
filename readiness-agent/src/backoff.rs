//! Jittered exponential backoff between report attempts: the ceiling doubles from `min` to
//! `max`, and each delay is drawn from its upper half ("equal jitter"), so agents that lost the
//! controller together do not come back in step.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The ceiling of the next delay.
    ceiling: Duration,
    rng: u64,
}

impl Backoff {
    /// `min` must be more than zero and at most `max`; `seed` picks the jitter sequence.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        assert!(
            !min.is_zero() && min <= max,
            "backoff needs 0 < min <= max (got {min:?}, {max:?})"
        );
        Self {
            min,
            max,
            ceiling: min,
            // xorshift's state must not be zero.
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt, in `[ceiling / 2, ceiling]`; the ceiling then doubles
    /// up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = ceiling.saturating_mul(2).min(self.max);
        let half = ceiling / 2;
        let span = (ceiling - half).as_nanos() as u64;
        half + Duration::from_nanos(self.random() % (span + 1))
    }

    /// After a success: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.ceiling = self.min;
    }

    /// xorshift64*: plenty for jitter, and no dependency.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn delays_double_from_min_to_max_within_the_upper_half() {
        let mut b = Backoff::new(MIN, MAX, 42);
        let ceilings = [
            200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000,
        ];
        for ceiling in ceilings.map(Duration::from_millis) {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{ceiling:?}/2, {ceiling:?}]"
            );
        }
    }

    #[test]
    fn reset_starts_again_from_min() {
        let mut b = Backoff::new(MIN, MAX, 7);
        for _ in 0..20 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= MIN);
    }

    #[test]
    fn delays_are_jittered_and_seeds_differ() {
        let delays = |seed| {
            let mut b = Backoff::new(MAX, MAX, seed);
            (0..50).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        let a = delays(1);
        let mut distinct = a.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 40, "jitter should spread delays: {a:?}");
        assert_ne!(a, delays(2));
        assert_eq!(a, delays(1), "same seed, same sequence");
    }

    #[test]
    #[should_panic(expected = "0 < min <= max")]
    fn min_above_max_is_refused() {
        Backoff::new(MAX, MIN, 0);
    }
}
