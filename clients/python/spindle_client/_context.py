"""What a worker's handler works through: `JobContext`, and the exceptions a handler raises
to say how it ended. Nothing here blocks: progress is coalesced (the newest value wins) and
sent by the worker's session thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Optional


class PermanentError(Exception):
    """Raise from a handler to fail the job for good: no retry, whatever its policy."""


class JobCancelled(Exception):
    """Raised by `JobContext.raise_if_cancelled()` once the job is cancelled, timed out,
    lost its lease, or the worker is draining."""


@dataclass(frozen=True)
class Lease:
    """One assignment of one job; every report for it names it."""

    job_id: str
    attempt: int
    epoch: int


class JobContext:
    """The handle a handler runs with: who it is, how to report, whether to stop.

    `progress()` and `log()` never block; call them from any thread."""

    def __init__(
        self,
        lease: Lease,
        kind: str,
        queue: str,
        deadline: Optional[datetime],
        send: Callable[[str, Any], None],
    ) -> None:
        self._lease = lease
        self.kind = kind
        self.queue = queue
        self.deadline = deadline
        self._send = send
        self._stop = threading.Event()
        self._stop_reason = ""
        self._lost = False

    @property
    def job_id(self) -> str:
        return self._lease.job_id

    @property
    def attempt(self) -> int:
        return self._lease.attempt

    @property
    def lease(self) -> Lease:
        return self._lease

    @property
    def cancelled(self) -> bool:
        """True once the job should stop (cancelled, timed out, lease lost, draining)."""
        return self._stop.is_set()

    @property
    def cancel_reason(self) -> str:
        return self._stop_reason

    def raise_if_cancelled(self) -> None:
        """Raises `JobCancelled` if the job should stop."""
        if self._stop.is_set():
            raise JobCancelled(self._stop_reason or "cancelled")

    def wait_cancelled(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the job should stop or `timeout` passes; True if it should stop."""
        return self._stop.wait(timeout)

    def progress(
        self,
        done: Optional[int] = None,
        total: Optional[int] = None,
        *,
        fraction: Optional[float] = None,
        message: str = "",
    ) -> None:
        """Reports how far the job has come: `done` of `total`, or a `fraction` from 0 to 1.
        Coalesced: only the newest value waiting is sent."""
        if total is not None and done is not None:
            if total < 0 or done < 0 or done > total:
                raise ValueError("progress: need 0 <= done <= total")
            report = {"done": int(done), "total": int(total), "message": str(message)}
        else:
            value = 0.0 if fraction is None else float(fraction)
            if not 0.0 <= value <= 1.0:
                raise ValueError("progress: fraction must be from 0 to 1")
            report = {"fraction": value, "message": str(message)}
        self._send("progress", report)

    def log(self, message: str) -> None:
        """Adds a line to the job's log (WatchProgress shows it)."""
        self._send("log", str(message))

    # The worker's side.

    def _request_stop(self, reason: str, lost: bool = False) -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
        self._lost = self._lost or lost
        self._stop.set()
