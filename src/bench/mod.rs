//! `spindle bench`: the benchmark harness. It runs the workloads W1-W9 against a server
//! it starts in this process (memory and durable SQLite stores, a fresh one per workload
//! and run) or against a server at a URL, repeats each run, and reports every figure's
//! median, min and max as a table, JSON and markdown (BENCHMARKS.md).
//!
//! - [`workloads`]: W1 submit throughput (one call per job at several concurrencies, and
//!   SubmitBatch), W2 end to end, W3 round trip, and W5, the no-work Echo reference.
//! - [`progress`]: W4, progress delivery to 1 to 10,000 watchers.
//! - [`pressure`]: W6 API latency under a saturated CPU pool, W7 a deep queue.
//! - [`remote`]: W8, remote jobs end to end through worker processes ([`worker`]: the
//!   minimal Rust one).
//! - [`schedules`]: W9, 10,000 schedules firing every second: fire lag, CPU, memory.
//! - [`target`], [`load`]: the server under test and the client side; [`probe`]: W6's
//!   client and bare echo limit, each a process of its own.
//! - [`report`]: the results and their formats.

pub mod load;
pub mod pressure;
pub mod probe;
pub mod progress;
pub mod remote;
pub mod report;
pub mod schedules;
pub mod target;
pub mod worker;
pub mod workloads;

use std::time::SystemTime;

use report::{Report, Row};
use target::{StoreKind, Target};
use workloads::Figure;

/// How big each workload is.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub concurrency: Vec<usize>,
    pub w1_jobs: usize,
    pub batch_jobs: usize,
    pub w2_jobs: usize,
    pub w3_jobs: usize,
    pub w4_updates: u32,
    pub w4_watchers: Vec<usize>,
    pub w6_calls: usize,
    pub w7_depth: usize,
    pub w7_jobs: usize,
    pub w8_jobs: usize,
    pub w9_schedules: usize,
    /// How long before their first slot W9's schedules are created.
    pub w9_lead: std::time::Duration,
    /// How many seconds of fires W9 measures.
    pub w9_seconds: u64,
}

impl Sizes {
    /// The sizes BENCHMARKS.md quotes (the peers' N where they have one).
    pub fn full() -> Sizes {
        Sizes {
            concurrency: vec![1, 16, 256],
            w1_jobs: 20_000,
            batch_jobs: 200_000,
            w2_jobs: 20_000,
            w3_jobs: 500,
            w4_updates: 1000,
            w4_watchers: vec![1, 100, 10_000],
            w6_calls: 2000,
            w7_depth: 1_000_000,
            w7_jobs: 20_000,
            w8_jobs: 20_000,
            w9_schedules: 10_000,
            w9_lead: std::time::Duration::from_secs(20),
            w9_seconds: 20,
        }
    }

    /// A few seconds in all: CI runs this to keep every workload working.
    pub fn smoke() -> Sizes {
        Sizes {
            concurrency: vec![1, 16],
            w1_jobs: 300,
            batch_jobs: 2000,
            w2_jobs: 300,
            w3_jobs: 30,
            w4_updates: 50,
            w4_watchers: vec![1, 20],
            w6_calls: 50,
            w7_depth: 5000,
            w7_jobs: 300,
            w8_jobs: 1000,
            w9_schedules: 200,
            w9_lead: std::time::Duration::from_secs(3),
            w9_seconds: 3,
        }
    }
}

/// The workloads by name, in order.
pub const WORKLOADS: [&str; 8] = ["W1", "W2", "W3", "W4", "W6", "W7", "W8", "W9"];

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// A running server to measure instead of in-process ones.
    pub server: Option<String>,
    pub stores: Vec<StoreKind>,
    pub runs: usize,
    pub sizes: Sizes,
    /// Workloads to run (W5 runs with W1); empty means all.
    pub only: Vec<String>,
    pub smoke: bool,
}

/// Runs one workload once against `target`.
async fn run_once(workload: &str, target: &Target, sizes: &Sizes) -> Result<Vec<Figure>, String> {
    match workload {
        "W1" => workloads::w1_w5(target, sizes).await,
        "W2" => workloads::w2(target, sizes).await,
        "W3" => workloads::w3(target, sizes).await,
        "W4" => progress::w4(target, sizes).await,
        "W6" => pressure::w6(target, sizes).await,
        "W7" => pressure::w7(target, sizes).await,
        "W8" => remote::w8(target, sizes).await,
        "W9" => schedules::w9(target, sizes).await,
        other => Err(format!("no workload {other}")),
    }
}

/// Adds one run's figures to the rows, matching them by workload, what and store.
fn record(rows: &mut Vec<Row>, store: &str, figures: Vec<Figure>) {
    for f in figures {
        let found = rows
            .iter_mut()
            .find(|r| r.workload == f.workload && r.what == f.what && r.store == store);
        match found {
            Some(row) => row.runs.push(f.value),
            None => rows.push(Row {
                workload: f.workload.into(),
                what: f.what,
                store: store.into(),
                unit: f.unit.into(),
                runs: vec![f.value],
            }),
        }
    }
}

/// Runs the selected workloads, printing progress to stderr, and returns the report.
pub async fn run(config: &BenchConfig) -> Result<Report, String> {
    let mut rows = Vec::new();
    let selected: Vec<&str> = WORKLOADS
        .iter()
        .copied()
        .filter(|w| config.only.is_empty() || config.only.iter().any(|o| o.eq_ignore_ascii_case(w)))
        .collect();
    for workload in selected {
        for run in 1..=config.runs {
            let targets: Vec<Option<StoreKind>> = match &config.server {
                Some(_) => vec![None],
                None => config.stores.iter().copied().map(Some).collect(),
            };
            for store in targets {
                let target = match (store, &config.server) {
                    (Some(store), _) => Target::start(store).await.map_err(|e| e.to_string())?,
                    (None, Some(url)) => Target::remote(url),
                    (None, None) => unreachable!("a store or a server is always given"),
                };
                eprintln!("{workload} run {run}/{} on {}", config.runs, target.store);
                let figures = run_once(workload, &target, &config.sizes).await;
                let store_name = target.store.clone();
                target.stop().await;
                record(
                    &mut rows,
                    &store_name,
                    figures.map_err(|e| format!("{workload}: {e}"))?,
                );
            }
        }
    }
    Ok(Report {
        date: rfc3339(SystemTime::now()),
        machine: machine(),
        settings: format!(
            "{} run(s) per figure, {} sizes, target {}",
            config.runs,
            if config.smoke { "smoke" } else { "full" },
            config.server.as_deref().unwrap_or("in-process server")
        ),
        rows,
    })
}

fn rfc3339(t: SystemTime) -> String {
    let stamp = prost_types::Timestamp::from(t);
    let secs = stamp.seconds;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's method).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Cores, memory and kernel, as this machine reports them.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores, {:.0} GiB, Linux {}, spindle {}",
        mem_kib as f64 / 1_048_576.0,
        kernel.trim(),
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_782), (2026, 11, 25));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
