//! Durability figures for issue 3, printed, never asserted:
//! - Submit throughput over gRPC with the durable SQLite store against the memory store
//!   (same client, same run; jobs are scheduled a day ahead so only the submit is measured);
//! - how long a restart takes to recover 100,000 queued jobs from the SQLite store.
//!
//! Run: `cargo bench --bench durability` (SPINDLE_BENCH_RUNS=N repeats; medians).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use spindle::engine::{Engine, EngineConfig};
use spindle::model::job::{EventData, Job, JobSpec, RetryPolicy};
use spindle::pb;
use spindle::pb::job_service_client::JobServiceClient;
use spindle::pb::json::json_to_struct;
use spindle::server::{ServeConfig, Spindle, StoreConfig};
use spindle::store::{SqliteStore, Store};
use tokio::sync::oneshot;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Jobs per second for `jobs` Submits from `clients` concurrent clients.
async fn submit_rate(store: StoreConfig, jobs: usize, clients: usize) -> f64 {
    let files = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        store,
        files_dir: files.path().to_path_buf(),
        ..ServeConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let prepared = Spindle::new(config).prepare(listener).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(prepared.serve(async move {
        let _ = stopped.await;
    }));
    let args = json_to_struct(json!({"seconds": 0}).as_object().unwrap());
    let mut tasks = Vec::new();
    let started = Instant::now();
    for worker in 0..clients {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = JobServiceClient::new(channel);
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (worker..jobs).step_by(clients) {
                let request = pb::SubmitRequest {
                    kind: "demo.sleep".into(),
                    args: Some(args.clone()),
                    delay: Some(prost_types::Duration {
                        seconds: 86_400,
                        nanos: 0,
                    }),
                    ..Default::default()
                };
                client.submit(request).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    rate
}

/// Fills a SQLite store with `count` queued jobs; returns its directory.
async fn fill(count: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let now = SystemTime::now();
    let mut tasks = Vec::new();
    for worker in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (worker..count).step_by(64) {
                let spec = JobSpec::new("demo.sleep", json!({"seconds": 0}));
                let job = Job::new(spec, RetryPolicy::default(), now);
                store
                    .insert(&job, &[EventData::state_of(&job)], now)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    dir
}

/// Opens the store and starts an engine on it; (open, recover) seconds.
async fn recover(dir: &std::path::Path) -> (f64, f64) {
    let started = Instant::now();
    let path = dir.to_path_buf();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .unwrap()
        .unwrap();
    let opened = started.elapsed().as_secs_f64();
    let files = tempfile::tempdir().unwrap();
    let files = spindle::jobs::files::FilesDir::open(files.path()).unwrap();
    let registry = spindle::jobs::builtins(files, Default::default());
    // No pool slots free, so the measure is the recovery itself, not running the jobs.
    let config = EngineConfig {
        io_concurrency: 1,
        ..EngineConfig::default()
    };
    let engine = Engine::start(&config, registry, Arc::new(store))
        .await
        .unwrap();
    let recovered = started.elapsed().as_secs_f64() - opened;
    let (io, _, running) = engine.load();
    assert!(
        io + running >= 99_000,
        "recovered {io} queued + {running} running"
    );
    engine.shutdown(Duration::ZERO).await;
    drop(engine);
    (opened, recovered)
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("SPINDLE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("machine: {cores} cores; {runs} runs per figure, medians (min..max)\n");
    println!(
        "| Submit, 20k jobs, one RPC each | clients | memory store | SQLite store | durable/memory |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for clients in [1, 16, 256] {
        let jobs = if clients == 1 { 5_000 } else { 20_000 };
        let (mut memory, mut sqlite) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            memory.push(submit_rate(StoreConfig::Memory, jobs, clients).await);
            let data = tempfile::tempdir().unwrap();
            sqlite.push(
                submit_rate(
                    StoreConfig::Sqlite {
                        data_dir: data.path().to_path_buf(),
                    },
                    jobs,
                    clients,
                )
                .await,
            );
        }
        let span = |xs: &[f64]| {
            format!(
                "{:.0}..{:.0}",
                xs.iter().cloned().fold(f64::MAX, f64::min),
                xs.iter().cloned().fold(0.0, f64::max)
            )
        };
        let (m, s) = (median(memory.clone()), median(sqlite.clone()));
        println!(
            "| jobs/s | {clients} | {m:.0} ({}) | {s:.0} ({}) | {:.2} |",
            span(&memory),
            span(&sqlite),
            s / m
        );
    }

    let count = 100_000;
    let dir = fill(count).await;
    let (mut opens, mut recoveries) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (open, recovered) = recover(dir.path()).await;
        opens.push(open * 1e3);
        recoveries.push(recovered * 1e3);
    }
    println!("\n| restart with {count} queued jobs | open + check | rebuild queues | total |");
    println!("| --- | ---: | ---: | ---: |");
    let (o, r) = (median(opens), median(recoveries));
    println!("| ms | {o:.0} | {r:.0} | {:.0} |", o + r);
}
