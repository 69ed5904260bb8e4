"""The JSON record every benchmark writes beside its printed table: what ran (name, UTC date,
the exact command), the benchmark's own fields in the order given, then ``wrote PATH``.

Imported by the scripts in this folder as ``from _record import write_record`` (a script's
folder is first on ``sys.path``).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def write_record(name: str, argv: list[str] | None, path: Path, **fields: Any) -> None:
    """Write ``{"benchmark": name, "date": …, "command": …, **fields}`` to ``path`` as
    indented JSON (creating its folder) and say so on stdout."""
    record = {
        "benchmark": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": f"python benchmarks/{name}.py " + " ".join(argv or sys.argv[1:]),
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
