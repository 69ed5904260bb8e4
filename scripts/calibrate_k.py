"""Calibrate a checkpoint's choice of k: the eigenvalue threshold of
:func:`metaunsup.cluster.choose_k.choose_k_eigencount`, fitted on labelled sets the model was
trained on, written to its card (key ``"k_selection"``) for ``MetaKMeans(k_selection="auto")``.

    python scripts/calibrate_k.py omniglot-protonet --threads 1 [--write]

Each of the 30 Omniglot *background* alphabets (the split the Omniglot checkpoints were
trained on; never the evaluation alphabets) is embedded whole by the checkpoint; the threshold
whose eigenvalue count misses the alphabets' numbers of characters by the least on average
(:func:`metaunsup.cluster.choose_k.calibrate_eigencount`, 10 neighbours, cosine, thresholds
0.30..0.95) is printed and, with ``--write``, stored on the card beside the checkpoint with
this command, the date and its mean error there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import numpy as np
import torch

from metaunsup.checkpoint import checkpoint_card, resolve_checkpoint
from metaunsup.cluster.choose_k import calibrate_eigencount
from metaunsup.data import load
from metaunsup.fileio import atomic_write_json
from metaunsup.learners import load_learner

K_MAX = 100


def background_alphabets(checkpoint: str, root: str | None) -> list[tuple[torch.Tensor, int]]:
    """``(embedding [n, D], characters)`` of each Omniglot background alphabet."""
    ds = load("omniglot", "background", root=root)
    learner = load_learner(checkpoint).eval()
    groups, y_all = np.asarray(ds.groups), ds.y.numpy()
    out = []
    for alphabet in sorted(set(groups.tolist())):
        classes = np.flatnonzero(groups == alphabet)
        keep = torch.from_numpy(np.flatnonzero(np.isin(y_all, classes)))
        x = ds.x[keep].float().unsqueeze(0)  # the alphabet is one task [1, n, 1, 28, 28]
        if ds.x.dtype == torch.uint8:
            x = x / 255.0
        with torch.no_grad():
            out.append((learner.embed(x)[0], len(classes)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="packaged name or .safetensors path")
    parser.add_argument("--root", default=None, help="data folder (default $METAUNSUP_DATA)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the result on the card")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sets = background_alphabets(args.checkpoint, args.root)
    threshold, errors = calibrate_eigencount(sets, K_MAX)
    for t, err in errors.items():
        print(f"threshold {t:.2f}: mean |k error| {err:.2f}")
    entry = {
        "rule": "eigencount",
        "threshold": threshold,
        "n_neighbors": 10,
        "metric": "cosine",
        "calibrated_on": f"the {len(sets)} Omniglot background alphabets (training classes; "
        f"mean |k error| {errors[threshold]:.2f} there)",
        "command": "python scripts/calibrate_k.py " + " ".join(sys.argv[1:]),
        "date": dt.date.today().isoformat(),
    }
    print(f"best threshold {threshold:.2f}: mean |k error| {errors[threshold]:.2f}")
    if args.write:
        card_path = resolve_checkpoint(args.checkpoint).with_suffix(".json")
        card = checkpoint_card(args.checkpoint)
        card["k_selection"] = entry
        atomic_write_json(card_path, card)
        print(f"wrote k_selection to {card_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
