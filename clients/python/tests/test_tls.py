"""TLS and mTLS from Python: the sync and async clients reach a TLS server with its CA
(`https://` and `ca=`), and a server that requires client certificates with `cert=` and
`key=`, as a Worker does; a plaintext client does not get through. Certificates are made
by openssl."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest

from conftest import Server
from spindle_client import AsyncClient, Client, SpindleError, Worker

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("the TLS tests need openssl, and CI is set")
        pytest.skip("needs openssl to make certificates")
    d = tmp_path_factory.mktemp("certs")
    _openssl(d, "req", "-x509", *EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=py test CA")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=py client")):
        _openssl(d, "req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        _openssl(
            d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        )
    return d


def test_tls_and_mtls(certs, tmp_path):
    tls = {"SPINDLE_TLS_CERT": str(certs / "server.pem"), "SPINDLE_TLS_KEY": str(certs / "server.key")}
    server = Server(tmp_path / "tls", env=tls)
    try:
        port = server.addr.rsplit(":", 1)[1]
        with Client(f"https://127.0.0.1:{port}", ca=str(certs / "ca.pem"), timeout=10) as secure:
            assert any(k.name == "demo.sleep" for k in secure.kinds())
        with Client(f"http://127.0.0.1:{port}", timeout=3) as plain:
            with pytest.raises(SpindleError):
                plain.kinds()

        async def from_async():
            async with AsyncClient(f"https://127.0.0.1:{port}", ca=str(certs / "ca.pem"), timeout=10) as spindle:
                return await spindle.kinds()

        assert asyncio.run(from_async())
    finally:
        server.stop()

    mtls = dict(tls, SPINDLE_TLS_CLIENT_CA=str(certs / "ca.pem"))
    server = Server(tmp_path / "mtls", env=mtls)
    try:
        url = f"https://127.0.0.1:{server.addr.rsplit(':', 1)[1]}"
        with Client(url, ca=str(certs / "ca.pem"), timeout=3) as anonymous:
            with pytest.raises(SpindleError):
                anonymous.kinds()
        client = Client(
            url, ca=str(certs / "ca.pem"), cert=str(certs / "client.pem"), key=str(certs / "client.key"), timeout=10
        )
        with client:
            assert any(k.name == "demo.sleep" for k in client.kinds())
            # A worker reaches the mTLS server the same way and runs a job.
            worker = Worker(
                url, worker_id="tls-worker", slots=2, drain_grace=0.0,
                ca=str(certs / "ca.pem"), cert=str(certs / "client.pem"), key=str(certs / "client.key"),
            )

            @worker.job("tls.echo")
            def echo(ctx, args):
                return {"echo": args["text"]}

            worker.start()
            try:
                assert worker.wait_connected(10), "the worker connected over mTLS"
                job = client.submit("tls.echo", {"text": "sealed"})
                done = client.wait(job.id, timeout=10)
                assert (done.state, done.result) == ("succeeded", {"echo": "sealed"})
            finally:
                worker.stop()
    finally:
        server.stop()
