//! Token buckets: a rate with a burst, for per-principal call limits and per-namespace
//! submit quotas. Time comes from tokio's clock, so tests can pause it.

use std::time::Duration;

use tokio::time::Instant;

/// So many per second, with up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    /// Parses `N/s` or `N/min` (N may have a fraction); the burst defaults to one
    /// second's worth, at least 1.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: expected a rate like 100/s or 30/min"))?;
        let count: f64 = count
            .parse()
            .map_err(|_| format!("{text:?}: {count:?} is not a number"))?;
        let seconds = match unit {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            _ => return Err(format!("{text:?}: the unit must be /s or /min")),
        };
        if !(count.is_finite() && count > 0.0 && count <= 1e9) {
            return Err(format!(
                "{text:?}: the count must be above 0 and at most 1e9"
            ));
        }
        let per_second = count / seconds;
        Ok(Rate {
            per_second,
            burst: per_second.max(1.0),
        })
    }
}

/// A bucket that refills at its rate up to its burst; each call takes from it.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: &Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: rate.burst,
            updated: now,
        }
    }

    /// Takes `n` tokens if there are that many; otherwise takes none and says how long
    /// until there will be (never longer than the burst takes to refill, so a request for
    /// more than the burst is told to wait for a full bucket, then split).
    pub fn take(&mut self, rate: &Rate, n: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.updated = now;
        if self.tokens >= n {
            self.tokens -= n;
            return Ok(());
        }
        let missing = n.min(rate.burst) - self.tokens;
        Err(Duration::from_secs_f64(
            (missing / rate.per_second).max(0.001),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units_and_refuse_nonsense() {
        let r = Rate::parse("120/min").unwrap();
        assert_eq!(r.per_second, 2.0);
        assert_eq!(r.burst, 2.0);
        assert_eq!(Rate::parse("0.5/s").unwrap().burst, 1.0);
        for bad in ["", "5", "x/s", "5/h", "0/s", "-1/s", "inf/s", "NaN/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bucket_refills_at_its_rate_and_says_how_long_to_wait() {
        let rate = Rate {
            per_second: 10.0,
            burst: 2.0,
        };
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(&rate, t0);
        assert!(bucket.take(&rate, 1.0, t0).is_ok());
        assert!(bucket.take(&rate, 1.0, t0).is_ok());
        let wait = bucket.take(&rate, 1.0, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(bucket.take(&rate, 1.0, t0 + wait).is_ok());
        // Refill stops at the burst.
        let later = t0 + Duration::from_secs(60);
        assert!(bucket.take(&rate, 2.0, later).is_ok());
        assert!(bucket.take(&rate, 1.0, later).is_err());
    }
}
