"""A results page from evaluation JSON: markdown with comparison bars and convergence curves.

Input: reports as :meth:`metaunsup.evaluation.protocol.EvaluationReport.to_json` writes them
(``dataset``, ``split``, ``task``, ``n_way``, ``k_shot``, ``tasks``, ``seed``,
``results`` with ``{"mean", "ci95"}`` scores per method), optionally with ``curves``
(method → points with ``steps``, ``acc``, ``acc_ci95``, ``ms_per_task``; see
:mod:`metaunsup.evaluation.convergence`) and ``training``.

Output, in one folder: ``comparison.png`` (one panel per score: a bar per method and report,
error bars the 95% confidence half-widths), ``convergence-<name>.png`` for each report with
curves, and ``report.md`` linking them under the results tables. Figures need matplotlib (the
``plot`` extra); :func:`require_matplotlib` says so in one line when it is missing.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaunsup.errors import ConfigError, DataError
from metaunsup.fileio import atomic_write_bytes, atomic_write_text, check_output_folder

__all__ = ["NamedReport", "read_report", "require_matplotlib", "write_report"]

_REQUIRED = ("dataset", "split", "task", "n_way", "k_shot", "tasks", "seed", "results")


@dataclass(frozen=True)
class NamedReport:
    """One evaluation report and the short name it goes by on the page (its file stem)."""

    name: str
    data: Mapping[str, Any]


def require_matplotlib() -> None:
    """Raise :class:`ConfigError` (one line) when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "report figures need matplotlib, which is not installed; install it with "
            "pip install 'metaunsup[plot]'"
        ) from None


def _check_score(value: Any, where: str) -> None:
    if not isinstance(value, Mapping) or not all(
        isinstance(value.get(key), int | float) and not isinstance(value.get(key), bool)
        for key in ("mean", "ci95")
    ):
        raise DataError(f"{where}: a score must be {{'mean': number, 'ci95': number}}")
    for key in ("mean", "ci95"):
        if not math.isfinite(value[key]):
            raise DataError(
                f"{where}.{key} is {value[key]}: a score must be a finite number (a method that "
                "failed on some tasks gives NaN; evaluate it again or leave it out)"
            )


def read_report(path: str | os.PathLike) -> NamedReport:
    """Read and check one evaluation JSON file; :class:`DataError` names what is wrong."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{p}: not a text file; give the JSON written by evaluate --json") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{p}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise DataError(f"{p}: JSON nested too deeply to be an evaluation report") from None
    except OSError as err:
        raise DataError(f"{p}: cannot read it ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{p}: expected a JSON object (an evaluation report)")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise DataError(
            f"{p}: not an evaluation report (missing {', '.join(missing)}); give the JSON "
            "written by metaunsup evaluate --json or metaunsup demo"
        )
    from metaunsup.evaluation.kinds import TASK_KINDS

    kind = TASK_KINDS.get(data["task"]) if isinstance(data["task"], str) else None
    if kind is None:
        raise DataError(f"{p}: task {data['task']!r} is not a task kind ({', '.join(TASK_KINDS)})")
    results = data["results"]
    if not isinstance(results, list) or not results:
        raise DataError(f"{p}: 'results' must be a non-empty list of methods")
    headline = kind.scores[0]
    for i, r in enumerate(results):
        if not isinstance(r, Mapping) or not isinstance(r.get("method"), str) or headline not in r:
            raise DataError(f"{p}: results[{i}] needs a 'method' name and an {headline!r} score")
        for key in kind.scores:
            if key in r:
                _check_score(r[key], f"{p}: results[{i}].{key}")
    curves = data.get("curves", {})
    if not isinstance(curves, Mapping) or not all(
        isinstance(points, list)
        and all(
            isinstance(pt, Mapping) and all(_finite_number(pt.get(key)) for key in ("steps", "acc"))
            for pt in points
        )
        for points in curves.values()
    ):
        raise DataError(
            f"{p}: 'curves' must map methods to lists of {{'steps', 'acc', ...}} with finite "
            "numbers"
        )
    return NamedReport(p.stem, data)


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "report"


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def comparison_figure(reports: Sequence[NamedReport]) -> bytes:
    """PNG bytes: a panel per score, a bar per (report, method) with 95% CI error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels_of = _score_labels(reports)
    scores = [s for s in labels_of if any(s in r for rep in reports for r in rep.data["results"])]
    rows = [(rep.name, r) for rep in reports for r in rep.data["results"]]
    labels = [f"{r['method']} ({name})" if len(reports) > 1 else r["method"] for name, r in rows]
    fig, axes = plt.subplots(1, len(scores), figsize=(4.5 * len(scores), 0.45 * len(rows) + 1.6))
    axes = [axes] if len(scores) == 1 else list(axes)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = [rep.name for rep in reports]
    for ax, score in zip(axes, scores, strict=True):
        for y, (name, r) in enumerate(rows):
            if score not in r:
                continue
            ax.barh(
                y,
                r[score]["mean"],
                xerr=r[score]["ci95"],
                capsize=3,
                color=colours[names.index(name) % len(colours)],
            )
        ax.set_yticks(range(len(rows)), labels if ax is axes[0] else [""] * len(rows))
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{labels_of[score]} (mean, 95% CI)")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _score_labels(reports: Sequence[NamedReport]) -> dict[str, str]:
    """Every score of the reports' task kinds, in the kinds' order, with its label."""
    from metaunsup.evaluation.kinds import task_kind

    labels: dict[str, str] = {}
    for rep in reports:
        for score, label in task_kind(rep.data["task"]).score_labels.items():
            labels.setdefault(score, label)
    return labels


def curves_figure(report: NamedReport) -> bytes:
    """PNG bytes: accuracy against steps for each curve of ``report`` (95% CI error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, points in report.data["curves"].items():
        ax.errorbar(
            [p["steps"] for p in points],
            [p["acc"] for p in points],
            yerr=[p.get("acc_ci95", 0.0) for p in points],
            marker="o",
            capsize=3,
            label=method,
        )
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("clustering accuracy")
    ax.set_title(_title(report.data))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _title(data: Mapping[str, Any]) -> str:
    from metaunsup.app.report.tables import report_title

    return report_title(data)


def markdown(reports: Sequence[NamedReport], figures: Mapping[str, str], title: str) -> str:
    """The page: title, the comparison figure, then per report its table and curves."""
    from metaunsup.app.report.tables import results_table

    lines = [f"# {title}", ""]
    lines += [f"![comparison of methods]({figures['comparison']})", ""]
    lines += ["Scores are means over the tasks with their 95% confidence half-widths.", ""]
    for rep in reports:
        data = rep.data
        lines += [f"## {rep.name}", "", _title(data), "", results_table(data), ""]
        if rep.name in figures:
            lines += [f"![convergence: {rep.name}]({figures[rep.name]})", ""]
            for method, points in data["curves"].items():
                steps = ", ".join(f"{p['steps']}: {p['acc']:.3f}" for p in points)
                lines.append(f"- {method}: accuracy after {steps}")
            lines.append("")
        training = data.get("training")
        if isinstance(training, Mapping) and "seconds" in training:
            lines += [f"Meta-training took {training['seconds']} s.", ""]
        env = data.get("environment")
        if isinstance(env, Mapping) and env:
            lines += ["Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    return "\n".join(lines)


def write_report(
    reports: Sequence[NamedReport], out_dir: str | os.PathLike, title: str = "Results"
) -> list[Path]:
    """Write the figures and ``report.md`` into ``out_dir`` (created if its parent exists).

    Returns the paths written, the page last. Every file is written atomically, and only after
    all figures were drawn.
    """
    if not reports:
        raise ConfigError("no report to render; give at least one results JSON file")
    require_matplotlib()
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a folder")
    if out.parent.is_dir():
        check_output_folder(out)
    else:
        raise ConfigError(
            f"cannot create {str(out)!r}: folder {str(out.parent)!r} does not exist; create it "
            "first"
        )
    names = [rep.name for rep in reports]
    unique = [
        NamedReport(name if names.count(name) == 1 else f"{name}-{i + 1}", rep.data)
        for i, (name, rep) in enumerate(zip(names, reports, strict=True))
    ]
    pngs = {"comparison.png": comparison_figure(unique)}
    figures = {"comparison": "comparison.png"}
    for rep in unique:
        if rep.data.get("curves"):
            file = f"convergence-{_slug(rep.name)}.png"
            pngs[file] = curves_figure(rep)
            figures[rep.name] = file
    page = markdown(unique, figures, title)
    out.mkdir(exist_ok=True)
    written = [atomic_write_bytes(out / file, data) for file, data in pngs.items()]
    written.append(atomic_write_text(out / "report.md", page))
    return written
