//! `spindle schedule`: periodic jobs. `preview` prints a spec's next fire times with the
//! code the server fires slots with (`model::schedule`), locally, without a server.

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
