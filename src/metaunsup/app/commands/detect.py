"""``metaunsup detect INPUT [--normal REFERENCE] --checkpoint NAME``: score the user's rows or
images for anomalies and flag those past a threshold set at a false-alarm rate.

INPUT (and REFERENCE) are read by :func:`metaunsup.data.arrays.load_arrays` (``.npy`` or a
folder of images) or, for ``.csv``/``.parquet`` tables, by :mod:`metaunsup.data.tables` (text
and ID columns, missing cells, ``--ignore``/``--columns``; the encoding is learned from the
reference). For a table the CSV also says, per row, the features that make it unusual
(:func:`metaunsup.cluster.explain.unusual_features`: how many of the reference's standard
deviations each cell lies from its mean). REFERENCE holds normal examples (a handful is
enough with a meta-calibrated checkpoint); without it INPUT itself is the reference (mostly
normal, unlabeled data). :class:`metaunsup.MetaOutlierDetector` scores and flags; ``--out``
gets a CSV ranked by score (``file`` or ``index``, ``score``, ``pvalue``, ``flag``, ``rank``),
``--plot`` a gallery of the most anomalous images next to the most typical, ``--report DIR`` a
self-contained HTML page (:mod:`metaunsup.app.report.anomaly_page`). Outputs are
written atomically and only after everything succeeded, so an error never leaves a partial
file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from metaunsup.app.console import (
    check_outputs,
    impute_option,
    report_option,
    set_threads,
    table_columns,
)
from metaunsup.errors import ConfigError

if TYPE_CHECKING:
    from metaunsup.estimators.outlier import MetaOutlierDetector

__all__ = ["detect", "scores_csv"]


def scores_csv(
    names: Sequence[str],
    scores: np.ndarray,
    pvalues: np.ndarray,
    flags: np.ndarray,
    images: bool,
    unusual: Sequence[str] | None = None,
) -> str:
    """CSV text, most anomalous first: ``file|index, score, pvalue, flag, rank`` (and
    ``unusual``, the features that make each row unusual, when given)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["file" if images else "index", "score", "pvalue", "flag", "rank"]
    writer.writerow(header + (["unusual"] if unusual is not None else []))
    order = np.argsort(-scores, kind="stable")
    for rank, i in enumerate(order, start=1):
        name = names[i] if images else str(i)
        row = [name, f"{scores[i]:.6g}", f"{pvalues[i]:.4g}", int(flags[i]), rank]
        writer.writerow(row + ([unusual[i]] if unusual is not None else []))
    return buffer.getvalue()


def _tables(
    input_path: str, normal_path: str | None, ignore: Sequence[str], columns: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """``(x, reference, feature names)`` when INPUT is a table (the encoding learned from the
    reference), else ``None``."""
    from metaunsup.data.tables import TableEncoder, is_table, read_table

    if not is_table(input_path):
        if ignore or columns:
            raise ConfigError(
                f"--ignore and --columns choose columns of a .csv or .parquet table, but "
                f"{input_path} is not one; leave them out"
            )
        return None
    if normal_path is not None and not is_table(normal_path):
        raise ConfigError(
            f"{input_path} is a table but the normal reference {normal_path} is not; give the "
            "reference as a .csv or .parquet table with the same columns"
        )
    raw = read_table(input_path, ignore=ignore, columns=columns or None)
    encoder = TableEncoder()
    if normal_path is None:
        x = encoder.fit_transform(raw)
        return x.x, x.x, x.feature_names
    reference = encoder.fit_transform(
        read_table(normal_path, ignore=ignore, columns=columns or None)
    )
    return encoder.transform(raw.frame, str(input_path)).x, reference.x, reference.feature_names


def _why(x: np.ndarray, reference: np.ndarray, names: list[str]) -> list[str]:
    from metaunsup.cluster.explain import unusual_features

    return [
        "; ".join(f"{name} {z:+.1f} sd" for name, z in row)
        for row in unusual_features(x, reference, names)
    ]


def _summary(model: Any, source: str, reference: str, flags: np.ndarray) -> dict[str, Any]:
    return {
        "input": source,
        "reference": reference,
        "examples": int(flags.size),
        "flagged": int(flags.sum()),
        "fpr": float(model.fpr),
        "threshold": float(model.threshold_),
        "calibration": model.calibration_,
        "reference_examples": int(model.n_reference_),
        "checkpoint": model.checkpoint,
    }


def _detector(
    checkpoint: str | None,
    fpr: float,
    contamination: float | None,
    boundary: bool,
    seed: int,
    impute: str,
    score_neighbors: int | float | None,
) -> MetaOutlierDetector:
    """The unfitted :class:`~metaunsup.MetaOutlierDetector` the options describe."""
    from metaunsup.estimators.outlier import MetaOutlierDetector

    return MetaOutlierDetector(
        checkpoint,
        fpr=fpr,
        contamination=contamination,
        calibration="boundary" if boundary else "auto",
        random_state=seed,
        impute=None if impute == "native" else impute,
        score_neighbors=score_neighbors,
    )


def _neighbors(text: str | None) -> int | float | None:
    """``--neighbors``: a count (``10``) or a share (``0.1``); checked by the detector."""
    if text is None:
        return None
    from metaunsup.learners.tabular import parse_score_neighbors

    try:
        return parse_score_neighbors(text)
    except ConfigError:
        raise ConfigError(
            f"--neighbors takes a count (e.g. 10) or a share of the reference (e.g. 0.1), got "
            f"{text!r}"
        ) from None


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option(
    "--normal",
    "normal_path",
    type=click.Path(),
    help="Normal examples to score against (default: INPUT itself, taken as mostly normal).",
)
@click.option(
    "--checkpoint",
    help="Anomaly model: packaged name (mnist-anomaly, omniglot-anomaly) or .safetensors path. "
    "Default: standardised distance to the reference's mean (nothing meta-learned).",
)
@click.option(
    "--fpr",
    type=float,
    default=0.05,
    show_default=True,
    help="Target false-alarm rate of the flags, strictly between 0 and 1.",
)
@click.option(
    "--contamination",
    type=float,
    help="PyOD's rule instead of --fpr: flag this share of the reference's own scores.",
)
@click.option(
    "--boundary",
    is_flag=True,
    help="Flag past the checkpoint's meta-learned decision boundary (Meta-SVDD, OC-MAML: the "
    "operating point of its meta-training) instead of targeting --fpr.",
)
@click.option(
    "--neighbors",
    "score_neighbors",
    callback=lambda _ctx, _param, value: _neighbors(value),
    help="With a checkpoint that scores by its nearest reference rows (tabular): how many, a "
    "count (10) or a share of the reference (0.1). Default: the checkpoint's (tabular: 10%, "
    "for a table scored against itself; with a clean --normal reference, 10 scored better on "
    "its synthetic prior).",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the ranked scores as CSV.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    help="Write a PNG gallery of the most anomalous and the most typical images.",
)
@report_option(
    "of the scores, a map and the most anomalous examples (with why, for a table; with "
    "images, for images)"
)
@table_columns
@impute_option(" (without --checkpoint)")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--threads", type=click.IntRange(min=1), help="torch threads (default: the idle CPUs)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def detect(
    input_path: str,
    normal_path: str | None,
    checkpoint: str | None,
    fpr: float,
    contamination: float | None,
    boundary: bool,
    score_neighbors: int | float | None,
    out: str | None,
    plot: str | None,
    report_dir: str | None,
    ignore: tuple[str, ...],
    use_columns: tuple[str, ...],
    impute: str,
    seed: int,
    threads: int | None,
    as_json: bool,
) -> None:
    """Rank INPUT's rows or images by anomaly score and flag those past the threshold.

    The threshold targets --fpr false alarms among normal examples, set from the normal
    reference (--normal, else INPUT) and, for a handful of reference examples, from the
    checkpoint's meta-calibration; --boundary: the checkpoint's meta-learned boundary.
    """
    from metaunsup.data.arrays import load_arrays
    from metaunsup.evaluation.calibration import check_fpr
    from metaunsup.fileio import check_output_folder

    check_fpr(fpr)
    check_outputs(out, plot, inputs=[input_path, normal_path, checkpoint])
    if report_dir is not None:
        check_output_folder(report_dir, "--report")
    set_threads(threads)
    table = _tables(input_path, normal_path, ignore, use_columns)
    if table is not None:
        x, reference, features = table
        names: list[str] = []
        images = False
    else:
        dataset, names = load_arrays(input_path)
        x = dataset.x.numpy()
        images = dataset.info.get("format") == "images"
        reference = x if normal_path is None else load_arrays(normal_path)[0].x.numpy()
    if plot is not None and x.ndim != 4:
        raise ConfigError(
            f"--plot draws images, but {input_path} holds a table of shape {x.shape}; leave out "
            "--plot or give a folder of images (or an .npy of [n, H, W] images)"
        )
    if reference.shape[1:] != x.shape[1:]:
        raise ConfigError(
            f"{input_path} has examples of shape {x.shape[1:]} but the normal reference "
            f"{normal_path} has {reference.shape[1:]}; give both in the same shape"
        )
    model = _detector(checkpoint, fpr, contamination, boundary, seed, impute, score_neighbors)
    model.fit(reference)
    scores = -model.score_samples(x)
    flags = scores > model.threshold_
    why = _why(x, reference, features) if table is not None else None
    pvalues = model.pvalues(x)
    text = scores_csv(names, scores, pvalues, flags, images, why)
    info = _summary(model, str(input_path), str(normal_path or input_path), flags)
    gallery = _gallery(x, scores, flags) if x.ndim == 4 and (plot or report_dir) else None
    page = None
    if report_dir is not None:
        shown = names if images else [str(i) for i in range(len(x))]
        page = _page(x, info, shown, scores, pvalues, flags, why, gallery)
    _write(out, text, plot, gallery, info)
    if page is not None and report_dir is not None:
        from metaunsup.app.report.html_parts import write_index

        info["files"]["report"] = str(write_index(report_dir, page))
    _print(info, text, out is not None, as_json)


def _gallery(x: np.ndarray, scores: np.ndarray, flags: np.ndarray) -> bytes:
    """PNG bytes of the most anomalous images next to the most typical."""
    from metaunsup.app.report.gallery import gallery_image

    buffer = io.BytesIO()
    gallery_image(x, scores, flags).save(buffer, format="PNG")
    return buffer.getvalue()


def _page(
    x: np.ndarray,
    info: dict,
    names: list[str],
    scores: np.ndarray,
    pvalues: np.ndarray,
    flags: np.ndarray,
    why: list[str] | None,
    gallery: bytes | None,
) -> str:
    """The ``--report`` page's HTML (see :mod:`metaunsup.app.report.anomaly_page`)."""
    from metaunsup.app.report.anomaly_page import render_page, score_histogram_png, score_map_png

    figures = (score_histogram_png(scores, info["threshold"]), score_map_png(x, scores, flags))
    return render_page(info, names, scores, pvalues, flags, figures, why, gallery)


def _write(out: str | None, text: str, plot: str | None, gallery: bytes | None, info: dict) -> None:
    from metaunsup.fileio import atomic_write_bytes, atomic_write_text

    files = {}
    if out is not None:
        files["scores"] = str(atomic_write_text(out, text))
    if plot is not None and gallery is not None:
        files["gallery"] = str(atomic_write_bytes(plot, gallery))
    info["files"] = files


def _print(info: dict, text: str, wrote: bool, as_json: bool) -> None:
    """The CSV to stdout when it went to no file; the summary to stdout, or to stderr when
    stdout carries the CSV."""
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    if not wrote:
        click.echo(text, nl=False)
    how = {
        "conformal-loo": "conformal, each reference example against the others",
        "conformal-split": "split conformal on held-out reference examples",
        "meta": "the checkpoint's meta-calibration, rescaled to the reference",
        "contamination": "PyOD's contamination rule (that share of the reference flagged)",
        "boundary": "the checkpoint's meta-learned decision boundary",
        "none": "none possible: nothing flagged",
    }[info["calibration"]]
    target = (
        "no false-alarm target"
        if info["calibration"] in ("boundary", "contamination")
        else f"target false-alarm rate {info['fpr']}"
    )
    lines = [
        f"flagged {info['flagged']} of {info['examples']} examples of {info['input']} ({target})",
        f"threshold {info['threshold']:.6g} from {info['reference_examples']} reference "
        f"examples; calibration: {how}",
        *(f"wrote {path}" for path in info["files"].values()),
    ]
    for line in lines:
        click.echo(line, err=not wrote)
