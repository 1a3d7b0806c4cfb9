//! The CPU pool's overhead, printed, never asserted (these machines are shared and noisy):
//! a 10k-job burst of `demo.cpu` through gRPC against the same hash loop run bare on a
//! rayon pool of the same size. (GetStatus latency under a saturated pool, which this
//! bench measured once, is `spindle bench --only W6` now.)
//!
//! Run: `cargo bench --bench core` (SPINDLE_BENCH_RUNS=N repeats each figure; medians).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde_json::{Value, json};
use spindle::pb;
use spindle::pb::job_service_client::JobServiceClient;
use spindle::pb::json::json_to_struct;
use spindle::server::{LocalServer, ServeConfig, Spindle, StoreConfig};
use tonic::transport::Channel;

type Client = JobServiceClient<Channel>;

struct Bench {
    server: LocalServer,
    _files: tempfile::TempDir,
}

async fn start(cpu_threads: usize, durable: bool) -> Bench {
    let files = tempfile::tempdir().unwrap();
    let store = if durable {
        StoreConfig::Sqlite {
            data_dir: files.path().join("data"),
        }
    } else {
        StoreConfig::Memory
    };
    let mut config = ServeConfig {
        store,
        files_dir: files.path().join("files"),
        ..ServeConfig::default()
    };
    config.engine.cpu_threads = cpu_threads;
    config.shutdown_grace = Duration::from_secs(1);
    let server = Spindle::new(config).start_local().await.unwrap();
    Bench {
        server,
        _files: files,
    }
}

async fn client(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    JobServiceClient::new(channel)
}

fn request(kind: &str, args: Value) -> pb::SubmitRequest {
    pb::SubmitRequest {
        kind: kind.into(),
        args: Some(json_to_struct(args.as_object().unwrap())),
        ..Default::default()
    }
}

/// Submits `jobs` demo.cpu jobs from 32 concurrent clients and waits until all finished.
async fn burst(bench: &Bench, jobs: usize, rounds: u64) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let mut client = client(bench.server.addr()).await;
        tasks.push(tokio::spawn(async move {
            for _ in (worker..jobs).step_by(32) {
                client
                    .submit(request("demo.cpu", json!({"rounds": rounds})))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    while bench.server.engine().load() != (0, 0, 0) {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    started.elapsed()
}

fn bare_loop(pool: &rayon::ThreadPool, jobs: usize, rounds: u64) -> Duration {
    let started = Instant::now();
    pool.install(|| {
        (0..jobs).into_par_iter().for_each(|_| {
            spindle::jobs::cpu::burn(rounds, |_| Ok::<(), ()>(())).unwrap();
        })
    });
    started.elapsed()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("SPINDLE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("machine: {cores} cores; {runs} runs per figure, medians\n");

    let jobs = 10_000;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .build()
        .unwrap();
    println!(
        "| 10k demo.cpu jobs, store | rounds/job | spindle (gRPC) | bare rayon loop | overhead/job |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    let cases = [
        ("memory", 0u64),
        ("memory", 1_000),
        ("memory", 10_000),
        ("sqlite", 0),
        ("sqlite", 10_000),
    ];
    for (store, rounds) in cases {
        let bench = start(cores, store == "sqlite").await;
        let mut spindle_ms = Vec::new();
        let mut bare_ms = Vec::new();
        for _ in 0..runs {
            spindle_ms.push(burst(&bench, jobs, rounds).await.as_secs_f64() * 1e3);
            bare_ms.push(bare_loop(&pool, jobs, rounds).as_secs_f64() * 1e3);
        }
        let (s, b) = (median(spindle_ms), median(bare_ms));
        println!(
            "| {store} | {rounds} | {s:.0} ms ({:.0} jobs/s) | {b:.1} ms | {:.1} µs |",
            jobs as f64 / s * 1e3,
            (s - b) * 1e3 / jobs as f64
        );
        bench.server.stop().await.unwrap();
    }
}
