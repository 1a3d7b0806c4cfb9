"""A FastAPI app that hands its slow work to Spindle instead of BackgroundTasks.

Before, the endpoint did `background_tasks.add_task(build_report, ...)`: the work ran in the
web process, was lost on a restart, and nobody could ask how far it had got. Now the
endpoint submits a `reports.build` job and answers 202 with the job's id and where to ask;
Spindle keeps the job durably, and `build_report` runs in a Spindle worker
(report_worker.py), with progress, retries and cancellation. The endpoints are `async def`
and use `AsyncClient`, so a submit never blocks the event loop.

    SPINDLE_SERVER=http://127.0.0.1:50051 python report_worker.py &
    SPINDLE_SERVER=http://127.0.0.1:50051 uvicorn fastapi_app:app
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from spindle_client import AsyncClient, InvalidArgument, NotFound


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Made on the app's own event loop, as grpc.aio wants.
    app.state.spindle = AsyncClient(os.environ.get("SPINDLE_SERVER", "127.0.0.1:50051"))
    yield
    await app.state.spindle.close()


app = FastAPI(title="reports", lifespan=lifespan)


class ReportRequest(BaseModel):
    pages: int = Field(ge=1, le=100)
    # The client's own request id: a retried POST returns the same job, never a second one.
    request_id: str = ""


@app.post("/reports", status_code=202)
async def create_report(body: ReportRequest, request: Request):
    try:
        job = await request.app.state.spindle.submit(
            "reports.build",
            {"pages": body.pages},
            labels={"app": "reports"},
            idempotency_key=body.request_id,
        )
    except InvalidArgument as error:
        raise HTTPException(422, detail=[v.__dict__ for v in error.violations]) from None
    url = str(request.url_for("report_status", job_id=job.id))
    return JSONResponse(
        {"job_id": job.id, "state": job.state, "status_url": url},
        status_code=202,
        headers={"Location": url},
    )


@app.get("/reports/{job_id}")
async def report_status(job_id: str, request: Request):
    try:
        job = await request.app.state.spindle.status(job_id)
    except (NotFound, InvalidArgument):
        raise HTTPException(404, detail=f"no report {job_id}") from None
    answer = {"job_id": job.id, "state": job.state}
    if job.progress:
        answer["progress"] = job.progress.fraction
    if job.state == "succeeded":
        answer["result"] = job.result
    if job.error:
        answer["error"] = job.error.message
    return answer
