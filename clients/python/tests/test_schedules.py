"""Schedules from Python against the real server: the sync and async clients create,
read, update (with a conflict token), pause, resume, trigger, backfill, list and delete;
a schedule firing every second makes jobs ListJobs finds by schedule id; bad specs are
refused naming the field."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest

from spindle_client import AlreadyExists, AsyncClient, FailedPrecondition, InvalidArgument, NotFound


def test_a_schedule_fires_and_is_managed_from_python(client):
    created = client.create_schedule("py-tick", "demo.noop", {"payload": "x"}, every=1, request_id="r-1")
    assert created.every == timedelta(seconds=1) and created.overlap == "skip"
    assert len(created.next_fires) == 10
    again = client.create_schedule("py-tick", "demo.noop", {"payload": "x"}, every=1, request_id="r-1")
    assert again.created_at == created.created_at
    with pytest.raises(AlreadyExists):
        client.create_schedule("py-tick", "demo.noop", every=1, request_id="r-2")

    deadline = time.monotonic() + 15
    while len(client.jobs(schedule_id="py-tick")) < 2:
        assert time.monotonic() < deadline, "two fires within 15 s"
        time.sleep(0.1)
    jobs = client.jobs(schedule_id="py-tick")
    assert all(j.schedule_id == "py-tick" and j.schedule_slot for j in jobs)
    assert len({j.schedule_slot for j in jobs}) == len(jobs)

    current = client.get_schedule("py-tick")
    assert current.runs >= 2 and current.recent_runs[0].outcome == "fired"
    with pytest.raises(FailedPrecondition):
        client.update_schedule("py-tick", "demo.noop", cron="0 3 * * *", conflict_token="0")
    updated = client.update_schedule(
        "py-tick", "demo.noop", cron="0 3 * * *", timezone="Europe/Berlin",
        overlap="buffer_one", catchup_window=600, conflict_token=current.conflict_token,
    )
    assert (updated.cron, updated.timezone, updated.overlap) == ("0 3 * * *", "Europe/Berlin", "buffer_one")
    assert updated.catchup_window == timedelta(minutes=10)

    paused = client.pause_schedule("py-tick", note="upgrade")
    assert paused.paused and paused.note == "upgrade" and paused.next_fires == []
    assert not client.resume_schedule("py-tick").paused
    triggered = client.trigger_schedule("py-tick")
    assert triggered.schedule_id == "py-tick"

    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    runs = client.backfill_schedule("py-tick", start, start + timedelta(days=2, hours=12))
    assert [r.outcome for r in runs] == ["backfilled"] * 3
    assert [r.slot.hour for r in runs] == [2, 2, 2]  # 03:00 in Berlin's winter
    assert {r.outcome for r in client.backfill_schedule("py-tick", start, start + timedelta(days=2))} == {"already_fired"}

    assert "py-tick" in [s.id for s in client.list_schedules()]
    client.delete_schedule("py-tick")
    with pytest.raises(NotFound):
        client.get_schedule("py-tick")


def test_bad_specs_name_the_field(client):
    with pytest.raises(InvalidArgument) as bad_cron:
        client.create_schedule("bad", "demo.noop", cron="61 * * * *")
    assert [v.field for v in bad_cron.value.violations] == ["spec.cron"]
    with pytest.raises(InvalidArgument) as bad_zone:
        client.create_schedule("bad", "demo.noop", cron="@daily", timezone="Mars/Olympus")
    assert [v.field for v in bad_zone.value.violations] == ["spec.timezone"]
    with pytest.raises(ValueError):
        client.create_schedule("bad", "demo.noop", cron="@daily", every=60)


def test_the_async_client_has_the_same_schedule_methods(server):
    async def scenario():
        async with AsyncClient(server.url, timeout=10) as spindle:
            made = await spindle.create_schedule("aio-nightly", "demo.noop", cron="@daily", paused=True, note="not yet")
            assert made.paused and made.note == "not yet"
            assert (await spindle.get_schedule("aio-nightly")).cron == "@daily"
            resumed = await spindle.resume_schedule("aio-nightly")
            assert resumed.next_fires and not resumed.paused
            job = await spindle.trigger_schedule("aio-nightly")
            listed = await spindle.jobs(schedule_id="aio-nightly")
            assert [j.id for j in listed] == [job.id]
            await spindle.delete_schedule("aio-nightly")
            assert "aio-nightly" not in [s.id for s in await spindle.list_schedules()]

    asyncio.run(scenario())
