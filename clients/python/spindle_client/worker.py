"""`Worker`: runs your own functions as Spindle jobs.

    worker = Worker("http://127.0.0.1:50051", namespace="default", slots=8)

    @worker.job("images.resize")             # def -> a thread pool
    def resize(ctx, args): ...

    @worker.job("hooks.deliver")             # async def -> the worker's event loop
    async def deliver(ctx, args): ...

    @worker.job("reports.render", cpu=True)  # CPU-bound -> a process pool (spawn)
    def render(ctx, args): ...

    worker.run()                             # blocks; SIGTERM/SIGINT drain gracefully

The gRPC session and its heartbeats run on a thread and event loop of their own, so a
handler that blocks, or a busy handler loop, never lets the worker's leases expire. The
worker grants the server one credit per free slot, so it is never given more jobs than it
can start. It reconnects by itself (naming the jobs it still runs, so it keeps them), and
keeps each outcome until the server says it is stored, sending it again after a reconnect.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

import grpc

from ._context import JobCancelled, JobContext, Lease, PermanentError
from ._messages import failure_outcome, from_struct, lease_pb, outcome_message
from ._processes import ProcessPool
from ._proto import wpb, wpb_grpc
from .client import _channel, _credentials, _target

__all__ = ["Worker", "JobContext", "PermanentError", "JobCancelled"]

_SDK = "spindle-python/0.1"
#: How long progress waits to be coalesced before it is sent.
_PROGRESS_EVERY = 0.05
#: The most messages one batch carries (the server's limit too).
_MAX_BATCH = 1024


@dataclass
class _Kind:
    name: str
    func: Callable
    cpu: bool
    is_async: bool
    schema: Optional[dict]
    description: str
    max_attempts: int


class _Running:
    """A job the worker holds: its context and what it reported."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.seq = 0
        self.progress: Optional[dict] = None
        self.progress_due = False
        self.task: Optional[asyncio.Future] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None


class Worker:
    """A worker process's connection to Spindle and the handlers it runs."""

    def __init__(
        self,
        server: str = "127.0.0.1:50051",
        *,
        namespace: str = "",
        slots: int = 8,
        worker_id: Optional[str] = None,
        queues: tuple[str, ...] | list[str] = (),
        build: str = "",
        processes: Optional[int] = None,
        drain_grace: float = 30.0,
        cancel_grace: float = 5.0,
        ca: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
        token: Optional[str] = None,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.target = _target(server)
        # TLS as the clients take it: `https://` or `ca=`, with `cert=`/`key=` for mTLS.
        self._credentials = _credentials(server, ca, cert, key)
        # A worker token (role worker) for a server with --auth; SPINDLE_TOKEN if not given.
        self._token = token
        self.namespace = namespace
        self.slots = slots
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.queues = list(queues)
        self.build = build
        self.drain_grace = drain_grace
        self._cancel_grace = cancel_grace
        self._processes = processes or os.cpu_count() or 2
        self._kinds: dict[str, _Kind] = {}
        self._running: dict[str, _Running] = {}
        # Outcomes sent but not yet stored by the server: resent after a reconnect.
        self._unsettled: dict[str, tuple[Lease, Any]] = {}
        # Unsettled outcomes whose slot was granted again as the handler finished (up to
        # `slots` of them): a slot need not wait for the server's commit to be reused.
        self._early: set[str] = set()
        self._lock = threading.Lock()
        self._draining = threading.Event()
        self._stopped = threading.Event()
        self._session_loop: Optional[asyncio.AbstractEventLoop] = None
        self._handler_loop: Optional[asyncio.AbstractEventLoop] = None
        self._outbox: Optional[asyncio.Queue] = None
        self._threads: Optional[ThreadPoolExecutor] = None
        self._pool: Optional[ProcessPool] = None
        self._connected = threading.Event()
        self._fatal: Optional[BaseException] = None
        self._posted: collections.deque = collections.deque()
        self._wake_pending = False
        self._credits = 0

    # -- declaring handlers --

    def job(
        self,
        kind: str,
        *,
        cpu: bool = False,
        schema: Optional[dict] = None,
        description: str = "",
        max_attempts: int = 0,
    ) -> Callable[[Callable], Callable]:
        """Registers the decorated function as the handler of `kind`. `def` runs in a
        thread pool, `async def` on the worker's event loop, `cpu=True` in a process pool
        (define it at module level, and start the worker under `if __name__ ==
        "__main__":`). `schema` is a JSON Schema Submit checks the args against;
        `max_attempts` is how many attempts a job of this kind gets when its Submit names
        no retry policy (0: the server's default, 3)."""

        def register(func: Callable) -> Callable:
            is_async = inspect.iscoroutinefunction(func)
            if cpu and is_async:
                raise TypeError(f"{kind}: a cpu=True handler must be a plain def")
            doc = description or (inspect.getdoc(func) or "").split("\n")[0]
            self._kinds[kind] = _Kind(kind, func, cpu, is_async, schema, doc, max_attempts)
            return func

        return register

    # -- running --

    def run(self) -> None:
        """Connects and runs jobs until SIGTERM or SIGINT (or `stop()`), then drains: takes
        no more jobs, lets running ones finish within `drain_grace`, and gives the rest back
        to the server at once (their attempts not spent)."""
        if not self._kinds:
            raise RuntimeError("no handlers: decorate functions with @worker.job(...) first")
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self.start()
        self._stopped.wait()
        if self._fatal is not None:
            raise self._fatal

    def start(self) -> None:
        """Starts the worker's threads and returns; `stop()` ends it."""
        self._threads = ThreadPoolExecutor(self.slots, thread_name_prefix="spindle-job")
        if any(k.cpu for k in self._kinds.values()):
            self._pool = ProcessPool(self._processes, self._cancel_grace)
        self._handler_loop = asyncio.new_event_loop()
        threading.Thread(target=self._handler_loop.run_forever, name="spindle-handlers", daemon=True).start()
        self._session_loop = asyncio.new_event_loop()
        threading.Thread(target=self._session_thread, name="spindle-session", daemon=True).start()

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        """Starts draining (from any thread or a signal handler); `run()` returns when done."""
        if self._draining.is_set():
            return
        self._draining.set()
        threading.Thread(target=self._drain, name="spindle-drain", daemon=True).start()

    def _drain(self) -> None:
        self._post_message(wpb.WorkerMessage(drain=wpb.Drain()))
        deadline = time.monotonic() + self.drain_grace
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    break
            time.sleep(0.02)
        with self._lock:
            left = list(self._running.values())
        for running in left:
            running.ctx._request_stop("the worker is draining")
            self._cancel_task(running)
        # Give what is left back now, rather than when the handlers notice.
        for running in left:
            self._finish(running, ("release", None))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self._lock:
                if not self._unsettled:
                    break
            time.sleep(0.02)
        self._post_message(None)
        if self._pool:
            self._pool.close()
        self._stopped.set()

    # -- the session thread --

    def _session_thread(self) -> None:
        loop = self._session_loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._session_forever())

    async def _session_forever(self) -> None:
        self._outbox = asyncio.Queue()
        backoff = 0.05
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                await self._session_once()
            except grpc.aio.AioRpcError as e:
                if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED):
                    # The server refused this worker's hello: retrying cannot help.
                    self._fatal = e
                    self._stopped.set()
                    return
            except asyncio.CancelledError:
                return
            self._connected.clear()
            if self._stopped.is_set() or (self._draining.is_set() and not self._unsettled):
                return
            backoff = 0.05 if time.monotonic() - started > 5 else min(backoff * 2, 2.0)
            await asyncio.sleep(backoff)

    def _hello(self) -> "wpb.WorkerMessage":
        kinds = []
        for k in self._kinds.values():
            decl = wpb.KindDeclaration(
                name=k.name, description=k.description, max_attempts=k.max_attempts
            )
            if k.schema is not None:
                decl.args_schema.update(k.schema)
            kinds.append(decl)
        with self._lock:
            held = [r.ctx.lease for r in self._running.values()]
            held += [lease for lease, _ in self._unsettled.values()]
        return wpb.WorkerMessage(
            hello=wpb.Hello(
                worker_id=self.worker_id,
                namespace=self.namespace,
                kinds=kinds,
                queues=self.queues,
                build=self.build,
                sdk=f"{_SDK} CPython {'.'.join(map(str, sys.version_info[:3]))}",
                held_leases=[lease_pb(lease) for lease in held],
            )
        )

    async def _session_once(self) -> None:
        options = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000)]
        async with _channel(grpc.aio, self.target, self._credentials, options, token=self._token) as channel:
            stub = wpb_grpc.WorkerServiceStub(channel)
            hello = self._hello()
            outbox = self._outbox

            async def requests():
                # What is queued goes as one batch: one stream message, not one each.
                yield hello
                while True:
                    batch = [await outbox.get()]
                    while not outbox.empty() and len(batch) < _MAX_BATCH:
                        batch.append(outbox.get_nowait())
                    done = None in batch
                    batch = [m for m in batch if m is not None]
                    if len(batch) == 1:
                        yield batch[0]
                    elif batch:
                        yield wpb.WorkerMessage(batch=wpb.WorkerBatch(messages=batch))
                    if done:
                        return

            call = stub.Session(requests())
            heartbeat: Optional[asyncio.Task] = None
            try:
                async for message in call:
                    which = message.WhichOneof("message")
                    if which == "welcome":
                        heartbeat = self._welcomed(message.welcome, outbox)
                    elif which == "batch":
                        for inner in message.batch.messages:
                            kind = inner.WhichOneof("message")
                            self._on_message(kind, getattr(inner, kind))
                    else:
                        self._on_message(which, getattr(message, which))
            finally:
                if heartbeat:
                    heartbeat.cancel()

    def _welcomed(self, welcome, outbox: asyncio.Queue) -> asyncio.Task:
        for lost in welcome.lost:
            self._lose(lost.job_id, "the lease was lost while the worker was away")
        with self._lock:
            resend = list(self._unsettled.values())
            free = self.slots - len(self._running) - len(self._unsettled) + len(self._early)
            self._credits = 0  # a new session: its credits are counted afresh here
        for lease, outcome in resend:
            outbox.put_nowait(outcome_message(lease, outcome))
        if free > 0 and not self._draining.is_set():
            outbox.put_nowait(wpb.WorkerMessage(credit=wpb.Credit(slots=free)))
        self._connected.set()
        interval = welcome.heartbeat_interval.ToTimedelta().total_seconds() or 10.0

        async def beat():
            while True:
                await asyncio.sleep(interval)
                outbox.put_nowait(wpb.WorkerMessage(heartbeat=wpb.Heartbeat()))

        return asyncio.get_running_loop().create_task(beat())

    def _on_message(self, which: str, message) -> None:
        if which == "assign":
            self._start(message)
        elif which == "cancel":
            with self._lock:
                running = self._running.get(message.lease.job_id)
            if running and running.ctx.lease.epoch == message.lease.epoch:
                running.ctx._request_stop(message.reason or "cancelled")
                self._cancel_task(running)
        elif which == "lease_lost":
            self._lose(message.lease.job_id, "the lease was lost", epoch=message.lease.epoch)
        elif which == "drain":
            # The server (an operator's DrainWorker) asks this worker to leave.
            if message.HasField("grace"):
                self.drain_grace = message.grace.ToTimedelta().total_seconds()
            self.stop()
        elif which == "settled":
            if self._settle(message.lease.job_id):
                self._credit()

    def _lose(self, job_id: str, why: str, epoch: Optional[int] = None) -> None:
        with self._lock:
            running = self._running.get(job_id)
            if running and (epoch is None or running.ctx.lease.epoch == epoch):
                running.ctx._request_stop(why, lost=True)
            settled = self._unsettled.get(job_id)
            dropped = settled is not None and (epoch is None or settled[0].epoch == epoch)
        if running:
            self._cancel_task(running)
        if dropped and self._settle(job_id):
            self._credit()

    def _settle(self, job_id: str) -> bool:
        """Forgets an outcome the server stored (or refused); true if its slot is still to
        be granted."""
        with self._lock:
            if self._unsettled.pop(job_id, None) is None:
                return False
            if job_id in self._early:
                self._early.discard(job_id)
                return False
            return True

    # -- jobs --

    def _start(self, assign) -> None:
        lease = Lease(assign.lease.job_id, assign.lease.attempt, assign.lease.epoch)
        deadline = assign.deadline.ToDatetime() if assign.HasField("deadline") else None
        kind = self._kinds.get(assign.kind)
        running = _Running(None)  # type: ignore[arg-type]
        ctx = JobContext(lease, assign.kind, assign.queue, deadline, lambda what, value: self._report(running, what, value))
        running.ctx = ctx
        with self._lock:
            self._running[lease.job_id] = running
        args = from_struct(assign.args) if assign.HasField("args") else {}
        if kind is None:
            self._finish(running, ("permanent", f"this worker has no handler for {assign.kind!r}"))
        elif kind.is_async:
            running.loop = self._handler_loop
            asyncio.run_coroutine_threadsafe(self._run_async(running, kind, args), self._handler_loop)
        else:
            self._threads.submit(self._run_sync, running, kind, args)

    def _run_sync(self, running: _Running, kind: _Kind, args: Any) -> None:
        ctx = running.ctx
        try:
            if kind.cpu:
                result = self._pool.run(kind.func, ctx, args)
            else:
                result = kind.func(ctx, args)
            outcome = ("done", result)
        except BaseException as e:  # noqa: BLE001
            outcome = failure_outcome(ctx, e)
        self._finish(running, outcome)

    async def _run_async(self, running: _Running, kind: _Kind, args: Any) -> None:
        running.task = asyncio.current_task()
        ctx = running.ctx
        if ctx.cancelled:
            self._finish(running, ("release", None))
            return
        try:
            outcome = ("done", await kind.func(ctx, args))
        except BaseException as e:  # noqa: BLE001
            outcome = failure_outcome(ctx, e)
        self._finish(running, outcome)

    def _cancel_task(self, running: _Running) -> None:
        if running.task is not None and running.loop is not None:
            running.loop.call_soon_threadsafe(running.task.cancel)

    def _finish(self, running: _Running, outcome: tuple[str, Any]) -> None:
        ctx = running.ctx
        with self._lock:
            if self._running.get(ctx.job_id) is not running:
                return
            del self._running[ctx.job_id]
            lost = ctx._lost
            early = not lost and len(self._early) < self.slots
            if not lost:
                self._unsettled[ctx.job_id] = (ctx.lease, outcome)
            if early:
                self._early.add(ctx.job_id)
        if not lost:
            self._flush_progress(running)
            self._post_message(outcome_message(ctx.lease, outcome))
        if lost or early:
            self._credit()

    def _credit(self) -> None:
        # Slots freed together are granted in one Credit.
        with self._lock:
            self._credits += 1
            first = self._credits == 1
        if first:
            self._post_message(_GRANT)

    def _grant(self) -> Optional["wpb.WorkerMessage"]:
        with self._lock:
            slots, self._credits = self._credits, 0
        if slots == 0 or self._draining.is_set():
            return None
        return wpb.WorkerMessage(credit=wpb.Credit(slots=slots))

    def _report(self, running: _Running, what: str, value: Any) -> None:
        if running.ctx._lost:
            return
        if what == "log":
            running.seq += 1
            log = wpb.Log(lease=lease_pb(running.ctx.lease), worker_seq=running.seq, message=value)
            self._post_message(wpb.WorkerMessage(log=log))
            return
        with self._lock:
            running.progress = value
            due = not running.progress_due
            running.progress_due = True
        if due and self._session_loop is not None:
            self._session_loop.call_soon_threadsafe(
                self._session_loop.call_later, _PROGRESS_EVERY, self._flush_progress, running
            )

    def _flush_progress(self, running: _Running) -> None:
        with self._lock:
            value, running.progress = running.progress, None
            running.progress_due = False
            if value is None:
                return
            running.seq += 1
            seq = running.seq
        progress = wpb.Progress(lease=lease_pb(running.ctx.lease), worker_seq=seq, **value)
        self._post_message(wpb.WorkerMessage(progress=progress))

    def _post_message(self, message) -> None:
        # From any thread: queued here, and the session loop is woken once for however
        # many messages arrive before it runs (a wake-up is a write to its self-pipe).
        self._posted.append(message)
        if self._wake_pending:
            return
        self._wake_pending = True
        loop = self._session_loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._take_posted)
        except RuntimeError:
            pass

    def _take_posted(self) -> None:
        self._wake_pending = False
        while self._posted:
            message = self._posted.popleft()
            if message is _GRANT:
                message = self._grant()
                if message is None:
                    continue
            if self._outbox is not None:
                self._outbox.put_nowait(message)


#: Stands in the posted queue for "grant the credits freed so far".
_GRANT = object()
