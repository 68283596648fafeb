//! Exponential backoff with jitter, the one shape every retry loop uses:
//! request retries, KV compare-and-swap, publisher retries and NATS
//! reconnects.

use std::time::Duration;

use rand::Rng as _;

/// `initial * 2^step`, at most `max` (saturating: never overflows).
pub fn exponential(initial: Duration, step: u32, max: Duration) -> Duration {
    initial.saturating_mul(1u32 << step.min(31)).min(max)
}

/// A uniformly random wait between `low * full` and `full` (`low` is
/// clamped to `0.0..=1.0`): 0.0 is "full jitter", 0.5 "equal jitter".
pub fn jittered(full: Duration, low: f64) -> Duration {
    let low = low.clamp(0.0, 1.0);
    full.mul_f64(rand::rng().random_range(low..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_from_initial_up_to_max_without_overflow() {
        let ms = Duration::from_millis;
        let steps: Vec<_> = (0..5).map(|s| exponential(ms(10), s, ms(100))).collect();
        assert_eq!(steps, [ms(10), ms(20), ms(40), ms(80), ms(100)]);
        assert_eq!(
            exponential(ms(10), u32::MAX, Duration::MAX),
            ms(10) * (1 << 31)
        );
        assert_eq!(exponential(Duration::MAX, 3, Duration::MAX), Duration::MAX);
    }

    #[test]
    fn jittered_stays_between_its_bounds() {
        let full = Duration::from_millis(100);
        for _ in 0..1000 {
            let half = jittered(full, 0.5);
            assert!(half >= full / 2 && half <= full, "{half:?}");
            assert!(jittered(full, 0.0) <= full);
        }
        assert_eq!(jittered(full, 1.0), full);
        assert_eq!(jittered(full, 7.0), full);
    }
}
