//! Spindle: a gRPC job-scheduling service. Clients submit jobs by kind and arguments, read
//! their status and watch their progress as a resumable server stream; IO jobs run on tokio,
//! CPU jobs on a dedicated rayon pool; jobs are kept in an embedded SQLite database.
//!
//! # Layout
//! Imports point down: [`model`] at the ground floor; [`store`], [`exec`] and [`jobs`] on
//! it; [`engine`] on those; then [`api`], [`server`], [`cli`] and [`bench`].
//! - [`model`]: the job model every layer shares (ids, states, specs, events, violations).
//! - [`api`]: the gRPC surface (`spindle.v1.JobService`), request checks, `api::Error`.
//! - [`engine`]: queues, dispatch, running jobs, event logs and watchers. No tonic here.
//! - [`exec`]: the executors (tokio tasks, the rayon CPU pool) and the handler context.
//! - [`store`]: persistence behind the `Store` trait: SQLite (durable, the default) or memory.
//! - [`jobs`]: the job-kind registry and the built-in kinds.
//! - [`server`]: assembles everything and runs it with a bounded graceful shutdown.
//! - [`cli`]: the command line: `serve` and the client commands.
//! - [`bench`]: `spindle bench`, the benchmark harness, through the public API only.
//! - [`pb`]: generated code (`spindle.v1`, `spindle.bench.v1`) and Struct <-> JSON.
//! - [`telemetry`]: logging setup.

#![deny(unsafe_code)]

pub mod access;
pub mod api;
pub mod bench;
pub mod cli;
pub mod engine;
pub mod exec;
pub mod jobs;
pub mod model;
pub mod pb;
pub mod server;
pub mod store;
pub mod telemetry;

pub use exec::{HandlerError, JobContext, JobResult};
pub use jobs::registry::{ArgsError, JobKind};
pub use model::job::{JobId, JobState, Progress};
pub use server::{ServeConfig, Spindle};
