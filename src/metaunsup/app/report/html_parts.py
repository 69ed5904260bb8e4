"""The pieces the self-contained HTML pages share (``cluster --report``, ``detect --report``):
the style sheet, an escaped table, a PNG inlined as a ``data:`` URI, and the atomic write of
``DIR/index.html``. Nothing on a page is loaded from elsewhere: every byte is in the file."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metaunsup.fileio import atomic_write_text

__all__ = ["STYLE", "png_uri", "table_html", "write_index"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; }
section.cluster { border-top: 2px solid #888; margin-top: 1.5em; }
img.map { max-width: 100%; }
img.gallery { max-width: 100%; image-rendering: pixelated; }
tr.flagged td { background: #fde8e8; }
"""


def png_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes, to inline an image in a page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def table_html(
    header: Sequence[str] | None,
    rows: Sequence[Sequence[Any]],
    row_classes: Sequence[str] | None = None,
) -> str:
    """An HTML table, every cell escaped; ``row_classes`` gives each row a CSS class."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header or ())
    classes = row_classes or [""] * len(rows)
    body = "".join(
        (f'<tr class="{html.escape(cls)}">' if cls else "<tr>")
        + "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
        + "</tr>"
        for row, cls in zip(rows, classes, strict=True)
    )
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def write_index(folder: str | Path, page: str) -> Path:
    """Write ``page`` as ``folder/index.html`` (atomically; the folder is created)."""
    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out / "index.html", page)
