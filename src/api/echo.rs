//! `spindle.bench.v1.Bench`: the benchmark's reference RPCs, on the same tonic stack as
//! JobService, so `spindle bench` can tell the RPC layer's cost from Spindle's own work.
//! Echo decodes a SubmitRequest and answers a fixed SubmitResponse shaped like Submit's
//! (W5, W1's limit); Fanout streams paced events to many subscribers ([`super::fanout`],
//! W4's limit). Served only when asked for (`--bench-echo`).

use std::time::SystemTime;

use tonic::{Request, Response, Status};

use super::fanout::{FanoutStream, Rooms};
use crate::model::job::{Job, JobSpec, RetryPolicy};
use crate::pb;
use crate::pb::bench::bench_server::Bench;
use crate::pb::bench::{EchoRequest, EchoResponse, FanoutRequest};

/// Answers every Echo with the same response, and serves Fanout's rooms.
#[derive(Clone)]
pub struct EchoApi {
    canned: EchoResponse,
    rooms: Rooms,
}

impl Default for EchoApi {
    fn default() -> Self {
        let spec = JobSpec::new("demo.noop", serde_json::json!({}));
        let job = Job::new(spec, RetryPolicy::default(), SystemTime::now());
        EchoApi {
            canned: EchoResponse {
                submit: Some(pb::SubmitResponse {
                    job: Some(super::convert::job_to_pb(&job)),
                    existing: false,
                }),
            },
            rooms: Rooms::default(),
        }
    }
}

#[tonic::async_trait]
impl Bench for EchoApi {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        // Touch the request as Submit's conversion would start to, so it is not optimised away.
        std::hint::black_box(request.into_inner());
        Ok(Response::new(self.canned.clone()))
    }

    type FanoutStream = FanoutStream;

    async fn fanout(
        &self,
        request: Request<FanoutRequest>,
    ) -> Result<Response<Self::FanoutStream>, Status> {
        Ok(Response::new(self.rooms.join(request.into_inner())?))
    }
}
