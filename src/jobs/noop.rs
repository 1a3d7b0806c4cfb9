//! `demo.noop` (IO) and `demo.progress` (IO): the benchmark's jobs. `demo.noop` does
//! nothing, so a run measures Spindle alone; `demo.progress` reports progress `updates`
//! times and says what each report cost the handler, and when each was made, so a
//! watcher can measure how long a report takes to reach it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::registry::{ArgsError, JobKind};
use crate::exec::{HandlerError, JobContext, JobResult};
use crate::model::job::Progress;

/// Arguments of `demo.noop`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopArgs {
    /// Anything; ignored (benchmarks send a short string, as the peers do).
    #[serde(default)]
    pub payload: Option<Value>,
}

/// The `demo.noop` kind.
pub fn noop_kind() -> JobKind {
    JobKind::io(
        "demo.noop",
        "Does nothing and succeeds; for measuring Spindle itself.",
        |_ctx: JobContext, _args: NoopArgs| async { Ok(Value::Null) },
    )
    .build()
}

/// Arguments of `demo.progress`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressArgs {
    /// Progress reports to make (1 to 100000); report i has done = i.
    pub updates: u32,
    /// Microseconds to sleep between two reports (0 to 1000000; default 0, a burst).
    #[serde(default)]
    pub pause_us: u64,
    /// Wait this many milliseconds before the first report, so watchers can attach
    /// (0 to 60000; default 0).
    #[serde(default)]
    pub start_delay_ms: u64,
    /// Return each report's wall time (µs since the Unix epoch) as `reported_at_us`.
    #[serde(default)]
    pub record: bool,
}

/// The `demo.progress` kind.
pub fn progress_kind() -> JobKind {
    JobKind::io(
        "demo.progress",
        "Reports progress `updates` times and returns the cost of a report; for benchmarks.",
        run_progress,
    )
    .check(|a: &ProgressArgs| {
        if !(1..=100_000).contains(&a.updates) {
            return Err(ArgsError::invalid(
                "updates",
                "must be between 1 and 100000",
            ));
        }
        if a.pause_us > 1_000_000 {
            return Err(ArgsError::invalid("pause_us", "must be at most 1000000"));
        }
        if a.start_delay_ms > 60_000 {
            return Err(ArgsError::invalid(
                "start_delay_ms",
                "must be at most 60000",
            ));
        }
        Ok(())
    })
    .build()
}

async fn run_progress(ctx: JobContext, args: ProgressArgs) -> JobResult {
    let total = u64::from(args.updates);
    sleep_or_cancel(&ctx, Duration::from_millis(args.start_delay_ms)).await?;
    let mut reported_at = Vec::with_capacity(if args.record { total as usize } else { 0 });
    let mut spent = Duration::ZERO;
    let mut costs = Vec::with_capacity(reported_at.capacity());
    for done in 1..=total {
        if args.record {
            reported_at.push(unix_micros(SystemTime::now()));
        }
        let started = Instant::now();
        ctx.progress(Progress::counted(done, total));
        let took = started.elapsed();
        spent += took;
        if args.record {
            costs.push(took.as_nanos() as u64);
        }
        if args.pause_us > 0 {
            sleep_or_cancel(&ctx, Duration::from_micros(args.pause_us)).await?;
        }
    }
    let mut result = json!({
        "updates": total,
        "ns_per_update": spent.as_nanos() as f64 / total as f64,
    });
    if args.record {
        costs.sort_unstable();
        result["ns_per_update_p50"] = json!(costs.get(costs.len() / 2));
        result["ns_per_update_p99"] = json!(costs.get(costs.len() * 99 / 100));
        result["reported_at_us"] = json!(reported_at);
    }
    Ok(result)
}

async fn sleep_or_cancel(ctx: &JobContext, pause: Duration) -> Result<(), HandlerError> {
    if pause.is_zero() {
        return ctx.check_cancelled();
    }
    tokio::select! {
        _ = tokio::time::sleep(pause) => Ok(()),
        _ = ctx.cancelled() => Err(HandlerError::Cancelled),
    }
}

fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
