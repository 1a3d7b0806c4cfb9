//! When a schedule fires: its spec (a cron expression, an interval or a one-off time, in an
//! IANA time zone, between optional start and end times, with optional jitter) and the
//! slots it yields. A slot is a UTC instant computed from the spec alone, so the server,
//! `spindle schedule preview` and a recomputation after a crash all agree on it.
//!
//! Cron parsing and its calendar rules are `croner`'s; time zones and daylight saving are
//! `jiff`'s (the system's tz database). Daylight saving, for a fixed time of day: a time in
//! the spring-forward gap fires once, right after the gap; a time in the repeated autumn
//! hour fires once, at its first occurrence. Wildcard fields (`*/5 * * * *`) fire at every
//! real instant they match. Intervals are counted in real time from the Unix epoch plus
//! the offset, so they know no daylight saving at all.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::violation::FieldViolation;

/// How a schedule repeats.
#[derive(Debug, Clone, PartialEq)]
pub enum Repeat {
    /// A cron expression: 5 fields, or 6 with seconds first; `@hourly`, `@daily`...
    Cron(String),
    /// Every `every`, at `offset` past each multiple of it since the Unix epoch.
    Every { every: Duration, offset: Duration },
    /// Once, at this time.
    At(SystemTime),
}

/// A schedule's spec as given, before it is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecInput {
    pub repeat: Repeat,
    /// An IANA zone name; empty: UTC.
    pub timezone: String,
    pub start: Option<SystemTime>,
    pub end: Option<SystemTime>,
    /// Each fire lands up to this much after its slot, by an amount derived from the
    /// schedule and the slot.
    pub jitter: Duration,
}

/// A checked spec: it can compute its slots.
#[derive(Debug, Clone)]
pub struct Spec {
    input: SpecInput,
    rule: Rule,
    zone: TimeZone,
}

#[derive(Debug, Clone)]
enum Rule {
    Cron(Box<Cron>),
    Every { every: Duration, offset: Duration },
    At(SystemTime),
}

/// What is due when a schedule is looked at: the slot to fire (if any), how many slots are
/// recorded as missed instead, and the next slot after now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub fire: Option<SystemTime>,
    pub missed: u64,
    pub next: Option<SystemTime>,
    /// The latest slot up to now (fired or missed): the new last handled slot.
    pub latest: Option<SystemTime>,
}

/// The most slots counted one by one (cron) when counting missed ones; past it the count
/// stops there.
const MAX_COUNTED: u64 = 100_000;

/// The shortest interval.
pub const MIN_EVERY: Duration = Duration::from_secs(1);
/// The longest jitter.
pub const MAX_JITTER: Duration = Duration::from_secs(3600);

fn bad(field: &str, description: impl Into<String>) -> FieldViolation {
    FieldViolation::new(format!("spec.{field}"), description)
}

impl Spec {
    /// Checks every field of `input`, naming each bad one.
    pub fn new(input: SpecInput) -> Result<Spec, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let zone = match input.timezone.as_str() {
            "" | "UTC" => TimeZone::UTC,
            name => TimeZone::get(name).unwrap_or_else(|_| {
                violations.push(bad(
                    "timezone",
                    format!("{name:?} is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)"),
                ));
                TimeZone::UTC
            }),
        };
        let rule = match &input.repeat {
            Repeat::Cron(expr) => match parse_cron(expr) {
                Ok(cron) => Some(Rule::Cron(Box::new(cron))),
                Err(why) => {
                    violations.push(bad("cron", why));
                    None
                }
            },
            Repeat::Every { every, offset } => {
                if *every < MIN_EVERY {
                    violations.push(bad("every", "must be at least 1s"));
                } else if offset >= every {
                    violations.push(bad("offset", "must be shorter than the interval"));
                }
                Some(Rule::Every {
                    every: *every,
                    offset: *offset,
                })
            }
            Repeat::At(at) => Some(Rule::At(*at)),
        };
        if let (Some(start), Some(end)) = (input.start, input.end)
            && end <= start
        {
            violations.push(bad("end", "must be after spec.start"));
        }
        if input.jitter > MAX_JITTER {
            violations.push(bad("jitter", "must be at most 1h"));
        }
        match rule {
            Some(rule) if violations.is_empty() => Ok(Spec { input, rule, zone }),
            _ => Err(violations),
        }
    }

    pub fn input(&self) -> &SpecInput {
        &self.input
    }

    /// The first slot strictly after `after`, within start and end; `None` if there is none.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let after = match self.input.start {
            // A slot may fall at start itself: search from just before it.
            Some(start) if start > after => start.checked_sub(Duration::from_nanos(1))?,
            _ => after,
        };
        let next = match &self.rule {
            Rule::At(at) => (*at > after).then_some(*at)?,
            Rule::Every { every, offset } => next_interval(after, *every, *offset)?,
            Rule::Cron(cron) => {
                let ts = Timestamp::try_from(after).ok()?;
                let zoned = ts.to_zoned(self.zone.clone());
                let next = cron.find_next_occurrence(&zoned, false).ok()?;
                SystemTime::from(next.timestamp())
            }
        };
        self.input.end.is_none_or(|end| next <= end).then_some(next)
    }

    /// What is due at `now` for a schedule whose last handled slot is `last`. Of the slots
    /// in (last, now], the latest fires if it is within `catchup` of now, once, for all of
    /// them (coalesced); the others are missed, and all of them are if the latest is older
    /// than that: a long outage never fires a burst.
    pub fn due(&self, last: SystemTime, now: SystemTime, catchup: Duration) -> Due {
        let next = self.next_after(now);
        let Some(latest) = self.latest_in(last, now) else {
            return Due {
                fire: None,
                missed: 0,
                next,
                latest: None,
            };
        };
        let between = self.count_between(last, latest);
        if now.duration_since(latest).unwrap_or_default() <= catchup {
            Due {
                fire: Some(latest),
                missed: between,
                next,
                latest: Some(latest),
            }
        } else {
            Due {
                fire: None,
                missed: between + 1,
                next,
                latest: Some(latest),
            }
        }
    }

    /// The latest slot in (after, until], if any.
    fn latest_in(&self, after: SystemTime, until: SystemTime) -> Option<SystemTime> {
        let latest = match &self.rule {
            Rule::Every { every, offset } => {
                // The next slot after `until` less one interval.
                next_interval(until, *every, *offset)?.checked_sub(*every)?
            }
            _ => {
                let mut cursor = self.next_after(after)?;
                if cursor > until {
                    return None;
                }
                let mut counted = 0;
                while let Some(next) = self.next_after(cursor).filter(|n| *n <= until) {
                    cursor = next;
                    counted += 1;
                    if counted >= MAX_COUNTED {
                        break;
                    }
                }
                cursor
            }
        };
        let in_bounds = self.input.start.is_none_or(|s| latest >= s)
            && self.input.end.is_none_or(|e| latest <= e);
        (latest > after && latest <= until && in_bounds).then_some(latest)
    }

    /// How many slots lie strictly between `after` and `before`.
    fn count_between(&self, after: SystemTime, before: SystemTime) -> u64 {
        if let Rule::Every { every, .. } = &self.rule {
            let Some(first) = self.next_after(after) else {
                return 0;
            };
            if first >= before {
                return 0;
            }
            let span = before.duration_since(first).unwrap_or_default().as_nanos();
            return u64::try_from(span.div_ceil(every.as_nanos())).unwrap_or(u64::MAX);
        }
        let mut count = 0;
        let mut cursor = after;
        while let Some(next) = self.next_after(cursor).filter(|n| *n < before) {
            count += 1;
            cursor = next;
            if count >= MAX_COUNTED {
                break;
            }
        }
        count
    }

    /// Up to `n` slots after `after`, in order.
    pub fn next_n(&self, after: SystemTime, n: usize) -> Vec<SystemTime> {
        let mut slots = Vec::with_capacity(n.min(1000));
        let mut cursor = after;
        while slots.len() < n {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            slots.push(next);
            cursor = next;
        }
        slots
    }

    /// A slot as a wall-clock time in the spec's zone, with its offset.
    pub fn local_time(&self, slot: SystemTime) -> String {
        match Timestamp::try_from(slot) {
            Ok(ts) => ts
                .to_zoned(self.zone.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z %:z")
                .to_string(),
            Err(_) => String::new(),
        }
    }

    /// When a slot fires: the slot plus its jitter, derived from `seed` (the schedule) and
    /// the slot, so computing it again gives the same time.
    pub fn fire_time(&self, seed: &str, slot: SystemTime) -> SystemTime {
        if self.input.jitter.is_zero() {
            return slot;
        }
        let nanos = slot
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut hash = blake3::Hasher::new();
        hash.update(seed.as_bytes());
        hash.update(&nanos.to_le_bytes());
        let bytes = hash.finalize();
        let word = u64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or_default());
        let span = self.input.jitter.as_nanos().max(1) as u64;
        slot + Duration::from_nanos(word % span)
    }
}

/// A cron expression, 5 fields or 6 (seconds first), or a `@` shorthand.
fn parse_cron(expr: &str) -> Result<Cron, String> {
    let expr = expr.trim();
    let fields = expr.split_whitespace().count();
    if !expr.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "{expr:?} has {fields} fields; a cron expression has 5 (minute hour day month weekday) or 6 (seconds first)"
        ));
    }
    // croner reads an empty item of a list (",5", "1,,2", "5,") as matching nothing, and
    // then searches centuries for a slot that never comes: 1.4 s of CPU per search, found by
    // fuzzing. An empty item is a typo; refuse it.
    let empty_item = expr
        .split_whitespace()
        .find(|field| field.starts_with(',') || field.ends_with(',') || field.contains(",,"));
    if let Some(field) = empty_item {
        return Err(format!(
            "{expr:?} is not a cron expression: the field {field:?} has an empty list item"
        ));
    }
    let parser = CronParser::builder().seconds(Seconds::Optional).build();
    let cron = parser
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))?;
    // A pattern that never matches ("0 0 L * +": the last day of the month AND no
    // weekday; found by fuzzing) would cost a long search at every look for its next
    // slot; search once here, from 1970, and refuse it. Patterns repeat within the
    // 400-year Gregorian cycle, so one that matches ever matches after 1970.
    let epoch = Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC);
    if cron.find_next_occurrence(&epoch, false).is_err() {
        return Err(format!(
            "{expr:?} never fires: no date matches all its fields"
        ));
    }
    Ok(cron)
}

/// The first `offset + k * every` (k whole, since the Unix epoch) strictly after `after`.
fn next_interval(after: SystemTime, every: Duration, offset: Duration) -> Option<SystemTime> {
    let since = after.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    let (every, offset) = (every.as_nanos(), offset.as_nanos());
    let k = if since < offset {
        0
    } else {
        (since - offset) / every + 1
    };
    let next = offset.checked_add(k.checked_mul(every)?)?;
    let secs = u64::try_from(next / 1_000_000_000).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, (next % 1_000_000_000) as u32))
}

impl FromStr for Repeat {
    type Err = String;

    /// `every 90s`, `every 1h+15m` (offset after the `+`), `at 2026-12-24T18:00:00Z`, or a
    /// cron expression.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("every ") {
            let (every, offset) = rest.split_once('+').unwrap_or((rest, "0s"));
            let every = humantime::parse_duration(every.trim()).map_err(|e| e.to_string())?;
            let offset = humantime::parse_duration(offset.trim()).map_err(|e| e.to_string())?;
            return Ok(Repeat::Every { every, offset });
        }
        if let Some(at) = text.strip_prefix("at ") {
            let at = humantime::parse_rfc3339_weak(at.trim()).map_err(|e| e.to_string())?;
            return Ok(Repeat::At(at));
        }
        Ok(Repeat::Cron(text.to_string()))
    }
}

mod record;
pub use record::{
    DEFAULT_CATCHUP, OverlapPolicy, RECENT_RUNS, Run, RunOutcome, Schedule, ScheduleState,
    StoredSpec, slot_key,
};

#[cfg(test)]
mod tests;
