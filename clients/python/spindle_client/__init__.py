"""A Python client for Spindle, the gRPC job-scheduling service.

    from spindle_client import Client

    spindle = Client("127.0.0.1:50051")
    job = spindle.submit("demo.sleep", {"seconds": 2, "steps": 4})
    for event in spindle.watch(job.id):
        print(event.type, event.progress or event.state)

`AsyncClient` has the same methods for asyncio code (FastAPI's `async def` endpoints).
`Worker` runs your own functions as Spindle jobs (see spindle_client.worker).
"""

from .aio import AsyncClient
from .client import Client
from .errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SpindleError,
    Unauthenticated,
    Unavailable,
)
from .models import ArgField, Event, Job, JobError, Kind, Progress, Submitted
from .schedules import Schedule, ScheduleRun
from .worker import JobCancelled, JobContext, PermanentError, Worker

__all__ = [
    "AlreadyExists",
    "ArgField",
    "AsyncClient",
    "Client",
    "DeadlineExceeded",
    "Event",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "JobCancelled",
    "JobContext",
    "Job",
    "JobError",
    "Kind",
    "NotFound",
    "PermanentError",
    "PermissionDenied",
    "Progress",
    "ResourceExhausted",
    "Schedule",
    "ScheduleRun",
    "SpindleError",
    "Submitted",
    "Unauthenticated",
    "Unavailable",
    "Worker",
]
