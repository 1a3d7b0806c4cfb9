"""Generates the grpcio stubs for spindle/v1/spindle.proto, spindle/v1/schedule.proto and the worker protocol
spindle/worker/v1/worker.proto with grpcio-tools.

The stubs are not committed: setup.py calls this at install time, and the package calls
it on first import when it runs from a checkout (the tests do), so they always match the
proto next to them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROTOS = (
    "spindle/v1/spindle.proto",
    "spindle/v1/schedule.proto",
    "spindle/worker/v1/worker.proto",
)


def default_proto_dir() -> Path:
    """The repository's proto/ folder, or SPINDLE_PROTO_DIR."""
    env = os.environ.get("SPINDLE_PROTO_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "proto"


def generate(out_dir: Path, proto_dir: Path | None = None) -> None:
    """Writes spindle/v1/spindle_pb2*.py and spindle/worker/v1/worker_pb2*.py under out_dir."""
    from grpc_tools import protoc  # only needed to generate, not to run
    import grpc_tools

    proto_dir = proto_dir or default_proto_dir()
    sources = [proto_dir / proto for proto in PROTOS]
    for source in sources:
        if not source.is_file():
            raise RuntimeError(f"cannot generate the Spindle stubs: {source} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *[str(source) for source in sources],
        ]
    )
    if code != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {sources} (exit code {code})")
    packages = ("spindle", "spindle/v1", "spindle/worker", "spindle/worker/v1")
    for package in packages:
        (out_dir / package / "__init__.py").touch()


def is_stale(out_dir: Path, proto_dir: Path | None = None) -> bool:
    """True when the stubs are missing, or older than a proto that is present."""
    for proto in PROTOS:
        stub = out_dir / proto.replace(".proto", "_pb2_grpc.py")
        if not stub.is_file():
            return True
        source = (proto_dir or default_proto_dir()) / proto
        if source.is_file() and source.stat().st_mtime > stub.stat().st_mtime:
            return True
    return False


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "_generated"
    generate(target)
    print(f"generated the Spindle stubs in {target}")
