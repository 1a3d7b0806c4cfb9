"""Tokens from Python against a server started with `--auth`: every call of Client,
AsyncClient and Worker carries `token=` (or SPINDLE_TOKEN); refusals arrive as
Unauthenticated, PermissionDenied and ResourceExhausted (with the server's retry delay);
an empty namespace is the token's only one."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from conftest import Server
from spindle_client import (
    AsyncClient,
    Client,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Worker,
)


def _line(name: str, role: str, namespaces: str) -> str:
    digest = hashlib.sha256(f"tok-{name}".encode()).hexdigest()
    return f"principal {name} role={role} namespaces={namespaces} sha256={digest}\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    auth = root / "spindle.auth"
    auth.write_text(
        _line("ci", "submitter", "team-a")
        + _line("viewer", "reader", "team-a")
        + _line("runner", "worker", "team-a")
        + "quota team-a queued=3\n"
    )
    server = Server(root, env={"SPINDLE_AUTH": str(auth)})
    yield server
    server.stop()


def test_tokens_roles_and_quotas(server, monkeypatch):
    with Client(server.url, timeout=10) as anonymous:
        with pytest.raises(Unauthenticated):
            anonymous.kinds()
    with Client(server.url, token="tok-ci", timeout=10) as ci:
        job = ci.submit("demo.sleep", {"seconds": 30})
        assert job.namespace == "team-a"
        assert ci.status(job.id).id == job.id
        with Client(server.url, token="tok-viewer", timeout=10) as viewer:
            assert [j.id for j in viewer.jobs()] == [job.id]
            with pytest.raises(PermissionDenied):
                viewer.submit("demo.noop", {})
        with Client(server.url, token="tok-ci", namespace="team-b", timeout=10) as elsewhere:
            with pytest.raises(PermissionDenied):
                elsewhere.jobs()
        ci.submit("demo.sleep", {"seconds": 30})
        ci.submit("demo.sleep", {"seconds": 30})
        with pytest.raises(ResourceExhausted) as full:
            ci.submit("demo.sleep", {"seconds": 30})
        assert full.value.retry_after == 1.0
        for j in ci.jobs():
            ci.cancel(j.id)
    # SPINDLE_TOKEN, as the CLI reads it.
    monkeypatch.setenv("SPINDLE_TOKEN", "tok-viewer")
    with Client(server.url, timeout=10) as from_env:
        assert from_env.stats() is not None


def test_async_client_and_worker_carry_their_tokens(server):
    worker = Worker(server.url, token="tok-runner", worker_id="auth-worker", slots=1, drain_grace=0.0)

    @worker.job("team.echo")
    def echo(ctx, args):
        ctx.progress(1, 2)
        return {"echo": args["text"]}

    worker.start()
    try:
        assert worker.wait_connected(10), "the worker connected with its token"

        async def run():
            async with AsyncClient(server.url, token="tok-ci", timeout=10) as spindle:
                job = await spindle.submit("team.echo", {"text": "hi"})
                events = [e async for e in spindle.watch(job.id)]
                assert events[-1].state == "succeeded"
                return await spindle.status(job.id)

        done = asyncio.run(run())
        assert (done.state, done.result) == ("succeeded", {"echo": "hi"})
    finally:
        worker.stop()
