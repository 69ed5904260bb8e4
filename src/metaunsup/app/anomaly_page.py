"""The results page and figures of ``metaunsup experiment anomaly-mnist``.

Figures (matplotlib, the ``plot`` extra): ``anomaly_mnist_auroc_k.png`` (AUROC against ``K``
for the meta-learned models and the best baselines), ``anomaly_mnist_roc.png`` (ROC curves,
averaged vertically over one ``K = 10`` task per digit) and ``anomaly_mnist_hist.png`` (the
score histograms of normal and anomalous queries of the first model, one panel per digit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["results_page", "write_figures"]

#: Published balanced accuracies of OC-MAML on MT-MNIST (Frikha et al. 2021, Table 1).
OC_MAML_PUBLISHED = {"2": 0.880, "10": 0.951}
SCORES = ("auroc", "auprc", "balanced_acc", "fpr")
#: Scores of a learner's flags at its meta-learned decision boundary (only learners that have
#: one; reports written before they were measured have none, and their pages are unchanged).
BOUNDARY_SCORES = ("boundary_ba", "boundary_fpr")


def _learners(report: Mapping[str, Any]) -> list[str]:
    return list(report["training"])


def _best_baselines(report: Mapping[str, Any], n: int = 3) -> list[str]:
    rows = report["results"][str(report["protocol"]["k_shots"][-1])]
    learners = set(_learners(report))
    others = [r for r in rows if r["method"] not in learners]
    others.sort(key=lambda r: -r["auroc"]["mean"])
    return [r["method"] for r in others[:n]]


def _cell(score: Mapping[str, float]) -> str:
    return f"{score['mean']:.3f} ± {score['ci95']:.3f} (sd {score['seed_sd']:.3f})"


def _table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    boundary = any(BOUNDARY_SCORES[0] in r for r in rows)
    head = "| method | AUROC | AUPRC | balanced acc. | false alarms |"
    if boundary:
        head += " learned boundary: balanced acc. | learned boundary: false alarms |"
    lines = [f"{head} ms/task |", "|---" * (head.count("|") - 1) + "|---|"]
    for r in sorted(rows, key=lambda r: -r["auroc"]["mean"]):
        shown = (*SCORES, *BOUNDARY_SCORES) if boundary else SCORES
        cells = " | ".join(_cell(r[s]) if s in r else "–" for s in shown)
        lines.append(f"| {_name(r)} | {cells} | {r['ms_per_task']:.1f} |")
    return lines


def _name(row: Mapping[str, Any]) -> str:
    """The method's name, with the test digits it scored when not all ten."""
    digits = row.get("digits", list(range(10)))
    if len(digits) == 10:
        return str(row["method"])
    return f"{row['method']} (test digits {', '.join(map(str, digits))} only)"


def _goals(report: Mapping[str, Any]) -> list[str]:
    res = report["results"]
    free = [m for m, t in report["training"].items() if t["labels_used"] == "none"]
    lines = ["| goal | measured | met |", "|---|---|---|"]
    if not free:
        return ["No label-free model was evaluated."]
    for k, target in OC_MAML_PUBLISHED.items():
        if k not in res:
            continue
        best = max(
            (r for r in res[k] if r["method"] in free), key=lambda r: r["balanced_acc"]["mean"]
        )
        got = best["balanced_acc"]["mean"]
        lines.append(
            f"| balanced accuracy at K = {k} ≥ {target:.3f} (OC-MAML, published) | "
            f"{got:.3f} ({_name(best)}) | {'yes' if got >= target else 'no'} |"
        )
        lines += _boundary_goal(res[k], free, k, target)
        base = [r for r in res[k] if r["method"] not in report["training"]]
        if base:
            top = max(base, key=lambda r: r["balanced_acc"]["mean"])
            lines.append(
                f"| beside it: the best baseline's balanced accuracy at K = {k} | "
                f"{top['balanced_acc']['mean']:.3f} ({_name(top)}) | — |"
            )
    if "10" in res:
        best = max((r for r in res["10"] if r["method"] in free), key=lambda r: r["auroc"]["mean"])
        got = best["auroc"]["mean"]
        lines.append(
            f"| AUROC at K = 10 ≥ 0.95 | {got:.3f} ({_name(best)}) | "
            f"{'yes' if got >= 0.95 else 'no'} |"
        )
        base = [r for r in res["10"] if r["method"] not in report["training"]]
        if base:
            top = max(base, key=lambda r: r["auroc"]["mean"])
            lines.append(
                f"| beside it: the best baseline's AUROC at K = 10 | "
                f"{top['auroc']['mean']:.3f} ({_name(top)}) | — |"
            )
    for m in free:
        rates = [next(r for r in res[k] if r["method"] == m)["fpr"]["mean"] for k in res]
        ok = all(0.03 <= v <= 0.07 for v in rates)
        lines.append(
            f"| false alarms in [0.03, 0.07] at fpr = 0.05, {m} | "
            f"{', '.join(f'{v:.3f}' for v in rates)} (K = {', '.join(res)}) | "
            f"{'yes' if ok else 'no'} |"
        )
    return lines


def _boundary_goal(
    rows: Sequence[Mapping[str, Any]], free: Sequence[str], k: str, target: float
) -> list[str]:
    """The goal's line at the label-free learners' meta-learned boundary (OC-MAML's operating
    point, where the published figure was measured); none when no such learner was scored."""
    at = [r for r in rows if r["method"] in free and BOUNDARY_SCORES[0] in r]
    if not at:
        return []
    best = max(at, key=lambda r: r["boundary_ba"]["mean"])
    got, alarms = best["boundary_ba"]["mean"], best["boundary_fpr"]["mean"]
    return [
        f"| the same at the learned boundary (OC-MAML's operating point; no false-alarm "
        f"target) | {got:.3f}, false alarms {alarms:.3f} ({_name(best)}) | "
        f"{'yes' if got >= target else 'no'} |"
    ]


def _not_run(report: Mapping[str, Any]) -> list[str]:
    """The section listing the models, baselines and test digits this run left out."""
    gone = report.get("not_run") or {}
    models, baselines = gone.get("models") or [], gone.get("baselines") or []
    partial = {
        label: t["missing_digits"]
        for label, t in report["training"].items()
        if t.get("missing_digits")
    }
    if not (models or baselines or partial):
        return []
    lines = ["## Rows not measured here", ""]
    lines += [f"- model **{m['label']}** (`configs/{m['config']}`): not run." for m in models]
    lines += [
        f"- model **{label}**: test digit(s) {', '.join(map(str, d))} not scored (no run)."
        for label, d in partial.items()
    ]
    if baselines:
        lines.append(f"- baselines not run: {', '.join(f'`{b}`' for b in baselines)}.")
    if gone.get("note"):
        lines += ["", f"Why: {gone['note']}"]
    return [*lines, ""]


def _per_digit(report: Mapping[str, Any], score: str) -> list[str]:
    ks = [str(k) for k in report["protocol"]["k_shots"]]
    lines = [
        "| method | K | " + " | ".join(f"digit {d}" for d in range(10)) + " |",
        "|---|---|" + "---|" * 10,
    ]
    for m in _learners(report):
        for k in ks:
            row = next(r for r in report["results"][k] if r["method"] == m)[score]["per_digit"]
            cells = (f"{row[str(d)]:.3f}" if str(d) in row else "—" for d in range(10))
            lines.append(f"| {m} | {k} | " + " | ".join(cells) + " |")
    return lines


def _contamination(report: Mapping[str, Any]) -> list[str]:
    k = str(report["protocol"]["contamination"]["k_shot"])
    clean = {r["method"]: r["auroc"]["mean"] for r in report["results"][k]}
    lines = ["| method | AUROC, clean support | AUROC, contaminated | drop |", "|---|---|---|---|"]
    for r in sorted(report["contaminated"], key=lambda r: -clean[r["method"]]):
        got = r["auroc"]["mean"]
        lines.append(
            f"| {r['method']} | {clean[r['method']]:.3f} | {got:.3f} ± "
            f"{r['auroc']['ci95']:.3f} | {clean[r['method']] - got:+.3f} |"
        )
    return lines


def _training(report: Mapping[str, Any]) -> list[str]:
    lines = []
    for label, t in report["training"].items():
        runs = t["runs"]
        pre = [r["pretraining_seconds"] for r in runs]
        meta = [r["meta_training_seconds"] for r in runs]
        saw = (
            "every digit"
            if len(runs) == 1 and len(runs[0]["classes"]) == 10
            else ("the eight meta-training digits of each test digit")
        )
        missing = t.get("missing_digits") or []
        if missing:
            saw += (
                f" (no finished run for test digit{'s' * (len(missing) > 1)} "
                f"{', '.join(map(str, missing))}: its tasks are not scored by this model)"
            )
        lines.append(
            f"- **{label}** (`{t['config']}`, {len(runs)} run{'s' * (len(runs) > 1)}): "
            f"labels read: {t['labels_used']}; train images of {saw}; SimCLR pre-training "
            f"{np.mean(pre) / 60:.1f} min and meta-training {np.mean(meta) / 60:.1f} min per run "
            "on one thread of this shared CPU."
        )
    return lines


def results_page(report: Mapping[str, Any]) -> str:
    """The markdown page of a finished experiment."""
    p = report["protocol"]
    env = report["environment"]
    lines = [
        "# Few-shot one-class detection on MT-MNIST: meta-learned scores against PyOD",
        "",
        f"Measured {env['date']} ({env['torch_threads']} torch thread(s), a CPU shared with "
        f"other jobs: milliseconds are comparable within this run only) with",
        "",
        "```bash",
        report["command"],
        "```",
        "",
        f"(trains and calibrates missing runs first; the whole command took "
        f"{report['seconds'] / 3600:.1f} h here).",
        "",
        "## Protocol",
        "",
        "MT-MNIST (the protocol of Frikha et al., AAAI 2021, for OC-MAML): a task's normal class "
        "is one digit, every other digit is an anomaly. A test task takes K normal images of the "
        f"test digit from {p['dataset']} as its support (K = "
        f"{', '.join(map(str, p['k_shots']))}) and a query of {p['n_query']} further images of "
        f"it and {p['n_query']} images of the nine other digits. Each digit is tested in turn: "
        f"{p['tasks_per_digit_and_seed']} supports per digit from each of {p['seeds']} task seeds, "
        f"{p['tasks_per_k']} tasks per K, the identical tasks for every method. A model that "
        "follows the protocol is meta-trained once per test digit d, on the train images of the "
        "eight digits left when d and its validation digit (d + 1) mod 10 are held out; the "
        "label-free ones read those images without labels (the labels only decide which images "
        "belong to the eight digits). Methods see the support and the query images; the labels "
        "only score. Per task: AUROC and AUPRC of the scores (anomaly = positive), and the "
        f"balanced accuracy and false-alarm rate (normal queries flagged) of the flags at a "
        f"target false-alarm rate fpr = {p['fpr']}, whose threshold each method sets from the "
        "support alone (and, for the meta-learned ones, scores of pseudo-normal training "
        "examples, see below). Cells: mean ± 95% CI over all tasks (sd of the per-seed means).",
        "",
    ]
    lines += _results(report)
    return "\n".join(lines) + "\n"


def _results(report: Mapping[str, Any]) -> list[str]:
    lines = ["## Goals (issue 15)", "", *_goals(report), "", *_not_run(report)]
    for k, rows in report["results"].items():
        lines += [f"## K = {k}", "", *_table(rows), ""]
    c = report["protocol"]["contamination"]
    lines += [
        "## Thresholds and false alarms",
        "",
        "A conformal p-value from the K support examples alone (each scored against the "
        "others) takes the values 1/(K+1), ..., 1: it can flag at fpr = 0.05 only from K = 19, "
        "so below that it flags nothing (the baselines without an own threshold show balanced "
        "accuracy 0.5 and no false alarms). PyOD's detectors flag with their own rule "
        "(contamination = fpr: the top 5% of the support's own in-sample scores). The "
        "meta-learned models use their meta-calibration: scores of pseudo-normal held-out "
        "training examples (label-free models: their training clusters and held-out pixel-space "
        "clusters, pooled), each divided by the largest leave-one-out score of its task's "
        "support (`metaunsup.evaluation.calibration`). That carries no guarantee: the rates "
        "below are what it gives on each test digit.",
        "",
        "False-alarm rate per test digit:",
        "",
        *_per_digit(report, "fpr"),
        "",
        "AUROC per test digit:",
        "",
        *_per_digit(report, "auroc"),
        "",
        f"## Contaminated support (K = {c['k_shot']}, {c['fraction']:.0%} anomalies in it, "
        f"{c['tasks']} tasks, seed 0)",
        "",
        *_contamination(report),
        "",
        "## Figures",
        "",
        "![AUROC against K](anomaly_mnist_auroc_k.png)",
        "",
        "![ROC curves](anomaly_mnist_roc.png)",
        "",
        "![score histograms](anomaly_mnist_hist.png)",
        "",
        "## Training",
        "",
        *_training(report),
        "",
        "Numbers, per-digit scores and the sampled tasks' scores: `anomaly_mnist.json`.",
        "",
    ]
    return lines


def write_figures(report: Mapping[str, Any], out: Path) -> None:
    """Write the three figures into ``out`` (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from metaunsup.fileio import atomic_write_bytes

    shown = _learners(report) + _best_baselines(report)
    for name, draw in (
        ("anomaly_mnist_auroc_k.png", _auroc_k),
        ("anomaly_mnist_roc.png", _roc),
        ("anomaly_mnist_hist.png", _hist),
    ):
        fig = draw(plt, report, shown)
        import io

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(out / name, buffer.getvalue())


def _auroc_k(plt: Any, report: Mapping[str, Any], shown: Sequence[str]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = [int(k) for k in report["results"]]
    for m in shown:
        rows = [next(r for r in report["results"][str(k)] if r["method"] == m) for k in ks]
        ax.errorbar(
            ks,
            [r["auroc"]["mean"] for r in rows],
            yerr=[r["auroc"]["ci95"] for r in rows],
            marker="o",
            capsize=3,
            label=m,
        )
    ax.set(
        xlabel="K (normal support examples)",
        ylabel="AUROC",
        xticks=ks,
        title="MT-MNIST: AUROC against the support size",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _roc(plt: Any, report: Mapping[str, Any], shown: Sequence[str]) -> Any:
    from sklearn.metrics import roc_curve

    grid = np.linspace(0, 1, 201)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for m in shown:
        tprs = []
        for sample in report["samples"].values():
            if m not in sample:
                continue
            fpr, tpr, _ = roc_curve(sample["labels"], sample[m])
            tprs.append(np.interp(grid, fpr, tpr))
        ax.plot(grid, np.mean(tprs, 0), label=m)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(
        xlabel="false-alarm rate",
        ylabel="anomalies found (TPR)",
        title="ROC, K = 10, averaged over one task per digit",
    )
    ax.legend(fontsize=7)
    return fig


def _hist(plt: Any, report: Mapping[str, Any], shown: Sequence[str]) -> Any:
    m = shown[0]
    fig, axes = plt.subplots(2, 5, figsize=(13, 5), sharey=False)
    for ax, (d, sample) in zip(axes.flat, report["samples"].items(), strict=False):
        if m not in sample:
            ax.set_title(f"digit {d}: no run", fontsize=9)
            continue
        scores, y = np.asarray(sample[m]), np.asarray(sample["labels"])
        bins = np.linspace(scores.min(), scores.max(), 40)
        ax.hist(scores[y == 0], bins, alpha=0.6, label="normal")
        ax.hist(scores[y == 1], bins, alpha=0.6, label="anomalies")
        ax.set_title(f"digit {d}", fontsize=9)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Query scores of {m}, one K = 10 task per digit")
    return fig
