//! Core figures for issue 2, printed, never asserted (these machines are shared and noisy):
//! - a 10k-job burst of `demo.cpu` through gRPC against the same hash loop run bare on a
//!   rayon pool of the same size;
//! - GetStatus latency idle and with the CPU pool saturated, with the pool's threads at a
//!   lower OS priority (nice 10, the default) and at normal priority (nice 0).
//!
//! Run: `cargo bench --bench core` (SPINDLE_BENCH_RUNS=N repeats each figure; medians).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde_json::{Value, json};
use spindle::engine::Engine;
use spindle::pb;
use spindle::pb::job_service_client::JobServiceClient;
use spindle::pb::json::json_to_struct;
use spindle::server::{ServeConfig, Spindle, StoreConfig};
use tokio::sync::oneshot;
use tonic::transport::Channel;

type Client = JobServiceClient<Channel>;

struct Bench {
    addr: SocketAddr,
    engine: Engine,
    stop: oneshot::Sender<()>,
    _files: tempfile::TempDir,
}

async fn start(cpu_threads: usize, cpu_nice: i32, durable: bool) -> Bench {
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
    config.engine.cpu_priority = spindle::exec::CpuPriority::Nice(cpu_nice);
    config.shutdown_grace = Duration::from_secs(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let prepared = Spindle::new(config).prepare(listener).await.unwrap();
    let engine = prepared.engine().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(prepared.serve(async move {
        let _ = stopped.await;
    }));
    Bench {
        addr,
        engine,
        stop,
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
        let mut client = client(bench.addr).await;
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
    while bench.engine.load() != (0, 0, 0) {
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

/// `calls` sequential GetStatus round trips; (p50, p99) in microseconds.
async fn get_status_latency(client: &mut Client, id: &str, calls: usize) -> (f64, f64) {
    let mut micros = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        client
            .get_status(pb::GetStatusRequest {
                id: id.into(),
                wait: None,
            })
            .await
            .unwrap();
        micros.push(started.elapsed().as_secs_f64() * 1e6);
    }
    micros.sort_by(f64::total_cmp);
    (micros[calls / 2], micros[calls * 99 / 100])
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Saturates the CPU pool with 2x its size of endless demo.cpu jobs; returns their ids.
async fn saturate(bench: &Bench, c: &mut Client, cores: usize) -> Vec<String> {
    let mut burners = Vec::new();
    for _ in 0..cores * 2 {
        let job = c
            .submit(request("demo.cpu", json!({"rounds": 1_000_000_000u64})))
            .await
            .unwrap();
        burners.push(job.into_inner().job.unwrap().id);
    }
    while bench.engine.load().2 < cores {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    burners
}

/// Idle and saturated GetStatus latency, alternating, `runs` times each.
async fn isolation(cores: usize, nice: i32, runs: usize) {
    let bench = start(cores, nice, false).await;
    let mut c = client(bench.addr).await;
    let probe = c
        .submit(request("demo.sleep", json!({"seconds": 0})))
        .await
        .unwrap();
    let id = probe.into_inner().job.unwrap().id;
    get_status_latency(&mut c, &id, 1000).await; // warm-up
    let (mut idle50, mut idle99, mut busy50, mut busy99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let (p50, p99) = get_status_latency(&mut c, &id, 2000).await;
        idle50.push(p50);
        idle99.push(p99);
        let burners = saturate(&bench, &mut c, cores).await;
        let (p50, p99) = get_status_latency(&mut c, &id, 2000).await;
        busy50.push(p50);
        busy99.push(p99);
        for id in burners {
            c.cancel(pb::CancelRequest { id }).await.unwrap();
        }
    }
    let (i99, b99) = (median(idle99), median(busy99));
    println!(
        "| nice {nice:>2} | {:>8.0} | {:>8.0} | {:>8.0} | {:>8.0} | {:>5.2}x |",
        median(idle50),
        i99,
        median(busy50),
        b99,
        b99 / i99
    );
    let _ = bench.stop.send(());
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
        let bench = start(cores, 10, store == "sqlite").await;
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
        let _ = bench.stop.send(());
    }

    println!(
        "\nGetStatus latency (µs), sequential calls, CPU pool of {cores} threads saturated by demo.cpu:"
    );
    println!("| CPU pool | idle p50 | idle p99 | busy p50 | busy p99 | p99 busy/idle |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for nice in [10, 0, 10, 0] {
        isolation(cores, nice, runs).await;
    }
}
