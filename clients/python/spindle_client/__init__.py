"""A Python client for Spindle, the gRPC job-scheduling service.

    from spindle_client import Client

    spindle = Client("127.0.0.1:50051")
    job = spindle.submit("demo.sleep", {"seconds": 2, "steps": 4})
    for event in spindle.watch(job.id):
        print(event.type, event.progress or event.state)

`AsyncClient` has the same methods for asyncio code (FastAPI's `async def` endpoints).
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
    SpindleError,
    Unavailable,
)
from .models import ArgField, Event, Job, JobError, Kind, Progress, Submitted

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
    "Job",
    "JobError",
    "Kind",
    "NotFound",
    "PermissionDenied",
    "Progress",
    "SpindleError",
    "Submitted",
    "Unavailable",
]
