"""The worker's messages: leases, outcomes and JSON values as the worker protocol's
protobuf messages and back. Converted by hand, not with json_format: this runs for every
job, and ParseDict / MessageToDict cost several times more."""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf import struct_pb2

from ._context import JobCancelled, JobContext, Lease, PermanentError
from ._proto import wpb


def lease_pb(lease: Lease):
    return wpb.Lease(job_id=lease.job_id, attempt=lease.attempt, epoch=lease.epoch)


def failure_outcome(ctx: JobContext, error: BaseException) -> tuple[str, Any]:
    if isinstance(error, PermanentError):
        return ("permanent", str(error) or "failed permanently")
    if ctx.cancelled and isinstance(error, (JobCancelled, asyncio.CancelledError)):
        return ("release", None)
    return ("failed", f"{type(error).__name__}: {error}")


def outcome_message(lease: Lease, outcome: tuple[str, Any]):
    """The message that reports an attempt's outcome: ("done", result), ("release", _),
    ("permanent", message) or ("failed", message)."""
    kind, payload = outcome
    named = lease_pb(lease)
    if kind == "done":
        try:
            value = _to_value(payload)
        except (TypeError, ValueError) as e:
            message = f"the handler's result is not JSON: {e}"
            return wpb.WorkerMessage(fail=wpb.Fail(lease=named, message=message, retryable=False))
        return wpb.WorkerMessage(complete=wpb.Complete(lease=named, result=value))
    if kind == "release":
        return wpb.WorkerMessage(release=wpb.Release(lease=named, reason=wpb.Release.REASON_DRAINING))
    retryable = kind == "failed"
    return wpb.WorkerMessage(fail=wpb.Fail(lease=named, message=str(payload), retryable=retryable))


def _to_value(obj: Any) -> "struct_pb2.Value":
    """A JSON-like Python value as a protobuf Value (json_format's ParseDict is several
    times slower, and this runs once per job)."""
    value = struct_pb2.Value()
    if obj is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(obj, bool):
        value.bool_value = obj
    elif isinstance(obj, (int, float)):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError(f"{obj!r} is not a JSON number")
        value.number_value = obj
    elif isinstance(obj, str):
        value.string_value = obj
    elif isinstance(obj, dict):
        fields = value.struct_value.fields
        for key, item in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, not {type(key).__name__}")
            fields[key].CopyFrom(_to_value(item))
    elif isinstance(obj, (list, tuple)):
        value.list_value.values.extend(_to_value(item) for item in obj)
    else:
        raise TypeError(f"{type(obj).__name__} is not JSON")
    return value


def _from_value(value: "struct_pb2.Value") -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        n = value.number_value
        return int(n) if n.is_integer() and abs(n) < 2**53 else n
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [_from_value(v) for v in value.list_value.values]
    return None


def from_struct(struct: "struct_pb2.Struct") -> dict:
    return {key: _from_value(v) for key, v in struct.fields.items()}
