"""Runs with ``task.kind = "anomaly"``: supervised and label-free meta-training, the class
selection of ``data.classes``, and the calibration step that ends every such run."""

from __future__ import annotations

import pytest
import torch

from metaunsup.checkpoint import read_checkpoint, save_checkpoint
from metaunsup.errors import ConfigError
from metaunsup.evaluation.anomaly import learner_null_table
from metaunsup.learners import load_learner
from metaunsup.training.build import load_training_split, train_run
from metaunsup.training.config import config_from_dict
from metaunsup.training.recalibrate import ensure_calibrated

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(learner: dict, **data) -> dict:
    return {
        "name": "t",
        "data": {"dataset": "digits", "split": "train", "val_fraction": 0.0, **data},
        "task": {"kind": "anomaly", "k_shot": 3, "n_query": 4},
        "learner": learner,
        "train": {"steps": 4, "meta_batch": 2, "checkpoint_every": 2},
    }


OC_MAML = {"name": "oc_maml", "inner_steps": 1,
           "net": {"name": "conv4", "hidden": 4, "depth": 2}}  # fmt: skip


def test_data_classes_select_the_training_classes():
    cfg = config_from_dict(_config(OC_MAML, classes=[1, 4, 7]))
    ds = load_training_split(cfg)
    assert ds.classes == ("1", "4", "7") and set(ds.y.tolist()) == {0, 1, 2}
    for bad in ([1.5], [-1], "1,2", [True]):
        with pytest.raises(ConfigError, match=r"data\.classes must be a list of class ids"):
            config_from_dict(_config(OC_MAML, classes=bad))
    with pytest.raises(ConfigError, match=r"data.classes must be distinct class ids"):
        load_training_split(config_from_dict(_config(OC_MAML, classes=[1, 1])))


def test_supervised_oc_maml_run_is_calibrated(tmp_path):
    cfg = config_from_dict(_config(OC_MAML, classes=[0, 1, 2, 3, 4, 5]))
    train_run(cfg, tmp_path, progress=False)
    learner = load_learner(tmp_path / "best.safetensors")
    assert learner.net.n_way == 1  # the one-class kind sizes the head
    table = learner_null_table(learner)
    assert table is not None and table.ready and table.measured.all()
    last, _ = read_checkpoint(tmp_path / "last.safetensors")
    assert torch.equal(last["model.null_scores"], learner.null_scores)
    assert not ensure_calibrated(cfg, tmp_path)  # nothing left to do
    assert table.stat == "max"


@pytest.mark.slow
def test_a_run_calibrated_with_the_earlier_statistic_is_calibrated_again(tmp_path):
    cfg = config_from_dict(_config(OC_MAML, classes=[0, 1, 2, 3, 4, 5]))
    train_run(cfg, tmp_path, progress=False)
    table = learner_null_table(load_learner(tmp_path / "best.safetensors"))
    assert table is not None and table.stat == "max"
    # a run calibrated before the statistic was recorded is stale: calibrated again
    for name in ("best.safetensors", "last.safetensors"):
        tensors, meta = read_checkpoint(tmp_path / name)
        del tensors["model.null_stat"]
        save_checkpoint(tmp_path / name, tensors, meta)
    stale = learner_null_table(load_learner(tmp_path / "best.safetensors"))
    assert stale is not None and stale.stat == "mean"
    assert ensure_calibrated(cfg, tmp_path)
    again = learner_null_table(load_learner(tmp_path / "best.safetensors"))
    assert again is not None and again.stat == "max"
    assert torch.equal(again.scores, table.scores)  # the same seed measures the same table
