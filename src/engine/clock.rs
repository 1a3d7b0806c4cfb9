//! The engine's clock: wall-clock time that advances with tokio's clock. Timestamps (run_at,
//! finished_at, expiry) are wall-clock, but timers are tokio's; deriving one from the other
//! keeps them consistent, and lets tests pause and advance time for delays, backoff,
//! timeouts and retention without real sleeps.

use std::sync::OnceLock;
use std::time::SystemTime;

use tokio::time::Instant;

/// The process's one anchor: every engine started in the process reads the same wall
/// clock, so an engine restarted within a test (after time was advanced) goes on from
/// where the last one stopped, as a restarted process would.
static ANCHOR: OnceLock<(SystemTime, Instant)> = OnceLock::new();

/// Wall-clock time anchored at start-up and advanced by tokio's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    pub fn new() -> Self {
        let (wall, mono) = *ANCHOR.get_or_init(|| (SystemTime::now(), Instant::now()));
        let now = Instant::now();
        // (Another runtime's paused clock may read a little behind the anchor.)
        Clock {
            wall: wall + now.saturating_duration_since(mono),
            mono: now,
        }
    }

    /// The current wall-clock time.
    pub fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }

    /// The tokio instant at which wall-clock time `at` comes (now, if it has passed).
    pub fn instant_at(&self, at: SystemTime) -> Instant {
        let now = Instant::now();
        match at.duration_since(self.now()) {
            Ok(ahead) => now + ahead,
            Err(_) => now,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time() {
        let clock = Clock::new();
        let start = clock.now();
        let due = start + Duration::from_secs(3600);
        tokio::time::sleep_until(clock.instant_at(due)).await;
        assert_eq!(
            clock.now().duration_since(start).unwrap(),
            Duration::from_secs(3600)
        );
        assert!(clock.instant_at(start) <= Instant::now());
    }
}
