//! W6 and W7: the API under pressure. W6 measures GetStatus latency while the CPU pool is
//! saturated, against idle; W7 the memory each queued job costs and the submit rate with a
//! deep queue, against an empty one.

use std::time::{Duration, Instant};

use serde_json::json;
use tonic::transport::Channel;

use crate::pb;
use crate::pb::job_service_client::JobServiceClient;
use crate::pb::json::json_to_struct;

use super::Sizes;
use super::load::{Percentiles, err, micros, noop_request};
use super::target::{Target, rss_bytes};
use super::workloads::{Figure, batch_rate, submit_rate};

async fn get_status_latency(
    client: &mut JobServiceClient<Channel>,
    id: &str,
    calls: usize,
) -> Result<Percentiles, String> {
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        client
            .get_status(pb::GetStatusRequest {
                namespace: String::new(),
                id: id.to_string(),
                wait: None,
            })
            .await
            .map_err(err)?;
        samples.push(micros(started.elapsed()));
    }
    Ok(Percentiles::of(samples))
}

/// W6: GetStatus p50/p99 idle, then with every CPU thread busy on demo.cpu.
pub async fn w6(target: &Target, sizes: &Sizes) -> Result<Vec<Figure>, String> {
    let mut client = target.jobs().await.map_err(err)?;
    let probe = client
        .submit(noop_request(true))
        .await
        .map_err(err)?
        .into_inner();
    let id = probe.job.map(|j| j.id).unwrap_or_default();
    get_status_latency(&mut client, &id, 100).await?; // warm up
    let idle = get_status_latency(&mut client, &id, sizes.w6_calls).await?;

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let burn = json!({ "rounds": 1_000_000_000u64 });
    let mut burners = Vec::new();
    for _ in 0..threads * 2 {
        let request = pb::SubmitRequest {
            kind: "demo.cpu".into(),
            args: Some(json_to_struct(burn.as_object().expect("an object"))),
            ..Default::default()
        };
        let job = client.submit(request).await.map_err(err)?.into_inner().job;
        burners.push(job.map(|j| j.id).unwrap_or_default());
    }
    let give_up = Instant::now() + Duration::from_secs(30);
    while client
        .get_stats(pb::GetStatsRequest {
            namespace: String::new(),
        })
        .await
        .map_err(err)?
        .into_inner()
        .running
        < threads as u64
    {
        if Instant::now() > give_up {
            return Err("the CPU pool never filled".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let busy = get_status_latency(&mut client, &id, sizes.w6_calls).await;
    for id in burners {
        let _ = client
            .cancel(pb::CancelRequest {
                namespace: String::new(),
                id,
            })
            .await;
    }
    let busy = busy?;
    let f = |what: &str, unit, value| Figure {
        workload: "W6",
        what: what.into(),
        unit,
        value,
    };
    Ok(vec![
        f("GetStatus p50, idle", "µs", idle.p50),
        f("GetStatus p99, idle", "µs", idle.p99),
        f("GetStatus p50, CPU pool saturated", "µs", busy.p50),
        f("GetStatus p99, CPU pool saturated", "µs", busy.p99),
        f("p99 saturated / p99 idle", "x", busy.p99 / idle.p99),
    ])
}

/// W7: submit rate on an empty queue, then fill the queue (SubmitBatch, jobs due in 30
/// days) and measure the memory per queued job and the submit rate at that depth.
pub async fn w7(target: &Target, sizes: &Sizes) -> Result<Vec<Figure>, String> {
    let empty = submit_rate(target, 16, sizes.w7_jobs).await?;
    let before = rss_bytes();
    let fill = batch_rate(target, sizes.w7_depth, 1000, 2).await?;
    let after = rss_bytes();
    let deep = submit_rate(target, 16, sizes.w7_jobs).await?;
    let depth = sizes.w7_depth;
    let f = |what: String, unit, value| Figure {
        workload: "W7",
        what,
        unit,
        value,
    };
    let mut figures = vec![
        f(
            format!("fill {depth} queued jobs (SubmitBatch)"),
            "jobs/s",
            fill,
        ),
        f(
            "submit, one call per job, C=16, empty queue".into(),
            "jobs/s",
            empty,
        ),
        f(
            format!("submit, one call per job, C=16, {depth} queued"),
            "jobs/s",
            deep,
        ),
        f("deep / empty submit rate".into(), "%", 100.0 * deep / empty),
    ];
    if target.engine.is_some() {
        let per_job = after.saturating_sub(before) as f64 / depth as f64;
        figures.push(f("RSS growth per queued job".into(), "bytes", per_job));
    }
    Ok(figures)
}
