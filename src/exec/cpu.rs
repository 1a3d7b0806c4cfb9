//! The CPU pool: a dedicated rayon thread pool for blocking handlers, so CPU work never runs
//! on a tokio worker thread. Its threads run at a lower OS priority (a per-thread nice), so
//! when an API thread wakes the kernel preempts CPU jobs instead of making the API wait for
//! a time slice. Results come back over a oneshot; panics are caught and returned, because
//! rayon aborts the whole process on a panic nobody catches.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio::sync::oneshot;

/// A handler panicked; the payload's message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Panicked(pub String);

/// The rayon pool CPU handlers run on.
#[derive(Debug)]
pub struct CpuPool {
    pool: rayon::ThreadPool,
}

impl CpuPool {
    /// A pool of `threads` threads whose nice value is raised by `nice` (0 keeps the
    /// process's priority; 19 is the lowest).
    pub fn new(threads: usize, nice: i32) -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("spindle-cpu-{i}"))
            .start_handler(move |_| lower_priority(nice))
            .build()?;
        Ok(CpuPool { pool })
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `work` on the pool and resolves with its output, or with its panic message.
    /// The caller bounds how many of these are in flight, so rayon's own queue stays empty.
    pub async fn run<F, R>(&self, work: F) -> Result<R, Panicked>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(work)).map_err(panic_message);
            // The receiver is gone only if the engine itself was dropped; nobody to tell.
            let _ = tx.send(outcome.map_err(Panicked));
        });
        rx.await
            .unwrap_or_else(|_| Err(Panicked("CPU pool shut down".into())))
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "handler panicked".to_string(),
        },
    }
}

/// Raises this thread's nice value. On Linux a thread id names one thread for
/// setpriority, so this leaves the rest of the process alone.
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), nice.min(19)) {
            tracing::warn!(error = %e, "could not lower the CPU pool's thread priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_results_and_catches_panics() {
        let pool = CpuPool::new(1, 5).unwrap();
        assert_eq!(pool.run(|| 6 * 7).await.unwrap(), 42);
        let err = pool
            .run(|| -> u32 { panic!("boom {}", 1) })
            .await
            .unwrap_err();
        assert_eq!(err.0, "boom 1");
        let err = pool.run(|| -> u32 { panic!("static") }).await.unwrap_err();
        assert_eq!(err.0, "static");
        // The pool survives a panic.
        assert_eq!(pool.run(|| 1).await.unwrap(), 1);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pool_threads_run_at_the_lower_priority() {
        let pool = CpuPool::new(1, 7).unwrap();
        let base = rustix::process::getpriority_process(None).unwrap();
        let nice = pool
            .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap())
            .await
            .unwrap();
        assert_eq!(nice, (base + 7).min(19));
    }
}
