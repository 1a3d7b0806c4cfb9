//! Per-namespace quotas: how many unfinished jobs a namespace may hold, how many bytes of
//! args they may carry, how fast it may submit, and how many schedules it may have. The
//! engine enforces them; this is what they are and how a job's args are measured.

use serde_json::Value;

use super::limit::Rate;

/// One namespace's limits; `None`: unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quota {
    /// Unfinished jobs (queued, delayed, waiting to retry or running).
    pub queued: Option<u64>,
    /// Bytes of args the unfinished jobs carry, as JSON ([`args_bytes`]).
    pub args_bytes: Option<u64>,
    /// Jobs submitted per second (a job of a batch counts as one).
    pub submits: Option<Rate>,
    /// Schedules.
    pub schedules: Option<u64>,
}

/// The size of `args` as compact JSON, counted without writing it out (an estimate only
/// in how strings with escapes count: each escaped character as one byte).
pub fn args_bytes(args: &Value) -> u64 {
    match args {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => {
            // Counted as written, without allocating: this runs at every accept and finish.
            let mut counter = Counter(0);
            let _ = std::fmt::Write::write_fmt(&mut counter, format_args!("{n}"));
            counter.0
        }
        Value::String(s) => s.len() as u64 + 2,
        Value::Array(items) => {
            let inner: u64 = items.iter().map(args_bytes).sum();
            2 + inner + items.len().saturating_sub(1) as u64
        }
        Value::Object(fields) => {
            let inner: u64 = fields
                .iter()
                .map(|(k, v)| k.len() as u64 + 3 + args_bytes(v))
                .sum();
            2 + inner + fields.len().saturating_sub(1) as u64
        }
    }
}

/// A `fmt::Write` that only counts bytes.
struct Counter(u64);

impl std::fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_bytes_is_the_compact_json_length() {
        let args = serde_json::json!({"url": "https://x", "n": [1, 2.5, null, true], "o": {}});
        assert_eq!(
            args_bytes(&args),
            serde_json::to_string(&args).unwrap().len() as u64
        );
    }
}
