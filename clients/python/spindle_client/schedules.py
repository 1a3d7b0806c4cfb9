"""Schedules as the Python client sees them, and the requests that make and change them.

`Client` and `AsyncClient` share these: each schedule method builds its request here and
turns the answer into a `Schedule` (or `ScheduleRun`s) here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Optional, Union

from google.protobuf import json_format, timestamp_pb2

from ._proto import pb, spb
from .models import plain

Seconds = Union[float, int, timedelta]

_OVERLAP = {
    "skip": spb.OVERLAP_POLICY_SKIP,
    "buffer_one": spb.OVERLAP_POLICY_BUFFER_ONE,
    "allow_all": spb.OVERLAP_POLICY_ALLOW_ALL,
    "cancel_other": spb.OVERLAP_POLICY_CANCEL_OTHER,
}
_OVERLAP_NAMES = {value: name for name, value in _OVERLAP.items()}
_OUTCOMES = {
    spb.ScheduleRun.OUTCOME_FIRED: "fired",
    spb.ScheduleRun.OUTCOME_SKIPPED_OVERLAP: "skipped_overlap",
    spb.ScheduleRun.OUTCOME_MISSED: "missed",
    spb.ScheduleRun.OUTCOME_TRIGGERED: "triggered",
    spb.ScheduleRun.OUTCOME_BACKFILLED: "backfilled",
    spb.ScheduleRun.OUTCOME_ALREADY_FIRED: "already_fired",
    spb.ScheduleRun.OUTCOME_SKIPPED_PAUSED: "skipped_paused",
    spb.ScheduleRun.OUTCOME_REFUSED: "refused",
}


def _when(stamp) -> datetime:
    return stamp.ToDatetime(tzinfo=timezone.utc)


def _stamp(when: datetime) -> timestamp_pb2.Timestamp:
    if when.tzinfo is None:
        raise ValueError(f"give a timezone-aware datetime, not {when!r}")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when.astimezone(timezone.utc))
    return stamp


@dataclass
class ScheduleRun:
    """What became of one slot (or a trigger or backfill): its outcome and job, if any."""

    slot: datetime
    outcome: str
    job_id: str
    at: datetime
    slots: int = 1
    error: str = ""

    @classmethod
    def from_pb(cls, msg) -> "ScheduleRun":
        return cls(
            slot=_when(msg.slot),
            outcome=_OUTCOMES.get(msg.outcome, "unspecified"),
            job_id=msg.job_id,
            at=_when(msg.fired_at),
            slots=msg.slots,
            error=msg.error,
        )


@dataclass
class Schedule:
    """A schedule as the server last described it. Pass `conflict_token` back to
    `update_schedule` so a change made meanwhile by someone else is not overwritten."""

    id: str
    namespace: str
    cron: str
    every: Optional[timedelta]
    at: Optional[datetime]
    timezone: str
    kind: str
    args: dict
    overlap: str
    catchup_window: timedelta
    paused: bool
    note: str
    last_slot: Optional[datetime]
    next_fires: list
    runs: int
    skipped: int
    missed: int
    recent_runs: list
    conflict_token: str
    created_at: datetime
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_pb(cls, msg) -> "Schedule":
        spec, template = msg.spec, msg.template
        repeat = spec.WhichOneof("repeat")
        return cls(
            id=msg.id,
            namespace=msg.namespace,
            cron=spec.cron if repeat == "cron" else "",
            every=spec.interval.every.ToTimedelta() if repeat == "interval" else None,
            at=_when(spec.at) if repeat == "at" else None,
            timezone=spec.timezone or "UTC",
            kind=template.kind,
            args=plain(json_format.MessageToDict(template.args)),
            overlap=_OVERLAP_NAMES.get(msg.policies.overlap, "skip"),
            catchup_window=msg.policies.catchup_window.ToTimedelta(),
            paused=msg.paused,
            note=msg.note,
            last_slot=_when(msg.last_slot) if msg.HasField("last_slot") else None,
            next_fires=[_when(t) for t in msg.next_fires],
            runs=msg.runs,
            skipped=msg.skipped,
            missed=msg.missed,
            recent_runs=[ScheduleRun.from_pb(r) for r in msg.recent_runs],
            conflict_token=msg.conflict_token,
            created_at=_when(msg.created_at),
            raw=msg,
        )


def spec(
    *,
    cron: Optional[str] = None,
    every: Optional[Seconds] = None,
    offset: Optional[Seconds] = None,
    at: Optional[datetime] = None,
    timezone: str = "",
    start: Optional[datetime] = None,
    end: Optional[datetime] = None,
    jitter: Optional[Seconds] = None,
):
    """A ScheduleSpec: exactly one of `cron`, `every` (with an optional `offset`) or `at`."""
    from .client import _duration  # one duration conversion for the whole package

    given = [name for name, value in (("cron", cron), ("every", every), ("at", at)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of cron=, every= or at= (got {given or 'none'})")
    message = spb.ScheduleSpec(timezone=timezone)
    if cron is not None:
        message.cron = cron
    if every is not None:
        message.interval.every.CopyFrom(_duration(every))
        if offset is not None:
            message.interval.offset.CopyFrom(_duration(offset))
    if at is not None:
        message.at.CopyFrom(_stamp(at))
    if start is not None:
        message.start.CopyFrom(_stamp(start))
    if end is not None:
        message.end.CopyFrom(_stamp(end))
    if jitter is not None:
        message.jitter.CopyFrom(_duration(jitter))
    return message


def policies(overlap: str = "skip", catchup_window: Optional[Seconds] = None):
    """SchedulePolicies: `overlap` is skip, buffer_one, allow_all or cancel_other."""
    from .client import _duration

    if overlap not in _OVERLAP:
        raise ValueError(f"overlap must be one of {', '.join(_OVERLAP)}, not {overlap!r}")
    message = spb.SchedulePolicies(overlap=_OVERLAP[overlap])
    if catchup_window is not None:
        message.catchup_window.CopyFrom(_duration(catchup_window))
    return message


def template(kind: str, args: Optional[Mapping[str, Any]], options: Mapping[str, Any]) -> pb.SubmitRequest:
    """The job each slot submits: `kind`, `args` and Submit's queue, priority, labels,
    timeout, max_attempts, retention."""
    from .client import _submit_request

    return _submit_request(kind, args, **options)


def create_request(namespace: str, schedule_id: str, kind: str, args, options: dict):
    """A CreateScheduleRequest from `create_schedule`'s arguments."""
    paused = options.pop("paused", False)
    note = options.pop("note", "")
    request_id = options.pop("request_id", None) or f"py-{uuid.uuid4()}"
    spec_kw, policy_kw, job_kw = _split(options)
    return spb.CreateScheduleRequest(
        namespace=namespace,
        id=schedule_id,
        spec=spec(**spec_kw),
        template=template(kind, args, job_kw),
        policies=policies(**policy_kw),
        paused=paused,
        note=note,
        request_id=request_id,
    )


def update_request(namespace: str, schedule_id: str, kind: str, args, options: dict):
    """An UpdateScheduleRequest from `update_schedule`'s arguments."""
    token = options.pop("conflict_token", "")
    spec_kw, policy_kw, job_kw = _split(options)
    return spb.UpdateScheduleRequest(
        namespace=namespace,
        id=schedule_id,
        spec=spec(**spec_kw),
        template=template(kind, args, job_kw),
        policies=policies(**policy_kw),
        conflict_token=token,
    )


def backfill_request(namespace: str, schedule_id: str, start: datetime, end: datetime):
    request = spb.BackfillScheduleRequest(namespace=namespace, id=schedule_id)
    request.start.CopyFrom(_stamp(start))
    request.end.CopyFrom(_stamp(end))
    return request


_SPEC = {"cron", "every", "offset", "at", "timezone", "start", "end", "jitter"}
_POLICY = {"overlap", "catchup_window"}


def _split(options: dict):
    spec_kw = {k: v for k, v in options.items() if k in _SPEC}
    policy_kw = {k: v for k, v in options.items() if k in _POLICY}
    job_kw = {k: v for k, v in options.items() if k not in _SPEC | _POLICY}
    return spec_kw, policy_kw, job_kw
