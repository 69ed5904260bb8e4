"""Where the real datasets are, and markers that skip a test (with the reason) without them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
if "METAUNSUP_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["METAUNSUP_DATA"] = str(SHARED_DATA)

DATA_ROOT = Path(os.environ.get("METAUNSUP_DATA", str(SHARED_DATA)))


def _need(folder: str) -> pytest.MarkDecorator:
    path = DATA_ROOT / folder
    return pytest.mark.skipif(
        not path.is_dir(),
        reason=f"real {folder} files not found at {path} (set METAUNSUP_DATA to the folder "
        f"holding {folder}/)",
    )


needs_mnist = _need("mnist")
needs_omniglot = _need("omniglot")
