//! W6 and W7: the API under pressure. W6 measures GetStatus latency from a client in
//! another process while the CPU pool is saturated, against idle, beside a bare echo's
//! under the same load; W7 the memory each queued job costs and the submit rate with a
//! deep queue, against an empty one.

use std::time::{Duration, Instant};

use serde_json::json;
use tonic::transport::Channel;

use crate::pb;
use crate::pb::job_service_client::JobServiceClient;
use crate::pb::json::json_to_struct;

use super::Sizes;
use super::load::{err, noop_request};
use super::probe::{EchoProcess, probe};
use super::target::{Target, rss_bytes};
use super::workloads::{Figure, batch_rate, submit_rate};

/// W6: GetStatus latency from a client in another process, idle and with every CPU
/// thread busy on demo.cpu; then, in the same run, the limit: a bare tonic echo in a
/// process of its own, idle and with busy loops on every core at the CPU pool's priority.
pub async fn w6(target: &Target, sizes: &Sizes) -> Result<Vec<Figure>, String> {
    let mut client = target.jobs().await.map_err(err)?;
    let probe_job = client
        .submit(noop_request(true))
        .await
        .map_err(err)?
        .into_inner();
    let id = probe_job.job.map(|j| j.id).unwrap_or_default();
    let calls = sizes.w6_calls;
    let idle = probe(&target.url, Some(&id), calls).await?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let burners = saturate(&mut client, threads).await?;
    let busy = probe(&target.url, Some(&id), calls).await;
    for id in burners {
        let cancel = pb::CancelRequest {
            id,
            ..Default::default()
        };
        let _ = client.cancel(cancel).await;
    }
    let busy = busy?;

    let echo = EchoProcess::start(0).await?;
    let echo_idle = probe(&echo.url, None, calls).await?;
    drop(echo);
    // The load inside the echo's process, as Spindle's CPU pool is inside Spindle's.
    let echo = EchoProcess::start(threads).await?;
    let echo_busy = probe(&echo.url, None, calls).await?;
    drop(echo);

    let mut figures = Vec::new();
    let mut add = |what: String, unit, value| {
        figures.push(Figure {
            workload: "W6",
            what,
            unit,
            value,
        })
    };
    let rows = [
        ("GetStatus", "idle", idle),
        ("GetStatus", "CPU pool saturated", busy),
        ("limit (bare echo)", "idle", echo_idle),
        ("limit (bare echo)", "cores busy", echo_busy),
    ];
    for (call, load, m) in rows {
        for (p, value) in [("p50", m.p50), ("p95", m.p95), ("p99", m.p99)] {
            add(format!("{call} {p}, {load}"), "µs", value);
        }
    }
    add(
        "GetStatus p99 saturated / idle".into(),
        "x",
        busy.p99 / idle.p99,
    );
    let echo_ratio = echo_busy.p99 / echo_idle.p99;
    add("limit (bare echo): p99 busy / idle".into(), "x", echo_ratio);
    Ok(figures)
}

/// Submits 2 endless demo.cpu jobs per CPU thread and waits until every thread runs one;
/// returns their ids.
async fn saturate(
    client: &mut JobServiceClient<Channel>,
    threads: usize,
) -> Result<Vec<String>, String> {
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
    loop {
        let stats = client.get_stats(pb::GetStatsRequest::default()).await;
        if stats.map_err(err)?.into_inner().running >= threads as u64 {
            return Ok(burners);
        }
        if Instant::now() > give_up {
            return Err("the CPU pool never filled".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
