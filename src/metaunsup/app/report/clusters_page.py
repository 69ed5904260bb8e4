"""``cluster --report DIR``: one self-contained HTML page that explains a clustering.

The page (``DIR/index.html``) holds the summary, what was done to each column of a table, a
2-D map of the embedding coloured by cluster (the first two principal components, drawn by
matplotlib and inlined as a ``data:image/png;base64`` URI), and per cluster its size, its
exemplars and the features that set it apart (Cohen's d against the rest,
:mod:`metaunsup.cluster.explain`), and for images a gallery: its most typical images, then
others taken evenly through its members. It loads nothing from a network and needs no server: every
byte is in the file. Each cluster is one ``<section class="cluster" id="cluster-<c>">``.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaunsup.app.report.html_parts import STYLE, png_uri, table_html, write_index
from metaunsup.cluster.explain import ClusterExplanation

__all__ = ["cluster_map_png", "gallery_members", "render_page", "write_page"]

#: Images in a cluster's gallery.
GALLERY_SIZE = 12


def cluster_map_png(z: np.ndarray, labels: np.ndarray) -> bytes:
    """PNG bytes: the rows' embedding ``z`` ``[n, D]`` projected on its first two principal
    components, one colour per cluster of ``labels`` ``[n]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centred = z - z.mean(0)
    if centred.shape[1] >= 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
    else:
        xy = np.column_stack([centred[:, 0], np.zeros(len(z))])
    fig, ax = plt.subplots(figsize=(6, 5), dpi=90)
    try:
        cmap = plt.get_cmap("tab20" if labels.max() >= 10 else "tab10")
        for c in np.unique(labels):
            pts = xy[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=6, color=cmap(int(c) % cmap.N), label=str(c))
        ax.set_xlabel("principal component 1 of the embedding")
        ax.set_ylabel("principal component 2")
        ax.legend(title="cluster", markerscale=2, fontsize="small", loc="best")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def gallery_members(
    e: ClusterExplanation, labels: np.ndarray, size: int = GALLERY_SIZE
) -> list[int]:
    """Positions of the images of cluster ``e`` to show: its exemplars (most typical first),
    then other members taken evenly through the cluster in input order, ``size`` at most."""
    others = np.setdiff1d(np.flatnonzero(labels == e.label), e.exemplars)
    room = max(0, size - len(e.exemplars))
    at = np.linspace(0, others.size - 1, min(room, others.size)).round().astype(int)
    return [*e.exemplars[:size], *others[at].tolist()]


def _cluster_section(
    e: ClusterExplanation,
    total: int,
    row_name: Callable[[int], str],
    units: Callable[[str, float], str],
    gallery: bytes | None = None,
) -> str:
    exemplars = ", ".join(row_name(i) for i in e.exemplars) or "none"
    rows = [
        (f.feature, units(f.feature, f.mean_in), units(f.feature, f.mean_out), f"{f.effect:+.2f}")
        for f in e.features
    ]
    features = (
        table_html(("feature", "mean in cluster", "mean in the rest", "effect size (d)"), rows)
        if rows
        else "<p>No feature differs from the rest.</p>"
    )
    images = ""
    if gallery is not None:
        images = (
            "<h3>Its images</h3><p>The most typical first, then others from across the cluster."
            f'</p><img class="gallery" alt="images of cluster {e.label}" src="{png_uri(gallery)}">'
        )
    return (
        f'<section class="cluster" id="cluster-{e.label}"><h2>Cluster {e.label}</h2>'
        f"<p>{e.size} rows ({e.size / total:.1%}). Most typical: {html.escape(exemplars)}.</p>"
        f"{images}<h3>What sets it apart</h3>{features}</section>"
    )


def render_page(
    info: dict[str, Any],
    explanations: Sequence[ClusterExplanation],
    map_png: bytes,
    columns: Sequence[str] = (),
    row_name: Callable[[int], str] = lambda i: f"row {i}",
    units: Callable[[str, float], str] = lambda _f, v: f"{v:.4g}",
    galleries: Sequence[bytes] | None = None,
) -> str:
    """The HTML text of the page: ``info`` (the ``cluster`` summary), one explanation per
    cluster, the map's PNG bytes, one line per table column (``columns``, may be empty);
    ``row_name`` names a row position, ``units`` words a feature's mean; ``galleries``: for
    images, one PNG per explanation (see :func:`gallery_members`)."""
    total = sum(e.size for e in explanations)
    uri = png_uri(map_png)
    summary = [
        ("input", info["input"]),
        ("rows", info["examples"]),
        ("clusters", f"{info['k']} ({info['k_reason']})"),
        ("cluster sizes", ", ".join(f"{e.label}: {e.size}" for e in explanations)),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>metaunsup: clusters of {html.escape(str(info['input']))}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Clusters of {html.escape(str(info['input']))}</h1>",
        table_html(None, summary),
    ]
    if columns:
        parts.append("<h2>Columns</h2><ul>")
        parts += [f"<li>{html.escape(line)}</li>" for line in columns]
        parts.append("</ul>")
    parts.append(
        "<h2>Map of the embedding</h2>"
        f'<img class="map" alt="2-D map of the embedding, coloured by cluster" src="{uri}">'
    )
    shown = galleries if galleries is not None else [None] * len(explanations)
    parts += [
        _cluster_section(e, total, row_name, units, gallery)
        for e, gallery in zip(explanations, shown, strict=True)
    ]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_page(folder: str | Path, page: str) -> Path:
    """Write ``page`` as ``folder/index.html`` (atomically; the folder is created)."""
    return write_index(folder, page)
