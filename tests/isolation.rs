//! The API stays responsive while the CPU pool is saturated with as many threads as cores.
//! Latency figures are printed; the assertion is a generous bound that only a stalled API
//! (seconds, not milliseconds) would break. The benchmark measures the real numbers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use spindle::pb;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn get_status_and_submit_answer_while_the_cpu_pool_is_saturated() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let server = TestServer::start_with(|c| c.engine.cpu_threads = cores, |s| s).await;
    let mut burners = Vec::new();
    for _ in 0..cores * 2 {
        burners.push(
            server
                .submit("demo.cpu", json!({"rounds": 1_000_000_000u64}))
                .await,
        );
    }
    let engine = server.engine.clone();
    eventually("the CPU pool is full", async || engine.load().2 == cores).await;

    let mut client = server.client.clone();
    let mut latencies = Vec::new();
    for i in 0..200 {
        let started = Instant::now();
        if i % 4 == 0 {
            submit(&mut client, "demo.sleep", json!({"seconds": 0})).await;
        } else {
            let id = burners[i % burners.len()].id.clone();
            client
                .get_status(pb::GetStatusRequest {
                    namespace: String::new(),
                    id,
                    wait: None,
                })
                .await
                .unwrap();
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    eprintln!(
        "API latency with {cores} CPU threads saturated: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(max < Duration::from_secs(2), "the API stalled: max {max:?}");

    for job in &burners {
        client
            .cancel(pb::CancelRequest {
                namespace: String::new(),
                id: job.id.clone(),
            })
            .await
            .unwrap();
    }
    for job in &burners {
        assert_eq!(
            state(&server.finish(&job.id).await),
            pb::JobState::Cancelled
        );
    }
}
