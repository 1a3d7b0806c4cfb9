"""AsyncClient against the real server: the same methods as Client, awaited on one event
loop, so an async FastAPI endpoint can submit and watch without blocking it."""

from __future__ import annotations

import asyncio

import pytest

from spindle_client import AsyncClient, InvalidArgument, NotFound

UNKNOWN_ID = "0193a1b2-0000-7000-8000-000000000000"


def run(coroutine):
    return asyncio.run(coroutine)


def test_submit_watch_resume_status_and_list(server):
    async def scenario():
        async with AsyncClient(server.url, timeout=10) as spindle:
            job = await spindle.submit(
                "demo.sleep", {"seconds": 0.3, "steps": 3}, labels={"via": "aio"}
            )
            assert job.state == "queued"
            seen = []
            async for event in spindle.watch(job.id):
                seen.append(event)
                if len(seen) == 2:
                    break  # as a lost stream would; then resume after the last seq
            async for event in spindle.watch(job.id, after_seq=seen[-1].seq):
                seen.append(event)
            seqs = [e.seq for e in seen]
            assert seqs == sorted(set(seqs)), seqs
            assert seen[-1].terminal and seen[-1].state == "succeeded"
            done = await spindle.wait(job.id, timeout=10)
            assert done.state == "succeeded"
            listed = await spindle.jobs(labels={"via": "aio"})
            assert [j.id for j in listed] == [job.id]
            assert any(k.name == "demo.cpu" for k in await spindle.kinds())

    run(scenario())


def test_the_loop_stays_free_while_a_call_waits(server):
    async def scenario():
        async with AsyncClient(server.url, timeout=10) as spindle:
            job = await spindle.submit("demo.sleep", {"seconds": 0.5})
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            task = asyncio.create_task(ticker())
            done = await spindle.status(job.id, wait=10)  # a long-poll of ~0.5 s
            task.cancel()
            assert done.state == "succeeded"
            assert ticks >= 10, f"the loop ran only {ticks} ticks during the long-poll"

    run(scenario())


def test_errors_batches_cancel_and_namespaces(server):
    async def scenario():
        async with AsyncClient(server.url, timeout=10, namespace="aio-team") as spindle:
            with pytest.raises(InvalidArgument) as raised:
                await spindle.submit("demo.sleep", {"seconds": "soon"})
            assert [v.field for v in raised.value.violations] == ["args.seconds"]
            with pytest.raises(NotFound):
                await spindle.status(UNKNOWN_ID)
            results = await spindle.submit_batch(
                [{"kind": "demo.sleep", "args": {"seconds": 60}}, {"kind": "no.such"}]
            )
            assert results[0].state == "queued"
            assert isinstance(results[1], InvalidArgument)
            cancelled = await spindle.cancel(results[0].id)
            assert cancelled.state == "cancelled" and cancelled.namespace == "aio-team"
        async with AsyncClient(server.url, timeout=10) as other:
            with pytest.raises(NotFound):
                await other.status(results[0].id)

    run(scenario())
