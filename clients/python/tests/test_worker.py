"""The Python Worker against the real server, with real worker processes: a kill -9 in the
middle of 500 jobs, a paused worker's late result, cancellation of each route, drain on
SIGTERM, a server restart, and schema checks at Submit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Server, spindle_binary
from spindle_client import Client, InvalidArgument

APP = Path(__file__).with_name("worker_app.py")


class WorkerProcess:
    def __init__(self, server: Server, worker_id: str, slots: int, markers: Path):
        self.id = worker_id
        self.process = subprocess.Popen(
            [sys.executable, str(APP), server.url, worker_id, str(slots), str(markers)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture()
def workers(tmp_path):
    started: list[WorkerProcess] = []
    markers = tmp_path / "markers"
    markers.mkdir()

    def start(server: Server, worker_id: str, slots: int = 8) -> WorkerProcess:
        w = WorkerProcess(server, worker_id, slots, markers)
        started.append(w)
        return w

    start.markers = markers
    yield start
    for w in started:
        w.stop()


def leased_server(tmp_path, ttl="1s", grace="30s") -> Server:
    return Server(tmp_path / "server", env={"SPINDLE_LEASE_TTL": ttl, "SPINDLE_CANCEL_GRACE": grace})


def wait_until(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def serving(client: Client, kind: str) -> int:
    return next((k.workers for k in client.kinds() if k.name == kind), 0)


def test_a_worker_killed_mid_run_loses_no_job(tmp_path, workers):
    server = leased_server(tmp_path)
    try:
        a, b = workers(server, "a"), workers(server, "b")
        with Client(server.url, timeout=30) as client:
            wait_until("both workers", lambda: serving(client, "t.square") == 2)
            jobs = [client.submit("t.square", {"n": n, "sleep": 0.01}) for n in range(500)]
            wait_until("100 jobs done", lambda: client.stats().succeeded_total >= 100)
            a.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            finished = [client.wait(job.id, timeout=120) for job in jobs]
            recovered = time.monotonic() - killed_at
        assert [j.state for j in finished] == ["succeeded"] * 500
        assert [j.result["square"] for j in finished] == [n * n for n in range(500)]
        lost = [j for j in finished if any(e.kind == "lease_expired" for e in j.attempt_errors)]
        assert lost, "some jobs were on the killed worker"
        assert all(j.result["worker"] == "b" for j in lost)
        assert all("worker a" in j.attempt_errors[0].message for j in lost)
        print(f"\nkill -9: {len(lost)} of 500 jobs were on the killed worker; all 500 succeeded, "
              f"the last {recovered:.2f} s after the kill (lease TTL 1 s)")
    finally:
        server.stop()


def test_a_paused_workers_late_result_is_refused(tmp_path, workers):
    server = leased_server(tmp_path)
    try:
        a = workers(server, "a")
        with Client(server.url, timeout=30) as client:
            wait_until("worker a", lambda: serving(client, "t.slow") == 1)
            # On a, the job would run for a minute: only the lost lease stops it.
            job = client.submit("t.slow", {"seconds": 1.0, "seconds_on": {"a": 60}})
            wait_until("a runs it", lambda: client.status(job.id).state == "running")
            a.signal(signal.SIGSTOP)
            paused_at = time.monotonic()
            workers(server, "b")
            done = client.wait(job.id, timeout=30)
            assert done.state == "succeeded" and done.result == {"worker": "b"}
            taken_over = time.monotonic() - paused_at
            a.signal(signal.SIGCONT)
            stopped = workers.markers / f"stopped-{job.id}-a"
            wait_until("a's stale handler stops", stopped.exists, timeout=10)
            time.sleep(0.5)
            assert client.status(job.id).result == {"worker": "b"}, "the late result was refused"
        print(f"\nSIGSTOP: worker b finished the job {taken_over:.2f} s after a was paused; "
              f"a's handler stopped after SIGCONT ({stopped.read_text()!r})")
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["t.wait_sync", "t.wait_async", "t.wait_cpu"])
def test_cancel_reaches_each_kind_of_handler_within_a_second(tmp_path, workers, kind):
    server = leased_server(tmp_path, ttl="30s", grace="30s")
    try:
        workers(server, "w", slots=2)
        with Client(server.url, timeout=30) as client:
            wait_until("the worker", lambda: serving(client, kind) == 1)
            job = client.submit(kind, {})
            wait_until("it runs", lambda: client.status(job.id).state == "running")
            started = time.monotonic()
            client.cancel(job.id)
            done = client.wait(job.id, timeout=10)
            took = time.monotonic() - started
        assert done.state == "cancelled"
        assert took < 1.0, f"{kind}: cancelled after {took:.2f} s"
        print(f"\n{kind}: cancelled in {took * 1000:.0f} ms")
    finally:
        server.stop()


def test_sigterm_drains_and_gives_jobs_back_without_spending_attempts(tmp_path, workers):
    server = leased_server(tmp_path, ttl="30s")
    try:
        a = workers(server, "a", slots=2)
        with Client(server.url, timeout=30) as client:
            wait_until("worker a", lambda: serving(client, "t.slow") == 1)
            jobs = [client.submit("t.slow", {"seconds": 30}, max_attempts=1) for _ in range(3)]
            wait_until("two run", lambda: sum(client.status(j.id).state == "running" for j in jobs) == 2)
            a.signal(signal.SIGTERM)
            assert a.process.wait(10) == 0
            states = wait_until(
                "all queued again",
                lambda: (s := [client.status(j.id) for j in jobs]) and all(j.state == "queued" for j in s) and s,
                timeout=5,
            )
            assert [j.attempt for j in states] == [0, 0, 0]
    finally:
        server.stop()


def test_a_worker_asked_to_drain_by_the_server_gives_jobs_back_and_leaves(tmp_path, workers):
    server = leased_server(tmp_path, ttl="30s")
    try:
        a = workers(server, "a", slots=2)
        with Client(server.url, timeout=30) as client:
            wait_until("worker a", lambda: serving(client, "t.slow") == 1)
            job = client.submit("t.slow", {"seconds": 30}, max_attempts=1)
            wait_until("it runs", lambda: client.status(job.id).state == "running")
            subprocess.run(
                [str(spindle_binary()), "--server", server.url, "workers", "--drain", "a", "--grace", "0s"],
                check=True,
                capture_output=True,
            )
            assert a.process.wait(10) == 0
            back = wait_until("queued again", lambda: (j := client.status(job.id)).state == "queued" and j, timeout=5)
            assert back.attempt == 0
    finally:
        server.stop()


def test_workers_reconnect_across_a_server_restart_and_nothing_runs_twice(tmp_path, workers):
    server = leased_server(tmp_path, ttl="10s")
    try:
        workers(server, "a", slots=8)
        with Client(server.url, timeout=30) as client:
            wait_until("worker a", lambda: serving(client, "t.square") == 1)
            jobs = [client.submit("t.square", {"n": n, "sleep": 0.5}) for n in range(16)]
            wait_until("some run", lambda: client.stats().running >= 4)
        server.restart()
        with Client(server.url, timeout=30) as client:
            finished = [client.wait(job.id, timeout=60) for job in jobs]
        assert [j.state for j in finished] == ["succeeded"] * 16
        assert [j.result["square"] for j in finished] == [n * n for n in range(16)]
        assert [j.attempt for j in finished] == [1] * 16, "no job ran a second time"
    finally:
        server.stop()


def test_a_handler_blocking_its_loop_past_the_ttl_keeps_the_lease(tmp_path, workers):
    server = leased_server(tmp_path, ttl="1s")
    try:
        workers(server, "a")
        with Client(server.url, timeout=30) as client:
            wait_until("worker a", lambda: serving(client, "t.block_loop") == 1)
            done = client.wait(client.submit("t.block_loop", {"seconds": 3}).id, timeout=30)
        assert done.state == "succeeded" and done.attempt == 1
        assert done.attempt_errors == [], "the lease never expired"
    finally:
        server.stop()


def test_submit_checks_the_args_schema_the_worker_declared(tmp_path, workers):
    server = leased_server(tmp_path)
    try:
        workers(server, "a")
        with Client(server.url, timeout=30) as client:
            wait_until("worker a", lambda: serving(client, "t.square") == 1)
            with pytest.raises(InvalidArgument) as refused:
                client.submit("t.square", {"n": "seven"})
            assert any(v.field == "args.n" for v in refused.value.violations)
            failed = client.wait(client.submit("t.permanent", {}).id, timeout=30)
            assert failed.state == "failed" and failed.error.kind == "permanent"
            # The kind declared 2 attempts: a Submit with no retry policy gets those.
            flaky = client.wait(client.submit("t.always_fails", {}).id, timeout=30)
            assert (flaky.state, flaky.attempt) == ("failed", 2)
            assert flaky.error.message == "RuntimeError: attempt 2 failed"
    finally:
        server.stop()
