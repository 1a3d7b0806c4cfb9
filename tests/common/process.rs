//! Running the real `spindle` binary: start it on an ephemeral port (the address comes from
//! its own log line), signal it, wait for it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `spindle` process.
pub struct Process {
    pub child: Child,
    pub addr: String,
    /// Its log lines.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `spindle [args]` on an ephemeral port with its data and files under `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_spindle"));
        command
            .args(args)
            .env("SPINDLE_ADDR", "127.0.0.1:0")
            .env("SPINDLE_FILES_DIR", dir.join("files"))
            .env("SPINDLE_DATA_DIR", dir.join("data"));
        Process::spawn(command)
    }

    /// Spawns a prepared `spindle` command and returns once it serves (the address comes
    /// from its log line, so no sleeps).
    pub fn spawn(mut command: Command) -> Process {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn spindle");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            let line = lines
                .next()
                .expect("spindle exited before serving")
                .expect("read stderr");
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().expect("address").to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Process { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// SIGKILL, and reap (what dropping the process does; this names it at the call site).
    pub fn kill(self) {
        drop(self);
    }

    /// Waits for the process to exit, killing it after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("spindle did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    /// A test never leaves a server behind, whatever happened: SIGKILL and reap.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
