"""The Python client against the real server: every built-in kind, watching, resuming,
cancelling, long-polling, listing, and the errors bad input gets."""

from __future__ import annotations

import hashlib
import http.server
import struct
import threading
import zlib

import grpc
import pytest

from spindle_client import (
    AlreadyExists,
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

UNKNOWN_ID = "0193a1b2-0000-7000-8000-000000000000"


def test_kinds_lists_every_built_in_kind_with_its_pool_and_args(client):
    kinds = {k.name: k for k in client.kinds()}
    assert {"demo.sleep", "demo.cpu", "file.checksum", "image.thumbnail", "http.request"} <= set(kinds)
    assert kinds["demo.cpu"].pool == "cpu" and kinds["demo.sleep"].pool == "io"
    assert "rounds" in [f.name for f in kinds["demo.cpu"].fields]
    assert kinds["file.checksum"].args_schema["type"] == "object"


def test_demo_sleep_watch_sees_every_state_and_progress_in_order(client):
    job = client.submit("demo.sleep", {"seconds": 0.3, "steps": 3}, labels={"suite": "py"})
    assert job.state == "queued" and len(job.id) == 36 and not job.existing
    events = list(client.watch(job.id))
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), "seq strictly increasing"
    assert [e.state for e in events if e.type == "state"][:2] == ["queued", "running"]
    assert any(e.type == "progress" for e in events)
    last = events[-1]
    assert last.type == "finished" and last.state == "succeeded"
    assert last.result == {"slept_seconds": 0.3, "steps": 3}
    assert isinstance(last.result["steps"], int), "whole numbers read back as int"
    done = client.status(job.id)
    assert done.done and done.result == last.result and done.last_seq == last.seq
    assert done.labels == {"suite": "py"} and done.finished_at >= done.created_at


def test_watch_after_seq_resumes_without_gap_or_duplicate(client):
    job = client.submit("demo.sleep", {"seconds": 0.2, "steps": 4})
    live = [e.seq for e in client.watch(job.id)]
    # The stored log may have dropped progress events that a newer one superseded, so
    # compare against a replay of the finished log.
    replay = [e.seq for e in client.watch(job.id)]
    assert set(replay) <= set(live) and replay[-1] == live[-1]
    tail = [e.seq for e in client.watch(job.id, after_seq=replay[1])]
    assert tail == replay[2:]


def test_demo_cpu_runs_on_the_cpu_pool_and_returns_its_digest(client):
    job = client.submit("demo.cpu", {"rounds": 2000})
    done = client.wait(job.id, timeout=30)
    assert done.state == "succeeded"
    assert done.result["rounds"] == 2000 and len(done.result["digest"]) == 64


def test_file_checksum_matches_hashlib(client, server):
    data = b"spindle from python\n" * 1000
    (server.files / "py.txt").write_bytes(data)
    job = client.submit("file.checksum", {"path": "py.txt", "algorithm": "sha256"})
    done = client.wait(job.id, timeout=30)
    assert done.state == "succeeded", done.error
    assert done.result["digest"] == hashlib.sha256(data).hexdigest()
    assert done.result["size"] == len(data)


def _png(width: int, height: int) -> bytes:
    """A valid RGB PNG written by hand (no imaging library needed)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    rows = b"".join(
        b"\x00" + b"".join(bytes((x % 256, y % 256, 128)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_image_thumbnail_fits_the_box_and_keeps_the_aspect_ratio(client, server):
    (server.files / "wide.png").write_bytes(_png(200, 100))
    job = client.submit(
        "image.thumbnail", {"input": "wide.png", "output": "thumb.png", "width": 50, "height": 50}
    )
    done = client.wait(job.id, timeout=30)
    assert done.state == "succeeded", done.error
    assert (done.result["width"], done.result["height"]) == (50, 25)
    assert (server.files / "thumb.png").read_bytes().startswith(b"\x89PNG")


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 404 if self.path == "/missing" else 200
        body = b"hello from python"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def web():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_request_records_status_and_body(client, web):
    done = client.wait(client.submit("http.request", {"url": web + "/hi"}).id, timeout=30)
    assert done.state == "succeeded", done.error
    assert done.result["status"] == 200 and done.result["body"] == "hello from python"


def test_http_404_fails_permanently_without_retry(client, web):
    job = client.submit("http.request", {"url": web + "/missing"}, max_attempts=3)
    done = client.wait(job.id, timeout=30)
    assert done.state == "failed" and done.attempt == 1
    assert done.error.kind == "permanent" and "404" in done.error.message


def test_cancel_a_running_job(client):
    job = client.submit("demo.sleep", {"seconds": 60, "steps": 60})
    for event in client.watch(job.id):
        if event.type == "state" and event.state == "running":
            break
    cancelled = client.cancel(job.id)
    assert cancelled.cancel_requested
    done = client.wait(job.id, timeout=10)
    assert done.state == "cancelled" and done.error.kind == "cancelled"
    with pytest.raises(FailedPrecondition):
        client.cancel(job.id)


def test_long_poll_returns_when_the_job_ends_or_the_wait_passes(client):
    job = client.submit("demo.sleep", {"seconds": 0.3, "steps": 1})
    assert client.status(job.id, wait=0.01).state in ("queued", "running")
    done = client.status(job.id, wait=30)
    assert done.state == "succeeded"


def test_delayed_job_is_scheduled_and_listed(client):
    job = client.submit("demo.sleep", {"seconds": 0}, delay=3600, labels={"case": "delayed"})
    assert job.state == "scheduled" and job.run_at is not None
    listed = client.jobs(state="scheduled", labels={"case": "delayed"})
    assert [j.id for j in listed] == [job.id]
    assert listed[0].args == {"seconds": 0}
    basic = client.jobs(state="scheduled", labels={"case": "delayed"}, basic=True)
    assert [j.id for j in basic] == [job.id] and basic[0].args == {}
    client.cancel(job.id)


def test_idempotency_key_returns_the_first_job(client):
    first = client.submit("demo.sleep", {"seconds": 0}, idempotency_key="py-order-1")
    again = client.submit("demo.sleep", {"seconds": 0}, idempotency_key="py-order-1")
    assert again.existing and again.id == first.id
    with pytest.raises(AlreadyExists):
        client.submit("demo.sleep", {"seconds": 1}, idempotency_key="py-order-1")


def test_bad_args_raise_invalid_argument_naming_the_field(client):
    with pytest.raises(InvalidArgument) as raised:
        client.submit("demo.sleep", {"seconds": "soon"})
    error = raised.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["args.seconds"], error.violations
    assert "args.seconds" in str(error)


def test_unknown_kind_names_the_kind_field(client):
    with pytest.raises(InvalidArgument) as raised:
        client.submit("no.such.kind")
    assert [v.field for v in raised.value.violations] == ["kind"]


def test_malformed_and_unknown_ids(client):
    with pytest.raises(InvalidArgument) as raised:
        client.status("not-a-uuid")
    assert [v.field for v in raised.value.violations] == ["id"]
    with pytest.raises(NotFound):
        client.status(UNKNOWN_ID)
    with pytest.raises(NotFound):
        list(client.watch(UNKNOWN_ID))


def test_path_outside_the_files_folder_is_refused(client):
    with pytest.raises(PermissionDenied) as raised:
        client.submit("file.checksum", {"path": "/etc/passwd"})
    assert [v.field for v in raised.value.violations] == ["args.path"]
    with pytest.raises(PermissionDenied) as raised:
        client.submit("file.checksum", {"path": "../../etc/passwd"})
    assert [v.field for v in raised.value.violations] == ["args.path"]


def test_unreachable_server_raises_unavailable():
    with Client("127.0.0.1:1", timeout=2) as client:
        with pytest.raises(Unavailable):
            client.kinds()


def test_watch_resumes_across_a_server_restart(own_server):
    with Client(own_server.url, timeout=10) as client:
        job = client.submit("demo.sleep", {"seconds": 3, "steps": 30})
        seen = []
        for event in client.watch(job.id, reconnect_for=30):
            seen.append(event)
            if len(seen) == 4:
                own_server.restart()  # SIGTERM: the job goes back to QUEUED and reruns
        seqs = [e.seq for e in seen]
        assert seqs == sorted(set(seqs)), f"no duplicate and in order: {seqs}"
        assert seen[-1].type == "finished" and seen[-1].state == "succeeded"
        assert client.status(job.id).last_seq == seqs[-1]
        states = [e.state for e in seen if e.type == "state"]
        assert states.count("running") >= 2, f"ran again after the restart: {states}"


def test_submit_batch_answers_each_job_in_order(client):
    results = client.submit_batch(
        [
            {"kind": "demo.noop", "args": {"payload": "a"}},
            {"kind": "demo.sleep", "args": {"seconds": "soon"}},
            {"kind": "demo.noop", "delay": 3600, "labels": {"case": "batch"}},
        ]
    )
    first, refused, delayed = results
    assert first.state == "queued" and not first.existing
    assert isinstance(refused, InvalidArgument)
    assert [v.field for v in refused.violations] == ["args.seconds"]
    assert delayed.state == "scheduled"
    assert client.wait(first.id, timeout=30).state == "succeeded"
    assert client.status(delayed.id).labels == {"case": "batch"}
    with pytest.raises(InvalidArgument):
        client.submit_batch([])


def test_namespaces_are_isolated(server):
    with Client(server.url, timeout=10, namespace="team-a") as a, Client(
        server.url, timeout=10, namespace="team-b"
    ) as b:
        job = a.submit("demo.sleep", {"seconds": 0}, idempotency_key="py-ns-1", labels={"t": "ns"})
        assert job.namespace == "team-a"
        assert a.wait(job.id, timeout=10).state == "succeeded"
        # Another namespace never finds it, nor learns that it exists.
        for call in (lambda: b.status(job.id), lambda: b.cancel(job.id)):
            with pytest.raises(NotFound):
                call()
        with pytest.raises(NotFound):
            next(b.watch(job.id))
        assert [j.id for j in a.jobs(labels={"t": "ns"})] == [job.id]
        assert b.jobs(labels={"t": "ns"}) == []
        # The same idempotency key is another job in another namespace.
        other = b.submit("demo.sleep", {"seconds": 0}, idempotency_key="py-ns-1")
        assert other.id != job.id and not other.existing
        # A bad name is refused, naming the field.
        with Client(server.url, timeout=10, namespace="no spaces") as bad:
            with pytest.raises(InvalidArgument) as raised:
                bad.submit("demo.sleep", {"seconds": 0})
            assert [v.field for v in raised.value.violations] == ["namespace"]
