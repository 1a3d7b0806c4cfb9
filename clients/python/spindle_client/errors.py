"""Spindle's gRPC errors as Python exceptions.

Every failed call raises a `SpindleError` subclass chosen by the gRPC status code. The
server explains bad input with a google.rpc.BadRequest; its field violations are on
`error.violations`, so a caller can point at the exact argument that was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (e.g. "args.seconds") and what is wrong with it."""

    field: str
    description: str


class SpindleError(Exception):
    """A call to Spindle failed. `code` is the grpc.StatusCode, `message` the server's text."""

    def __init__(self, code: grpc.StatusCode, message: str, violations=(), retry_after=None):
        self.code = code
        self.message = message
        self.violations: list[FieldViolation] = list(violations)
        #: Seconds the server asked the caller to wait before retrying (a RetryInfo), or None.
        self.retry_after: float | None = retry_after
        detail = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"{code.name}: {message}" + (f" ({detail})" if detail else ""))


class InvalidArgument(SpindleError):
    """The request was malformed: unknown kind, bad args, bad id. See `violations`."""


class NotFound(SpindleError):
    """No such job (never existed, or purged after its retention)."""


class AlreadyExists(SpindleError):
    """The idempotency key was used before with other arguments."""


class FailedPrecondition(SpindleError):
    """The job is in a state that forbids the call (e.g. cancelling a finished job)."""


class PermissionDenied(SpindleError):
    """The caller may not do this: its token's role or namespaces do not allow the call, or
    the job would touch something it may not (a path outside the files folder)."""


class Unauthenticated(SpindleError):
    """The server checks tokens (`--auth`) and this call had none, or an unknown one."""


class ResourceExhausted(SpindleError):
    """A rate limit or quota: wait `retry_after` seconds (the server's RetryInfo), then
    retry."""


class Unavailable(SpindleError):
    """The server cannot be reached, is shutting down, or its storage is failing."""


class DeadlineExceeded(SpindleError):
    """The call took longer than its timeout."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def from_rpc_error(error: grpc.RpcError) -> SpindleError:
    """Turns a grpc.RpcError into the matching SpindleError, with its field violations."""
    code = error.code()
    violations, retry_after = [], None
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details that do not match the status: keep code and message
        status = None
    if status is not None:
        violations = _violations(status)
        retry_after = _retry_after(status)
    cls = _BY_CODE.get(code, SpindleError)
    return cls(code, error.details() or "", violations, retry_after)


def from_status(status) -> SpindleError:
    """The SpindleError for a google.rpc.Status message (a refused job of a batch)."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    cls = _BY_CODE.get(code, SpindleError)
    return cls(code, status.message, _violations(status), _retry_after(status))


def _violations(status) -> list[FieldViolation]:
    """The BadRequest field violations among a google.rpc.Status's details."""
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    return violations


def _retry_after(status) -> float | None:
    """The RetryInfo's delay among a google.rpc.Status's details, in seconds."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


_CODES = {code.value[0]: code for code in grpc.StatusCode}
