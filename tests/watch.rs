//! WatchProgress end to end: replay then live with no gap and no duplicate, resumption from
//! any seq, many watchers, stalled watchers, disconnects, and coalescing of fast progress.

mod common;

use std::time::Duration;

use common::*;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use spindle::pb::job_event::Payload;
use spindle::{JobKind, Spindle, pb};
use tonic::Code;

/// Args of the test kinds.
#[derive(Deserialize, JsonSchema)]
struct Count {
    /// How many.
    n: u64,
    /// Pause between two, in milliseconds.
    #[serde(default)]
    pause_ms: u64,
}

/// `test.logs` logs `n` lines (never coalesced) with a pause between; `test.flood` reports
/// progress `n` times in a tight CPU loop.
fn with_test_kinds(spindle: Spindle) -> Spindle {
    spindle
        .with_kind(JobKind::io(
            "test.logs",
            "logs n lines",
            |ctx, a: Count| async move {
                for i in 1..=a.n {
                    ctx.log(format!("line {i}"));
                    tokio::time::sleep(Duration::from_millis(a.pause_ms)).await;
                }
                Ok(json!(a.n))
            },
        ))
        .with_kind(JobKind::cpu(
            "test.flood",
            "reports progress n times",
            |ctx, a: Count| {
                for i in 1..=a.n {
                    ctx.report(i, a.n);
                }
                Ok(json!(a.n))
            },
        ))
}

async fn server() -> TestServer {
    TestServer::start_with(|_| {}, with_test_kinds).await
}

fn seqs(events: &[pb::JobEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn logs(events: &[pb::JobEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::Log(l)) => Some(l.message.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn log_holds_states_progress_and_terminal_in_seq_order() {
    let server = server().await;
    let job = server
        .submit("demo.sleep", json!({"seconds": 0.2, "steps": 2}))
        .await;
    assert_eq!(job.last_seq, 1);
    let events = server.watch_all(&job.id).await;
    assert_eq!(events[0].seq, 1);
    assert!(
        seqs(&events).windows(2).all(|w| w[0] < w[1]),
        "{:?}",
        seqs(&events)
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e.payload.as_ref().unwrap() {
            Payload::StateChanged(s) if s.state == pb::JobState::Queued as i32 => "queued",
            Payload::StateChanged(s) if s.state == pb::JobState::Running as i32 => "running",
            Payload::Progress(_) => "progress",
            Payload::Finished(_) => "finished",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds.first(), Some(&"queued"));
    assert_eq!(kinds[1], "running");
    assert!(kinds.contains(&"progress"));
    assert_eq!(kinds.last(), Some(&"finished"));
    let Some(Payload::Finished(finished)) = &events.last().unwrap().payload else {
        unreachable!()
    };
    assert_eq!(finished.state, pb::JobState::Succeeded as i32);
    assert_eq!(
        to_json(finished.result.as_ref().unwrap())["steps"],
        json!(2.0)
    );
    assert!(events.iter().all(|e| e.job_id == job.id && e.at.is_some()));
}

#[tokio::test]
async fn resuming_mid_run_gives_no_gap_and_no_duplicate() {
    let server = server().await;
    let job = server
        .submit("test.logs", json!({"n": 40, "pause_ms": 5}))
        .await;
    let mut client = server.client.clone();
    let mut stream = open_watch(&mut client, &job.id, 0).await;
    // Read a few events live, then "disconnect" and resume from the last seq seen.
    let mut first_part = Vec::new();
    while first_part.len() < 8 {
        first_part.push(stream.message().await.unwrap().unwrap());
    }
    drop(stream);
    let resumed = watch_from(&mut client, &job.id, first_part.last().unwrap().seq).await;
    let full = server.watch_all(&job.id).await;
    let mut joined = first_part.clone();
    joined.extend(resumed);
    assert_eq!(
        seqs(&joined),
        seqs(&full),
        "resumed stream must continue exactly"
    );
    let expected: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
    assert_eq!(logs(&joined), expected);
    assert!(is_finished(joined.last().unwrap()));
}

#[tokio::test]
async fn progress_reaches_watchers_at_once_and_the_stored_log_agrees() {
    // Store writes at most every 10 s: what a watcher sees in between went to it live.
    let server = TestServer::start_with(
        |c| c.engine.progress_interval = Duration::from_secs(10),
        with_test_kinds,
    )
    .await;
    let job = server
        .submit(
            "demo.progress",
            json!({"updates": 30, "pause_us": 5000, "start_delay_ms": 300}),
        )
        .await;
    let live = server.watch_all(&job.id).await;
    let live_progress = live
        .iter()
        .filter(|e| matches!(e.payload, Some(Payload::Progress(_))))
        .count();
    assert!(
        live_progress >= 15,
        "30 reports 5 ms apart, {live_progress} delivered live"
    );
    assert!(
        live.windows(2).all(|w| w[0].seq < w[1].seq),
        "{:?}",
        seqs(&live)
    );
    assert!(is_finished(live.last().unwrap()));

    // The stored log coalesced what watchers saw live, under the same seqs.
    let replay = server.watch_all(&job.id).await;
    assert!(replay.len() < live.len(), "{:?}", seqs(&replay));
    for event in &replay {
        let seen = live.iter().find(|e| e.seq == event.seq);
        assert_eq!(seen, Some(event), "seq {} differs", event.seq);
    }
    let Some(Payload::Progress(last)) = &replay[replay.len() - 2].payload else {
        panic!("the newest progress is stored before the end")
    };
    assert_eq!((last.done, last.total), (30, 30));

    // Resuming from a seq only watchers saw continues with what the store holds after it.
    let middle = live[live.len() / 2].seq;
    let mut client = server.client.clone();
    let resumed = watch_from(&mut client, &job.id, middle).await;
    let expected: Vec<u64> = seqs(&replay).into_iter().filter(|&s| s > middle).collect();
    assert_eq!(seqs(&resumed), expected);
}

#[tokio::test]
async fn finished_jobs_replay_and_end_and_after_seq_filters() {
    let server = server().await;
    let job = server.submit("test.logs", json!({"n": 5})).await;
    let full = server.watch_all(&job.id).await;
    assert_eq!(logs(&full).len(), 5);
    let replay = server.watch_all(&job.id).await;
    assert_eq!(full, replay, "a finished job replays the same log");
    let mut client = server.client.clone();
    let tail = watch_from(&mut client, &job.id, full[2].seq).await;
    assert_eq!(tail, full[3..].to_vec());
    let past_end = watch_from(&mut client, &job.id, full.last().unwrap().seq).await;
    assert!(past_end.is_empty(), "nothing after the terminal event");
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_refused() {
    let server = server().await;
    let refusal = |id: &'static str| {
        let mut client = server.client.clone();
        async move {
            let request = pb::WatchProgressRequest {
                namespace: String::new(),
                id: id.into(),
                after_seq: 0,
            };
            client.watch_progress(request).await.unwrap_err()
        }
    };
    let unknown = refusal("01939f3a-0000-7000-8000-000000000000").await;
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = refusal("xyz").await;
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().contains("id"),
        "{}",
        malformed.message()
    );
}

#[tokio::test]
async fn many_watchers_all_see_every_state_change_and_the_end() {
    let server = server().await;
    let job = server
        .submit("test.logs", json!({"n": 20, "pause_ms": 5}))
        .await;
    let watchers: Vec<_> = (0..50)
        .map(|_| {
            let mut client = server.client.clone();
            let id = job.id.clone();
            tokio::spawn(async move { watch_from(&mut client, &id, 0).await })
        })
        .collect();
    for watcher in watchers {
        let events = watcher.await.unwrap();
        assert_eq!(logs(&events).len(), 20);
        assert!(is_finished(events.last().unwrap()));
    }
}

#[tokio::test]
async fn a_stalled_watcher_neither_slows_the_job_nor_misses_state_changes() {
    let server = server().await;
    let n = 200_000;
    let job = server.submit("test.flood", json!({"n": n})).await;
    // Open a stream and do not read it while the job runs flat out.
    let mut stalled = open_watch(&mut server.client.clone(), &job.id, 0).await;
    // Another watcher reads to the end: the job finishes regardless.
    let done = server.finish(&job.id).await;
    assert_eq!(state(&done), pb::JobState::Succeeded);
    assert_eq!(done.progress.as_ref().unwrap().done, n);
    // The stalled watcher catches up: every state change and the end, progress coalesced.
    let mut events = Vec::new();
    while let Some(e) = stalled.message().await.unwrap() {
        events.push(e);
    }
    assert_eq!(
        state_changes(&events),
        [pb::JobState::Queued as i32, pb::JobState::Running as i32]
    );
    assert!(is_finished(events.last().unwrap()));
    // Progress reaches watchers at most 64 times per 20 ms window while the job runs
    // (what the stream's buffers take in meanwhile), never once per report.
    assert!(
        events.len() < 2_000,
        "progress must be coalesced: {n} reports gave {} events",
        events.len()
    );
    // The stored log stays small however often the job reported. (Its seqs may climb
    // faster: progress shown to watchers between two store writes takes seqs too.)
    let stored = server.watch_all(&job.id).await;
    assert!(stored.len() < 100, "the log kept {} events", stored.len());
}

#[tokio::test]
async fn disconnected_watchers_free_their_resources() {
    let server = server().await;
    let job = server
        .submit("demo.sleep", json!({"seconds": 30, "steps": 1}))
        .await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut client = server.client().await;
        let stream = open_watch(&mut client, &job.id, 0).await;
        streams.push((client, stream));
    }
    let engine = server.engine.clone();
    eventually("3 watchers are open", async || engine.watchers() == 3).await;
    drop(streams);
    eventually("every watcher is gone", async || engine.watchers() == 0).await;
    let cancelled = server
        .client
        .clone()
        .cancel(pb::CancelRequest {
            namespace: String::new(),
            id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&cancelled), pb::JobState::Cancelled);
}
