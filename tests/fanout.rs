//! `spindle.bench.v1.Bench/Fanout`, W4's reference: a full room streams every event, numbered
//! and timestamped, to each subscriber and ends; bad requests are refused field by field.

mod common;

use std::time::{Duration, SystemTime};

use common::TestServer;
use spindle::pb;
use spindle::pb::bench::bench_client::BenchClient;
use spindle::pb::job_event::Payload;
use tonic::Code;
use tonic_types::StatusExt;

fn room(name: &str, subscribers: u32, updates: u32) -> pb::bench::FanoutRequest {
    pb::bench::FanoutRequest {
        room: name.into(),
        subscribers,
        updates,
        pause_us: 200,
    }
}

async fn bench_client(server: &TestServer) -> BenchClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    BenchClient::new(channel)
}

#[tokio::test]
async fn a_full_room_streams_every_event_to_each_subscriber_then_ends() {
    let server = TestServer::start_with(|c| c.bench_echo = true, |s| s).await;
    let started = SystemTime::now();
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut client = bench_client(&server).await;
        subscribers.push(tokio::spawn(async move {
            let mut events = client.fanout(room("r", 3, 20)).await?.into_inner();
            let mut seen = Vec::new();
            while let Some(event) = events.message().await? {
                seen.push(event.event.expect("an event"));
            }
            Ok::<_, tonic::Status>(seen)
        }));
    }
    for subscriber in subscribers {
        let seen = tokio::time::timeout(Duration::from_secs(30), subscriber)
            .await
            .expect("the stream ends")
            .expect("join")
            .expect("stream");
        // A subscriber that falls behind gets the newest event, never an old one again.
        let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
        assert_eq!(seqs.last(), Some(&20), "the last event arrives");
        for event in &seen {
            let Some(Payload::Progress(p)) = &event.payload else {
                panic!("a progress event: {event:?}");
            };
            assert_eq!((p.done, p.total), (event.seq, 20));
            let at: SystemTime = event.at.expect("at").try_into().expect("a time");
            assert!(at >= started, "published after the test began");
        }
    }
}

#[tokio::test]
async fn bad_fanout_requests_name_the_field() {
    let server = TestServer::start_with(|c| c.bench_echo = true, |s| s).await;
    let mut client = bench_client(&server).await;
    let cases = [
        (room("", 1, 1), "room"),
        (room("a", 0, 1), "subscribers"),
        (room("a", 100_001, 1), "subscribers"),
        (room("a", 1, 0), "updates"),
        (
            pb::bench::FanoutRequest {
                pause_us: 1_000_001,
                ..room("a", 1, 1)
            },
            "pause_us",
        ),
    ];
    for (request, field) in cases {
        let status = client.fanout(request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().starts_with(field), "{}", status.message());
        let violations = status.get_details_bad_request().expect("BadRequest");
        assert_eq!(violations.field_violations[0].field, field);
    }
    // A room waits for the count its first subscriber gave; another count is refused.
    // (The first call's response headers come back once it has joined.)
    let mut first = bench_client(&server).await;
    let _joined = first.fanout(room("b", 2, 1)).await.expect("joined");
    let status = client
        .fanout(room("b", 3, 1))
        .await
        .expect_err("another count");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("waits for 2"),
        "{}",
        status.message()
    );
}
