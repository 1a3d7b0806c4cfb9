//! The CPU pool: a dedicated rayon thread pool for blocking handlers, so CPU work never runs
//! on a tokio worker thread. Its threads run at the lowest OS priority there is: Linux's
//! SCHED_IDLE by default, so a waking API thread preempts a CPU job at once; under a raised
//! nice value alone (the alternative) it still waits up to a scheduler tick. Results come
//! back over a oneshot; panics are caught and returned, because rayon aborts the whole
//! process on a panic nobody catches.

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

/// The OS priority CPU pool threads run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuPriority {
    /// Linux's SCHED_IDLE: the thread runs only when nothing else wants the core. Where the
    /// OS refuses it (or is not Linux), the pool falls back to nice 19 and says so.
    Idle,
    /// The normal scheduler with the nice value raised by this much (0 keeps the process's
    /// priority; 19 is the lowest).
    Nice(i32),
}

impl CpuPool {
    /// A pool of `threads` threads running at `priority`.
    pub fn new(threads: usize, priority: CpuPriority) -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("spindle-cpu-{i}"))
            .start_handler(move |i| lower_priority(priority, i == 0))
            .build()?;
        Ok(CpuPool { pool })
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Starts `work` on the pool without waiting for it (the benchmark's busy loops).
    pub fn spawn(&self, work: impl FnOnce() + Send + 'static) {
        self.pool.spawn(move || {
            let _ = catch_unwind(AssertUnwindSafe(work));
        });
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

/// Lowers this thread's priority. On Linux a thread id names one thread for
/// setpriority and sched_setscheduler, so this leaves the rest of the process alone. Only
/// the first thread reports a refusal: the others meet the same one.
fn lower_priority(priority: CpuPriority, report: bool) {
    let nice = match priority {
        CpuPriority::Nice(nice) => nice,
        CpuPriority::Idle => match sched_idle::enter() {
            Ok(()) => return,
            Err(e) => {
                if report {
                    tracing::warn!(
                        error = %e,
                        "the OS refused SCHED_IDLE for the CPU pool; its threads run at nice 19 \
                         instead, so API calls may wait up to a scheduler tick behind CPU jobs"
                    );
                }
                19
            }
        },
    };
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let outcome = rustix::process::setpriority_process(Some(tid), nice.min(19));
        if let (Err(e), true) = (outcome, report) {
            tracing::warn!(error = %e, "could not lower the CPU pool's thread priority");
        }
    }
}

/// SCHED_IDLE for the calling thread. rustix does not wrap sched_setscheduler, so this is
/// the crate's one call through libc.
mod sched_idle {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    pub fn enter() -> std::io::Result<()> {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid, initialised sched_param that outlives the call, and
        // pid 0 names the calling thread; the call reads `param` and writes nothing.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn enter() -> std::io::Result<()> {
        Err(std::io::Error::other("SCHED_IDLE exists only on Linux"))
    }

    /// Whether the calling thread runs under SCHED_IDLE.
    #[cfg(all(test, target_os = "linux"))]
    #[allow(unsafe_code)]
    pub fn is_idle() -> bool {
        // SAFETY: pid 0 names the calling thread; the call only reads scheduler state.
        unsafe { libc::sched_getscheduler(0) == libc::SCHED_IDLE }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_results_and_catches_panics() {
        let pool = CpuPool::new(1, CpuPriority::Nice(5)).unwrap();
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
        let pool = CpuPool::new(1, CpuPriority::Nice(7)).unwrap();
        let base = rustix::process::getpriority_process(None).unwrap();
        let nice = pool
            .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap())
            .await
            .unwrap();
        assert_eq!(nice, (base + 7).min(19));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pool_threads_run_under_sched_idle_by_default() {
        let pool = CpuPool::new(1, CpuPriority::Idle).unwrap();
        assert!(pool.run(sched_idle::is_idle).await.unwrap());
        assert!(!sched_idle::is_idle(), "only the pool's threads change");
    }
}
