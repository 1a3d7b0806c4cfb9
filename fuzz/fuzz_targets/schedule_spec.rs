//! Schedule specs from outside: a cron expression with a time zone (the first line and the
//! second), and the CLI's `every ...`/`at ...` texts (the whole input). Any text must be
//! accepted or refused, never panic; an accepted spec gives slots after now, in order,
//! and the catch-up rule answers.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use spindle::model::schedule::{Repeat, Spec, SpecInput};

/// A fixed "now" (2027-03-28, Berlin's spring-forward day), so runs repeat exactly.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_806_192_000)
}

fn exercise(repeat: Repeat, timezone: &str) {
    let input = SpecInput {
        repeat,
        timezone: timezone.to_string(),
        start: None,
        end: None,
        jitter: Duration::ZERO,
    };
    if let Ok(spec) = Spec::new(input) {
        let slots = spec.next_n(now(), 3);
        assert!(slots.windows(2).all(|w| w[0] < w[1]), "slots out of order");
        assert!(slots.iter().all(|s| *s > now()), "a slot not after now");
        // An hour since the last slot: a per-second cron walks 3,600 slots, as the
        // server's loop would after an hour down.
        let since = now() - Duration::from_secs(3600);
        let _ = spec.due(since, now(), Duration::from_secs(600));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (cron, zone) = text.split_once('\n').unwrap_or((text, ""));
    exercise(Repeat::Cron(cron.to_string()), zone);
    if let Ok(repeat) = text.parse::<Repeat>() {
        exercise(repeat, "");
    }
});
