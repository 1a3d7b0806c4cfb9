"""Loads the generated stubs, generating them first when running from a checkout.

grpcio-tools writes modules that import each other as `spindle.v1.*`, so their folder goes
on sys.path; the rest of the package imports `pb` and `pb_grpc` from here and nowhere else.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import _codegen

_GENERATED = Path(__file__).parent / "_generated"

if _codegen.is_stale(_GENERATED):
    _codegen.generate(_GENERATED)
if str(_GENERATED) not in sys.path:
    sys.path.insert(0, str(_GENERATED))

from spindle.v1 import schedule_pb2 as spb  # noqa: E402
from spindle.v1 import schedule_pb2_grpc as spb_grpc  # noqa: E402
from spindle.v1 import spindle_pb2 as pb  # noqa: E402
from spindle.v1 import spindle_pb2_grpc as pb_grpc  # noqa: E402
from spindle.worker.v1 import worker_pb2 as wpb  # noqa: E402
from spindle.worker.v1 import worker_pb2_grpc as wpb_grpc  # noqa: E402

__all__ = ["pb", "pb_grpc", "spb", "spb_grpc", "wpb", "wpb_grpc"]
