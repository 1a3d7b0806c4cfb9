"""Generates the gRPC stubs from ../../proto into the built package (see _codegen.py)."""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

_HERE = Path(__file__).resolve().parent


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        spec = importlib.util.spec_from_file_location(
            "_codegen", _HERE / "spindle_client" / "_codegen.py"
        )
        codegen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(codegen)
        codegen.generate(
            Path(self.build_lib) / "spindle_client" / "_generated", _HERE.parent.parent / "proto"
        )


setup(cmdclass={"build_py": BuildWithStubs})
