//! W9: schedules. N schedules (10,000 in full) each firing every second, created over gRPC
//! before their first slot; then, over the measured seconds, the fire lag (a slot's fire
//! time to its job stored and queued, as the server's GetStats reports it), the fires per
//! second, the server process's CPU, and the memory N schedules take. Twice, on fresh
//! servers: all N on the same instant of each second (`every 1s`: the worst case, every
//! slot of a second due at once), then spread over the second (`every 1s` with offsets
//! of 0-999 ms, ten schedules per millisecond).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Sizes;
use super::load::{drive, err};
use std::process::Stdio;

use super::target::Target;
use super::workloads::{Figure, figure};
use crate::pb;
use crate::pb::schedule_service_client::ScheduleServiceClient;

const W: &str = "W9";

/// CPU seconds a process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

/// A process's resident memory in bytes, from /proc.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    kib * 1024
}

/// A `spindle serve` process of its own (so its CPU and memory are the server's alone),
/// on 127.0.0.1:0, with the store asked for.
struct Server {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(store: &str) -> Result<Server, String> {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().map_err(err)?;
        let exe = std::env::current_exe().map_err(err)?;
        let mut child = tokio::process::Command::new(exe)
            .args(["serve", "--addr", "127.0.0.1:0", "--store", store])
            .env("SPINDLE_DATA_DIR", dir.path().join("data"))
            .env("SPINDLE_FILES_DIR", dir.path().join("files"))
            .env("SPINDLE_SHUTDOWN_GRACE", "1s")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start a server: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next_line().await.map_err(err)?;
            let line = line.ok_or("the server exited before serving")?;
            if let Some(rest) = line.split("addr=").nth(1) {
                let addr: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                    .collect();
                break addr;
            }
        };
        // Keep reading its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            child,
            url: format!("http://{addr}"),
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

fn ms(d: Option<prost_types::Duration>) -> f64 {
    d.map_or(f64::NAN, |d| {
        d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6
    })
}

/// Schedule `i`: every second, at the second's start, or `spread` at `i % 1000` ms past it.
fn request(i: usize, start: SystemTime, spread: bool) -> pb::CreateScheduleRequest {
    let offset_ms = if spread { (i % 1000) as i32 } else { 0 };
    pb::CreateScheduleRequest {
        id: format!("w9-{i}"),
        spec: Some(pb::ScheduleSpec {
            repeat: Some(pb::schedule_spec::Repeat::Interval(pb::Interval {
                every: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                offset: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: offset_ms * 1_000_000,
                }),
            })),
            start: Some(start.into()),
            ..Default::default()
        }),
        template: Some(pb::SubmitRequest {
            kind: "demo.noop".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The next whole second at least `lead` from now.
fn first_slot(lead: Duration) -> SystemTime {
    let at = SystemTime::now() + lead;
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() + 1;
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub async fn w9(target: &Target, sizes: &Sizes) -> Result<Vec<Figure>, String> {
    // The in-process server only names the store: each phase runs a server process of its
    // own, so CPU and memory are the server's and GetStats' lag counts from its start.
    let store = match target.store.as_str() {
        "memory" | "sqlite" => target.store.clone(),
        other => {
            return Err(format!(
                "W9 runs its own servers; it cannot measure {other}"
            ));
        }
    };
    let mut figures = Vec::new();
    for spread in [false, true] {
        let mut server = Server::start(&store).await?;
        let measured = phase(&server, sizes, spread).await;
        let _ = server.child.kill().await;
        figures.extend(measured?);
    }
    Ok(figures)
}

async fn phase(server: &Server, sizes: &Sizes, spread: bool) -> Result<Vec<Figure>, String> {
    let n = sizes.w9_schedules;
    let start = first_slot(sizes.w9_lead);
    let (pid, target) = (server.pid(), Target::remote(&server.url));
    let rss_before = rss(pid);
    let channels = target.connect(4).await.map_err(err)?;
    let next = Arc::new(AtomicUsize::new(0));
    drive(&channels, 64, n, move |channel| {
        let i = next.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut client = ScheduleServiceClient::new(channel);
            client
                .create_schedule(request(i, start, spread))
                .await
                .map(drop)
        }
    })
    .await?;
    let created = SystemTime::now();
    if created > start {
        return Err(format!(
            "creating {n} schedules took past their first slot; raise the lead time"
        ));
    }
    let rss_schedules = rss(pid).saturating_sub(rss_before);
    // From just before the first slot to the end of the measured seconds.
    tokio::time::sleep(start.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let cpu_start = cpu_seconds(pid);
    let seconds = sizes.w9_seconds;
    tokio::time::sleep(Duration::from_secs(seconds) - Duration::from_millis(500)).await;
    let cpu = cpu_seconds(pid) - cpu_start;
    let mut jobs = target.jobs().await.map_err(err)?;
    let stats = jobs
        .get_stats(pb::GetStatsRequest::default())
        .await
        .map_err(err)?
        .into_inner();
    let expected = (n as u64) * seconds;
    if stats.schedule_fires < expected * 9 / 10 {
        return Err(format!(
            "{} fires in {seconds} s of {n} schedules: expected about {expected}",
            stats.schedule_fires
        ));
    }
    let how = if spread {
        "spread over the second"
    } else {
        "on the same instant"
    };
    let what = |s: &str| format!("{n} schedules every 1 s, {how}: {s}");
    Ok(vec![
        figure(W, what("fire lag p50"), "ms", ms(stats.fire_lag_p50)),
        figure(W, what("fire lag p99"), "ms", ms(stats.fire_lag_p99)),
        figure(W, what("fire lag max"), "ms", ms(stats.fire_lag_max)),
        figure(
            W,
            what("fires"),
            "/s",
            stats.schedule_fires as f64 / seconds as f64,
        ),
        figure(
            W,
            what("server CPU"),
            "% core",
            cpu / (seconds as f64 - 0.5) * 100.0,
        ),
        figure(
            W,
            what("server memory per schedule"),
            "bytes",
            rss_schedules as f64 / n as f64,
        ),
    ])
}
