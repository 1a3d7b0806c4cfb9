//! How the CLI shows things: jobs, events and kinds as JSON objects (for `--json`) or as
//! text for a person.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::pb;
use crate::pb::json::{struct_to_json, value_to_json};

fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state).unwrap_or(pb::JobState::Unspecified) {
        pb::JobState::Unspecified => "unknown",
        pb::JobState::Queued => "queued",
        pb::JobState::Running => "running",
        pb::JobState::Succeeded => "succeeded",
        pb::JobState::Failed => "failed",
        pb::JobState::Cancelled => "cancelled",
        pb::JobState::Scheduled => "scheduled",
        pb::JobState::RetryWait => "retry_wait",
    }
}

fn error_kind(kind: i32) -> &'static str {
    match pb::ErrorKind::try_from(kind).unwrap_or(pb::ErrorKind::Unspecified) {
        pb::ErrorKind::Unspecified => "unknown",
        pb::ErrorKind::Handler => "handler",
        pb::ErrorKind::Panic => "panic",
        pb::ErrorKind::Timeout => "timeout",
        pb::ErrorKind::Cancelled => "cancelled",
        pb::ErrorKind::Shutdown => "shutdown",
        pb::ErrorKind::Interrupted => "interrupted",
        pb::ErrorKind::Permanent => "permanent",
        pb::ErrorKind::LeaseExpired => "lease_expired",
        pb::ErrorKind::Released => "released",
    }
}

pub(super) fn time(ts: &Option<prost_types::Timestamp>) -> Value {
    ts.as_ref().map_or(Value::Null, |t| json!(t.to_string()))
}

/// A duration as seconds (a number, so scripts need not parse units).
pub(super) fn duration(d: &prost_types::Duration) -> Value {
    json!(d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

fn value(v: &Option<prost_types::Value>) -> Value {
    v.clone().map_or(Value::Null, |v| {
        value_to_json(v, "value").unwrap_or(Value::Null)
    })
}

pub(super) fn object(s: &Option<prost_types::Struct>) -> Value {
    s.clone().map_or(Value::Null, |s| {
        Value::Object(struct_to_json(s, "args").unwrap_or_default())
    })
}

fn error(e: &Option<pb::JobError>) -> Value {
    e.as_ref().map_or(
        Value::Null,
        |e| json!({ "kind": error_kind(e.kind), "message": e.message }),
    )
}

fn progress(p: &Option<pb::Progress>) -> Value {
    p.as_ref().map_or(Value::Null, |p| {
        json!({ "fraction": p.fraction, "done": p.done, "total": p.total, "message": p.message })
    })
}

/// A job as one JSON object.
pub fn job_json(job: &pb::Job) -> Value {
    json!({
        "id": job.id,
        "kind": job.kind,
        "args": object(&job.args),
        "queue": job.queue,
        "priority": job.priority,
        "labels": job.labels,
        "state": state_name(job.state),
        "attempt": job.attempt,
        "progress": progress(&job.progress),
        "result": value(&job.result),
        "error": error(&job.error),
        "attempt_errors": job.attempt_errors.iter().map(|e| json!({
            "attempt": e.attempt, "error": error(&e.error), "at": time(&e.at),
        })).collect::<Vec<_>>(),
        "created_at": time(&job.created_at),
        "started_at": time(&job.started_at),
        "finished_at": time(&job.finished_at),
        "run_at": time(&job.run_at),
        "cancel_requested": job.cancel_requested,
        "idempotency_key": job.idempotency_key,
        "last_seq": job.last_seq,
        "namespace": job.namespace,
        "timeout": job.timeout.map(|d| duration(&d)),
        "retry": job.retry.as_ref().map(|r| json!({
            "max_attempts": r.max_attempts,
            "initial_backoff": r.initial_backoff.map(|d| duration(&d)),
            "max_backoff": r.max_backoff.map(|d| duration(&d)),
            "multiplier": r.multiplier,
            "jitter": r.jitter,
        })),
        "expires_at": time(&job.expires_at),
        "schedule_id": job.schedule_id,
        "schedule_slot": time(&job.schedule_slot),
    })
}

/// An event as one JSON object.
pub fn event_json(event: &pb::JobEvent) -> Value {
    use pb::job_event::Payload;
    let mut out = Map::new();
    out.insert("job_id".into(), json!(event.job_id));
    out.insert("seq".into(), json!(event.seq));
    out.insert("at".into(), time(&event.at));
    let (kind, body) = match &event.payload {
        Some(Payload::StateChanged(s)) => (
            "state",
            json!({ "state": state_name(s.state), "attempt": s.attempt, "run_at": time(&s.run_at), "error": error(&s.error) }),
        ),
        Some(Payload::Progress(p)) => ("progress", progress(&Some(p.clone()))),
        Some(Payload::Log(l)) => ("log", json!({ "message": l.message })),
        Some(Payload::Finished(f)) => (
            "finished",
            json!({ "state": state_name(f.state), "attempt": f.attempt, "result": value(&f.result), "error": error(&f.error) }),
        ),
        None => ("unknown", Value::Null),
    };
    out.insert("type".into(), json!(kind));
    out.insert(kind.into(), body);
    Value::Object(out)
}

/// An event as one line of text.
pub fn event_line(event: &pb::JobEvent) -> String {
    use pb::job_event::Payload;
    let body = match &event.payload {
        Some(Payload::StateChanged(s)) => {
            format!("{} (attempt {})", state_name(s.state), s.attempt)
        }
        Some(Payload::Progress(p)) => progress_text(p),
        Some(Payload::Log(l)) => format!("log: {}", l.message),
        Some(Payload::Finished(f)) => match &f.error {
            Some(e) => format!("{}: {}", state_name(f.state), e.message),
            None => format!("{}: {}", state_name(f.state), value(&f.result)),
        },
        None => "unknown event".into(),
    };
    format!("[{}] {body}", event.seq)
}

/// "42% (21/50) resizing".
pub fn progress_text(p: &pb::Progress) -> String {
    let mut text = format!("{:.0}%", p.fraction * 100.0);
    if p.total > 0 {
        text.push_str(&format!(" ({}/{})", p.done, p.total));
    }
    if !p.message.is_empty() {
        text.push(' ');
        text.push_str(&p.message);
    }
    text
}

/// A job as a few lines of text.
pub fn job_text(job: &pb::Job) -> String {
    let mut lines = vec![
        format!("id:        {}", job.id),
        format!("kind:      {}", job.kind),
        format!("state:     {}", state_name(job.state)),
        format!("attempt:   {}", job.attempt),
        format!("queue:     {} (priority {})", job.queue, job.priority),
    ];
    if !job.schedule_id.is_empty() {
        lines.push(format!("schedule:  {}", job.schedule_id));
    }
    if let Some(p) = &job.progress {
        lines.push(format!("progress:  {}", progress_text(p)));
    }
    if job.result.is_some() {
        lines.push(format!("result:    {}", value(&job.result)));
    }
    if let Some(e) = &job.error {
        lines.push(format!("error:     {} ({})", e.message, error_kind(e.kind)));
    }
    for (label, ts) in [
        ("created:", &job.created_at),
        ("started:", &job.started_at),
        ("finished:", &job.finished_at),
        ("run at:", &job.run_at),
        ("slot:", &job.schedule_slot),
    ] {
        if let Some(ts) = ts {
            lines.push(format!("{label:<10} {ts}"));
        }
    }
    lines.join("\n")
}

/// "3s", "5m", "2h", "4d": how long ago.
pub fn age(ts: &Option<prost_types::Timestamp>) -> String {
    let Some(then) = (*ts).and_then(|t| SystemTime::try_from(t).ok()) else {
        return "-".into();
    };
    let secs = SystemTime::now()
        .duration_since(then)
        .map_or(0, |d| d.as_secs());
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The jobs table: ID, KIND, STATE, PROGRESS, ATTEMPT, AGE.
pub fn jobs_table(jobs: &[pb::Job]) -> String {
    let rows: Vec<[String; 6]> = jobs
        .iter()
        .map(|j| {
            let progress = j
                .progress
                .as_ref()
                .map_or("-".into(), |p| format!("{:.0}%", p.fraction * 100.0));
            [
                j.id.clone(),
                j.kind.clone(),
                state_name(j.state).into(),
                progress,
                j.attempt.to_string(),
                age(&j.created_at),
            ]
        })
        .collect();
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(["ID", "KIND", "STATE", "PROGRESS", "ATTEMPT", "AGE"])
        .add_rows(rows);
    // The preset pads each cell with a space on both sides: trim the line ends.
    let lines: Vec<String> = table.lines().map(|line| line.trim().to_string()).collect();
    lines.join("\n")
}

fn pool_name(kind: &pb::JobKind) -> &'static str {
    match pb::Pool::try_from(kind.pool).unwrap_or(pb::Pool::Unspecified) {
        pb::Pool::Cpu => "cpu",
        pb::Pool::Remote => "remote",
        pb::Pool::Io | pb::Pool::Unspecified => "io",
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A worker as one JSON object.
pub fn worker_json(w: &pb::Worker) -> Value {
    json!({
        "id": w.id, "namespace": w.namespace, "host": w.host, "kinds": w.kinds,
        "queues": w.queues, "build": w.build, "sdk": w.sdk, "free_slots": w.free_slots,
        "in_flight": w.in_flight, "connected": w.connected, "draining": w.draining,
        "connected_at": time(&w.connected_at), "last_heartbeat": time(&w.last_heartbeat),
    })
}

/// Workers as a table: id, host, kinds, slots, jobs in flight, last heartbeat.
pub fn workers_table(workers: &[pb::Worker]) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header([
        "WORKER",
        "HOST",
        "KINDS",
        "FREE",
        "RUNNING",
        "STATE",
        "LAST HEARTBEAT",
    ]);
    for w in workers {
        let state = match (w.connected, w.draining) {
            (false, _) => "disconnected",
            (true, true) => "draining",
            (true, false) => "connected",
        };
        let heartbeat = w
            .last_heartbeat
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default();
        table.add_row([
            w.id.clone(),
            w.host.clone(),
            w.kinds.join(","),
            w.free_slots.to_string(),
            w.in_flight.to_string(),
            state.to_string(),
            heartbeat,
        ]);
    }
    let lines: Vec<String> = table
        .lines()
        .map(|line| line.trim_end().to_string())
        .collect();
    lines.join("\n")
}

/// A kind as one JSON object.
pub fn kind_json(kind: &pb::JobKind) -> Value {
    json!({
        "name": kind.name,
        "pool": pool_name(kind),
        "workers": kind.workers,
        "description": kind.description,
        "args": kind.fields.iter().map(|f| json!({
            "name": f.name, "type": f.r#type, "required": f.required, "description": f.description,
        })).collect::<Vec<_>>(),
        "args_schema": object(&kind.args_schema),
    })
}

/// A kind as text: its name, pool and description, then one line per argument.
pub fn kind_text(kind: &pb::JobKind) -> String {
    let pool = match pool_name(kind) {
        "remote" => format!(
            "remote, {} worker{} now",
            kind.workers,
            plural(kind.workers)
        ),
        local => local.to_string(),
    };
    // Descriptions come from doc comments and may span lines: one line each, so nothing
    // wraps back to the margin.
    let one_line = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut lines = vec![format!(
        "{}  ({pool})  {}",
        kind.name,
        one_line(&kind.description)
    )];
    for f in &kind.fields {
        let required = if f.required { ", required" } else { "" };
        lines.push(format!(
            "    {} ({}{required})  {}",
            f.name,
            f.r#type,
            one_line(&f.description)
        ));
    }
    lines.join("\n")
}

/// The server's counters as one JSON object.
pub fn stats_json(stats: &pb::Stats) -> Value {
    json!({
        "queued": stats.queued,
        "delayed": stats.delayed,
        "running": stats.running,
        "submitted_total": stats.submitted_total,
        "succeeded_total": stats.succeeded_total,
        "failed_total": stats.failed_total,
        "cancelled_total": stats.cancelled_total,
        "watchers": stats.watchers,
        "up_since": stats.started_at.map(|t| t.to_string()),
        "schedules": stats.schedules,
        "schedule_fires": stats.schedule_fires,
        "fire_lag_p50": stats.fire_lag_p50.map(|d| duration(&d)),
        "fire_lag_p99": stats.fire_lag_p99.map(|d| duration(&d)),
        "fire_lag_max": stats.fire_lag_max.map(|d| duration(&d)),
    })
}

/// The server's counters, a line each.
pub fn stats_text(stats: &pb::Stats) -> String {
    let ms = |d: &Option<prost_types::Duration>| {
        d.map_or(0.0, |d| d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6)
    };
    let mut text = format!(
        "now:    {} queued, {} delayed, {} running, {} watching\n\
         since:  {} ago: {} submitted, {} succeeded, {} failed, {} cancelled",
        stats.queued,
        stats.delayed,
        stats.running,
        stats.watchers,
        age(&stats.started_at),
        stats.submitted_total,
        stats.succeeded_total,
        stats.failed_total,
        stats.cancelled_total,
    );
    if stats.schedules > 0 || stats.schedule_fires > 0 {
        text.push_str(&format!(
            "\nschedules: {} ({} fires; lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
            stats.schedules,
            stats.schedule_fires,
            ms(&stats.fire_lag_p50),
            ms(&stats.fire_lag_p99),
            ms(&stats.fire_lag_max),
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_prints_one_line_per_description_however_its_doc_comment_wraps() {
        let kind = pb::JobKind {
            name: "k".into(),
            description: "Counts words.\nSlowly,\n  on purpose.".into(),
            fields: vec![pb::ArgField {
                name: "text".into(),
                r#type: "string".into(),
                required: true,
                description: "The text\nto count.".into(),
            }],
            ..Default::default()
        };
        assert_eq!(
            kind_text(&kind),
            "k  (io)  Counts words. Slowly, on purpose.\n    text (string, required)  The text to count."
        );
    }

    #[test]
    fn json_jobs_carry_what_the_api_returns() {
        let job = pb::Job {
            timeout: Some(prost_types::Duration {
                seconds: 5,
                nanos: 500_000_000,
            }),
            retry: Some(pb::RetryPolicy {
                max_attempts: 3,
                ..Default::default()
            }),
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            namespace: "team-a".into(),
            ..Default::default()
        };
        let json = job_json(&job);
        assert_eq!(json["timeout"], 5.5);
        assert_eq!(json["retry"]["max_attempts"], 3);
        assert!(json["expires_at"].is_string(), "{json}");
        assert_eq!(json["namespace"], "team-a");
    }
}
