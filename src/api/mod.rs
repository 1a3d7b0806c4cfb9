//! The gRPC surface: `spindle.v1.JobService` over the engine. Each method converts its
//! request to domain values ([`convert`]), calls the engine, and maps errors once
//! ([`status`]). No scheduling logic lives here.

pub mod convert;
pub mod echo;
pub mod fanout;
pub mod reply;
pub mod status;

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};

use crate::engine::{Engine, EngineError};
use crate::model::violation::FieldViolation;
use crate::pb;
use crate::pb::job_service_server::JobService;

/// The most jobs one SubmitBatch may carry.
pub const MAX_BATCH: usize = 1000;

/// The JobService implementation.
#[derive(Debug, Clone)]
pub struct JobApi {
    engine: Engine,
    /// The largest args a Submit may carry, as encoded in the request.
    max_args_bytes: usize,
}

impl JobApi {
    pub fn new(engine: Engine) -> Self {
        JobApi {
            engine,
            max_args_bytes: convert::DEFAULT_MAX_ARGS_BYTES,
        }
    }

    /// The engine behind the API.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Sets the largest args a Submit may carry.
    pub fn with_max_args_bytes(mut self, bytes: usize) -> Self {
        self.max_args_bytes = bytes;
        self
    }
}

/// The stream WatchProgress answers with.
pub type JobEventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let spec = convert::submit_spec(request.into_inner(), self.max_args_bytes)
            .map_err(|v| Status::from(EngineError::InvalidRequest(v)))?;
        let submitted = self.engine.submit(spec).await?;
        let job = &submitted.job;
        tracing::debug!(id = %job.id, kind = %job.spec.kind, existing = submitted.existing, "submitted");
        Ok(Response::new(pb::SubmitResponse {
            job: Some(convert::job_to_pb(job)),
            existing: submitted.existing,
        }))
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let requests = request.into_inner().jobs;
        if requests.is_empty() || requests.len() > MAX_BATCH {
            return Err(status::invalid_field(FieldViolation {
                field: "jobs".into(),
                description: format!("must hold 1 to {MAX_BATCH} jobs, not {}", requests.len()),
            }));
        }
        // Requests that do not even parse are answered here; the rest go to the engine.
        let mut results: Vec<Option<pb::SubmitBatchResult>> = Vec::with_capacity(requests.len());
        let mut specs = Vec::with_capacity(requests.len());
        for request in requests {
            match convert::submit_spec(request, self.max_args_bytes) {
                Ok(spec) => {
                    specs.push(spec);
                    results.push(None);
                }
                Err(violations) => {
                    let error = EngineError::InvalidRequest(violations);
                    results.push(Some(status::batch_error(error)));
                }
            }
        }
        let mut submitted = self.engine.submit_many(specs).await?.into_iter();
        let results = results
            .into_iter()
            .map(|done| done.or_else(|| submitted.next().map(status::batch_result)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Status::internal("the engine answered fewer jobs than it was given"))?;
        tracing::debug!(jobs = results.len(), "batch submitted");
        Ok(Response::new(pb::SubmitBatchResponse { results }))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let request = request.into_inner();
        let id = convert::job_id("id", &request.id).map_err(status::invalid_field)?;
        let job = match request.wait {
            None => self.engine.get(id).await?,
            Some(wait) => {
                let wait = convert::wait(wait).map_err(status::invalid_field)?;
                self.engine.get_wait(id, wait).await?
            }
        };
        Ok(Response::new(convert::job_to_pb(&job)))
    }

    type WatchProgressStream = JobEventStream;

    async fn watch_progress(
        &self,
        request: Request<pb::WatchProgressRequest>,
    ) -> Result<Response<Self::WatchProgressStream>, Status> {
        let request = request.into_inner();
        let id = convert::job_id("id", &request.id).map_err(status::invalid_field)?;
        let events = self.engine.watch(id, request.after_seq).await?;
        let events = events.map(move |event| match event {
            Ok(event) => Ok(convert::event_to_pb(id, &event)),
            Err(e) => Err(Status::from(e)),
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let id = convert::job_id("id", &request.into_inner().id).map_err(status::invalid_field)?;
        let job = self.engine.cancel(id).await?;
        Ok(Response::new(convert::job_to_pb(&job)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let query = convert::list_query(request.into_inner()).map_err(|v| {
            status::bad_request(Code::InvalidArgument, "invalid ListJobsRequest", &v)
        })?;
        let (jobs, next) = self.engine.list(query).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(convert::job_to_pb).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        Ok(Response::new(convert::stats_to_pb(&self.engine.stats())))
    }

    async fn list_kinds(
        &self,
        _request: Request<pb::ListKindsRequest>,
    ) -> Result<Response<pb::ListKindsResponse>, Status> {
        let kinds = self
            .engine
            .registry()
            .kinds()
            .map(|k| convert::kind_to_pb(k))
            .collect();
        Ok(Response::new(pb::ListKindsResponse { kinds }))
    }
}
