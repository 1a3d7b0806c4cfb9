"""The asyncio client: the same methods as `Client`, awaitable, over grpc.aio.

For async code (FastAPI's `async def` endpoints, aiohttp, asyncio services), where the
blocking `Client` would stall the event loop:

    spindle = AsyncClient("127.0.0.1:50051")
    job = await spindle.submit("demo.sleep", {"seconds": 1})
    async for event in spindle.watch(job.id):
        ...

Create it inside the running loop (grpc.aio channels belong to one loop) and close it with
`await spindle.close()` or `async with`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, AsyncIterator, Iterable, Mapping, Optional

import grpc

from . import schedules as _sched
from ._proto import pb, pb_grpc, spb_grpc
from .client import (
    _RETRYABLE,
    DEFAULT_TARGET,
    Seconds,
    _batch_result,
    _channel,
    _credentials,
    _list_request,
    _seconds,
    _status_request,
    _submit_request,
    _target,
)
from .errors import SpindleError, Unavailable, from_rpc_error
from .models import Event, Job, Kind


class AsyncClient:
    """A connection to one Spindle server, for asyncio code. See `Client` for each method."""

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
        self._channel = _channel(grpc.aio, _target(server), credentials, token=token)
        self._stub = pb_grpc.JobServiceStub(self._channel)
        self._schedules = spb_grpc.ScheduleServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _call(self, method: str, request, timeout: Optional[float] = None, stub=None):
        try:
            call = getattr(stub or self._stub, method)
            return await call(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def _schedule_call(self, method: str, request):
        return await self._call(method, request, stub=self._schedules)

    async def submit(
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
        """Submits a job and returns it; see `Client.submit`."""
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
        response = await self._call("Submit", request)
        return Job.from_pb(response.job, existing=response.existing)

    async def submit_batch(self, jobs: Iterable[Mapping[str, Any]]) -> list:
        """Submits up to 1,000 jobs in one call; see `Client.submit_batch`."""
        requests = []
        for item in jobs:
            options = dict(item)
            kind = options.pop("kind")
            args = options.pop("args", None)
            requests.append(_submit_request(kind, args, **options))
        batch = pb.SubmitBatchRequest(jobs=requests, namespace=self.namespace)
        answer = await self._call("SubmitBatch", batch)
        return [_batch_result(r) for r in answer.results]

    async def status(self, job_id: str, *, wait: Optional[Seconds] = None) -> Job:
        """The job as it is now; with `wait`, long-polls until it ends or `wait` passes."""
        request, deadline = _status_request(self.namespace, job_id, wait, self.timeout)
        return Job.from_pb(await self._call("GetStatus", request, deadline))

    async def wait(self, job_id: str, timeout: Optional[Seconds] = None) -> Job:
        """Waits until the job is done (or `timeout` passes) and returns it."""
        give_up = None if timeout is None else time.monotonic() + _seconds(timeout)
        while True:
            left = 300.0 if give_up is None else max(0.0, give_up - time.monotonic())
            job = await self.status(job_id, wait=min(left, 300.0))
            if job.done or (give_up is not None and time.monotonic() >= give_up):
                return job

    async def cancel(self, job_id: str) -> Job:
        """Cancels the job; FailedPrecondition if it already finished."""
        request = pb.CancelRequest(id=job_id, namespace=self.namespace)
        return Job.from_pb(await self._call("Cancel", request))

    async def jobs(
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
        """Up to `limit` jobs matching every filter, newest first (follows pages)."""
        found: list[Job] = []
        token = ""
        while len(found) < limit:
            request = _list_request(
                self.namespace, state, kind, queue, labels, min(1000, limit - len(found)), token, basic
            )
            request.schedule_id = schedule_id
            page = await self._call("ListJobs", request)
            found += [Job.from_pb(job) for job in page.jobs]
            token = page.next_page_token
            if not token:
                break
        return found

    async def kinds(self) -> list[Kind]:
        """Every job kind the server runs, with its pool and arguments."""
        answer = await self._call("ListKinds", pb.ListKindsRequest(namespace=self.namespace))
        return [Kind.from_pb(k) for k in answer.kinds]

    async def create_schedule(
        self, schedule_id: str, kind: str, args: Optional[Mapping[str, Any]] = None, **options: Any
    ) -> _sched.Schedule:
        """As `Client.create_schedule`."""
        request = _sched.create_request(self.namespace, schedule_id, kind, args, dict(options))
        return _sched.Schedule.from_pb(await self._schedule_call("CreateSchedule", request))

    async def get_schedule(self, schedule_id: str) -> _sched.Schedule:
        request = _sched.spb.GetScheduleRequest(namespace=self.namespace, id=schedule_id)
        return _sched.Schedule.from_pb(await self._schedule_call("GetSchedule", request))

    async def list_schedules(self) -> list[_sched.Schedule]:
        found, token = [], ""
        while True:
            request = _sched.spb.ListSchedulesRequest(
                namespace=self.namespace, page_size=1000, page_token=token
            )
            page = await self._schedule_call("ListSchedules", request)
            found += [_sched.Schedule.from_pb(s) for s in page.schedules]
            token = page.next_page_token
            if not token:
                return found

    async def update_schedule(
        self, schedule_id: str, kind: str, args: Optional[Mapping[str, Any]] = None, **options: Any
    ) -> _sched.Schedule:
        """As `Client.update_schedule`."""
        request = _sched.update_request(self.namespace, schedule_id, kind, args, dict(options))
        return _sched.Schedule.from_pb(await self._schedule_call("UpdateSchedule", request))

    async def delete_schedule(self, schedule_id: str) -> None:
        request = _sched.spb.ScheduleRef(namespace=self.namespace, id=schedule_id)
        await self._schedule_call("DeleteSchedule", request)

    async def pause_schedule(self, schedule_id: str, note: str = "") -> _sched.Schedule:
        request = _sched.spb.PauseScheduleRequest(namespace=self.namespace, id=schedule_id, note=note)
        return _sched.Schedule.from_pb(await self._schedule_call("PauseSchedule", request))

    async def resume_schedule(self, schedule_id: str) -> _sched.Schedule:
        request = _sched.spb.ScheduleRef(namespace=self.namespace, id=schedule_id)
        return _sched.Schedule.from_pb(await self._schedule_call("ResumeSchedule", request))

    async def trigger_schedule(self, schedule_id: str) -> Job:
        request = _sched.spb.ScheduleRef(namespace=self.namespace, id=schedule_id)
        return Job.from_pb(await self._schedule_call("TriggerSchedule", request))

    async def backfill_schedule(self, schedule_id: str, start: datetime, end: datetime) -> list:
        request = _sched.backfill_request(self.namespace, schedule_id, start, end)
        answer = await self._schedule_call("BackfillSchedule", request)
        return [_sched.ScheduleRun.from_pb(r) for r in answer.runs]

    async def stats(self):
        """The namespace's counters (the `spindle.v1.Stats` message), as `Client.stats`."""
        return await self._call("GetStats", pb.GetStatsRequest(namespace=self.namespace))

    async def watch(
        self, job_id: str, *, after_seq: int = 0, reconnect_for: Seconds = 60.0
    ) -> AsyncIterator[Event]:
        """Yields the job's events after `after_seq`, live, ending with the "finished" one,
        resuming after the last event it yielded if the stream breaks; see `Client.watch`."""
        last = after_seq
        broken_since: Optional[float] = None
        while True:
            request = pb.WatchProgressRequest(id=job_id, after_seq=last, namespace=self.namespace)
            stream = self._stub.WatchProgress(request)
            try:
                async for message in stream:
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
            await asyncio.sleep(0.2)
