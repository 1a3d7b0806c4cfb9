//! The workloads W1-W7 (see BENCHMARKS.md for what each means and the peers' figures).
//! Each takes a fresh target and returns its figures for one run.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::pb;
use crate::pb::bench::EchoRequest;
use crate::pb::bench::bench_client::BenchClient;
use crate::pb::job_service_client::JobServiceClient;

use super::Sizes;
use super::load::{Percentiles, connections_for, drive, err, micros, noop_request};
use super::target::Target;

/// One figure of one run.
#[derive(Debug, Clone)]
pub struct Figure {
    pub workload: &'static str,
    pub what: String,
    pub unit: &'static str,
    pub value: f64,
}

pub(super) fn figure(
    workload: &'static str,
    what: impl Into<String>,
    unit: &'static str,
    value: f64,
) -> Figure {
    Figure {
        workload,
        what: what.into(),
        unit,
        value,
    }
}

type Outcome = Result<Vec<Figure>, String>;

/// Calls per second for `calls` calls of `call` from `concurrency` tasks.
async fn call_rate<F, Fut>(
    target: &Target,
    concurrency: usize,
    calls: usize,
    call: F,
) -> Result<f64, String>
where
    F: Fn(Channel) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let channels = target
        .connect(connections_for(concurrency))
        .await
        .map_err(err)?;
    let took = drive(&channels, concurrency, calls, call).await?;
    Ok(calls as f64 / took.as_secs_f64())
}

/// Submit throughput with one RPC per job at `concurrency` (jobs delayed: submit only).
pub(super) async fn submit_rate(
    target: &Target,
    concurrency: usize,
    jobs: usize,
) -> Result<f64, String> {
    let request = noop_request(true);
    call_rate(target, concurrency, jobs, move |channel| {
        let request = request.clone();
        async move {
            JobServiceClient::new(channel)
                .submit(request)
                .await
                .map(drop)
        }
    })
    .await
}

/// Echo throughput at `concurrency`: the same client and stack with no work behind it.
async fn echo_rate(target: &Target, concurrency: usize, calls: usize) -> Result<f64, String> {
    let request = EchoRequest {
        submit: Some(noop_request(true)),
    };
    call_rate(target, concurrency, calls, move |channel| {
        let request = request.clone();
        async move { BenchClient::new(channel).echo(request).await.map(drop) }
    })
    .await
}

/// Batch throughput: `jobs` jobs in SubmitBatch calls of `per_call`, `concurrency` calls
/// in flight.
pub(super) async fn batch_rate(
    target: &Target,
    jobs: usize,
    per_call: usize,
    concurrency: usize,
) -> Result<f64, String> {
    let batch = pb::SubmitBatchRequest {
        namespace: String::new(),
        jobs: vec![noop_request(true); per_call],
    };
    let calls = jobs.div_ceil(per_call);
    let rate = call_rate(target, concurrency, calls, move |channel| {
        let batch = batch.clone();
        async move {
            let answer = JobServiceClient::new(channel)
                .submit_batch(batch)
                .await?
                .into_inner();
            let refused = answer
                .results
                .iter()
                .filter(|r| matches!(r.outcome, Some(pb::submit_batch_result::Outcome::Error(_))));
            match refused.count() {
                0 => Ok(()),
                n => Err(tonic::Status::internal(format!(
                    "{n} jobs of a batch refused"
                ))),
            }
        }
    })
    .await?;
    Ok(rate * per_call as f64)
}

/// W1 and W5: submit throughput per concurrency, echo throughput, and their ratio.
pub async fn w1_w5(target: &Target, sizes: &Sizes) -> Outcome {
    let mut figures = Vec::new();
    for &c in &sizes.concurrency {
        let submit = submit_rate(target, c, sizes.w1_jobs).await?;
        figures.push(figure(
            "W1",
            format!("submit, one call per job, C={c}"),
            "jobs/s",
            submit,
        ));
        match echo_rate(target, c, sizes.w1_jobs).await {
            Ok(echo) => {
                figures.push(figure(
                    "W5",
                    format!("echo (no work), C={c}"),
                    "calls/s",
                    echo,
                ));
                figures.push(figure(
                    "W5",
                    format!("W1 / W5, C={c}"),
                    "%",
                    100.0 * submit / echo,
                ));
            }
            Err(e) if e.contains("Unimplemented") => {}
            Err(e) => return Err(e),
        }
    }
    let batch = batch_rate(target, sizes.batch_jobs, 1000, 2).await?;
    figures.push(figure(
        "W1",
        "SubmitBatch, 1,000 jobs per call, 2 in flight",
        "jobs/s",
        batch,
    ));
    Ok(figures)
}

/// W2: first submit to last completion of N no-op jobs, one call per job and batched.
pub async fn w2(target: &Target, sizes: &Sizes) -> Outcome {
    let mut client = target.jobs().await.map_err(err)?;
    let mut figures = Vec::new();
    for batched in [false, true] {
        let before = stats(&mut client).await?.succeeded_total;
        // Connect before the clock starts: W2 times the jobs, not the handshakes.
        let channels = target.connect(8).await.map_err(err)?;
        let started = Instant::now();
        let jobs = sizes.w2_jobs;
        if batched {
            let batch = pb::SubmitBatchRequest {
                namespace: String::new(),
                jobs: vec![noop_request(false); 1000],
            };
            drive(&channels, 2, jobs.div_ceil(1000), move |channel| {
                let batch = batch.clone();
                async move {
                    JobServiceClient::new(channel).submit_batch(batch).await?;
                    Ok(())
                }
            })
            .await?;
        } else {
            let request = noop_request(false);
            drive(&channels, 64, jobs, move |channel| {
                let request = request.clone();
                async move {
                    JobServiceClient::new(channel).submit(request).await?;
                    Ok(())
                }
            })
            .await?;
        }
        let submitted = (if batched {
            jobs.div_ceil(1000) * 1000
        } else {
            jobs
        }) as u64;
        wait_succeeded(&mut client, before + submitted).await?;
        let rate = submitted as f64 / started.elapsed().as_secs_f64();
        let what = if batched {
            "end to end, SubmitBatch of 1,000"
        } else {
            "end to end, one call per job, C=64"
        };
        figures.push(figure("W2", what, "jobs/s", rate));
    }
    Ok(figures)
}

pub(super) async fn stats(
    client: &mut JobServiceClient<tonic::transport::Channel>,
) -> Result<pb::Stats, String> {
    Ok(client
        .get_stats(pb::GetStatsRequest {
            namespace: String::new(),
        })
        .await
        .map_err(err)?
        .into_inner())
}

/// Polls GetStats every 2 ms until `target` jobs have succeeded (at most 10 minutes).
pub(super) async fn wait_succeeded(
    client: &mut JobServiceClient<tonic::transport::Channel>,
    target: u64,
) -> Result<(), String> {
    let give_up = Instant::now() + Duration::from_secs(600);
    loop {
        let now = stats(client).await?;
        if now.succeeded_total >= target {
            return Ok(());
        }
        if now.failed_total + now.cancelled_total > 0 || Instant::now() > give_up {
            return Err(format!("jobs did not all succeed: {now:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// W3: one job at a time, submit then watch to its terminal event.
pub async fn w3(target: &Target, sizes: &Sizes) -> Outcome {
    let mut client = target.jobs().await.map_err(err)?;
    let mut samples = Vec::with_capacity(sizes.w3_jobs);
    for i in 0..sizes.w3_jobs + 20 {
        let started = Instant::now();
        let job = client
            .submit(noop_request(false))
            .await
            .map_err(err)?
            .into_inner()
            .job;
        let id = job.map(|j| j.id).unwrap_or_default();
        let mut events = client
            .watch_progress(pb::WatchProgressRequest {
                namespace: String::new(),
                id,
                after_seq: 0,
            })
            .await
            .map_err(err)?
            .into_inner();
        while let Some(event) = events.message().await.map_err(err)? {
            if let Some(pb::job_event::Payload::Finished(end)) = event.payload {
                if end.state() != pb::JobState::Succeeded {
                    return Err(format!("a W3 job ended {:?}", end.state()));
                }
                break;
            }
        }
        if i >= 20 {
            samples.push(micros(started.elapsed())); // the first 20 warm up
        }
    }
    let p = Percentiles::of(samples);
    Ok(vec![
        figure("W3", "round trip p50", "µs", p.p50),
        figure("W3", "round trip p90", "µs", p.p90),
        figure("W3", "round trip p99", "µs", p.p99),
        figure("W3", "round trip max", "µs", p.max),
    ])
}
