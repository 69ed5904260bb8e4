"""Threshold rules for few-shot one-class flags: how far a support's own scale should be
trusted, and which pseudo-class null to read the threshold from.

A meta-calibrated scorer flags a query when its score divided by the task's scale exceeds the
``1 − fpr`` quantile of a null table (:mod:`metaunsup.evaluation.calibration`). The scale is
``(K·ℓ + m·σ0) / (K + m)``: ``ℓ`` the largest leave-one-out score of the support, ``σ0`` the
typical one of pseudo-class supports of the same size, ``m`` the prior weight in support
examples (the packaged checkpoints use ``m = 0``: the support's own scale alone). The null is
either the **worst family** (at every level the larger quantile of the two pseudo-class
families, the packaged rule) or the **pooled** scores of both families.

For a Meta-SVDD checkpoint and the folder of the run that trained it (its CACTUs partitions:
the ``train-clusters`` family; the ``pixel-clusters`` family is made from the same images as
calibration makes it), per support size ``K`` and prior weight ``m``, this measures:

* on ``--tasks`` test tasks of the real classes (the labels only measure): the false alarms
  (normal queries flagged) and the balanced accuracy of the flags at ``fpr``, for both nulls;
* label-free, on pseudo-tasks of the two families: the balanced accuracy on half of the
  pseudo-tasks with the pooled null measured on the other half (pseudo-anomalies: other
  pseudo-classes), i.e. what a selection of ``m`` without labels would see.

Nothing here changes a checkpoint. Run (the tables in ``docs/results/anomaly_calibration.md``)::

    metaunsup train configs/mnist-anomaly.toml --out runs/anomaly/mnist-anomaly --threads 1
    python benchmarks/threshold_rules.py \\
        --checkpoint runs/anomaly/mnist-anomaly/last.safetensors \\
        --run runs/anomaly/mnist-anomaly --dataset mnist --train train --test test \\
        --k 2 5 10 --json docs/results/threshold_rules_mnist.json

and the same for ``configs/omniglot-anomaly.toml`` (``--dataset omniglot --train background
--test evaluation --k 2 10``). The checkpoint is the run's own, so that its ``train-clusters``
family is the partitions it was meta-trained on (a run trained again on another machine has
other weights than the packaged checkpoint: floating point).
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from _record import write_record
from calibration_transfer import add_run_arguments, printed_table
from metaunsup.data import load
from metaunsup.data.unlabeled import UnlabeledView
from metaunsup.evaluation.anomaly import calibration_sources, null_shape, worst_family
from metaunsup.evaluation.calibration import SCALE_LOO, leave_one_out_scores
from metaunsup.evaluation.kinds import task_kind
from metaunsup.evaluation.protocol import TaskShape
from metaunsup.learners import load_learner
from metaunsup.learners.one_class import NULL_SIZE
from metaunsup.tasks.pseudo.cactus import load_partitions
from metaunsup.training.calibrate import CALIBRATION_SEED_OFFSET
from metaunsup.training.unsupervised import PARTITIONS_FILE

PRIORS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)
#: Task chunks scored at a time.
CHUNK = 25


def scored_tasks(score, batches) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(scores [n, q], ℓ [n], anomalous bool [n, q])`` of the tasks of ``batches``."""
    s, ell, y = [], [], []
    for batch in batches:
        s.append(score(batch.support_x, batch.query_x))
        ell.append(leave_one_out_scores(score, batch.support_x, SCALE_LOO).amax(1))
        y.append(batch.query_y > 0)
    return torch.cat(s), torch.cat(ell), torch.cat(y)


def flag_rates(
    s: torch.Tensor, scale: torch.Tensor, y: torch.Tensor, cut: torch.Tensor
) -> tuple[float, float]:
    """``(false alarms, balanced accuracy)``, means over tasks, of flagging ``s / scale > cut``."""
    flags = s / scale[:, None] > cut
    false = ((flags & ~y).sum(1) / (~y).sum(1).clamp_min(1)).double()
    caught = ((flags & y).sum(1) / y.sum(1).clamp_min(1)).double()
    return float(false.mean()), float((0.5 * (caught + 1 - false)).mean())


def rows_for_k(score, sources, test_tasks, k: int, fpr: float, seed: int) -> list[dict]:
    """One row per prior weight: test false alarms and balanced accuracy under both nulls,
    and the label-free pseudo-task balanced accuracy."""
    q, n_tasks = null_shape(k)
    families = [
        scored_tasks(score, src.with_shape(k, q, seed=seed + 1000 * j).batches(n_tasks, CHUNK))
        for j, src in enumerate(sources)
    ]
    s0 = float(torch.cat([ell for _, ell, _ in families]).median())
    ts, tell, ty = test_tasks
    rows = []
    for m in PRIORS:

        def scale(ell: torch.Tensor, m: float = m) -> torch.Tensor:
            if math.isinf(m):
                return torch.full_like(ell, s0)
            return ((k * ell + m * s0) / (k + m)).clamp_min(1e-12)

        pools = [(s / scale(ell)[:, None])[~y] for s, ell, y in families]
        row: dict = {"k": k, "prior": "inf" if math.isinf(m) else m}
        for name, null in (("worst", worst_family(pools, NULL_SIZE)), ("pooled", torch.cat(pools))):
            row[f"{name}_fpr"], row[f"{name}_ba"] = flag_rates(
                ts, scale(tell), ty, torch.quantile(null, 1 - fpr)
            )
        # label-free: the pooled null of the even pseudo-tasks flags the odd ones
        even = torch.cat(
            [(s[0::2] / scale(ell[0::2])[:, None])[~y[0::2]] for s, ell, y in families]
        )
        cut = torch.quantile(even, 1 - fpr)
        pseudo = [flag_rates(s[1::2], scale(ell[1::2]), y[1::2], cut) for s, ell, y in families]
        row["pseudo_fpr"] = sum(p[0] for p in pseudo) / len(pseudo)
        row["pseudo_ba"] = sum(p[1] for p in pseudo) / len(pseudo)
        print(row, flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table (``--table FILE.json`` prints it from a record)."""
    out = [
        "| K | m | worst family: false alarms | worst family: balanced acc. | pooled: false "
        "alarms | pooled: balanced acc. | pseudo-tasks, pooled (label-free): balanced acc. |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = "∞ (σ0 alone)" if r["prior"] == "inf" else f"{r['prior']:g}"
        if r["prior"] == 0.0:
            m += " (packaged)"
        out.append(
            f"| {r['k']} | {m} | {r['worst_fpr']:.3f} | {r['worst_ba']:.3f} | "
            f"{r['pooled_fpr']:.3f} | {r['pooled_ba']:.3f} | {r['pseudo_ba']:.3f} |"
        )
    return "\n".join(out)


def main() -> None:
    if printed_table(markdown):
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--task", default="anomaly", choices=["anomaly", "anomaly-hard"])
    parser.add_argument("--query", type=int, default=None, help="default: 100, or 20 - K")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    learner = load_learner(args.checkpoint).eval()
    parts = load_partitions(args.run / PARTITIONS_FILE)[0]
    seed = CALIBRATION_SEED_OFFSET  # the run's seed 0, as its calibration drew
    view = UnlabeledView(load(args.dataset, args.train))
    # the task shape is replaced per support size (with_shape); the partitions are what matter
    source = task_kind("anomaly").pseudo_source(view, parts, TaskShape(5, 5, 10), seed)
    sources = calibration_sources(source, seed)
    test = load(args.dataset, args.test)

    def score(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return learner.score(support, query).cpu().to(torch.float64)

    rows = []
    for k in args.k:
        q = args.query or (100 if args.dataset == "mnist" else 20 - k)
        sampler = task_kind(args.task).make_sampler(test, TaskShape(1, k, q), 0)
        tests = scored_tasks(score, sampler.batches(args.tasks, CHUNK))
        rows += rows_for_k(score, sources, tests, k, args.fpr, seed + 7)
    print(markdown(rows))
    if args.json:
        write_record("threshold_rules", sys.argv[1:], args.json, fpr=args.fpr, rows=rows)


if __name__ == "__main__":
    main()
