"""Figures of results: convergence curves (quality against steps and milliseconds per task).

matplotlib draws them off-screen (Agg); every figure is written atomically as PNG.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from metaunsup.fileio import atomic_write_bytes

__all__ = ["plot_curves"]

_LABELS = {"acc": "clustering accuracy", "nmi": "NMI"}


def plot_curves(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | Path,
    *,
    title: str,
    metrics: Sequence[str] = ("acc",),
    step_label: str = "adaptation steps",
) -> str:
    """One panel per metric against steps, and accuracy against ms/task; returns the path.

    ``curves`` maps a method to its points (``{"steps", "acc", "acc_ci95", "nmi", "nmi_ci95",
    "ms_per_task"}``, as :class:`~metaunsup.evaluation.convergence.CurvePoint` writes
    them); error bars are the 95% half-widths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = len(metrics) + 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    for name, points in curves.items():
        steps = [p["steps"] for p in points]
        for ax, metric in zip(axes, metrics, strict=False):
            ax.errorbar(
                steps,
                [p[metric] for p in points],
                yerr=[p[f"{metric}_ci95"] for p in points],
                marker="o",
                capsize=3,
                label=name,
            )
        axes[-1].plot([p["ms_per_task"] for p in points], [p["acc"] for p in points], "o-")
    for ax, metric in zip(axes, metrics, strict=False):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel(step_label)
        ax.set_ylabel(_LABELS.get(metric, metric))
    axes[-1].set_xscale("log")
    axes[-1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[-1].set_xlabel("milliseconds per task (this CPU)")
    axes[-1].set_ylabel(_LABELS["acc"])
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return str(atomic_write_bytes(path, buffer.getvalue()))
