//! `spindle.bench.v1.Bench/Fanout`: W4's reference. Subscribers that name the same room share one
//! publisher, which sends numbered progress events at a fixed pace through a tokio `watch`
//! channel once they have all joined; each subscriber streams the newest event whenever it
//! changes, as WatchProgress does. What is left is the RPC layer's cost of fanning events
//! out (encoding, HTTP/2, one write per stream), so `spindle bench` can tell it from the
//! engine's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::stream;
use tokio::sync::watch;
use tonic::Status;

use super::Error;
use crate::model::violation::FieldViolation;
use crate::pb;
use crate::pb::bench::{FanoutEvent, FanoutRequest};
use crate::pb::job_event::Payload;
use futures_util::Stream;
use std::pin::Pin;

/// The stream Fanout answers with.
pub type FanoutStream = Pin<Box<dyn Stream<Item = Result<FanoutEvent, Status>> + Send>>;

/// How long a full room waits before publishing, so every subscriber's stream is open.
const START_DELAY: Duration = Duration::from_millis(100);
const MAX_SUBSCRIBERS: u32 = 100_000;
const MAX_UPDATES: u32 = 100_000;
const MAX_PAUSE_US: u32 = 1_000_000;

/// The newest published event: its number and when it was sent.
#[derive(Debug, Clone, Copy)]
struct Published {
    done: u32,
    at: SystemTime,
}

/// A room still waiting for subscribers.
struct Room {
    latest: watch::Sender<Published>,
    expected: u32,
    joined: u32,
}

/// The rooms still waiting for subscribers; a full room leaves the map to its publisher.
#[derive(Clone, Default)]
pub struct Rooms {
    waiting: Arc<Mutex<HashMap<String, Room>>>,
}

impl Rooms {
    /// Joins `req.room` and returns the subscriber's stream; the call that fills the room
    /// starts its publisher.
    pub fn join(&self, req: FanoutRequest) -> Result<FanoutStream, Error> {
        check(&req)?;
        let total = req.updates;
        let latest = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let room = waiting.entry(req.room.clone()).or_insert_with(|| Room {
                latest: watch::Sender::new(Published {
                    done: 0,
                    at: SystemTime::UNIX_EPOCH,
                }),
                expected: req.subscribers,
                joined: 0,
            });
            if room.expected != req.subscribers {
                let expected = room.expected;
                let why = format!("room {:?} waits for {expected} subscribers", req.room);
                return Err(FieldViolation::new("subscribers", why).into());
            }
            room.joined += 1;
            let latest = room.latest.subscribe();
            if room.joined == room.expected
                && let Some(full) = waiting.remove(&req.room)
            {
                let pause = Duration::from_micros(u64::from(req.pause_us));
                tokio::spawn(publish(full.latest, total, pause));
            }
            latest
        };
        Ok(Box::pin(stream::unfold(
            (latest, 0),
            move |(mut latest, last)| async move {
                loop {
                    // The publisher drops its sender after the last event: the stream ends.
                    latest.changed().await.ok()?;
                    let newest = *latest.borrow_and_update();
                    if newest.done > last {
                        return Some((Ok(event(newest, total)), (latest, newest.done)));
                    }
                }
            },
        )))
    }
}

fn check(req: &FanoutRequest) -> Result<(), Error> {
    let bad = if req.room.is_empty() {
        Some(FieldViolation::new("room", "must not be empty"))
    } else if !(1..=MAX_SUBSCRIBERS).contains(&req.subscribers) {
        Some(FieldViolation::new(
            "subscribers",
            format!("must be 1 to {MAX_SUBSCRIBERS}"),
        ))
    } else if !(1..=MAX_UPDATES).contains(&req.updates) {
        Some(FieldViolation::new(
            "updates",
            format!("must be 1 to {MAX_UPDATES}"),
        ))
    } else if req.pause_us > MAX_PAUSE_US {
        Some(FieldViolation::new(
            "pause_us",
            format!("must be at most {MAX_PAUSE_US}"),
        ))
    } else {
        None
    };
    bad.map_or(Ok(()), |v| Err(v.into()))
}

/// Publishes events 1 to `updates`, `pause` apart, as the W4 job reports progress.
async fn publish(latest: watch::Sender<Published>, updates: u32, pause: Duration) {
    tokio::time::sleep(START_DELAY).await;
    for done in 1..=updates {
        latest.send_replace(Published {
            done,
            at: SystemTime::now(),
        });
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

fn event(published: Published, total: u32) -> FanoutEvent {
    let event = pb::JobEvent {
        job_id: String::new(),
        seq: u64::from(published.done),
        at: Some(published.at.into()),
        payload: Some(Payload::Progress(pb::Progress {
            fraction: f64::from(published.done) / f64::from(total),
            done: u64::from(published.done),
            total: u64::from(total),
            message: String::new(),
        })),
    };
    FanoutEvent { event: Some(event) }
}
