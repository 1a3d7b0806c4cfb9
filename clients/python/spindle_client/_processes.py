"""The process pool `cpu=True` handlers run in, owned by the worker (spawn start method, so
it is safe beside threads and gRPC). Each child takes one job at a time over a pipe and
sends its progress and log lines back; cancellation is a shared flag the child's context
reads, and a child that does not stop within the grace is terminated and replaced."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from typing import Any, Callable, Optional

from ._context import JobCancelled, JobContext, PermanentError

_SPAWN = multiprocessing.get_context("spawn")


class _ChildContext:
    """A handler's context inside a child process."""

    def __init__(self, conn, stop, info: dict) -> None:
        self._conn = conn
        self._stop = stop
        self.job_id = info["job_id"]
        self.attempt = info["attempt"]
        self.kind = info["kind"]
        self.queue = info["queue"]
        self.deadline = info["deadline"]

    @property
    def cancelled(self) -> bool:
        return bool(self._stop.value)

    def raise_if_cancelled(self) -> None:
        if self._stop.value:
            raise JobCancelled("cancelled")

    def progress(self, done=None, total=None, *, fraction=None, message: str = "") -> None:
        self._conn.send(("progress", (done, total, fraction, message)))

    def log(self, message: str) -> None:
        self._conn.send(("log", str(message)))


def _child_main(conn, stop) -> None:
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        func, args, info = task
        ctx = _ChildContext(conn, stop, info)
        try:
            conn.send(("done", func(ctx, args)))
        except PermanentError as e:
            conn.send(("permanent", str(e)))
        except JobCancelled as e:
            conn.send(("cancelled", str(e)))
        except BaseException as e:  # noqa: BLE001 - any failure of the user's code fails the job
            conn.send(("failed", f"{type(e).__name__}: {e}"))


class _Child:
    def __init__(self) -> None:
        self.conn, child_conn = _SPAWN.Pipe()
        self.stop = _SPAWN.Value("b", 0, lock=False)
        self.process = _SPAWN.Process(target=_child_main, args=(child_conn, self.stop), daemon=True)
        self.process.start()
        child_conn.close()

    def kill(self) -> None:
        self.process.terminate()
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class ProcessPool:
    """`size` child processes, started on first use."""

    def __init__(self, size: int, cancel_grace: float) -> None:
        self._size = size
        self._grace = cancel_grace
        self._idle: "queue.Queue[_Child]" = queue.Queue()
        self._started = 0
        self._lock = threading.Lock()
        self._all: list[_Child] = []

    def _acquire(self) -> _Child:
        with self._lock:
            if self._idle.empty() and self._started < self._size:
                self._started += 1
                child = _Child()
                self._all.append(child)
                return child
        return self._idle.get()

    def _replace(self, child: _Child) -> None:
        child.kill()
        with self._lock:
            self._all.remove(child)
            fresh = _Child()
            self._all.append(fresh)
        self._idle.put(fresh)

    def run(self, func: Callable, ctx: JobContext, args: Any) -> Any:
        """Runs `func(ctx, args)` in a child; blocks the calling thread (a worker slot)
        while passing on the child's reports and the job's cancellation."""
        child = self._acquire()
        child.stop.value = 0
        info = {
            "job_id": ctx.job_id,
            "attempt": ctx.attempt,
            "kind": ctx.kind,
            "queue": ctx.queue,
            "deadline": ctx.deadline,
        }
        child.conn.send((func, args, info))
        stop_at: Optional[float] = None
        while True:
            if ctx.cancelled and stop_at is None:
                child.stop.value = 1
                stop_at = time.monotonic() + self._grace
            if stop_at is not None and time.monotonic() >= stop_at:
                self._replace(child)
                raise JobCancelled(ctx.cancel_reason or "cancelled")
            if not child.conn.poll(0.02):
                if not child.process.is_alive():
                    code = child.process.exitcode
                    self._replace(child)
                    raise RuntimeError(f"the job's process died (exit code {code})")
                continue
            try:
                kind, payload = child.conn.recv()
            except (EOFError, OSError):
                self._replace(child)
                raise RuntimeError("the job's process died")
            if kind == "progress":
                done, total, fraction, message = payload
                ctx.progress(done, total, fraction=fraction, message=message)
                continue
            if kind == "log":
                ctx.log(payload)
                continue
            self._idle.put(child)
            if kind == "done":
                return payload
            if kind == "permanent":
                raise PermanentError(payload)
            if kind == "cancelled":
                raise JobCancelled(payload)
            raise RuntimeError(payload)

    def close(self) -> None:
        with self._lock:
            children, self._all = self._all, []
        for child in children:
            try:
                child.conn.send(None)
            except OSError:
                pass
            child.process.join(1)
            if child.process.is_alive():
                child.kill()
