//! Schedules as `spindle schedule` prints them: a few readable lines, or one JSON object.

use serde_json::{Value, json};

use crate::cli::render::{duration, object, time};
use crate::pb;

fn outcome(value: i32) -> &'static str {
    use pb::schedule_run::Outcome;
    match Outcome::try_from(value).unwrap_or(Outcome::Unspecified) {
        Outcome::Fired => "fired",
        Outcome::SkippedOverlap => "skipped_overlap",
        Outcome::Missed => "missed",
        Outcome::Triggered => "triggered",
        Outcome::Backfilled => "backfilled",
        Outcome::AlreadyFired => "already_fired",
        Outcome::SkippedPaused => "skipped_paused",
        Outcome::Refused => "refused",
        Outcome::Unspecified => "unspecified",
    }
}

fn overlap(value: i32) -> &'static str {
    match pb::OverlapPolicy::try_from(value).unwrap_or(pb::OverlapPolicy::Skip) {
        pb::OverlapPolicy::BufferOne => "buffer-one",
        pb::OverlapPolicy::AllowAll => "allow-all",
        pb::OverlapPolicy::CancelOther => "cancel-other",
        _ => "skip",
    }
}

fn run_json(run: &pb::ScheduleRun) -> Value {
    json!({
        "slot": time(&run.slot), "outcome": outcome(run.outcome), "job_id": run.job_id,
        "at": time(&run.fired_at), "slots": run.slots, "error": run.error,
    })
}

/// The spec in the words the CLI takes it.
fn spec_text(spec: &Option<pb::ScheduleSpec>) -> String {
    use pb::schedule_spec::Repeat;
    let Some(spec) = spec else {
        return String::new();
    };
    let repeat = match &spec.repeat {
        Some(Repeat::Cron(cron)) => format!("cron {cron}"),
        Some(Repeat::Interval(i)) => {
            let secs = |d: &Option<prost_types::Duration>| d.map_or(0, |d| d.seconds.max(0) as u64);
            let every = humantime::format_duration(std::time::Duration::from_secs(secs(&i.every)));
            match secs(&i.offset) {
                0 => format!("every {every}"),
                o => format!(
                    "every {every}+{}",
                    humantime::format_duration(std::time::Duration::from_secs(o))
                ),
            }
        }
        Some(Repeat::At(at)) => format!("at {at}"),
        None => "-".into(),
    };
    let zone = if spec.timezone.is_empty() {
        "UTC"
    } else {
        &spec.timezone
    };
    format!("{repeat} ({zone})")
}

pub fn schedule_json(s: &pb::Schedule) -> Value {
    let template = s.template.clone().unwrap_or_default();
    let policies = s.policies.unwrap_or_default();
    json!({
        "id": s.id, "namespace": s.namespace, "spec": spec_text(&s.spec),
        "kind": template.kind, "args": object(&template.args), "queue": template.queue,
        "overlap": overlap(policies.overlap),
        "catchup_window": policies.catchup_window.map(|d| duration(&d)),
        "paused": s.paused, "note": s.note, "last_slot": time(&s.last_slot),
        "next_fires": s.next_fires.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "runs": s.runs, "skipped": s.skipped, "missed": s.missed,
        "recent_runs": s.recent_runs.iter().map(run_json).collect::<Vec<_>>(),
        "conflict_token": s.conflict_token, "created_at": time(&s.created_at),
    })
}

pub fn print_schedule(s: &pb::Schedule, json: bool) {
    if json {
        out!("{}", schedule_json(s));
        return;
    }
    let template = s.template.clone().unwrap_or_default();
    let policies = s.policies.unwrap_or_default();
    let state = if s.paused {
        format!("paused ({})", s.note)
    } else {
        "active".into()
    };
    out!("id:        {}", s.id);
    out!("spec:      {}", spec_text(&s.spec));
    out!("job:       {} {}", template.kind, object(&template.args));
    out!("overlap:   {}", overlap(policies.overlap));
    out!("state:     {state}");
    out!(
        "counts:    {} runs, {} skipped, {} missed",
        s.runs,
        s.skipped,
        s.missed
    );
    for next in s.next_fires.iter().take(3) {
        out!("next:      {next}");
    }
    for run in &s.recent_runs {
        let job = if run.job_id.is_empty() {
            String::new()
        } else {
            format!(" job {}", run.job_id)
        };
        let slot = run.slot.map(|t| t.to_string()).unwrap_or_default();
        out!("run:       {slot} {}{job}", outcome(run.outcome));
    }
}

pub fn print_list(schedules: &[pb::Schedule], json: bool, namespace: &str) {
    if json {
        schedules.iter().for_each(|s| out!("{}", schedule_json(s)));
        return;
    }
    if schedules.is_empty() {
        out!("no schedules in namespace {namespace}");
        return;
    }
    out!(
        "{:<24} {:<28} {:<20} {:>6} {:>6}  NEXT",
        "ID",
        "SPEC",
        "KIND",
        "RUNS",
        "MISSED"
    );
    for s in schedules {
        let kind = s.template.as_ref().map_or("", |t| t.kind.as_str());
        let next = match (s.paused, s.next_fires.first()) {
            (true, _) => "paused".to_string(),
            (false, Some(next)) => next.to_string(),
            (false, None) => "-".into(),
        };
        out!(
            "{:<24} {:<28} {:<20} {:>6} {:>6}  {next}",
            s.id,
            spec_text(&s.spec),
            kind,
            s.runs,
            s.missed
        );
    }
}

pub fn print_runs(runs: &[pb::ScheduleRun], json: bool) {
    for run in runs {
        if json {
            out!("{}", run_json(run));
        } else {
            let slot = run.slot.map(|t| t.to_string()).unwrap_or_default();
            out!("{slot} {} {}", outcome(run.outcome), run.job_id);
        }
    }
}
