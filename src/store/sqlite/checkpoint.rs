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
            .spawn(move || run(&conn, &stopped))
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

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
