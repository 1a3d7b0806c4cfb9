"""Plain Python views of Spindle's messages: jobs, progress, errors, events and kinds.

States and error kinds are lower-case strings ("queued", "succeeded", "timeout"), JSON
values are Python values, times are aware UTC datetimes. Each object keeps the protobuf
message it came from in `raw` for anything not surfaced here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from google.protobuf import json_format

from ._proto import pb

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


def state_name(value: int) -> str:
    """JOB_STATE_SUCCEEDED -> "succeeded"."""
    return pb.JobState.Name(value).removeprefix("JOB_STATE_").lower()


def state_value(name: str) -> int:
    """"succeeded" (or "SUCCEEDED", or "JOB_STATE_SUCCEEDED") -> the enum value."""
    upper = name.upper()
    if not upper.startswith("JOB_STATE_"):
        upper = "JOB_STATE_" + upper
    try:
        return pb.JobState.Value(upper)
    except ValueError:
        raise ValueError(f"unknown job state {name!r}") from None


def _time(message, name: str) -> Optional[datetime]:
    if not message.HasField(name):
        return None
    return getattr(message, name).ToDatetime(tzinfo=timezone.utc)


def plain(value: Any) -> Any:
    """protobuf's Struct keeps every number as a double; give whole numbers back as int,
    so {"steps": 4} reads back as 4, not 4.0, as it would from JSON."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _value(message, name: str) -> Any:
    if not message.HasField(name):
        return None
    return plain(json_format.MessageToDict(getattr(message, name)))


@dataclass(frozen=True)
class Progress:
    """How far a job has come: a fraction from 0 to 1, done/total units, a message."""

    fraction: float
    done: int
    total: int
    message: str

    @classmethod
    def from_pb(cls, msg) -> "Progress":
        return cls(msg.fraction, msg.done, msg.total, msg.message)


@dataclass(frozen=True)
class JobError:
    """Why a job or an attempt did not succeed: `kind` is "handler", "timeout", ..."""

    kind: str
    message: str

    @classmethod
    def from_pb(cls, msg) -> "JobError":
        kind = pb.ErrorKind.Name(msg.kind).removeprefix("ERROR_KIND_").lower()
        return cls(kind, msg.message)


def _progress(msg, name="progress") -> Optional[Progress]:
    return Progress.from_pb(getattr(msg, name)) if msg.HasField(name) else None


def _error(msg, name="error") -> Optional[JobError]:
    return JobError.from_pb(getattr(msg, name)) if msg.HasField(name) else None


@dataclass(frozen=True)
class Job:
    """A job as the server last described it."""

    id: str
    kind: str
    state: str
    args: dict
    queue: str
    priority: int
    labels: dict
    attempt: int
    progress: Optional[Progress]
    result: Any
    error: Optional[JobError]
    attempt_errors: list
    created_at: Optional[datetime]
    started_at: Optional[datetime]
    finished_at: Optional[datetime]
    run_at: Optional[datetime]
    last_seq: int
    cancel_requested: bool
    namespace: str = "default"
    existing: bool = False
    schedule_id: str = ""
    schedule_slot: Optional[datetime] = None
    raw: Any = field(default=None, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """True once the job is succeeded, failed or cancelled."""
        return self.state in TERMINAL_STATES

    @classmethod
    def from_pb(cls, msg, existing: bool = False) -> "Job":
        return cls(
            id=msg.id,
            kind=msg.kind,
            state=state_name(msg.state),
            args=plain(json_format.MessageToDict(msg.args)),
            queue=msg.queue,
            priority=msg.priority,
            labels=dict(msg.labels),
            attempt=msg.attempt,
            progress=_progress(msg),
            result=_value(msg, "result"),
            error=_error(msg),
            attempt_errors=[JobError.from_pb(a.error) for a in msg.attempt_errors],
            created_at=_time(msg, "created_at"),
            started_at=_time(msg, "started_at"),
            finished_at=_time(msg, "finished_at"),
            run_at=_time(msg, "run_at"),
            last_seq=msg.last_seq,
            cancel_requested=msg.cancel_requested,
            namespace=msg.namespace or "default",
            existing=existing,
            schedule_id=msg.schedule_id,
            schedule_slot=_time(msg, "schedule_slot"),
            raw=msg,
        )


@dataclass(frozen=True)
class Submitted:
    """A job a batch accepted: its id, its state, and whether it already existed (a
    repeated idempotency key). `Client.status(id)` has the rest."""

    id: str
    state: str
    existing: bool


@dataclass(frozen=True)
class Event:
    """One entry of a job's event log.

    `type` is "state" (a non-terminal state change), "progress", "log" or "finished"
    (always the last). `state` is set for "state" and "finished", `progress` for
    "progress", `message` for "log", `result` / `error` for "finished".
    """

    job_id: str
    seq: int
    at: Optional[datetime]
    type: str
    state: Optional[str] = None
    progress: Optional[Progress] = None
    message: Optional[str] = None
    result: Any = None
    error: Optional[JobError] = None
    raw: Any = field(default=None, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.type == "finished"

    @classmethod
    def from_pb(cls, msg) -> "Event":
        base = dict(job_id=msg.job_id, seq=msg.seq, at=_time(msg, "at"), raw=msg)
        which = msg.WhichOneof("payload")
        if which == "state_changed":
            change = msg.state_changed
            return cls(type="state", state=state_name(change.state), error=_error(change), **base)
        if which == "progress":
            return cls(type="progress", progress=Progress.from_pb(msg.progress), **base)
        if which == "log":
            return cls(type="log", message=msg.log.message, **base)
        if which == "finished":
            end = msg.finished
            return cls(
                type="finished",
                state=state_name(end.state),
                result=_value(end, "result"),
                error=_error(end),
                **base,
            )
        return cls(type="unknown", **base)


@dataclass(frozen=True)
class ArgField:
    name: str
    type: str
    required: bool
    description: str


@dataclass(frozen=True)
class Kind:
    """A job kind the server can run: its pool ("io", "cpu", or "remote" for kinds that
    workers declared, with `workers` connected now) and its arguments."""

    name: str
    pool: str
    description: str
    fields: list
    args_schema: dict
    workers: int = 0

    @classmethod
    def from_pb(cls, msg) -> "Kind":
        return cls(
            name=msg.name,
            pool=pb.Pool.Name(msg.pool).removeprefix("POOL_").lower(),
            description=msg.description,
            fields=[ArgField(f.name, f.type, f.required, f.description) for f in msg.fields],
            args_schema=json_format.MessageToDict(msg.args_schema),
            workers=msg.workers,
        )
