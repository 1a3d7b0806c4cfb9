//! The checkpointer: copies committed pages from the write-ahead log back into the
//! database file on its own thread and connection, every [`EVERY`]. Left to SQLite's
//! automatic checkpoint, this work ran inside the writer's commits (13 % of the writer's
//! time in a profile of 100k inserts), stalling every request of that batch. The writer
//! keeps a far higher automatic threshold only as a safety net.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is checkpointed.
const EVERY: Duration = Duration::from_millis(100);
/// The writer's own automatic checkpoint threshold, in pages (4 KiB): a backstop for a
/// checkpointer that cannot keep up.
pub const WRITER_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// Stops the checkpointer (after one last pass) when dropped.
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread; None (the writer's automatic checkpoints then do the work) if
    /// it cannot open its connection.
    pub fn start(path: &Path) -> Option<Checkpointer> {
        let conn = Connection::open(path)
            .inspect_err(
                |e| tracing::warn!(error = %e, "no checkpointer; SQLite will checkpoint inline"),
            )
            .ok()?;
        let _ = conn.busy_timeout(Duration::from_secs(5));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("spindle-db-checkpoint".into())
            .spawn(move || {
                lower_priority();
                run(&conn, &stopped)
            })
            .ok()?;
        Some(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn run(conn: &Connection, stopped: &mpsc::Receiver<()>) {
    loop {
        let stop = !matches!(
            stopped.recv_timeout(EVERY),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        // PASSIVE never blocks the writer or readers; it copies what it can.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
        }
        if stop {
            return;
        }
    }
}

/// The checkpointer is background work: at nice 19, an API thread that wakes takes the
/// core from it instead of waiting out its slice.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
            tracing::debug!(error = %e, "the checkpointer keeps its priority");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The nice value of this process's thread named `name` (as /proc shows it, cut to 15
    /// bytes), if there is one.
    fn nice_of(name: &str) -> Option<i64> {
        let tasks = std::fs::read_dir("/proc/self/task").ok()?;
        tasks.flatten().find_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            if comm.trim() != name {
                return None;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the ")" that ends the name; nice is the 19th field in all.
            let rest = stat.rsplit_once(')')?.1;
            rest.split_whitespace().nth(16)?.parse().ok()
        })
    }

    #[tokio::test]
    async fn the_checkpointer_runs_at_the_lowest_priority() {
        let dir = tempfile::tempdir().expect("dir");
        let store = super::super::SqliteStore::open(dir.path()).expect("open");
        let mut nice = None;
        for _ in 0..500 {
            nice = nice_of("spindle-db-chec");
            if nice == Some(19) {
                break;
            }
            // The thread sets its own priority as it starts.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert_eq!(nice, Some(19));
        crate::store::Store::close(&store).await;
    }
}
