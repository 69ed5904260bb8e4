"""The eigenvalue-count choice of k: it counts well-separated groups, says why, clips to the
range, calibrates its threshold on labelled sets, and (on real Omniglot) finds the characters
of an alphabet where the eigengap stops early."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metaunsup.checkpoint import k_calibration
from metaunsup.cluster.choose_k import (
    calibrate_eigencount,
    choose_k_eigencount,
    choose_k_eigengap,
)
from metaunsup.errors import CheckpointError, ConfigError
from tests.helpers.data import needs_omniglot
from tests.helpers.estimators import conv_checkpoint


def blobs(groups: int, seed: int = 0, per: int = 30, dim: int = 16) -> torch.Tensor:
    """``[groups * per, dim]`` round groups far apart (centre ``6 e_i``)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(groups * per, dim, generator=g) + 6 * torch.eye(dim)[:groups].repeat(per, 1)


def test_eigencount_counts_groups_and_says_why():
    choice = choose_k_eigencount(blobs(4), 2, 8, threshold=0.5, note="from a test")
    assert choice.k == 4 and choice.method == "eigencount" and choice.threshold == 0.5
    assert set(choice.scores) == set(range(2, 9))
    assert choice.scores[4] > 0.5 >= choice.scores[5]  # the scores are the eigenvalues
    assert choice.reason.startswith("k=4: 4 graph eigenvalues exceed the threshold 0.500")
    assert choice.reason.endswith("; from a test")


def test_eigencount_clips_to_the_range():
    low = choose_k_eigencount(blobs(4), 6, 8, threshold=0.5)
    assert low.k == 6 and low.reason.startswith("k=6, the smallest tried")
    high = choose_k_eigencount(blobs(4), 2, 3, threshold=0.5)
    assert high.k == 3 and high.reason.startswith("k=3, the largest tried")
    with pytest.raises(ConfigError, match="threshold"):
        choose_k_eigencount(blobs(4), 2, 8, threshold=1.5)


def test_calibration_finds_a_threshold_that_counts_new_sets():
    train = [(blobs(k, seed=k), k) for k in (3, 4, 5, 6)]
    threshold, errors = calibrate_eigencount(train, 10)
    assert errors[threshold] == 0 and threshold == min(errors, key=lambda t: (errors[t], t))
    assert max(errors.values()) > 0  # the threshold matters
    assert choose_k_eigencount(blobs(7, seed=11), 2, 10, threshold=threshold).k == 7
    with pytest.raises(ConfigError, match="at least one"):
        calibrate_eigencount([])


def test_card_calibration_is_read_and_checked(tmp_path):
    assert k_calibration("omniglot-protonet")["rule"] == "eigencount"
    assert 0 < k_calibration("omniglot-unsup")["threshold"] < 1
    assert k_calibration("digits") is None and k_calibration("mnist") is None
    path = conv_checkpoint(tmp_path / "conv.safetensors")
    card = path.with_suffix(".json")
    card.write_text(json.dumps({"k_selection": {"rule": "eigencount", "threshold": 2}}))
    with pytest.raises(CheckpointError, match="threshold"):
        k_calibration(path)


@pytest.mark.slow
@needs_omniglot
def test_count_finds_the_characters_where_the_eigengap_stops_early():
    """Sylheti (28 characters, an evaluation alphabet never seen in training) in the packaged
    ProtoNet embedding with the threshold calibrated on the background alphabets: the count
    lands near 28; the largest eigengap comes after about half of them."""
    from metaunsup import MetaKMeans, data

    ev = data.load("omniglot", "evaluation")
    classes = np.flatnonzero(np.asarray(ev.groups) == "Sylheti")
    x = ev.x.numpy()[np.isin(ev.y.numpy(), classes), 0]
    model = MetaKMeans(
        "auto", checkpoint="omniglot-protonet", max_clusters=60, guard=False, random_state=0
    ).fit(x)
    assert model.k_choice_.method == "eigencount"
    assert "calibrated on the 30 Omniglot background alphabets" in model.k_choice_.reason
    assert abs(model.n_clusters_ - len(classes)) <= 2, model.n_clusters_
    z = model._embed(x)
    assert choose_k_eigengap(z, 2, 60).k < len(classes) - 5  # the old default
