//! `spindle.v1.Bench/Echo`: the benchmark's reference RPC. It decodes a SubmitRequest and
//! answers a fixed SubmitResponse shaped like Submit's, on the same tonic stack, so
//! `spindle bench` can tell the RPC layer's cost from Spindle's own work (W5). Served only
//! when asked for (`--bench-echo`).

use std::time::SystemTime;

use tonic::{Request, Response, Status};

use crate::engine::job::{Job, JobSpec, RetryPolicy};
use crate::pb;
use crate::pb::bench_server::Bench;

/// Answers every Echo with the same response.
#[derive(Debug, Clone)]
pub struct EchoApi {
    canned: pb::SubmitResponse,
}

impl Default for EchoApi {
    fn default() -> Self {
        let spec = JobSpec::new("demo.noop", serde_json::json!({}));
        let job = Job::new(spec, RetryPolicy::default(), SystemTime::now());
        EchoApi {
            canned: pb::SubmitResponse {
                job: Some(super::convert::job_to_pb(&job)),
                existing: false,
            },
        }
    }
}

#[tonic::async_trait]
impl Bench for EchoApi {
    async fn echo(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        // Touch the request as Submit's conversion would start to, so it is not optimised away.
        std::hint::black_box(request.into_inner());
        Ok(Response::new(self.canned.clone()))
    }
}
