"""The FastAPI example against the real server: the web app (examples/fastapi_app.py,
through FastAPI's TestClient) submits, and its worker (examples/report_worker.py, a real
process) runs the function that used to be a BackgroundTasks call: 202 with a job id,
status while it runs, the result at the end."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def report_worker(server):
    env = dict(os.environ, SPINDLE_SERVER=server.url, PYTHONPATH=str(EXAMPLES.parent))
    process = subprocess.Popen([sys.executable, str(EXAMPLES / "report_worker.py")], env=env)
    from spindle_client import Client

    with Client(server.url) as client:
        deadline = time.monotonic() + 30
        while not any(k.name == "reports.build" and k.workers for k in client.kinds()):
            assert time.monotonic() < deadline, "the report worker did not connect"
            time.sleep(0.05)
    yield process
    process.terminate()
    process.wait(10)


@pytest.fixture()
def web(server, report_worker, monkeypatch):
    monkeypatch.setenv("SPINDLE_SERVER", server.url)
    import fastapi_app

    module = importlib.reload(fastapi_app)  # picks up this server's address
    with TestClient(module.app) as web:
        yield web


def test_post_answers_202_then_status_reaches_the_result(web, client):
    answer = web.post("/reports", json={"pages": 4})
    assert answer.status_code == 202
    body = answer.json()
    assert body["state"] == "queued"
    assert answer.headers["location"].endswith(f"/reports/{body['job_id']}")

    client.wait(body["job_id"], timeout=30)
    status = web.get(f"/reports/{body['job_id']}").json()
    assert status["state"] == "succeeded"
    assert status["result"]["pages"] == 4
    assert status["progress"] == 1.0


def test_a_permanent_error_in_the_worker_reaches_the_web_client(web, client):
    cursed = web.post("/reports", json={"pages": 13}).json()
    client.wait(cursed["job_id"], timeout=30)
    status = web.get(f"/reports/{cursed['job_id']}").json()
    assert status["state"] == "failed" and "cursed" in status["error"]


def test_a_retried_post_with_the_same_request_id_gets_the_same_job(web):
    first = web.post("/reports", json={"pages": 1, "request_id": "r-42"}).json()
    again = web.post("/reports", json={"pages": 1, "request_id": "r-42"}).json()
    assert again["job_id"] == first["job_id"]


def test_bad_input_and_unknown_reports(web):
    assert web.post("/reports", json={"pages": 0}).status_code == 422
    assert web.get("/reports/0193a1b2-0000-7000-8000-000000000000").status_code == 404
    assert web.get("/reports/nonsense").status_code == 404
