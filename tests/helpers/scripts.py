"""Import a script of ``benchmarks/`` as a module, for tests of its pure functions."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def benchmark_module(name: str) -> Iterator[ModuleType]:
    """Yield ``benchmarks/NAME.py`` imported as a module (for a pytest fixture): its folder is
    on ``sys.path`` meanwhile, since the scripts import ``benchmarks/_record.py``."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))
