"""A worker process for the worker tests: `python worker_app.py URL WORKER_ID SLOTS
MARKERS_DIR`. Its handlers cover the three routes (thread, coroutine, process) and write
marker files the tests read to see what ran where."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spindle_client import PermanentError, Worker  # noqa: E402

URL, WORKER_ID, SLOTS, MARKERS = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])

worker = Worker(URL, worker_id=WORKER_ID, slots=SLOTS, drain_grace=0.0, cancel_grace=0.3)


@worker.job("t.square", schema={"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}})
def square(ctx, args):
    """Squares n after `sleep` seconds."""
    ctx.progress(done=0, total=1, message="starting")
    time.sleep(args.get("sleep", 0))
    ctx.progress(done=1, total=1, message="done")
    return {"square": args["n"] ** 2, "worker": WORKER_ID}


@worker.job("t.slow")
def slow(ctx, args):
    """Sleeps in short steps for `seconds` (`seconds_on` gives some workers their own);
    writes a marker if it is stopped."""
    seconds = args.get("seconds_on", {}).get(WORKER_ID, args["seconds"])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ctx.cancelled:
            (MARKERS / f"stopped-{ctx.job_id}-{WORKER_ID}").write_text(ctx.cancel_reason)
            ctx.raise_if_cancelled()
        time.sleep(0.02)
    return {"worker": WORKER_ID}


@worker.job("t.wait_sync")
def wait_sync(ctx, args):
    ctx.wait_cancelled()
    ctx.raise_if_cancelled()


@worker.job("t.wait_async")
async def wait_async(ctx, args):
    await asyncio.sleep(3600)


@worker.job("t.wait_cpu", cpu=True)
def wait_cpu(ctx, args):
    while True:  # never looks at ctx: the pool terminates it after the grace
        pass


@worker.job("t.block_loop")
async def block_loop(ctx, args):
    """Blocks the handler loop (what an async handler must not do): the worker's session
    runs on its own loop and thread, so its heartbeats go on."""
    time.sleep(args["seconds"])
    return {"worker": WORKER_ID}


@worker.job("t.always_fails", max_attempts=2)
def always_fails(ctx, args):
    raise RuntimeError(f"attempt {ctx.attempt} failed")


@worker.job("t.permanent")
def permanent(ctx, args):
    raise PermanentError("this input can never work")


if __name__ == "__main__":
    worker.run()
