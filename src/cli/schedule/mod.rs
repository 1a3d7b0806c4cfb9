//! `spindle schedule`: periodic jobs. `preview` prints a spec's next fire times with the
//! code the server fires slots with (`model::schedule`), locally, without a server; the
//! other subcommands call ScheduleService (`remote.rs`) and print what it answers
//! (`render.rs`).

mod remote;
mod render;

pub use remote::run;

use std::time::SystemTime;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;

use super::client::exit;
use crate::model::schedule::{Repeat, Spec, SpecInput};

/// Flags of `spindle schedule`.
#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

/// The schedule subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ScheduleCommand {
    /// Print a spec's next fire times, as the server computes them (no server needed).
    Preview(PreviewArgs),
    /// Create a schedule that submits a job of KIND at every slot of its spec.
    Create(Box<CreateArgs>),
    /// List the namespace's schedules.
    List,
    /// Show a schedule: its spec, policies, counts, last runs and next fire times.
    Get(ScheduleId),
    /// Stop a schedule firing until it is resumed.
    Pause(PauseArgs),
    /// Resume a paused schedule (the slots it missed while paused do not fire).
    Resume(ScheduleId),
    /// Fire a schedule's job now, outside its spec (its overlap policy applies).
    Trigger(ScheduleId),
    /// Fire each slot of a past time range that has not fired yet.
    Backfill(BackfillArgs),
    /// Delete a schedule (the jobs it fired stay).
    Delete(ScheduleId),
}

/// A schedule id.
#[derive(Debug, Clone, Args)]
pub struct ScheduleId {
    pub id: String,
}

/// Flags of `spindle schedule create`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("repeat").required(true).args(["cron", "every", "at"])))]
pub struct CreateArgs {
    /// The schedule's id, unique in its namespace.
    pub id: String,
    /// The job each slot submits.
    #[command(flatten)]
    pub job: crate::cli::JobArgs,
    /// A cron expression: 5 fields, 6 with seconds first, or @hourly, @daily...
    #[arg(long, allow_hyphen_values = true)]
    pub cron: Option<String>,
    /// An interval, e.g. 90s or 1h; "1h+15m" fires at 15 minutes past each hour.
    #[arg(long)]
    pub every: Option<String>,
    /// Once, at this time (RFC 3339, e.g. 2026-12-24T18:00:00Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub at: Option<SystemTime>,
    /// The IANA time zone cron fields are read in (default UTC).
    #[arg(long, default_value = "")]
    pub tz: String,
    /// What a slot does while the previous job still runs.
    #[arg(long, default_value = "skip", value_parser = ["skip", "buffer-one", "allow-all", "cancel-other"])]
    pub overlap: String,
    /// Slots missed while the service was down fire once if the latest is this recent.
    #[arg(long, value_parser = super::parse_duration)]
    pub catchup_window: Option<std::time::Duration>,
    /// Each fire lands up to this much after its slot (the same amount each time for a slot).
    #[arg(long, value_parser = super::parse_duration)]
    pub jitter: Option<std::time::Duration>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
}

/// Flags of `spindle schedule pause`.
#[derive(Debug, Clone, Args)]
pub struct PauseArgs {
    pub id: String,
    /// Why, for whoever looks next.
    #[arg(long, default_value = "")]
    pub note: String,
}

/// Flags of `spindle schedule backfill`.
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    pub id: String,
    /// The range's start (RFC 3339).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub from: SystemTime,
    /// The range's end (RFC 3339; default now).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub to: Option<SystemTime>,
}

/// Flags of `spindle schedule preview`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("repeat").required(true).args(["cron", "every"])))]
pub struct PreviewArgs {
    /// A cron expression: 5 fields (minute hour day month weekday), 6 with seconds first,
    /// or @hourly, @daily, @weekly, @monthly, @yearly.
    #[arg(long, allow_hyphen_values = true)]
    pub cron: Option<String>,
    /// An interval, e.g. 90s or 1h; "1h+15m" fires at 15 minutes past each hour.
    #[arg(long)]
    pub every: Option<String>,
    /// The IANA time zone cron fields are read in, e.g. Europe/Berlin (default UTC).
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// List fire times after this time (RFC 3339, e.g. 2026-03-28T00:00:00Z; default now).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub after: Option<SystemTime>,
    /// How many fire times to print.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,
}

/// Runs `spindle schedule preview`; returns the exit code.
pub fn preview(args: &PreviewArgs, json_out: bool) -> u8 {
    let repeat = match (&args.cron, &args.every) {
        (Some(cron), _) => Ok(Repeat::Cron(cron.clone())),
        (None, Some(every)) => format!("every {every}").parse::<Repeat>(),
        (None, None) => Err("give --cron or --every".to_string()),
    };
    let repeat = match repeat {
        Ok(repeat) => repeat,
        Err(why) => {
            eprintln!("spindle: --every: {why}");
            return exit::USAGE;
        }
    };
    let input = SpecInput {
        repeat,
        timezone: args.tz.clone(),
        start: None,
        end: None,
        jitter: std::time::Duration::ZERO,
    };
    let spec = match Spec::new(input) {
        Ok(spec) => spec,
        Err(violations) => {
            for v in violations {
                eprintln!("spindle: {}: {}", v.field, v.description);
            }
            return exit::USAGE;
        }
    };
    let after = args.after.unwrap_or_else(SystemTime::now);
    for slot in spec.next_n(after, usize::from(args.count)) {
        let utc = jiff::Timestamp::try_from(slot)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let local = spec.local_time(slot);
        if json_out {
            println!("{}", json!({"at": utc, "local": local}));
        } else {
            println!("{utc}  ({local})");
        }
    }
    exit::OK
}
