//! Remote workers as every layer sees them: the lease a worker runs a job under, the kinds
//! workers declare, and what a worker says about itself. Nothing here knows about protobuf.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::job::JobId;

/// One assignment of one job to a worker: the fencing token every later write for it
/// carries. A write whose lease is not the job's current one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub job_id: JobId,
    /// The attempt this assignment runs (1 for the first).
    pub attempt: u32,
    /// The job's epoch at this assignment; it goes up with every assignment.
    pub epoch: u64,
}

/// A kind of job that workers run, declared by a worker in its hello. Kept in the store,
/// so the kind stays known (and Submit accepts it) while no worker is connected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteKind {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The JSON Schema its args are checked against at Submit, if the worker gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_schema: Option<Value>,
    /// Attempts in all when a Submit gives no retry policy; `None`: the default policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// What a worker says about itself when it connects.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerHello {
    /// Stable across the worker's restarts and reconnects.
    pub worker_id: String,
    pub namespace: String,
    pub kinds: Vec<RemoteKind>,
    /// The queues it takes jobs from; empty: every queue of its namespace.
    pub queues: Vec<String>,
    pub build: String,
    pub sdk: String,
    /// Where it connects from, as the server sees it.
    pub host: String,
    /// Leases it still holds after a reconnect.
    pub held: Vec<Lease>,
}

/// A connected (or recently disconnected) worker, as ListWorkers shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    pub worker_id: String,
    pub namespace: String,
    pub host: String,
    pub kinds: Vec<String>,
    pub queues: Vec<String>,
    pub build: String,
    pub sdk: String,
    /// Jobs it may still be given (credits granted and not used).
    pub free_slots: u32,
    /// Jobs it holds a lease on.
    pub in_flight: u32,
    pub connected: bool,
    pub draining: bool,
    pub connected_at: SystemTime,
    pub last_heartbeat: SystemTime,
}
