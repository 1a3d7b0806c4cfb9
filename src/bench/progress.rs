//! W4: progress delivery. A `demo.progress` job reports `updates` times, 1 ms apart,
//! while 1, 100 or 10,000 watchers follow it; each report's wall time comes back in the
//! job's result, so every event a watcher receives gives a report-to-watcher delay. W4's
//! limit runs the same pace and watcher count through `Bench/Fanout`, which streams paced
//! events with no engine behind them: the RPC layer's own cost of the fan-out.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tonic::transport::Channel;

use crate::pb::json::{json_to_struct, value_to_json};
use futures_util::{Stream, StreamExt};

use crate::pb;
use crate::pb::bench::bench_client::BenchClient;
use crate::pb::bench::{FanoutEvent, FanoutRequest};
use crate::pb::job_event::Payload;
use crate::pb::job_service_client::JobServiceClient;

use super::Sizes;
use super::load::{Percentiles, err};
use super::target::Target;
use super::workloads::{Figure, figure};

fn unix_us(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// What one watcher saw: (done, received at, logged at) per progress event, in µs.
type Seen = Vec<(u64, f64, f64)>;

async fn follow(channel: Channel, id: String) -> Result<Seen, tonic::Status> {
    let mut client = JobServiceClient::new(channel);
    let events = client
        .watch_progress(pb::WatchProgressRequest {
            namespace: String::new(),
            id,
            after_seq: 0,
        })
        .await?
        .into_inner();
    collect(events).await
}

async fn subscribe(channel: Channel, request: FanoutRequest) -> Result<Seen, tonic::Status> {
    let events = BenchClient::new(channel)
        .fanout(request)
        .await?
        .into_inner()
        .map(|item| item.map(|e: FanoutEvent| e.event.unwrap_or_default()));
    collect(events).await
}

async fn collect(
    events: impl Stream<Item = Result<pb::JobEvent, tonic::Status>>,
) -> Result<Seen, tonic::Status> {
    let mut seen = Vec::new();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await.transpose()? {
        let received = unix_us(SystemTime::now());
        match event.payload {
            Some(Payload::Progress(p)) => {
                let at = event
                    .at
                    .map_or(0.0, |t| t.seconds as f64 * 1e6 + f64::from(t.nanos) / 1e3);
                seen.push((p.done, received, at));
            }
            Some(Payload::Finished(_)) => break,
            _ => {}
        }
    }
    Ok(seen)
}

fn request(updates: u32, start_delay_ms: u64) -> pb::SubmitRequest {
    let args = json!({ "updates": updates, "pause_us": 1000, "start_delay_ms": start_delay_ms, "record": true });
    pb::SubmitRequest {
        kind: "demo.progress".into(),
        args: Some(json_to_struct(args.as_object().expect("an object"))),
        ..Default::default()
    }
}

/// One W4 round with `watchers` watchers.
async fn round(target: &Target, updates: u32, watchers: usize) -> Result<Vec<Figure>, String> {
    let start_delay = 300 + watchers as u64 / 2;
    let mut client = target.jobs().await.map_err(err)?;
    let submitted = Instant::now();
    let job = client
        .submit(request(updates, start_delay))
        .await
        .map_err(err)?;
    let id = job.into_inner().job.map(|j| j.id).unwrap_or_default();
    let channels = target.connect(watchers.clamp(1, 100)).await.map_err(err)?;
    let tasks: Vec<_> = (0..watchers)
        .map(|i| tokio::spawn(follow(channels[i % channels.len()].clone(), id.clone())))
        .collect();
    wait_watchers(&mut client, watchers as u64).await?;
    if submitted.elapsed() > Duration::from_millis(start_delay) {
        return Err(format!(
            "{watchers} watchers took longer than {start_delay} ms to attach"
        ));
    }
    let mut seen = Vec::with_capacity(watchers);
    for task in tasks {
        seen.push(
            task.await
                .map_err(err)?
                .map_err(|s| s.message().to_string())?,
        );
    }
    let done = client
        .get_status(pb::GetStatusRequest {
            namespace: String::new(),
            id,
            wait: None,
        })
        .await
        .map_err(err)?
        .into_inner();
    let result = done
        .result
        .and_then(|v| value_to_json(v, "result").ok())
        .unwrap_or_default();
    let reported: Vec<f64> = result["reported_at_us"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    let (mut delivery, mut fanout) = (Vec::new(), Vec::new());
    for (done, received, logged) in seen.iter().flatten() {
        if let Some(at) = reported.get((*done as usize).wrapping_sub(1)) {
            delivery.push(received - at);
            fanout.push(received - logged);
        }
    }
    let events_per_watcher = delivery.len() as f64 / watchers as f64;
    let (d, f) = (Percentiles::of(delivery), Percentiles::of(fanout));
    let what = |s: &str| per_watchers(s, watchers);
    Ok(vec![
        Figure {
            workload: "W4",
            what: what("report to watcher p50"),
            unit: "µs",
            value: d.p50,
        },
        Figure {
            workload: "W4",
            what: what("report to watcher p99"),
            unit: "µs",
            value: d.p99,
        },
        Figure {
            workload: "W4",
            what: what("logged to watcher p99"),
            unit: "µs",
            value: f.p99,
        },
        Figure {
            workload: "W4",
            what: what("progress events seen per watcher"),
            unit: "events",
            value: events_per_watcher,
        },
        Figure {
            workload: "W4",
            what: what("cost of one report in the job, mean"),
            unit: "ns",
            value: result["ns_per_update"].as_f64().unwrap_or(f64::NAN),
        },
        Figure {
            workload: "W4",
            what: what("cost of one report in the job, p50"),
            unit: "ns",
            value: result["ns_per_update_p50"].as_f64().unwrap_or(f64::NAN),
        },
        Figure {
            workload: "W4",
            what: what("cost of one report in the job, p99"),
            unit: "ns",
            value: result["ns_per_update_p99"].as_f64().unwrap_or(f64::NAN),
        },
    ])
}

fn per_watchers(what: &str, watchers: usize) -> String {
    let plural = if watchers == 1 { "" } else { "s" };
    format!("{what}, {watchers} watcher{plural}")
}

/// W4's limit with `watchers` subscribers: the same pace through `Bench/Fanout`. Nothing
/// if the server does not serve it (a remote one started without --bench-echo).
async fn limit_round(
    target: &Target,
    updates: u32,
    watchers: usize,
) -> Result<Vec<Figure>, String> {
    let channels = target.connect(watchers.clamp(1, 100)).await.map_err(err)?;
    let request = FanoutRequest {
        room: format!("w4-{}", uuid::Uuid::now_v7()),
        subscribers: u32::try_from(watchers).map_err(err)?,
        updates,
        pause_us: 1000,
    };
    let tasks: Vec<_> = (0..watchers)
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            tokio::spawn(subscribe(channel, request.clone()))
        })
        .collect();
    let mut delivery = Vec::new();
    for task in tasks {
        match task.await.map_err(err)? {
            Ok(seen) => delivery.extend(seen.iter().map(|(_, received, at)| received - at)),
            Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(Vec::new()),
            Err(s) => return Err(s.message().to_string()),
        }
    }
    let events_per_watcher = delivery.len() as f64 / watchers as f64;
    let d = Percentiles::of(delivery);
    let what = |s: &str| per_watchers(&format!("limit (Bench/Fanout): {s}"), watchers);
    Ok(vec![
        figure("W4", what("publish to watcher p50"), "µs", d.p50),
        figure("W4", what("publish to watcher p99"), "µs", d.p99),
        figure(
            "W4",
            what("events seen per watcher"),
            "events",
            events_per_watcher,
        ),
    ])
}

/// Waits until the server counts `n` open watch streams (at most 60 s).
async fn wait_watchers(client: &mut JobServiceClient<Channel>, n: u64) -> Result<(), String> {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = client
            .get_stats(pb::GetStatsRequest {
                namespace: String::new(),
            })
            .await
            .map_err(err)?
            .into_inner();
        if stats.watchers >= n {
            return Ok(());
        }
        if Instant::now() > give_up {
            return Err(format!("only {} of {n} watchers attached", stats.watchers));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// W4 for each watcher count.
pub async fn w4(target: &Target, sizes: &Sizes) -> Result<Vec<Figure>, String> {
    let mut figures = Vec::new();
    for &watchers in &sizes.w4_watchers {
        figures.extend(round(target, sizes.w4_updates, watchers).await?);
        figures.extend(limit_round(target, sizes.w4_updates, watchers).await?);
    }
    Ok(figures)
}
