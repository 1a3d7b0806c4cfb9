"""The FastAPI example (examples/fastapi_app.py) against the real server, through
FastAPI's TestClient: 202 with a job id, status while it runs, the result at the end."""

from __future__ import annotations

import importlib

import pytest
from fastapi.testclient import TestClient


@pytest.fixture()
def web(server, monkeypatch):
    monkeypatch.setenv("SPINDLE_SERVER", server.url)
    import fastapi_app

    module = importlib.reload(fastapi_app)  # picks up this server's address
    with TestClient(module.app) as web:
        yield web
    module.spindle.close()


def test_post_answers_202_then_status_reaches_the_result(web, client):
    answer = web.post("/reports", json={"pages": 4})
    assert answer.status_code == 202
    body = answer.json()
    assert body["state"] == "queued"
    assert answer.headers["location"].endswith(f"/reports/{body['job_id']}")

    client.wait(body["job_id"], timeout=30)
    status = web.get(f"/reports/{body['job_id']}").json()
    assert status["state"] == "succeeded"
    assert status["result"] == {"slept_seconds": 0.2, "steps": 4}
    assert status["progress"] == 1.0


def test_a_retried_post_with_the_same_request_id_gets_the_same_job(web):
    first = web.post("/reports", json={"pages": 1, "request_id": "r-42"}).json()
    again = web.post("/reports", json={"pages": 1, "request_id": "r-42"}).json()
    assert again["job_id"] == first["job_id"]


def test_bad_input_and_unknown_reports(web):
    assert web.post("/reports", json={"pages": 0}).status_code == 422
    assert web.get("/reports/0193a1b2-0000-7000-8000-000000000000").status_code == 404
    assert web.get("/reports/nonsense").status_code == 404
