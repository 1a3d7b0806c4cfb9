"""W8's Python worker (`spindle bench` starts it): `python -m spindle_client.bench_worker
URL WORKER_ID SLOTS`. One kind, a no-op `def` handler, so what W8 measures is the SDK and
the protocol end to end. Prints "ready" once connected."""

from __future__ import annotations

import sys

from .worker import Worker

KIND = "bench.remote_noop"


def main() -> None:
    url, worker_id, slots = sys.argv[1], sys.argv[2], int(sys.argv[3])
    worker = Worker(url, worker_id=worker_id, slots=slots, drain_grace=0.0)

    @worker.job(KIND, description="W8: does nothing, in a worker process")
    def noop(ctx, args):
        return None

    worker.start()
    worker.wait_connected()
    print("ready", flush=True)
    sys.stdin.read()  # runs until the bench closes its stdin
    worker.stop()


if __name__ == "__main__":
    main()
