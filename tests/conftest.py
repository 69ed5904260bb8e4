"""Test set-up: point METAUNSUP_DATA at ../shared/datasets (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads spin by default; on a busy 2-core machine that starves the other core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
if "METAUNSUP_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["METAUNSUP_DATA"] = str(SHARED_DATA)

DATA_ROOT = Path(os.environ.get("METAUNSUP_DATA", str(SHARED_DATA)))

torch.set_num_threads(min(2, torch.get_num_threads()))


def _need(folder: str) -> pytest.MarkDecorator:
    path = DATA_ROOT / folder
    return pytest.mark.skipif(
        not path.is_dir(),
        reason=f"real {folder} files not found at {path} (set METAUNSUP_DATA to the folder "
        f"holding {folder}/)",
    )


needs_mnist = _need("mnist")
needs_omniglot = _need("omniglot")


@pytest.fixture(scope="session")
def data_root() -> Path:
    return DATA_ROOT


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures(...)``):
    small tensors gain nothing from threads, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
