"""Table models on held-out tasks of their own synthetic prior: how the ``tabular`` candidates
and their anomaly-scoring setting were chosen, without any real table's labels.

Tasks come from :class:`metaunsup.tasks.synthetic_tables.SyntheticTables` with seeds that
meta-training never uses (meta-training draws from ``train.seed`` = 0): ``--tasks`` clustering
tasks (seed 999; ``k`` cycling through 2..7, 200 rows, complete cells) and ``--tasks``
anomaly tasks per kind of anomaly (seed 998 for each kind; 5% anomalies, ``k`` in 2..5, rows
cycling through ``--rows``, 300 by default). ``--kinds`` names the kinds (the prior's
``anomaly_kinds``: ``local``, the default and what meta-training's prior draws, and ADBench's
``clustered``, ``global`` and ``dependency``). Each checkpoint clusters with
:class:`metaunsup.MetaKMeans` (``guard=False``: the embedding itself is measured) and scores
with :class:`metaunsup.MetaOutlierDetector`; beside them K-means on the same standardised
columns and PyOD's KNN. Scores: mean ARI and mean AUROC over the tasks.

    python benchmarks/tabular_prior.py --threads 1 --checkpoint tabular

``--neighbors N ...`` scores each checkpoint's anomalies once per setting of its
``score_neighbors`` (a count, or a share of the reference such as ``0.1``; the weights are the
same, see :func:`metaunsup.learners.with_learner_options`), skips the clustering tasks (the
setting does not touch them), and reports each setting's AUROC per kind and its paired
difference from the first setting (mean and 95% interval over the tasks). How the packaged
``tabular`` model's setting was chosen:

    python benchmarks/tabular_prior.py --threads 1 --checkpoint tabular --tasks 60 \
        --kinds local clustered global dependency --rows 300 1000 \
        --neighbors 10 0.02 0.05 0.1 0.2 --json docs/results/tabular_prior_neighbors.json

``--clean-reference`` fits every detector on the task's normal rows only and scores every
row — a clean reference of normal rows, as ``metaunsup detect INPUT --normal REFERENCE`` is
used — instead of the whole table contaminated by its anomalies (how ``detect INPUT`` and the
ODDS-style benchmark score). A reference row is never its own neighbour: PyOD's KNN scores the
normal rows in-sample (``decision_scores_``) and the anomalies with ``decision_function``.
The same settings on clean references:

    python benchmarks/tabular_prior.py --threads 1 --checkpoint tabular --tasks 60 \
        --kinds local clustered global dependency --rows 300 1000 --clean-reference \
        --neighbors 10 0.02 0.05 0.1 0.2 --json docs/results/tabular_prior_neighbors_clean.json

``--score-space embedding columns`` (with ``--neighbors``) scores each setting both in the
model's embedding and on the standardised columns themselves (``TabularKMeans``'s
``score_space``); how the packaged model's space was chosen, on both kinds of reference:

    python benchmarks/tabular_prior.py --threads 1 --checkpoint tabular --tasks 60 \
        --kinds local clustered global dependency --rows 300 1000 --neighbors 10 0.1 \
        --score-space embedding columns --json docs/results/tabular_prior_space.json
    python benchmarks/tabular_prior.py --threads 1 --checkpoint tabular --tasks 60 \
        --kinds local clustered global dependency --rows 300 1000 --neighbors 10 0.1 \
        --score-space embedding columns --clean-reference \
        --json docs/results/tabular_prior_space_clean.json

Prints the table and writes ``docs/results/tabular_prior.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from _record import write_record
from metaunsup.learners.tabular import SCORE_SPACES, parse_score_neighbors
from metaunsup.tasks.synthetic_tables import ANOMALY_KINDS, SyntheticTables

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def clustering_tasks(count: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    prior = SyntheticTables(seed=999, missing_prob=0.0)
    out = []
    for i in range(count):
        k = 2 + i % 6
        t = prior.sample_table(k, 200)
        out.append((t.x[:, : t.d].numpy().astype(np.float64), t.y.numpy(), k))
    return out


def anomaly_tasks(
    count: int, kinds: tuple[str, ...] = ("local",), rows: tuple[int, ...] = (300,)
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``count`` tasks ``(kind, x [n, d], anomaly flags [n])`` per kind of anomaly."""
    out = []
    for kind in kinds:
        prior = SyntheticTables(
            seed=998, missing_prob=0.0, anomaly_rate=0.05, anomaly_kinds=(kind,)
        )
        done = 0
        while done < count:
            t = prior.sample_table(2 + done % 4, rows[done % len(rows)])
            if t.anomaly.any():
                out.append((kind, t.x[:, : t.d].numpy().astype(np.float64), t.anomaly.numpy()))
                done += 1
    return out


def scorers(
    checkpoints: list[str], neighbors: list[str], folder: Path, spaces: list[str] | None = None
) -> dict[str, str]:
    """Label -> checkpoint of each model to score anomalies with: the checkpoints as they are,
    or each one once per ``score_neighbors`` setting (and per ``score_space`` when given),
    written to ``folder``."""
    from metaunsup.learners import with_learner_options

    if not neighbors:
        return {name: name for name in checkpoints}
    out = {}
    for i, name in enumerate(checkpoints):
        for j, (text, space) in enumerate(itertools.product(neighbors, spaces or [None])):
            options: dict[str, object] = {"score_neighbors": parse_score_neighbors(text)}
            label = f"{name}, score_neighbors={text}"
            if space is not None:
                options["score_space"] = space
                label += f", score_space={space}"
            path = folder / f"{i}-{j}.safetensors"
            with_learner_options(name, path, options)
            out[label] = str(path)
    return out


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of ``a - b`` over the tasks with its 95% normal interval."""
    d = np.asarray(a) - np.asarray(b)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "ci95": float(half)}


def measure(
    checkpoints: list[str],
    count: int,
    kinds: tuple[str, ...] = ("local",),
    rows: tuple[int, ...] = (300,),
    neighbors: list[str] | None = None,
    clean: bool = False,
    spaces: list[str] | None = None,
) -> dict[str, dict]:
    import tempfile

    from pyod.models.knn import KNN
    from sklearn.cluster import KMeans

    from metaunsup import MetaKMeans, MetaOutlierDetector

    ari: dict[str, list[float]] = {name: [] for name in [*checkpoints, "K-means"]}
    if not neighbors:
        for x, y, k in clustering_tasks(count):
            z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
            ari["K-means"].append(
                adjusted_rand_score(y, KMeans(k, n_init=10, random_state=0).fit_predict(z))
            )
            for name in checkpoints:
                model = MetaKMeans(k, checkpoint=name, random_state=0, guard=False).fit(x)
                ari[name].append(adjusted_rand_score(y, model.labels_))
    with tempfile.TemporaryDirectory() as folder:
        models = scorers(checkpoints, neighbors or [], Path(folder), spaces)
        auroc: dict[str, dict[str, list[float]]] = {m: {} for m in [*models, "KNN (PyOD)"]}
        for kind, x, flags in anomaly_tasks(count, kinds, rows):
            z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
            reference = ~flags if clean else np.ones(len(x), bool)  # fitted on these rows
            knn = KNN().fit(z[reference])
            scores = knn.decision_function(z) if clean else knn.decision_scores_
            if clean:  # a reference row is not its own neighbour (as in MetaOutlierDetector)
                scores[reference] = knn.decision_scores_
            auroc["KNN (PyOD)"].setdefault(kind, []).append(roc_auc_score(flags, scores))
            for label, path in models.items():
                model = MetaOutlierDetector(checkpoint=path, random_state=0).fit(x[reference])
                scores = -model.score_samples(x) if clean else model.decision_scores_
                auroc[label].setdefault(kind, []).append(roc_auc_score(flags, scores))
    pooled = {m: [a for kind in v.values() for a in kind] for m, v in auroc.items()}
    record: dict[str, dict] = {"auroc": {m: float(np.mean(v)) for m, v in pooled.items()}}
    if not neighbors:
        return {"ari": {m: float(np.mean(v)) for m, v in ari.items()}, **record}
    record["auroc_by_kind"] = {
        m: {kind: float(np.mean(a)) for kind, a in v.items()} for m, v in auroc.items()
    }
    first = next(iter(models))
    record["paired_with_first"] = {m: paired(pooled[m], pooled[first]) for m in pooled}
    return record


def _short(value: float | dict) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {v:.3f}" for k, v in value.items()) + "}"
    return f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", action="append", required=True)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--kinds", nargs="+", default=["local"], choices=ANOMALY_KINDS)
    parser.add_argument("--rows", nargs="+", type=int, default=[300])
    parser.add_argument("--neighbors", nargs="+", help="score_neighbors settings to compare")
    parser.add_argument(
        "--score-space",
        nargs="+",
        choices=SCORE_SPACES,
        help="with --neighbors: score each setting in these spaces too",
    )
    parser.add_argument(
        "--clean-reference",
        action="store_true",
        help="fit on the normal rows only and score every row (a clean reference, as "
        "`metaunsup detect --normal`), instead of the whole contaminated table",
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "tabular_prior.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    scores = measure(
        args.checkpoint,
        args.tasks,
        tuple(args.kinds),
        tuple(args.rows),
        args.neighbors,
        args.clean_reference,
        args.score_space,
    )
    for metric, row in scores.items():
        print(f"{metric}: " + ", ".join(f"{m} {_short(v)}" for m, v in row.items()))
    extra = {"kinds": args.kinds, "rows": args.rows} if args.neighbors else {}
    if args.clean_reference:
        extra["reference"] = "the normal rows only (clean); every row scored"

    write_record(
        "tabular_prior", None, args.json, threads=args.threads, tasks=args.tasks, **extra, **scores
    )


if __name__ == "__main__":
    main()
