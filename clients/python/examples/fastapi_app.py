"""A FastAPI app that hands its slow work to Spindle instead of BackgroundTasks.

Before, the endpoint did `background_tasks.add_task(build_report, ...)`: the work ran in the
web process, was lost on a restart, and nobody could ask how far it had got. Now the
endpoint submits a job and answers 202 with the job's id and where to ask; Spindle keeps
the job durably, retries it, and reports progress.

    SPINDLE_SERVER=http://127.0.0.1:50051 uvicorn fastapi_app:app

Here `demo.sleep` stands in for your own kind (see the README: a handler in Rust).
"""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from spindle_client import Client, InvalidArgument, NotFound

app = FastAPI(title="reports")
spindle = Client(os.environ.get("SPINDLE_SERVER", "127.0.0.1:50051"))


class ReportRequest(BaseModel):
    pages: int = Field(ge=1, le=100)
    # The client's own request id: a retried POST returns the same job, never a second one.
    request_id: str = ""


@app.post("/reports", status_code=202)
def create_report(body: ReportRequest, request: Request):
    try:
        job = spindle.submit(
            "demo.sleep",
            {"seconds": body.pages * 0.05, "steps": body.pages},
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
def report_status(job_id: str):
    try:
        job = spindle.status(job_id)
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
