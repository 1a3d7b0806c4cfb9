//! Fire lag: how long after its fire time a slot's job was stored and queued. A histogram
//! of log-spaced buckets (8 per doubling, so a quantile is read to within 9 %), from 1 µs
//! to about an hour, counted with atomics: recording costs no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per doubling.
const PER_OCTAVE: f64 = 8.0;
const BUCKETS: usize = 256;

/// Fire lags since the engine started.
pub struct FireLag {
    buckets: [AtomicU64; BUCKETS],
    max_micros: AtomicU64,
}

impl Default for FireLag {
    fn default() -> Self {
        FireLag {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_micros: AtomicU64::new(0),
        }
    }
}

/// What the histogram says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagSummary {
    pub fires: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

fn bucket_of(micros: u64) -> usize {
    let index = ((micros.max(1) as f64).log2() * PER_OCTAVE) as usize;
    index.min(BUCKETS - 1)
}

/// The upper bound of a bucket.
fn bucket_top(index: usize) -> Duration {
    let micros = 2f64.powf((index + 1) as f64 / PER_OCTAVE);
    Duration::from_micros(micros as u64)
}

impl FireLag {
    pub fn record(&self, lag: Duration) {
        let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    pub fn summary(&self) -> LagSummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let fires: u64 = counts.iter().sum();
        let max = Duration::from_micros(self.max_micros.load(Ordering::Relaxed));
        let quantile = |q: f64| {
            let rank = ((fires as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (index, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return bucket_top(index).min(max);
                }
            }
            max
        };
        if fires == 0 {
            return LagSummary::default();
        }
        LagSummary {
            fires,
            p50: quantile(0.50),
            p99: quantile(0.99),
            max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_read_within_a_bucket() {
        let lag = FireLag::default();
        for ms in 1..=100 {
            lag.record(Duration::from_millis(ms));
        }
        let summary = lag.summary();
        assert_eq!(summary.fires, 100);
        assert_eq!(summary.max, Duration::from_millis(100));
        let within = |got: Duration, want: u64| {
            let want = Duration::from_millis(want);
            got >= want && got <= want.mul_f64(1.1)
        };
        assert!(within(summary.p50, 50), "{summary:?}");
        assert!(within(summary.p99, 99), "{summary:?}");
        assert_eq!(FireLag::default().summary(), LagSummary::default());
    }
}
