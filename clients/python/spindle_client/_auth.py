"""Bearer tokens on every call: a channel interceptor (sync and asyncio) that adds
`authorization: Bearer <token>` metadata, so no method has to pass it. Interceptors rather
than call credentials, which gRPC sends only over TLS: a token to a loopback server in
plaintext is fine, and the server's `--auth` works the same either way."""

import collections
import os
from typing import Optional

import grpc
import grpc.aio


def token_from(token: Optional[str]) -> Optional[str]:
    """The token given, else SPINDLE_TOKEN (the CLI's), else None."""
    token = token if token is not None else os.environ.get("SPINDLE_TOKEN")
    token = (token or "").strip()
    return token or None


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


def _with_token(details, header):
    metadata = list(details.metadata or []) + [header]
    return _Details(
        details.method,
        details.timeout,
        metadata,
        details.credentials,
        details.wait_for_ready,
        getattr(details, "compression", None),
    )


class Bearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """For grpc channels (`grpc.intercept_channel`)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:  # never the token
        return "Bearer(..)"

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(_with_token(details, self._header), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(_with_token(details, self._header), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(_with_token(details, self._header), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(_with_token(details, self._header), requests)


def _aio_details(details, header):
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add(*header)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, header):
        self._header = header

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(_aio_details(details, self._header), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, header):
        self._header = header

    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(_aio_details(details, self._header), request)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, header):
        self._header = header

    async def intercept_stream_stream(self, continuation, details, requests):
        return await continuation(_aio_details(details, self._header), requests)


def aio_interceptors(token: Optional[str]) -> list:
    """The interceptors a grpc.aio channel takes at creation, one per call shape."""
    if token is None:
        return []
    header = ("authorization", f"Bearer {token}")
    return [_AioUnaryUnary(header), _AioUnaryStream(header), _AioStreamStream(header)]
