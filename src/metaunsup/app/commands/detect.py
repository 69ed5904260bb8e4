"""``metaunsup detect INPUT [--normal REFERENCE] --checkpoint NAME``: score the user's rows or
images for anomalies and flag those past a threshold set at a false-alarm rate.

INPUT (and REFERENCE) are read by :func:`metaunsup.data.arrays.load_arrays` (``.npy``, numeric
``.csv``, or a folder of images). REFERENCE holds normal examples (a handful is enough with a
meta-calibrated checkpoint); without it INPUT itself is the reference (mostly normal, unlabeled
data). :class:`metaunsup.MetaOutlierDetector` scores and flags; ``--out`` gets a CSV ranked by
score (``file`` or ``index``, ``score``, ``pvalue``, ``flag``, ``rank``), ``--plot`` a gallery
of the most anomalous images next to the most typical. Outputs are written atomically and only
after everything succeeded, so an error never leaves a partial file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import click
import numpy as np

from metaunsup.app.console import set_threads
from metaunsup.errors import ConfigError

__all__ = ["detect", "scores_csv"]


def scores_csv(
    names: Sequence[str], scores: np.ndarray, pvalues: np.ndarray, flags: np.ndarray, images: bool
) -> str:
    """CSV text, most anomalous first: ``file|index, score, pvalue, flag, rank``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file" if images else "index", "score", "pvalue", "flag", "rank"])
    order = np.argsort(-scores, kind="stable")
    for rank, i in enumerate(order, start=1):
        name = names[i] if images else str(i)
        writer.writerow([name, f"{scores[i]:.6g}", f"{pvalues[i]:.4g}", int(flags[i]), rank])
    return buffer.getvalue()


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
@click.option("--out", type=click.Path(dir_okay=False), help="Write the ranked scores as CSV.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    help="Write a PNG gallery of the most anomalous and the most typical images.",
)
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
    out: str | None,
    plot: str | None,
    seed: int,
    threads: int | None,
    as_json: bool,
) -> None:
    """Rank INPUT's rows or images by anomaly score and flag those past the threshold.

    The threshold targets --fpr false alarms among normal examples, set from the normal
    reference (--normal, else INPUT) and, for a handful of reference examples, from the
    checkpoint's meta-calibration.
    """
    from metaunsup.data.arrays import load_arrays
    from metaunsup.evaluation.calibration import check_fpr
    from metaunsup.fileio import check_output_path

    check_fpr(fpr)
    outputs = [check_output_path(p) for p in (out, plot) if p is not None]
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise ConfigError("--out and --plot name the same file; give two different paths")
    set_threads(threads)
    dataset, names = load_arrays(input_path)
    x = dataset.x.numpy()
    images = dataset.info.get("format") == "images"
    if plot is not None and x.ndim != 4:
        raise ConfigError(
            f"--plot draws images, but {input_path} holds a table of shape {x.shape}; leave out "
            "--plot or give a folder of images (or an .npy of [n, H, W] images)"
        )
    reference = x if normal_path is None else load_arrays(normal_path)[0].x.numpy()
    if reference.shape[1:] != x.shape[1:]:
        raise ConfigError(
            f"{input_path} has examples of shape {x.shape[1:]} but the normal reference "
            f"{normal_path} has {reference.shape[1:]}; give both in the same shape"
        )
    from metaunsup.estimators.outlier import MetaOutlierDetector

    model = MetaOutlierDetector(checkpoint, fpr=fpr, contamination=contamination, random_state=seed)
    model.fit(reference)
    scores = -model.score_samples(x)
    flags = scores > model.threshold_
    text = scores_csv(names, scores, model.pvalues(x), flags, images)
    info = _summary(model, str(input_path), str(normal_path or input_path), flags)
    gallery = None
    if plot is not None:
        from metaunsup.app.report.gallery import gallery_image

        buffer = io.BytesIO()
        gallery_image(x, scores, flags).save(buffer, format="PNG")
        gallery = buffer.getvalue()
    _write(out, text, plot, gallery, info)
    _print(info, text, out is not None, as_json)


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
        "none": "none possible: nothing flagged",
    }[info["calibration"]]
    lines = [
        f"flagged {info['flagged']} of {info['examples']} examples of {info['input']} "
        f"(target false-alarm rate {info['fpr']})",
        f"threshold {info['threshold']:.6g} from {info['reference_examples']} reference "
        f"examples; calibration: {how}",
        *(f"wrote {path}" for path in info["files"].values()),
    ]
    for line in lines:
        click.echo(line, err=not wrote)
