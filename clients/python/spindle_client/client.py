"""The Spindle client: submit, status, watch, cancel, list, over one gRPC channel.

Calls are synchronous (grpcio's blocking stubs), so the client fits scripts, Django and
FastAPI's sync endpoints alike; it is thread-safe, so create one per process and share it.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from . import _auth
from . import schedules as _sched
from ._proto import pb, pb_grpc, spb_grpc
from .errors import SpindleError, Unavailable, from_rpc_error, from_status
from .models import Event, Job, Kind, Submitted, state_name, state_value

Seconds = Union[float, int, timedelta]

DEFAULT_TARGET = "127.0.0.1:50051"
# gRPC codes after which a watch reconnects instead of giving up: the server restarted or
# the connection dropped.
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def _seconds(value: Seconds) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _duration(value: Seconds) -> duration_pb2.Duration:
    seconds = _seconds(value)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    message = duration_pb2.Duration()
    message.FromTimedelta(timedelta(seconds=seconds))
    return message


def _target(server: str) -> str:
    """Accepts "host:port" or a URL as the CLI takes it ("http://host:port", "https://...")."""
    for scheme in ("http://", "grpc://", "https://"):
        if server.startswith(scheme):
            return server[len(scheme) :].rstrip("/")
    return server


def _read(path: Optional[str]) -> Optional[bytes]:
    return None if path is None else Path(path).read_bytes()


def _credentials(
    server: str, ca: Optional[str], cert: Optional[str], key: Optional[str]
) -> Optional[grpc.ChannelCredentials]:
    """TLS credentials for an `https://` server or a given CA (the CLI's --ca, --cert,
    --key; SPINDLE_CA, SPINDLE_CERT, SPINDLE_KEY when not given); None: plaintext."""
    ca = ca or os.environ.get("SPINDLE_CA")
    cert = cert or os.environ.get("SPINDLE_CERT")
    key = key or os.environ.get("SPINDLE_KEY")
    if not server.startswith("https://") and ca is None:
        return None
    if (cert is None) != (key is None):
        raise ValueError("give both cert= and key= (a client certificate and its key), or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert)
    )


def _channel(module, target: str, credentials, options=None, token: Optional[str] = None):
    """A channel of `module` (grpc or grpc.aio) to `target`: TLS with `credentials`, else
    plaintext; with `token` (else SPINDLE_TOKEN), every call carries it as
    `authorization: Bearer`."""
    token = _auth.token_from(token)
    if module is grpc:
        if credentials is None:
            channel = grpc.insecure_channel(target, options=options)
        else:
            channel = grpc.secure_channel(target, credentials, options=options)
        return channel if token is None else grpc.intercept_channel(channel, _auth.Bearer(token))
    interceptors = _auth.aio_interceptors(token)
    if credentials is None:
        return module.insecure_channel(target, options=options, interceptors=interceptors)
    return module.secure_channel(target, credentials, options=options, interceptors=interceptors)


class Client:
    """A connection to one Spindle server.

    `server` is "host:port" or "http://host:port" (the CLI's SPINDLE_SERVER form);
    "https://host:port", or a `ca` file (PEM), means TLS, with `cert` and `key` for a server
    that requires client certificates (SPINDLE_CA, SPINDLE_CERT, SPINDLE_KEY). `token`
    (SPINDLE_TOKEN) is sent on every call, for a server started with `--auth`. Unary
    calls give up after `timeout` seconds. Every call acts in `namespace` (the CLI's
    SPINDLE_NAMESPACE; empty: "default", or the token's only namespace): its jobs, queues,
    idempotency keys and lists are that namespace's,
    and a job of another namespace is NotFound.
    """

    def __init__(
        self,
        server: str = DEFAULT_TARGET,
        *,
        timeout: float = 30.0,
        namespace: str = "",
        ca: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
        token: Optional[str] = None,
    ):
        self.server = server
        self.timeout = timeout
        self.namespace = namespace
        credentials = _credentials(server, ca, cert, key)
        self._channel = _channel(grpc, _target(server), credentials, token=token)
        self._stub = pb_grpc.JobServiceStub(self._channel)
        self._schedules = spb_grpc.ScheduleServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, request, timeout: Optional[float] = None, stub=None):
        try:
            return getattr(stub or self._stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def _schedule_call(self, method: str, request):
        return self._call(method, request, stub=self._schedules)

    def submit(
        self,
        kind: str,
        args: Optional[Mapping[str, Any]] = None,
        *,
        queue: str = "",
        priority: int = 0,
        labels: Optional[Mapping[str, str]] = None,
        delay: Optional[Seconds] = None,
        run_at: Optional[datetime] = None,
        timeout: Optional[Seconds] = None,
        max_attempts: Optional[int] = None,
        idempotency_key: str = "",
        retention: Optional[Seconds] = None,
    ) -> Job:
        """Submits a job and returns it (state "queued", or "scheduled" when delayed).

        With an `idempotency_key` already used for the same kind and args, returns the
        first job with `existing=True` instead of a new one.
        """
        request = _submit_request(
            kind,
            args,
            queue=queue,
            priority=priority,
            labels=labels,
            delay=delay,
            run_at=run_at,
            timeout=timeout,
            max_attempts=max_attempts,
            idempotency_key=idempotency_key,
            retention=retention,
            namespace=self.namespace,
        )
        response = self._call("Submit", request)
        return Job.from_pb(response.job, existing=response.existing)

    def submit_batch(self, jobs: Iterable[Mapping[str, Any]]) -> list:
        """Submits up to 1,000 jobs in one call and one commit.

        Each item is a dict of `submit()`'s arguments (`kind` required). Returns one result
        per item, in order: a `Submitted` (id, state, existing), or the `SpindleError`
        that `submit()` would have raised for that item (returned, not raised: the other
        jobs were accepted). Raises only if the whole call fails.
        """
        requests = []
        for item in jobs:
            options = dict(item)
            kind = options.pop("kind")
            args = options.pop("args", None)
            requests.append(_submit_request(kind, args, **options))
        batch = pb.SubmitBatchRequest(jobs=requests, namespace=self.namespace)
        answer = self._call("SubmitBatch", batch)
        return [_batch_result(r) for r in answer.results]

    def status(self, job_id: str, *, wait: Optional[Seconds] = None) -> Job:
        """The job as it is now; with `wait`, long-polls until it ends or `wait` passes."""
        request, deadline = _status_request(self.namespace, job_id, wait, self.timeout)
        return Job.from_pb(self._call("GetStatus", request, deadline))

    def wait(self, job_id: str, timeout: Optional[Seconds] = None) -> Job:
        """Blocks until the job is done (or `timeout` passes) and returns it."""
        give_up = None if timeout is None else time.monotonic() + _seconds(timeout)
        while True:
            left = 300.0 if give_up is None else max(0.0, give_up - time.monotonic())
            job = self.status(job_id, wait=min(left, 300.0))
            if job.done or (give_up is not None and time.monotonic() >= give_up):
                return job

    def cancel(self, job_id: str) -> Job:
        """Cancels the job; FailedPrecondition if it already finished."""
        request = pb.CancelRequest(id=job_id, namespace=self.namespace)
        return Job.from_pb(self._call("Cancel", request))

    def jobs(
        self,
        *,
        state: Optional[str] = None,
        kind: str = "",
        queue: str = "",
        labels: Optional[Mapping[str, str]] = None,
        limit: int = 50,
        basic: bool = False,
        schedule_id: str = "",
    ) -> list[Job]:
        """Up to `limit` jobs matching every filter, newest first (follows pages).

        `basic=True` leaves each job's args and result out: cheap when they are large.
        `schedule_id` keeps the jobs that schedule fired.
        """
        found: list[Job] = []
        token = ""
        while len(found) < limit:
            request = _list_request(
                self.namespace, state, kind, queue, labels, min(1000, limit - len(found)), token, basic
            )
            request.schedule_id = schedule_id
            page = self._call("ListJobs", request)
            found += [Job.from_pb(job) for job in page.jobs]
            token = page.next_page_token
            if not token:
                break
        return found

    def kinds(self) -> list[Kind]:
        """Every job kind the server runs, with its pool and arguments."""
        request = pb.ListKindsRequest(namespace=self.namespace)
        return [Kind.from_pb(k) for k in self._call("ListKinds", request).kinds]

    def create_schedule(
        self, schedule_id: str, kind: str, args: Optional[Mapping[str, Any]] = None, **options: Any
    ) -> _sched.Schedule:
        """Creates a schedule that submits `kind` with `args` at every slot of its spec.

        The spec: exactly one of `cron="0 3 * * *"`, `every=90` (seconds or a timedelta,
        with an optional `offset=`) or `at=datetime`; `timezone="Europe/Berlin"` (default
        UTC), optional `start=`, `end=`, `jitter=`. Policies: `overlap=` "skip" (default),
        "buffer_one", "allow_all" or "cancel_other"; `catchup_window=` (default 1 h). The
        job: Submit's `queue=`, `priority=`, `labels=`, `timeout=`, `max_attempts=`,
        `retention=`. Also `paused=True` with a `note=`. A retry with the same
        `request_id=` returns the schedule instead of AlreadyExists.
        """
        request = _sched.create_request(self.namespace, schedule_id, kind, args, dict(options))
        return _sched.Schedule.from_pb(self._schedule_call("CreateSchedule", request))

    def get_schedule(self, schedule_id: str) -> _sched.Schedule:
        """The schedule, with its last 10 runs and next 10 fire times."""
        request = _sched.spb.GetScheduleRequest(namespace=self.namespace, id=schedule_id)
        return _sched.Schedule.from_pb(self._schedule_call("GetSchedule", request))

    def list_schedules(self) -> list[_sched.Schedule]:
        """Every schedule of the namespace, in id order (follows pages)."""
        found, token = [], ""
        while True:
            request = _sched.spb.ListSchedulesRequest(
                namespace=self.namespace, page_size=1000, page_token=token
            )
            page = self._schedule_call("ListSchedules", request)
            found += [_sched.Schedule.from_pb(s) for s in page.schedules]
            token = page.next_page_token
            if not token:
                return found

    def update_schedule(
        self, schedule_id: str, kind: str, args: Optional[Mapping[str, Any]] = None, **options: Any
    ) -> _sched.Schedule:
        """Replaces spec, job and policies (the same arguments as `create_schedule`).
        With `conflict_token=` (from the schedule you read), a change made meanwhile
        raises FailedPrecondition instead of being overwritten."""
        request = _sched.update_request(self.namespace, schedule_id, kind, args, dict(options))
        return _sched.Schedule.from_pb(self._schedule_call("UpdateSchedule", request))

    def delete_schedule(self, schedule_id: str) -> None:
        """Deletes the schedule; the jobs it fired stay."""
        self._schedule_call("DeleteSchedule", _sched.spb.ScheduleRef(namespace=self.namespace, id=schedule_id))

    def pause_schedule(self, schedule_id: str, note: str = "") -> _sched.Schedule:
        """Stops the schedule firing until `resume_schedule`."""
        request = _sched.spb.PauseScheduleRequest(namespace=self.namespace, id=schedule_id, note=note)
        return _sched.Schedule.from_pb(self._schedule_call("PauseSchedule", request))

    def resume_schedule(self, schedule_id: str) -> _sched.Schedule:
        """Resumes it; the slots that came while paused are counted skipped, not fired."""
        request = _sched.spb.ScheduleRef(namespace=self.namespace, id=schedule_id)
        return _sched.Schedule.from_pb(self._schedule_call("ResumeSchedule", request))

    def trigger_schedule(self, schedule_id: str) -> Job:
        """Fires the schedule's job now (its overlap policy applies) and returns it."""
        request = _sched.spb.ScheduleRef(namespace=self.namespace, id=schedule_id)
        return Job.from_pb(self._schedule_call("TriggerSchedule", request))

    def backfill_schedule(self, schedule_id: str, start: datetime, end: datetime) -> list:
        """Fires each slot in [start, end] (a past range) that has not fired; returns one
        `ScheduleRun` per slot ("backfilled", or "already_fired" with the earlier job)."""
        request = _sched.backfill_request(self.namespace, schedule_id, start, end)
        answer = self._schedule_call("BackfillSchedule", request)
        return [_sched.ScheduleRun.from_pb(r) for r in answer.runs]

    def stats(self):
        """The namespace's counters (the `spindle.v1.Stats` message): queued, delayed and
        running now, and totals since the server started."""
        return self._call("GetStats", pb.GetStatsRequest(namespace=self.namespace))

    def watch(
        self, job_id: str, *, after_seq: int = 0, reconnect_for: Seconds = 60.0
    ) -> Iterator[Event]:
        """Yields the job's events after `after_seq`, live, ending with the "finished" one.

        If the stream breaks (the server restarts, the network drops) it reconnects and
        resumes after the last event it yielded, with no gap and no duplicate, for up to
        `reconnect_for` seconds of trying; then it raises Unavailable.
        """
        last = after_seq
        broken_since: Optional[float] = None
        while True:
            request = pb.WatchProgressRequest(id=job_id, after_seq=last, namespace=self.namespace)
            stream = self._stub.WatchProgress(request)
            try:
                for message in stream:
                    broken_since = None
                    event = Event.from_pb(message)
                    last = event.seq
                    yield event
                    if event.terminal:
                        return
                error: SpindleError = Unavailable(
                    grpc.StatusCode.UNAVAILABLE, "the stream ended before the job finished"
                )
            except grpc.RpcError as rpc_error:
                if rpc_error.code() not in _RETRYABLE:
                    raise from_rpc_error(rpc_error) from None
                error = from_rpc_error(rpc_error)
            finally:
                stream.cancel()
            broken_since = broken_since or time.monotonic()
            if time.monotonic() - broken_since > _seconds(reconnect_for):
                raise error
            time.sleep(0.2)


def _list_request(namespace, state, kind, queue, labels, page_size, token, basic):
    """One ListJobs page request, for Client and AsyncClient alike."""
    return pb.ListJobsRequest(
        state=state_value(state) if state else 0,
        kind=kind,
        queue=queue,
        labels=dict(labels or {}),
        page_size=page_size,
        page_token=token,
        view=pb.JOB_VIEW_BASIC if basic else pb.JOB_VIEW_FULL,
        namespace=namespace,
    )


def _status_request(namespace: str, job_id: str, wait: Optional[Seconds], timeout: float):
    """A GetStatus request and the call's deadline (a long-poll's wait plus `timeout`)."""
    request = pb.GetStatusRequest(id=job_id, namespace=namespace)
    if wait is None:
        return request, None
    request.wait.CopyFrom(_duration(wait))
    return request, _seconds(wait) + timeout


def _submit_request(
    kind: str,
    args: Optional[Mapping[str, Any]] = None,
    *,
    queue: str = "",
    priority: int = 0,
    labels: Optional[Mapping[str, str]] = None,
    delay: Optional[Seconds] = None,
    run_at: Optional[datetime] = None,
    timeout: Optional[Seconds] = None,
    max_attempts: Optional[int] = None,
    idempotency_key: str = "",
    retention: Optional[Seconds] = None,
    namespace: str = "",
) -> pb.SubmitRequest:
    request = pb.SubmitRequest(
        namespace=namespace,
        kind=kind,
        queue=queue,
        priority=priority,
        labels=dict(labels or {}),
        idempotency_key=idempotency_key,
    )
    request.args.CopyFrom(_struct(args or {}))
    if delay is not None:
        request.delay.CopyFrom(_duration(delay))
    if run_at is not None:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(run_at.astimezone(timezone.utc))
        request.run_at.CopyFrom(stamp)
    if timeout is not None:
        request.timeout.CopyFrom(_duration(timeout))
    if max_attempts is not None:
        request.retry.max_attempts = max_attempts
    if retention is not None:
        request.retention.CopyFrom(_duration(retention))
    return request


def _batch_result(result):
    if result.WhichOneof("outcome") == "submitted":
        s = result.submitted
        return Submitted(s.id, state_name(s.state), s.existing)
    return from_status(result.error)


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    try:
        message.update(values)
    except (ValueError, TypeError) as error:
        raise TypeError(f"args must be JSON-like (dict, list, str, number, bool, None): {error}")
    return message
