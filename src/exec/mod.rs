//! Executors: where handlers run. IO handlers are tokio tasks; CPU handlers run on the
//! rayon [`CpuPool`]. The engine decides *when* a job runs (it holds a pool slot first);
//! this module only runs it and reports how it ended, panics included.

pub mod context;
pub mod cpu;

pub use context::{HandlerError, JobContext, JobResult, StopSignal};
pub use cpu::{CpuPool, CpuPriority};

use std::sync::Arc;

use futures_util::future::BoxFuture;

/// An async handler, run as a tokio task.
pub type IoHandler = Arc<dyn Fn(JobContext) -> BoxFuture<'static, JobResult> + Send + Sync>;
/// A blocking handler, run on the CPU pool.
pub type CpuHandler = Arc<dyn Fn(JobContext) -> JobResult + Send + Sync>;

/// A kind's handler, type-erased, with the pool it belongs to.
#[derive(Clone)]
pub enum Handler {
    Io(IoHandler),
    Cpu(CpuHandler),
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handler::Io(_) => "Handler::Io",
            Handler::Cpu(_) => "Handler::Cpu",
        })
    }
}

/// How a handler run ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// The handler returned.
    Returned(JobResult),
    /// The handler panicked, with this message.
    Panicked(String),
    /// An async handler was dropped at an await point after cancellation.
    Aborted,
}

/// Runs handlers on the right executor.
#[derive(Debug)]
pub struct Executor {
    cpu: CpuPool,
}

impl Executor {
    pub fn new(cpu: CpuPool) -> Self {
        Executor { cpu }
    }

    /// Runs the handler to its end. An async handler is aborted as soon as the job is
    /// cancelled (dropping a future at an await point is how async work is cancelled); a
    /// CPU handler cannot be interrupted and is awaited until it sees the token and returns.
    pub async fn run(&self, handler: &Handler, ctx: JobContext) -> RunOutcome {
        match handler {
            Handler::Io(handler) => {
                let mut task = tokio::spawn(handler(ctx.clone()));
                tokio::select! {
                    joined = &mut task => io_outcome(joined),
                    _ = ctx.cancelled() => {
                        task.abort();
                        match task.await {
                            Err(e) if e.is_cancelled() => RunOutcome::Aborted,
                            joined => io_outcome(joined),
                        }
                    }
                }
            }
            Handler::Cpu(handler) => {
                let handler = handler.clone();
                let span = tracing::Span::current();
                let work = move || span.in_scope(|| handler(ctx));
                match self.cpu.run(work).await {
                    Ok(result) => RunOutcome::Returned(result),
                    Err(panicked) => RunOutcome::Panicked(panicked.0),
                }
            }
        }
    }
}

fn io_outcome(joined: Result<JobResult, tokio::task::JoinError>) -> RunOutcome {
    match joined {
        Ok(result) => RunOutcome::Returned(result),
        Err(e) if e.is_panic() => RunOutcome::Panicked(cpu::panic_message(e.into_panic())),
        Err(_) => RunOutcome::Aborted,
    }
}
