//! Worker-protocol messages into domain values and back. Every malformed field is named
//! (`hello.kinds[2].name`, `progress.lease.job_id`), as the job API names its fields.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde_json::Value as Json;

use super::super::convert::MAX_ATTEMPTS;
use crate::engine::workers::{Assignment, LostReason, ToWorker, Welcome};
use crate::model::job::Progress;
use crate::model::text::truncated as cut;
use crate::model::violation::FieldViolation;
use crate::model::worker::{Lease, RemoteKind, WorkerHello};
use crate::pb::json::{json_to_struct, struct_to_json, value_to_json};
use crate::pb::worker as pbw;

/// The longest worker id, kind name or queue name.
const MAX_NAME: usize = 128;
/// The most kinds, queues or held leases one hello may carry.
const MAX_LIST: usize = 1000;
/// The longest progress or failure message kept; longer ones are cut. (Log lines are cut
/// by `JobContext::log`, as a local handler's are.)
const MAX_TEXT: usize = 4096;

fn check_name(field: &str, name: &str) -> Result<(), FieldViolation> {
    let valid = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '/'));
    if name.is_empty() || name.len() > MAX_NAME || !valid {
        return Err(FieldViolation::new(
            field,
            format!("must be 1 to {MAX_NAME} letters, digits, '.', '_', '-', ':', '@' or '/'"),
        ));
    }
    Ok(())
}

/// A hello, checked field by field; every bad field is named.
pub fn hello(h: pbw::Hello, host: String) -> Result<WorkerHello, Vec<FieldViolation>> {
    let mut bad = Vec::new();
    if let Err(v) = check_name("hello.worker_id", &h.worker_id) {
        bad.push(v);
    }
    let namespace = super::super::convert::namespace(h.namespace)
        .map_err(|v| FieldViolation::new("hello.namespace", v.description))
        .unwrap_or_else(|v| {
            bad.push(v);
            String::new()
        });
    if h.kinds.is_empty() || h.kinds.len() > MAX_LIST {
        bad.push(FieldViolation::new(
            "hello.kinds",
            format!("declare 1 to {MAX_LIST} kinds the worker runs"),
        ));
    }
    let mut seen = HashSet::new();
    let mut kinds = Vec::new();
    for (i, k) in h.kinds.into_iter().enumerate() {
        let field = format!("hello.kinds[{i}]");
        if let Err(v) = check_name(&format!("{field}.name"), &k.name) {
            bad.push(v);
        } else if !seen.insert(k.name.clone()) {
            bad.push(FieldViolation::new(
                format!("{field}.name"),
                "declared twice",
            ));
        }
        let args_schema = match k.args_schema {
            Some(s) => match struct_to_json(s, &format!("{field}.args_schema")) {
                Ok(map) => Some(Json::Object(map)),
                Err(v) => {
                    bad.push(v);
                    None
                }
            },
            None => None,
        };
        if k.max_attempts > MAX_ATTEMPTS {
            bad.push(FieldViolation::new(
                format!("{field}.max_attempts"),
                format!("at most {MAX_ATTEMPTS}"),
            ));
        }
        kinds.push(RemoteKind {
            name: k.name,
            description: cut(k.description, 512),
            args_schema,
            max_attempts: (k.max_attempts > 0).then_some(k.max_attempts),
        });
    }
    for (i, q) in h.queues.iter().enumerate() {
        if let Err(v) = check_name(&format!("hello.queues[{i}]"), q) {
            bad.push(v);
        }
    }
    if h.queues.len() > MAX_LIST || h.held_leases.len() > 100_000 {
        bad.push(FieldViolation::new(
            "hello",
            "too many queues or held leases",
        ));
    }
    let mut held = Vec::new();
    for (i, l) in h.held_leases.into_iter().enumerate() {
        match lease(&format!("hello.held_leases[{i}]"), Some(l)) {
            Ok(l) => held.push(l),
            Err(v) => bad.push(v),
        }
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    Ok(WorkerHello {
        worker_id: h.worker_id,
        namespace,
        kinds,
        queues: h.queues,
        build: cut(h.build, 256),
        sdk: cut(h.sdk, 256),
        host,
        held,
    })
}

/// A lease as the worker names it.
pub fn lease(field: &str, l: Option<pbw::Lease>) -> Result<Lease, FieldViolation> {
    let l =
        l.ok_or_else(|| FieldViolation::new(field, "must be set: the lease of the assignment"))?;
    let job_id = super::super::convert::job_id(&format!("{field}.job_id"), &l.job_id)?;
    if l.attempt == 0 || l.epoch == 0 {
        return Err(FieldViolation::new(
            field,
            "attempt and epoch must be those of the assignment (never 0)",
        ));
    }
    Ok(Lease {
        job_id,
        attempt: l.attempt,
        epoch: l.epoch,
    })
}

/// A progress report's value: counted if a total is given, else the fraction.
pub fn progress(p: &pbw::Progress) -> Result<Progress, FieldViolation> {
    let progress = if p.total > 0 {
        if p.done > p.total {
            return Err(FieldViolation::new(
                "progress.done",
                "must not exceed progress.total",
            ));
        }
        Progress::counted(p.done, p.total)
    } else {
        if !(0.0..=1.0).contains(&p.fraction) {
            return Err(FieldViolation::new(
                "progress.fraction",
                "must be from 0 to 1",
            ));
        }
        Progress::fraction(p.fraction)
    };
    Ok(progress.with_message(cut(p.message.clone(), MAX_TEXT)))
}

/// A result value (JSON null if unset).
pub fn result(value: Option<prost_types::Value>) -> Result<Json, FieldViolation> {
    match value {
        Some(v) => value_to_json(v, "complete.result"),
        None => Ok(Json::Null),
    }
}

/// A failure message cut to the longest kept.
pub fn failure_message(message: String) -> String {
    cut(message, MAX_TEXT)
}

fn lease_to_pb(l: Lease) -> pbw::Lease {
    pbw::Lease {
        job_id: l.job_id.to_string(),
        attempt: l.attempt,
        epoch: l.epoch,
    }
}

fn duration(d: Duration) -> Option<prost_types::Duration> {
    d.try_into().ok()
}

pub fn welcome_to_pb(w: Welcome) -> pbw::ServerMessage {
    let welcome = pbw::Welcome {
        session_id: w.session_id,
        lease_ttl: duration(w.lease_ttl),
        heartbeat_interval: duration(w.heartbeat_interval),
        reclaimed: w.reclaimed.into_iter().map(lease_to_pb).collect(),
        lost: w.lost.into_iter().map(lease_to_pb).collect(),
    };
    server_message(pbw::server_message::Message::Welcome(welcome))
}

fn server_message(m: pbw::server_message::Message) -> pbw::ServerMessage {
    pbw::ServerMessage { message: Some(m) }
}

fn assign_to_pb(a: Assignment) -> pbw::Assign {
    let args = match &a.args {
        Json::Object(map) => Some(json_to_struct(map)),
        _ => None,
    };
    pbw::Assign {
        lease: Some(lease_to_pb(a.lease)),
        kind: a.kind,
        queue: a.queue,
        args,
        deadline: a.deadline.map(|t: SystemTime| t.into()),
    }
}

pub fn lost_to_pb(lease: Lease, reason: LostReason) -> pbw::ServerMessage {
    use pbw::lease_lost::Reason;
    let reason = match reason {
        LostReason::Expired => Reason::Expired,
        LostReason::TimedOut => Reason::TimedOut,
        LostReason::Cancelled => Reason::Cancelled,
        LostReason::Reassigned => Reason::Reassigned,
    };
    let lost = pbw::LeaseLost {
        lease: Some(lease_to_pb(lease)),
        reason: reason.into(),
    };
    server_message(pbw::server_message::Message::LeaseLost(lost))
}

pub fn to_pb(m: ToWorker) -> pbw::ServerMessage {
    use pbw::server_message::Message;
    match m {
        ToWorker::Assign(a) => server_message(Message::Assign(assign_to_pb(a))),
        ToWorker::Cancel {
            lease,
            reason,
            grace,
        } => server_message(Message::Cancel(pbw::Cancel {
            lease: Some(lease_to_pb(lease)),
            reason,
            grace: duration(grace),
        })),
        ToWorker::LeaseLost { lease, reason } => lost_to_pb(lease, reason),
        ToWorker::Settled(lease) => server_message(Message::Settled(pbw::Settled {
            lease: Some(lease_to_pb(lease)),
        })),
        ToWorker::Drain { grace } => server_message(Message::Drain(pbw::ServerDrain {
            grace: duration(grace),
        })),
    }
}
