//! The gRPC surface: `spindle.v1.JobService` over the engine. Each method converts its
//! request to domain values ([`convert`]), calls the engine, and answers with [`Error`],
//! which becomes a `tonic::Status` in one place ([`error`]). No scheduling logic lives
//! here.

pub mod caller;
pub mod convert;
pub mod echo;
pub mod error;
pub mod fanout;
pub mod reply;
pub mod schedule;
pub mod worker;

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub use error::Error;

use caller::{Caller, WatchSlot};

use crate::engine::Engine;
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

    /// The largest args a Submit may carry.
    pub fn max_args_bytes(&self) -> usize {
        self.max_args_bytes
    }

    /// Sets the largest args a Submit may carry.
    pub fn with_max_args_bytes(mut self, bytes: usize) -> Self {
        self.max_args_bytes = bytes;
        self
    }
}

/// A request's message, its namespace field resolved and checked for the caller
/// ([`Caller::admit`]), and the caller.
pub fn admit<T>(
    request: Request<T>,
    namespace: impl FnOnce(&mut T) -> &mut String,
) -> Result<(T, Caller), Error> {
    let caller = Caller::of(&request);
    let mut message = request.into_inner();
    caller.admit(namespace(&mut message))?;
    Ok((message, caller))
}

/// The stream WatchProgress answers with.
pub type JobEventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

/// Each RPC's work, answering with the API's own [`Error`]; the trait impl below only
/// unwraps requests and turns errors into statuses.
impl JobApi {
    async fn submit_one(
        &self,
        request: pb::SubmitRequest,
        caller: &Caller,
    ) -> Result<pb::SubmitResponse, Error> {
        let spec = convert::submit_spec(request, caller.max_args_bytes(self.max_args_bytes))?;
        let submitted = caller.noted(self.engine.submit(spec).await)?;
        let job = &submitted.job;
        tracing::debug!(id = %job.id, kind = %job.spec.kind, existing = submitted.existing, "submitted");
        Ok(pb::SubmitResponse {
            job: Some(convert::job_shown(&self.engine, job)),
            existing: submitted.existing,
        })
    }

    async fn submit_many(
        &self,
        batch: pb::SubmitBatchRequest,
        caller: &Caller,
    ) -> Result<pb::SubmitBatchResponse, Error> {
        let max_args_bytes = caller.max_args_bytes(self.max_args_bytes);
        let namespace = convert::namespace(batch.namespace)?;
        let requests = batch.jobs;
        if requests.is_empty() || requests.len() > MAX_BATCH {
            let count = requests.len();
            let why = format!("must hold 1 to {MAX_BATCH} jobs, not {count}");
            return Err(FieldViolation::new("jobs", why).into());
        }
        // Requests that do not even parse are answered here; the rest go to the engine.
        let mut results: Vec<Option<pb::SubmitBatchResult>> = Vec::with_capacity(requests.len());
        let mut specs = Vec::with_capacity(requests.len());
        for mut request in requests {
            if request.namespace.is_empty() {
                request.namespace.clone_from(&namespace);
            } else if request.namespace != namespace {
                let why = format!("differs from the batch's namespace {namespace:?}");
                let refusal = Error::from(FieldViolation::new("namespace", why));
                results.push(Some(error::batch_error(refusal)));
                continue;
            }
            match convert::submit_spec(request, max_args_bytes) {
                Ok(spec) => {
                    specs.push(spec);
                    results.push(None);
                }
                Err(violations) => results.push(Some(error::batch_error(violations.into()))),
            }
        }
        let submitted = self.engine.submit_many(specs).await?;
        let mut submitted = submitted.into_iter().map(|one| caller.noted(one));
        let results = results
            .into_iter()
            .map(|done| {
                done.or_else(|| {
                    let outcome = submitted.next()?.map_err(Error::from);
                    Some(error::batch_result(outcome))
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Internal("the engine answered fewer jobs than given".into()))?;
        tracing::debug!(jobs = results.len(), "batch submitted");
        Ok(pb::SubmitBatchResponse { results })
    }

    async fn status(&self, request: pb::GetStatusRequest) -> Result<pb::Job, Error> {
        let id = convert::job_id("id", &request.id)?;
        let namespace = convert::namespace(request.namespace)?;
        let job = match request.wait {
            None => self.engine.get(&namespace, id).await?,
            Some(wait) => {
                (self.engine)
                    .get_wait(&namespace, id, convert::wait(wait)?)
                    .await?
            }
        };
        Ok(convert::job_shown(&self.engine, &job))
    }

    async fn watch(
        &self,
        request: pb::WatchProgressRequest,
        slot: WatchSlot,
    ) -> Result<JobEventStream, Error> {
        let id = convert::job_id("id", &request.id)?;
        let namespace = convert::namespace(request.namespace)?;
        let events = self.engine.watch(&namespace, id, request.after_seq).await?;
        // The stream holds the caller's watch slot until it ends or is dropped.
        let events = events.map(move |event| {
            let _held = &slot;
            match event {
                Ok(event) => Ok(convert::event_to_pb(id, &event)),
                Err(e) => Err(Status::from(Error::from(e))),
            }
        });
        Ok(Box::pin(events))
    }

    async fn cancel_job(&self, request: pb::CancelRequest) -> Result<pb::Job, Error> {
        let id = convert::job_id("id", &request.id)?;
        let namespace = convert::namespace(request.namespace)?;
        let job = self.engine.cancel(&namespace, id).await?;
        Ok(convert::job_shown(&self.engine, &job))
    }

    async fn list(&self, request: pb::ListJobsRequest) -> Result<pb::ListJobsResponse, Error> {
        let query = convert::list_query(request)?;
        let (jobs, next) = self.engine.list(query).await?;
        Ok(pb::ListJobsResponse {
            jobs: jobs
                .iter()
                .map(|job| convert::job_shown(&self.engine, job))
                .collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        })
    }
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let (request, caller) = admit(request, |r| &mut r.namespace)?;
        Ok(Response::new(self.submit_one(request, &caller).await?))
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let (request, caller) = admit(request, |r| &mut r.namespace)?;
        Ok(Response::new(self.submit_many(request, &caller).await?))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Ok(Response::new(
            self.status(admit(request, |r| &mut r.namespace)?.0).await?,
        ))
    }

    type WatchProgressStream = JobEventStream;

    async fn watch_progress(
        &self,
        request: Request<pb::WatchProgressRequest>,
    ) -> Result<Response<Self::WatchProgressStream>, Status> {
        Ok(Response::new({
            let (request, caller) = admit(request, |r| &mut r.namespace)?;
            let slot = caller.watch_slot()?;
            self.watch(request, slot).await?
        }))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Ok(Response::new(
            self.cancel_job(admit(request, |r| &mut r.namespace)?.0)
                .await?,
        ))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Ok(Response::new(
            self.list(admit(request, |r| &mut r.namespace)?.0).await?,
        ))
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        let namespace = convert::namespace(admit(request, |r| &mut r.namespace)?.0.namespace)
            .map_err(Error::from)?;
        Ok(Response::new(convert::stats_to_pb(
            &self.engine.stats(&namespace),
        )))
    }

    async fn list_kinds(
        &self,
        request: Request<pb::ListKindsRequest>,
    ) -> Result<Response<pb::ListKindsResponse>, Status> {
        let namespace = convert::namespace(admit(request, |r| &mut r.namespace)?.0.namespace)
            .map_err(Error::from)?;
        let builtin = self.engine.registry().kinds().map(|k| reply::kind_to_pb(k));
        let remote = (self.engine.remote_kinds(&namespace).into_iter())
            .map(|(kind, workers)| reply::remote_kind_to_pb(&kind, workers));
        let mut kinds: Vec<pb::JobKind> = builtin.chain(remote).collect();
        kinds.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListKindsResponse { kinds }))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let namespace = convert::namespace(admit(request, |r| &mut r.namespace)?.0.namespace)
            .map_err(Error::from)?;
        let workers = self.engine.workers(&namespace);
        let workers = workers.iter().map(reply::worker_to_pb).collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    async fn drain_worker(
        &self,
        request: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::Worker>, Status> {
        let (r, _) = admit(request, |r| &mut r.namespace)?;
        let namespace = convert::namespace(r.namespace).map_err(Error::from)?;
        let grace = match r.grace.map(std::time::Duration::try_from) {
            None => std::time::Duration::from_secs(30),
            Some(Ok(g)) if g <= std::time::Duration::from_secs(24 * 3600) => g,
            Some(_) => {
                let bad = FieldViolation::new("grace", "must be between 0 and 24 hours");
                return Err(Error::from(bad).into());
            }
        };
        let worker = (self.engine.drain_worker(&namespace, &r.id, grace)).map_err(Error::from)?;
        Ok(Response::new(reply::worker_to_pb(&worker)))
    }
}
