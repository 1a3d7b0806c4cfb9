"""The Spindle worker of the FastAPI example: it runs `build_report`, the function the
endpoint used to hand to `BackgroundTasks`. The web app only submits; this process (as
many of them as you like, on any machine) does the work, with progress, retries and
cancellation, and a restart of either loses nothing.

    SPINDLE_SERVER=http://127.0.0.1:50051 python report_worker.py
"""

from __future__ import annotations

import os
import time

from spindle_client import JobContext, PermanentError, Worker

worker = Worker(os.environ.get("SPINDLE_SERVER", "127.0.0.1:50051"), slots=4)

REPORT_ARGS = {
    "type": "object",
    "required": ["pages"],
    "properties": {"pages": {"type": "integer", "minimum": 1, "maximum": 100}},
}


@worker.job("reports.build", schema=REPORT_ARGS)
def build_report(ctx: JobContext, args: dict) -> dict:
    """Builds a report, a page at a time (the work BackgroundTasks used to run)."""
    pages = args["pages"]
    if pages == 13:
        raise PermanentError("page 13 is cursed: retrying cannot help")
    for page in range(1, pages + 1):
        ctx.raise_if_cancelled()
        time.sleep(0.05)  # the real work
        ctx.progress(done=page, total=pages, message=f"page {page}")
    return {"pages": pages, "built_by": worker.worker_id}


if __name__ == "__main__":
    worker.run()
