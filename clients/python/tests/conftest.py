"""Runs the real `spindle` binary for the suite: SPINDLE_BIN, else the repo's debug build.

Each server gets its own data and files folders, listens on 127.0.0.1:0, and is known to
be serving once it logs its address (no sleeps).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, from the checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from spindle_client import Client  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
_ADDR = re.compile(r"addr=(\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def spindle_binary() -> Path:
    path = Path(os.environ.get("SPINDLE_BIN", REPO / "target" / "debug" / "spindle"))
    if not path.is_file():
        pytest.fail(f"no spindle binary at {path}: run `cargo build` or set SPINDLE_BIN")
    return path


class Server:
    """One spindle process; `restart()` brings it back on the same address and data."""

    def __init__(self, root: Path, env: dict | None = None):
        self.root = root
        self.extra_env = env or {}
        self.files = root / "files"
        self.addr = "127.0.0.1:0"
        self.process = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def start(self) -> None:
        env = dict(
            os.environ,
            SPINDLE_ADDR=self.addr,
            SPINDLE_DATA_DIR=str(self.root / "data"),
            SPINDLE_FILES_DIR=str(self.files),
            SPINDLE_SHUTDOWN_GRACE="0s",
            # The web stub of the http.request tests listens here.
            SPINDLE_ALLOW_EGRESS="127.0.0.1",
            RUST_LOG="info",
            **self.extra_env,
        )
        self.process = subprocess.Popen(
            [str(spindle_binary()), "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in self.process.stderr:
            found = _ADDR.search(_ANSI.sub("", line))
            if found and "serving" in line:
                self.addr = found.group(1)
                break
        else:
            raise RuntimeError(f"spindle exited ({self.process.wait()}) before serving")
        # Keep draining stderr so the server never blocks on a full pipe.
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("spindle"))
    yield server
    server.stop()


@pytest.fixture()
def client(server):
    with Client(server.url, timeout=10) as client:
        yield client


@pytest.fixture()
def own_server(tmp_path):
    """A server of the test's own, for tests that restart it."""
    server = Server(tmp_path)
    yield server
    server.stop()
