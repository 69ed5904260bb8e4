"""Human-readable renderings of evaluation results (markdown tables; figures come later)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _fmt(score: Mapping[str, float]) -> str:
    return f"{score['mean']:.3f} ± {score['ci95']:.3f}"


def results_table(report: Mapping) -> str:
    """A markdown table of one evaluation report (the dict written as JSON).

    Columns: method, the task kind's scores (e.g. ``acc``, ``nmi``, ``ari`` for clustering) as
    mean ± 95% CI, and milliseconds per task.
    """
    from metaunsup.evaluation.kinds import task_kind

    results: Sequence[Mapping] = report["results"]
    kind = task_kind(report["task"])
    metrics = [m for m in kind.scores if results and all(m in r for r in results)]
    header = ["method", *metrics, "ms/task"]
    rows = [
        [r["method"], *(_fmt(r[m]) for m in metrics), f"{r['ms_per_task']:.2f}"] for r in results
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def report_title(report: Mapping) -> str:
    """One line naming the protocol of a report."""
    from metaunsup.evaluation.kinds import TASK_KINDS

    kind = TASK_KINDS.get(report["task"])
    shape = f"{report['n_way']}-way × {report['k_shot']}"
    if kind is not None and kind.describe is not None:
        shape = kind.describe(report)
    elif report.get("n_query"):
        shape = f"{report['n_way']}-way {report['k_shot']}-shot + {report['n_query']} query"
    return (
        f"{report['dataset']}/{report['split']}: {report['tasks']} {report['task']} tasks of "
        f"{shape}, seed {report['seed']}"
    )
