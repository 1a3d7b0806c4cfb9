//! The client side of the workloads: many tasks over a few connections, each making calls
//! in a loop, and the latency percentiles of what they measured.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::json;
use tonic::transport::Channel;

use crate::pb;
use crate::pb::json::json_to_struct;

/// Connections to open for `concurrency` client tasks: HTTP/2 multiplexes, but one
/// connection is driven by one task on each side, so a few spread the load over cores.
pub fn connections_for(concurrency: usize) -> usize {
    concurrency.clamp(1, 8)
}

/// A no-op job as the peers' benchmarks send it (one short string argument), delayed so
/// that only the submit is measured, or not delayed so that it runs.
pub fn noop_request(delayed: bool) -> pb::SubmitRequest {
    let args = json!({ "payload": "hello-arg" });
    pb::SubmitRequest {
        kind: "demo.noop".into(),
        args: Some(json_to_struct(args.as_object().expect("an object"))),
        delay: delayed.then_some(prost_types::Duration {
            seconds: 30 * 86_400,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// Runs `total` calls from `concurrency` tasks spread over `channels`; returns the wall
/// time from the first call to the last answer. A failed call fails the whole run.
pub async fn drive<F, Fut>(
    channels: &[Channel],
    concurrency: usize,
    total: usize,
    call: F,
) -> Result<Duration, String>
where
    F: Fn(Channel) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let channel = channels[worker % channels.len()].clone();
        let call = call.clone();
        let calls = (worker..total).step_by(concurrency).count();
        tasks.push(tokio::spawn(async move {
            for _ in 0..calls {
                call(channel.clone()).await?;
            }
            Ok::<(), tonic::Status>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| e.to_string())?
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    }
    Ok(started.elapsed())
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (µs); NaN when there are none.
    pub fn of(mut samples: Vec<f64>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles {
                p50: f64::NAN,
                p90: f64::NAN,
                p95: f64::NAN,
                p99: f64::NAN,
                max: f64::NAN,
            };
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// A failure as the harness reports it: its text.
pub fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert!(Percentiles::of(Vec::new()).p99.is_nan());
    }
}
