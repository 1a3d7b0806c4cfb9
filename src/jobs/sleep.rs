//! `demo.sleep` (IO): sleeps in steps, reporting progress after each step. Shows an async
//! handler that stops at once when cancelled.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::registry::{ArgsError, JobKind};
use crate::exec::{HandlerError, JobContext, JobResult};
use crate::model::job::Progress;

/// The longest sleep accepted: a day.
const MAX_SECONDS: f64 = 86_400.0;

/// Arguments of `demo.sleep`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepArgs {
    /// Total time to sleep, in seconds (0 to 86400).
    pub seconds: f64,
    /// Progress reports, evenly spaced (1 to 10000; default 10).
    #[serde(default = "default_steps")]
    pub steps: u32,
}

fn default_steps() -> u32 {
    10
}

/// The kind.
pub fn kind() -> JobKind {
    JobKind::io(
        "demo.sleep",
        "Sleeps for `seconds`, reporting progress in `steps` even steps.",
        run,
    )
    .check(|a: &SleepArgs| {
        if !(0.0..=MAX_SECONDS).contains(&a.seconds) {
            return Err(ArgsError::invalid("seconds", "must be between 0 and 86400"));
        }
        if !(1..=10_000).contains(&a.steps) {
            return Err(ArgsError::invalid("steps", "must be between 1 and 10000"));
        }
        Ok(())
    })
    .build()
}

async fn run(ctx: JobContext, args: SleepArgs) -> JobResult {
    let step = Duration::from_secs_f64(args.seconds / f64::from(args.steps));
    for done in 1..=args.steps {
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = ctx.cancelled() => return Err(HandlerError::Cancelled),
        }
        ctx.progress(
            Progress::counted(u64::from(done), u64::from(args.steps))
                .with_message(format!("step {done} of {}", args.steps)),
        );
    }
    Ok(json!({ "slept_seconds": args.seconds, "steps": args.steps }))
}
