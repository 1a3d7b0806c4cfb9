//! Schedules across kill -9 with the real binary: a schedule firing every second keeps
//! running through three SIGKILLs and restarts on the same data directory. No slot fires
//! twice; every slot from the first fire to the last is accounted for exactly once (fired,
//! or counted missed by the catch-up rule); each outage ends in one coalesced fire of a
//! slot inside it, as the default 1 h catch-up window says.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use common::process::Process;
use spindle::pb;
use spindle::pb::schedule_service_client::ScheduleServiceClient;

const KILLS: usize = 3;

async fn schedules(server: &Process) -> ScheduleServiceClient<tonic::transport::Channel> {
    ScheduleServiceClient::connect(server.url()).await.unwrap()
}

async fn schedule(server: &Process) -> pb::Schedule {
    let request = pb::GetScheduleRequest {
        id: "tick".into(),
        ..Default::default()
    };
    let mut client = schedules(server).await;
    client.get_schedule(request).await.unwrap().into_inner()
}

/// Waits until the schedule has fired `runs` times in all.
async fn fired(server: &Process, runs: u64) {
    for _ in 0..200 {
        if schedule(server).await.runs >= runs {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the schedule did not reach {runs} runs");
}

async fn jobs(server: &Process) -> Vec<pb::Job> {
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::job_service_client::JobServiceClient::new(channel);
    let request = pb::ListJobsRequest {
        schedule_id: "tick".into(),
        page_size: 1000,
        ..Default::default()
    };
    client.list_jobs(request).await.unwrap().into_inner().jobs
}

fn slot(job: &pb::Job) -> SystemTime {
    SystemTime::try_from(job.schedule_slot.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_second_schedule_survives_three_kill_9_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["serve"];
    let mut server = Process::start(dir.path(), &args);
    let create = pb::CreateScheduleRequest {
        id: "tick".into(),
        spec: Some(pb::ScheduleSpec {
            repeat: Some(pb::schedule_spec::Repeat::Interval(pb::Interval {
                every: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                offset: None,
            })),
            ..Default::default()
        }),
        template: Some(common::request("demo.noop", serde_json::json!({}))),
        ..Default::default()
    };
    schedules(&server)
        .await
        .create_schedule(create)
        .await
        .unwrap();
    let mut outages = Vec::new();
    for _ in 0..KILLS {
        let runs = schedule(&server).await.runs;
        fired(&server, runs + 2).await;
        let killed_at = SystemTime::now();
        server.kill();
        // Down long enough for slots to pass.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        server = Process::start(dir.path(), &args);
        outages.push((killed_at, SystemTime::now()));
    }
    let runs = schedule(&server).await.runs;
    fired(&server, runs + 2).await;

    let state = schedule(&server).await;
    let jobs = jobs(&server).await;
    let slots: Vec<SystemTime> = jobs.iter().map(slot).collect();
    let unique: HashSet<_> = slots.iter().collect();
    assert_eq!(unique.len(), slots.len(), "a slot fired twice");
    let keys: HashSet<_> = jobs.iter().map(|j| j.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), jobs.len());
    assert_eq!(state.runs, jobs.len() as u64, "every fire recorded once");

    // Every slot from the first fire to the last: fired or counted missed, once.
    let (first, last) = (slots.iter().min().unwrap(), slots.iter().max().unwrap());
    let span = last.duration_since(*first).unwrap().as_secs() + 1;
    assert_eq!(
        span,
        state.runs + state.missed + state.skipped,
        "slots {span}: {} fired, {} missed, {} skipped",
        state.runs,
        state.missed,
        state.skipped
    );
    assert!(
        state.missed >= KILLS as u64,
        "each outage missed slots: {}",
        state.missed
    );
    // Each outage ends with one coalesced fire of a slot inside it.
    for (killed, restarted) in &outages {
        let inside = slots
            .iter()
            .filter(|s| *s > killed && *s <= restarted)
            .count();
        assert!(
            inside >= 1,
            "no coalesced fire for the outage from {killed:?}"
        );
    }
    eprintln!(
        "{} slots: {} fired, {} missed during {} outages, none twice",
        span, state.runs, state.missed, KILLS
    );
}
