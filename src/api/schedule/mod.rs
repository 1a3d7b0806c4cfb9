//! `spindle.v1.ScheduleService` over the engine's schedules: each method checks its request
//! (naming every bad field), calls the engine, and answers with [`Error`], which becomes a
//! `tonic::Status` at the edge as JobService's errors do.

pub mod convert;

use tonic::{Request, Response, Status};

use crate::api::Error;
use crate::api::caller::Caller;
use crate::api::convert::{DEFAULT_MAX_ARGS_BYTES, job_shown, namespace};
use crate::engine::Engine;
use crate::model::violation::FieldViolation;
use crate::pb;
use crate::pb::schedule_service_server::ScheduleService;

/// The default and largest ListSchedules page.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

/// The ScheduleService implementation.
#[derive(Debug, Clone)]
pub struct ScheduleApi {
    engine: Engine,
    max_args_bytes: usize,
}

impl ScheduleApi {
    pub fn new(engine: Engine) -> Self {
        ScheduleApi {
            engine,
            max_args_bytes: DEFAULT_MAX_ARGS_BYTES,
        }
    }

    /// Sets the largest args a template may carry (as Submit's).
    pub fn with_max_args_bytes(mut self, bytes: usize) -> Self {
        self.max_args_bytes = bytes;
        self
    }
}

/// The namespace and id a request names, checked.
fn reference(ns: String, id: &str) -> Result<String, Error> {
    let mut bad = Vec::new();
    let ns = namespace(ns).map_err(|v| bad.push(v)).unwrap_or_default();
    convert::schedule_id(id, &mut bad);
    if bad.is_empty() {
        Ok(ns)
    } else {
        Err(bad.into())
    }
}

/// An engine call's schedule as the answer, or its error as the status.
fn answer(
    engine: &Engine,
    view: Result<crate::engine::schedules::ScheduleView, crate::engine::EngineError>,
) -> Result<Response<pb::Schedule>, Status> {
    let view = view.map_err(Error::from)?;
    Ok(Response::new(convert::schedule_to_pb(&view, engine)))
}

impl ScheduleApi {
    async fn create(
        &self,
        req: pb::CreateScheduleRequest,
        caller: &Caller,
    ) -> Result<Response<pb::Schedule>, Error> {
        let mut bad = Vec::new();
        let ns = namespace(req.namespace)
            .map_err(|v| bad.push(v))
            .unwrap_or_default();
        convert::schedule_id(&req.id, &mut bad);
        convert::note(&req.note, &mut bad);
        if req.request_id.len() > 256 {
            bad.push(FieldViolation::new("request_id", "at most 256 bytes"));
        }
        let draft = convert::draft(
            req.spec,
            req.template,
            req.policies,
            &ns,
            caller.max_args_bytes(self.max_args_bytes),
            &mut bad,
        );
        let (Some(draft), true) = (draft, bad.is_empty()) else {
            return Err(bad.into());
        };
        let view = (self.engine)
            .create_schedule(&ns, &req.id, draft, req.paused, req.note, req.request_id)
            .await;
        let view = caller.noted(view)?;
        Ok(Response::new(convert::schedule_to_pb(&view, &self.engine)))
    }

    async fn update(
        &self,
        req: pb::UpdateScheduleRequest,
        caller: &Caller,
    ) -> Result<Response<pb::Schedule>, Error> {
        let mut bad = Vec::new();
        let ns = namespace(req.namespace)
            .map_err(|v| bad.push(v))
            .unwrap_or_default();
        convert::schedule_id(&req.id, &mut bad);
        let token = convert::conflict_token(&req.conflict_token, &mut bad);
        let draft = convert::draft(
            req.spec,
            req.template,
            req.policies,
            &ns,
            caller.max_args_bytes(self.max_args_bytes),
            &mut bad,
        );
        let (Some(draft), true) = (draft, bad.is_empty()) else {
            return Err(bad.into());
        };
        let view = self
            .engine
            .update_schedule(&ns, &req.id, draft, token)
            .await?;
        Ok(Response::new(convert::schedule_to_pb(&view, &self.engine)))
    }

    async fn list(
        &self,
        req: pb::ListSchedulesRequest,
    ) -> Result<pb::ListSchedulesResponse, Error> {
        let mut bad = Vec::new();
        let ns = namespace(req.namespace)
            .map_err(|v| bad.push(v))
            .unwrap_or_default();
        let limit = match req.page_size as usize {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            _ => {
                bad.push(FieldViolation::new(
                    "page_size",
                    format!("must be at most {MAX_PAGE}"),
                ));
                0
            }
        };
        if !bad.is_empty() {
            return Err(bad.into());
        }
        let after = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
        let (views, next) = self.engine.list_schedules(&ns, after, limit).await?;
        Ok(pb::ListSchedulesResponse {
            schedules: views
                .iter()
                .map(|v| convert::schedule_to_pb(v, &self.engine))
                .collect(),
            next_page_token: next.unwrap_or_default(),
        })
    }

    async fn backfill(
        &self,
        req: pb::BackfillScheduleRequest,
    ) -> Result<pb::BackfillScheduleResponse, Error> {
        let ns = reference(req.namespace, &req.id)?;
        let mut bad = Vec::new();
        let mut time = |value: Option<prost_types::Timestamp>, field: &str| match value
            .map(std::time::SystemTime::try_from)
        {
            Some(Ok(t)) if t >= std::time::UNIX_EPOCH => Some(t),
            _ => {
                bad.push(FieldViolation::new(
                    field,
                    "required: a valid time after 1970-01-01",
                ));
                None
            }
        };
        let (start, end) = (time(req.start, "start"), time(req.end, "end"));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(bad.into());
        };
        let runs = self
            .engine
            .backfill_schedule(&ns, &req.id, start, end)
            .await?;
        Ok(pb::BackfillScheduleResponse {
            runs: runs.iter().map(convert::run_to_pb).collect(),
        })
    }
}

#[tonic::async_trait]
impl ScheduleService for ScheduleApi {
    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let (request, caller) = super::admit(request, |r| &mut r.namespace)?;
        Ok(self.create(request, &caller).await?)
    }

    async fn get_schedule(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let req = super::admit(request, |r| &mut r.namespace)?.0;
        let ns = reference(req.namespace, &req.id)?;
        answer(&self.engine, self.engine.get_schedule(&ns, &req.id).await)
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        Ok(Response::new(
            self.list(super::admit(request, |r| &mut r.namespace)?.0)
                .await?,
        ))
    }

    async fn update_schedule(
        &self,
        request: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let (request, caller) = super::admit(request, |r| &mut r.namespace)?;
        Ok(self.update(request, &caller).await?)
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let req = super::admit(request, |r| &mut r.namespace)?.0;
        let ns = reference(req.namespace, &req.id)?;
        self.engine
            .delete_schedule(&ns, &req.id)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }

    async fn pause_schedule(
        &self,
        request: Request<pb::PauseScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let req = super::admit(request, |r| &mut r.namespace)?.0;
        let ns = reference(req.namespace, &req.id)?;
        let mut bad = Vec::new();
        convert::note(&req.note, &mut bad);
        if !bad.is_empty() {
            return Err(Error::from(bad).into());
        }
        answer(
            &self.engine,
            self.engine.pause_schedule(&ns, &req.id, req.note).await,
        )
    }

    async fn resume_schedule(
        &self,
        request: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let req = super::admit(request, |r| &mut r.namespace)?.0;
        let ns = reference(req.namespace, &req.id)?;
        answer(
            &self.engine,
            self.engine.resume_schedule(&ns, &req.id).await,
        )
    }

    async fn trigger_schedule(
        &self,
        request: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::Job>, Status> {
        let req = super::admit(request, |r| &mut r.namespace)?.0;
        let ns = reference(req.namespace, &req.id)?;
        let job = self
            .engine
            .trigger_schedule(&ns, &req.id)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(job_shown(&self.engine, &job)))
    }

    async fn backfill_schedule(
        &self,
        request: Request<pb::BackfillScheduleRequest>,
    ) -> Result<Response<pb::BackfillScheduleResponse>, Status> {
        Ok(Response::new(
            self.backfill(super::admit(request, |r| &mut r.namespace)?.0)
                .await?,
        ))
    }
}
