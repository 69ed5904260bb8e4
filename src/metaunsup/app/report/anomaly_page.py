"""``detect --report DIR``: one self-contained HTML page that explains an anomaly ranking.

The page (``DIR/index.html``) holds the summary (how many flagged at which target false-alarm
rate, the threshold and how it was calibrated), a histogram of the scores with the threshold, a
2-D map of the examples (the first two principal components of the standardised input)
coloured by score with the flagged ones circled, the most anomalous examples in a table (score,
conformal p-value, flag and, for a table, the features that make each one unusual), and for
images the gallery of the most anomalous next to the most typical
(:mod:`metaunsup.app.report.gallery`). Like the clusters page it loads nothing from a network
and needs no server. The flagged rows of the table carry ``class="flagged"``.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from metaunsup.app.report.html_parts import STYLE, png_uri, table_html

__all__ = ["TOP_ROWS", "render_page", "score_histogram_png", "score_map_png"]

#: Rows of the page's table of the most anomalous examples.
TOP_ROWS = 25


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def score_map_png(x: np.ndarray, scores: np.ndarray, flags: np.ndarray) -> bytes:
    """PNG bytes: the examples ``x`` ``[n, ...]``, standardised per feature (a missing cell at
    the mean), on their first two principal components, coloured by ``scores`` ``[n]``; the
    ``flags`` ``bool [n]`` circled in red."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, sd = np.nanmean(flat, 0), np.nanstd(flat, 0)
        z = np.nan_to_num((flat - mean) / np.where(sd > 0, sd, 1.0))
    z -= z.mean(0)
    if z.shape[1] >= 2:
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        xy = z @ vt[:2].T
    else:
        xy = np.column_stack([z[:, 0], np.zeros(len(z))])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=90)
    points = ax.scatter(xy[:, 0], xy[:, 1], c=scores, s=8, cmap="viridis")
    ax.scatter(xy[flags, 0], xy[flags, 1], s=40, facecolors="none", edgecolors="red",
               label="flagged")  # fmt: skip
    fig.colorbar(points, ax=ax, label="anomaly score")
    ax.set_xlabel("principal component 1 of the standardised input")
    ax.set_ylabel("principal component 2")
    if flags.any():
        ax.legend(loc="best", fontsize="small")
    return _png(fig)


def score_histogram_png(scores: np.ndarray, threshold: float) -> bytes:
    """PNG bytes: a histogram of ``scores`` ``[n]`` with the flagging ``threshold`` marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3), dpi=90)
    ax.hist(scores, bins=min(50, max(10, len(scores) // 10)), color="#4c72b0")
    if np.isfinite(threshold):
        ax.axvline(threshold, color="red", label=f"threshold {threshold:.4g}")
        ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("anomaly score (higher = more anomalous)")
    ax.set_ylabel("examples")
    return _png(fig)


def render_page(
    info: dict[str, Any],
    names: Sequence[str],
    scores: np.ndarray,
    pvalues: np.ndarray,
    flags: np.ndarray,
    figures: tuple[bytes, bytes],
    unusual: Sequence[str] | None = None,
    gallery: bytes | None = None,
) -> str:
    """The HTML text of the page: ``info`` (the ``detect`` summary), a name per example,
    its score, p-value and flag (``[n]`` each), the ``(histogram, map)`` PNG bytes, per example
    the features that make it unusual (tables) and the gallery PNG (images)."""
    source = html.escape(str(info["input"]))
    summary = [
        ("input", info["input"]),
        ("normal reference", f"{info['reference']} ({info['reference_examples']} examples)"),
        ("flagged", f"{info['flagged']} of {info['examples']}"),
        ("target false-alarm rate", info["fpr"]),
        ("threshold", f"{info['threshold']:.6g} (calibration: {info['calibration']})"),
        ("model", info["checkpoint"] or "standardised distance to the reference's mean"),
    ]
    order = np.argsort(-np.asarray(scores), kind="stable")[:TOP_ROWS]
    header = ["rank", "example", "score", "p-value", "flagged"]
    rows = [
        [rank, names[i], f"{scores[i]:.6g}", f"{pvalues[i]:.4g}", "yes" if flags[i] else "no"]
        + ([unusual[i]] if unusual is not None else [])
        for rank, i in enumerate(order, start=1)
    ]
    classes = ["flagged" if flags[i] else "" for i in order]
    histogram, score_map = figures
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>metaunsup: anomalies in {source}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Anomalies in {source}</h1>",
        table_html(None, summary),
        "<h2>Scores</h2>",
        f'<img class="map" alt="histogram of the anomaly scores" src="{png_uri(histogram)}">',
        "<h2>Map of the examples</h2>",
        f'<img class="map" alt="2-D map coloured by anomaly score" src="{png_uri(score_map)}">',
        f"<h2>The {len(order)} most anomalous</h2>",
        table_html(
            header + (["what makes it unusual"] if unusual is not None else []), rows, classes
        ),
    ]
    if gallery is not None:
        parts.append(
            "<h2>Images</h2><p>Top row: the most anomalous (flagged ones outlined in red); "
            "bottom row: the most typical.</p>"
            f'<img class="gallery" alt="most anomalous and most typical images" '
            f'src="{png_uri(gallery)}">'
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)
