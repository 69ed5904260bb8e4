"""Meta-training with no labels through ``metaunsup train``: the ``[unsupervised]`` table,
pre-training, CACTUs / UMTRA sources, the label guard, exact resume and the demo."""

from __future__ import annotations

import copy
import functools
import json
import shutil
from pathlib import Path

import pytest
import torch

import metaunsup.data as data_module
from metaunsup.checkpoint import read_checkpoint, save_checkpoint
from metaunsup.data import load
from metaunsup.data.base import Dataset
from metaunsup.data.unlabeled import UnlabeledView
from metaunsup.embed import net_embeddings
from metaunsup.errors import CheckpointError, ConfigError
from metaunsup.evaluation.anomaly import learner_null_table
from metaunsup.evaluation.calibration import calibrated_pvalues
from metaunsup.evaluation.clustering import evaluate_clustering, learner_method
from metaunsup.learners import load_learner
from metaunsup.metrics import ari
from metaunsup.nets import Conv4
from metaunsup.tasks.pseudo.cactus import load_partitions
from metaunsup.training.build import fresh_learner, train_run
from metaunsup.training.config import config_from_dict, load_config
from metaunsup.training.pretraining import pretrain_contrastive
from metaunsup.training.recalibrate import ensure_calibrated
from metaunsup.training.unsupervised import (
    CONSENSUS_CANDIDATES,
    PARTITIONS_FILE,
    PRETRAIN_FILE,
    consensus_partitions,
    held_out_examples,
    pseudo_validation,
    unsupervised_source,
)

ROOT = Path(__file__).resolve().parents[2]


def same_grouping(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two labelings group the points identically (up to renaming)."""
    pairs = torch.unique(torch.stack([a.long(), b.long()]), dim=1)
    return pairs.shape[1] == torch.unique(a).numel() == torch.unique(b).numel()


NET = {"name": "conv4", "hidden": 8, "norm": "batch"}
TRAIN = {"steps": 4, "meta_batch": 2, "lr": 0.001, "checkpoint_every": 2, "seed": 0}
UNSUP = {"tasks": "cactus", "pretrain_steps": 3, "pretrain_batch": 32, "partitions": 3}

#: One run per unsupervised method the engine offers.
RUNS = {
    "cactus-meta_kmeans": {
        "task": {"kind": "clustering", "n_way": 5, "k_shot": 4},
        "unsupervised": UNSUP,
        "learner": {"name": "meta_kmeans", "n_iter": 2, "net": NET},
    },
    "cactus-consensus-meta_kmeans": {
        "task": {"kind": "clustering", "n_way": 5, "k_shot": 4},
        "unsupervised": {
            **UNSUP,
            "pretrain_steps": 0,
            "spectral_dims": 6,
            "consensus": 2,
            "consensus_dims": [5, 6],
            "consensus_neighbors": [8, 12],
        },
        "learner": {"name": "meta_kmeans", "n_iter": 2, "net": NET},
    },
    "cactus-protonet": {
        "task": {"kind": "fewshot", "n_way": 5, "k_shot": 1, "n_query": 2},
        "unsupervised": {**UNSUP, "pretrain_steps": 0},
        "learner": {"name": "protonet", "net": NET},
    },
    "cactus-maml": {
        "task": {"kind": "fewshot", "n_way": 5, "k_shot": 1, "n_query": 2},
        "unsupervised": UNSUP,
        "learner": {"name": "maml", "inner_lr": 0.1, "inner_steps": 1, "net": NET},
    },
    "cactus-meta_kmeans-augmented-validated": {
        "task": {"kind": "clustering", "n_way": 5, "k_shot": 4},
        "unsupervised": {**UNSUP, "task_augment": "auto", "val_fraction": 0.3},
        "learner": {"name": "meta_kmeans", "n_iter": 2, "net": NET},
    },
    "cactus-protonet-validated": {
        "task": {"kind": "fewshot", "n_way": 5, "k_shot": 1, "n_query": 2},
        "unsupervised": {**UNSUP, "pretrain_steps": 0, "val_fraction": 0.2},
        "learner": {"name": "protonet", "net": NET},
    },
    "cactus-meta_svdd-near-anomalies": {
        "task": {"kind": "anomaly-hard", "k_shot": 3, "n_query": 4},
        "unsupervised": {**UNSUP, "pseudo_groups": 3},
        "learner": {"name": "meta_svdd", "net": {**NET, "norm": "group", "groups": 4}},
    },
    "umtra-maml": {
        "task": {"kind": "fewshot", "n_way": 5, "k_shot": 1, "n_query": 2},
        "unsupervised": {"tasks": "umtra"},
        "learner": {"name": "maml", "inner_lr": 0.1, "inner_steps": 1, "net": NET},
    },
    "cactus-meta_gmvae": {
        "task": {"kind": "fewshot", "n_way": 5, "k_shot": 2, "n_query": 2},
        "unsupervised": {**UNSUP, "pretrain_steps": 0},
        "learner": {"name": "meta_gmvae", "latent_dim": 4, "n_samples": 2, "net": NET},
    },
}


def run_config(name: str, **train) -> dict:
    raw = {"name": name, "data": {"dataset": "digits", "split": "train"}, **RUNS[name]}
    raw = copy.deepcopy(raw)
    raw["train"] = {**TRAIN, **train}
    return raw


class LabelTrap(Dataset):
    """A dataset that fails the test the moment anything reads its labels."""

    armed = False

    def __getattribute__(self, name: str):
        if name in ("y", "classes", "groups") and object.__getattribute__(self, "armed"):
            raise AssertionError(f"an unsupervised run read the labels ({name})")
        return super().__getattribute__(name)


@pytest.fixture
def trapped_digits(monkeypatch):
    """``data.load`` hands out digits whose labels cannot be read."""
    real = load("digits", "train")

    def fake_load(name, split, root=None):
        ds = LabelTrap(real.name, real.split, real.x, real.y, real.classes, real.groups)
        ds.armed = True
        return ds

    monkeypatch.setattr(data_module, "load", fake_load)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_unsupervised_method_trains_without_reading_labels(name, trapped_digits, tmp_path):
    cfg = config_from_dict(run_config(name))
    result = train_run(cfg, tmp_path, progress=False)
    assert result.steps == TRAIN["steps"]
    _, meta = read_checkpoint(tmp_path / "last.safetensors")
    record = meta["run"]["unsupervised_record"]
    assert record["tasks"] == cfg.unsupervised.tasks
    assert ("pretrain" in record) == (cfg.unsupervised.pretrain_steps > 0)
    assert (tmp_path / PARTITIONS_FILE).exists() == (cfg.unsupervised.tasks == "cactus")
    assert record.get("pseudo_groups", 0) == cfg.unsupervised.pseudo_groups
    assert torch.isfinite(torch.tensor(result.last_metrics["loss"]))


def test_rotations_add_turned_copies_of_the_unlabeled_images(trapped_digits, tmp_path):
    """``data.rotations`` in a run without labels: every image and its copies turned by 90°,
    180° and 270° are the unlabeled examples (no label read), and the run's CACTUs partitions
    cover all of them."""
    from metaunsup.training.build import _unlabeled_split

    cfg = config_from_dict(run_config("cactus-meta_kmeans"))
    plain = _unlabeled_split(cfg)
    cfg = config_from_dict(
        {**run_config("cactus-meta_kmeans"), "data": {**cfg.to_dict()["data"], "rotations": True}}
    )
    turned = _unlabeled_split(cfg)
    n = len(plain)
    assert len(turned) == 4 * n
    assert torch.equal(turned.x[:n], plain.x)
    assert torch.equal(turned.x[2 * n : 3 * n], torch.rot90(plain.x, 2, dims=(2, 3)))
    assert (turned.name, turned.split, turned.info) == (plain.name, plain.split, plain.info)
    train_run(cfg, tmp_path, progress=False)
    parts, _ = load_partitions(tmp_path / PARTITIONS_FILE)
    assert parts.shape[1] == 4 * n


@pytest.mark.slow
def test_meta_gmvae_is_calibrated_on_its_pseudo_classes_without_labels(trapped_digits, tmp_path):
    """Meta-GMVAE meta-trains on few-shot pseudo-tasks, yet scores anomalies: its run ends by
    measuring its null table on one-class tasks of its own CACTUs clusters (and the pixel
    clusters), reading no label, so a support of 2 normal examples gets thresholds at
    fpr = 0.05, which conformal p-values (at least 1/3 there) cannot give."""
    cfg = config_from_dict(run_config("cactus-meta_gmvae"))
    train_run(cfg, tmp_path, progress=False)
    best = load_learner(tmp_path / "best.safetensors")
    table = learner_null_table(best)
    assert table is not None and table.ready and table.stat == "max"
    assert not ensure_calibrated(cfg, tmp_path)  # nothing left to do
    view = UnlabeledView(load("digits", "train"))
    support, query = view.x[None, :2], view.x[None, 2:40]
    scores = best.score(support, query)
    pvalues, how = calibrated_pvalues(best.score, support, scores, fpr=0.05, null=table)
    assert how == "meta" and float(pvalues.min()) < 1 / 3
    # a checkpoint saved before Meta-GMVAE had a null table loads, uncalibrated, and a run
    # left so is calibrated again to the same table (same seed)
    for name in ("best.safetensors", "last.safetensors"):
        tensors, meta = read_checkpoint(tmp_path / name)
        save_checkpoint(tmp_path / name, {k: v for k, v in tensors.items() if ".null_" not in k},
                        meta)  # fmt: skip
    old = learner_null_table(load_learner(tmp_path / "best.safetensors"))
    assert old is not None and not old.ready
    assert ensure_calibrated(cfg, tmp_path)
    again = learner_null_table(load_learner(tmp_path / "best.safetensors"))
    assert again is not None and torch.equal(again.scores, table.scores)


def test_held_out_pseudo_tasks_choose_the_checkpoint_without_labels(trapped_digits, tmp_path):
    """``unsupervised.val_fraction``: the held-out examples are in no pseudo-task, validation
    scores the model on them against their pseudo-classes (of the first partition) every
    ``val_every`` steps, and ``best.safetensors`` is the step that scored best."""
    raw = run_config("cactus-meta_kmeans-augmented-validated", steps=6, val_every=2, val_tasks=8)
    cfg = config_from_dict(raw)
    view = UnlabeledView(load("digits", "train"))
    learner = fresh_learner(cfg, view.example_shape)
    source, record, validation = unsupervised_source(cfg, learner, view, tmp_path, "cpu")
    kept, held = held_out_examples(len(view), 0.3, cfg.train.seed)
    assert record["validation"]["held_out"] == held.numel() == round(0.3 * len(view))
    assert torch.equal(source.view.x, view.x[kept]) and len(source.view) + held.numel() == len(view)
    assert torch.equal(validation.dataset.x, view.x[held])
    first = load_partitions(tmp_path / PARTITIONS_FILE)[0][0, held].long()
    assert same_grouping(validation.dataset.y, first)  # the first partition's pseudo-classes
    assert validation.shape.n_way == 5 and 2 <= validation.shape.k_shot <= 4

    result = train_run(cfg, tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    scores = {r["step"]: r["val"]["acc"] for r in log if "val" in r}
    assert sorted(scores) == [2, 4, 6]
    best = max(scores, key=lambda step: (scores[step], -step))  # the first of equal scores
    assert result.best_step == best and result.best_metric == pytest.approx(scores[best])
    _, meta = read_checkpoint(tmp_path / "run" / "best.safetensors")
    assert meta["run"]["unsupervised_record"]["validation"]["held_out"] == held.numel()


def test_held_out_pseudo_classes_set_the_validation_shape_or_a_clear_error():
    """The validation tasks take the run's shape where the held-out pseudo-classes fill it,
    fewer examples per class where they do not, and a ConfigError naming the fix below two."""
    cfg = config_from_dict(run_config("cactus-meta_kmeans-augmented-validated"))  # 5 x 4
    view = UnlabeledView(load("digits", "train").x[:40])
    even = torch.arange(40) % 5  # five pseudo-classes of 8
    assert pseudo_validation(view, even, cfg).shape.k_shot == 4
    uneven = torch.tensor([0] * 30 + [1, 1, 1, 2, 2, 2, 3, 3, 3, 4])
    with pytest.raises(ConfigError, match=r"the 5th largest has 1 examples\); raise val_frac"):
        pseudo_validation(view, uneven, cfg)
    two = torch.tensor([0] * 30 + [1, 1, 1, 2, 2, 2, 3, 3, 4, 4])
    assert pseudo_validation(view, two, cfg).shape.k_shot == 2
    few = config_from_dict(run_config("cactus-protonet-validated"))  # 5 x (1 + 2 query)
    shape = pseudo_validation(view, even, few).shape
    assert (shape.k_shot, shape.n_query) == (1, 2)
    small = torch.tensor([0, 0] * 4 + [1, 1, 2, 2, 3, 3, 4, 4] + [0] * 24)
    assert pseudo_validation(view, small, few).shape.n_query == 1
    with pytest.raises(ConfigError, match="raise val_fraction or set it to 0"):
        pseudo_validation(view, torch.tensor([0] * 36 + [1, 2, 3, 4]), few)


def test_unsupervised_run_resumes_to_identical_weights(tmp_path):
    raw = run_config("cactus-meta_kmeans")
    train_run(config_from_dict(raw), tmp_path / "whole", progress=False)
    stopped = copy.deepcopy(raw)
    stopped["train"]["steps"] = 2
    train_run(config_from_dict(stopped), tmp_path / "parts", progress=False)
    pre = (tmp_path / "parts" / PRETRAIN_FILE).stat().st_mtime_ns
    train_run(config_from_dict(raw), tmp_path / "parts", resume=True, progress=False)
    assert (tmp_path / "parts" / PRETRAIN_FILE).stat().st_mtime_ns == pre  # not redone
    a, _ = read_checkpoint(tmp_path / "whole" / "last.safetensors")
    b, _ = read_checkpoint(tmp_path / "parts" / "last.safetensors")
    for key in a:
        if key.startswith("model."):
            assert torch.equal(a[key], b[key]), key


def test_pretraining_with_other_settings_in_the_folder_is_refused(tmp_path):
    raw = run_config("cactus-meta_kmeans")
    train_run(config_from_dict(raw), tmp_path, progress=False)
    raw["unsupervised"]["pretrain_steps"] = 4
    with pytest.raises(
        CheckpointError, match=r"unsupervised\.pretrain_steps = 3, the config says 4"
    ):
        train_run(config_from_dict(raw), tmp_path, resume=True, progress=False)
    for name in ("last.safetensors", "best.safetensors"):  # only the cached pre-training stays
        (tmp_path / name).unlink()
    with pytest.raises(CheckpointError, match="pre-training with other settings"):
        train_run(config_from_dict(raw), tmp_path, progress=False)


def test_learners_with_and_without_a_head_share_a_pretraining(tmp_path):
    """A ProtoNet run's cached pre-training is exactly what a MAML run (whose backbone has a
    classification head) would compute, so a copy of it is reused as is."""
    raw = run_config("cactus-protonet")
    raw["unsupervised"] = dict(UNSUP)  # with pre-training, like cactus-maml
    protonet = config_from_dict(raw)
    train_run(protonet, tmp_path / "protonet", progress=False)
    maml = config_from_dict(run_config("cactus-maml"))
    train_run(maml, tmp_path / "maml", progress=False)
    copied = tmp_path / "copied"
    copied.mkdir()
    shutil.copy(tmp_path / "protonet" / PRETRAIN_FILE, copied / PRETRAIN_FILE)
    train_run(maml, copied, progress=False)
    a, _ = read_checkpoint(tmp_path / "maml" / PRETRAIN_FILE)
    b, _ = read_checkpoint(tmp_path / "protonet" / PRETRAIN_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for run in ("maml", "copied"):
        assert not any("head" in k for k in read_checkpoint(tmp_path / run / PRETRAIN_FILE)[0])
    x, _ = read_checkpoint(tmp_path / "maml" / "last.safetensors")
    y, _ = read_checkpoint(copied / "last.safetensors")
    assert all(torch.equal(x[k], y[k]) for k in x if k.startswith("model."))


def test_cactus_can_cluster_the_features_of_another_runs_pretraining(tmp_path):
    """``features_from``: a cheaper network meta-trains on the pseudo-classes of another run's
    pre-trained features (the same partitions that run made with the same CACTUs settings)."""
    teacher = run_config("cactus-meta_kmeans")
    train_run(config_from_dict(teacher), tmp_path / "teacher", progress=False)
    student = run_config("cactus-meta_kmeans")
    student["name"] = "student"
    student["learner"]["net"] = {**NET, "hidden": 4, "input_pool": 2}
    student["unsupervised"]["features_from"] = "teacher"
    cfg = config_from_dict(student)
    with pytest.raises(ConfigError, match="train the run 'teacher'"):
        train_run(cfg, tmp_path / "alone" / "student", progress=False)
    train_run(cfg, tmp_path / "student", progress=False)
    a, _ = read_checkpoint(tmp_path / "teacher" / PARTITIONS_FILE)
    b, _ = read_checkpoint(tmp_path / "student" / PARTITIONS_FILE)
    assert torch.equal(a["partitions"], b["partitions"])
    _, meta = read_checkpoint(tmp_path / "student" / "last.safetensors")
    assert meta["run"]["unsupervised_record"]["features_from"] == "teacher"
    own = run_config("cactus-meta_kmeans")
    own["learner"]["net"] = student["learner"]["net"]
    train_run(config_from_dict(own), tmp_path / "own", progress=False)
    c, _ = read_checkpoint(tmp_path / "own" / PARTITIONS_FILE)
    assert not torch.equal(a["partitions"], c["partitions"])  # its own features differ


def test_features_from_needs_cactus_tasks():
    raw = run_config("umtra-maml")
    raw["unsupervised"]["features_from"] = "teacher"
    with pytest.raises(ConfigError, match="features_from"):
        config_from_dict(raw)


def test_pretraining_makes_augmented_copies_agree():
    """After contrastive pre-training an image's features are closer to its augmented copy
    than to other images' (the property the loss trains; random weights do not have it)."""
    from metaunsup.data.augment import Augment

    torch.manual_seed(0)
    net = Conv4(1, n_way=None, hidden=16, image_size=8)
    digits = load("digits", "train")
    x = digits.x[:200].float()
    aug = Augment.for_shape((1, 8, 8), strong=True)

    def margin() -> float:
        g = torch.Generator().manual_seed(1)
        a = net_embeddings(net, aug(x, g))
        b = net_embeddings(net, aug(x, g))
        sim = a @ b.T
        return float(sim.diag().mean() - sim.mean())

    before = margin()
    losses = pretrain_contrastive(net, x, steps=60, batch_size=64, seed=0).losses
    assert len(losses) == 60 and losses[-1] < losses[0]
    assert margin() > before + 0.1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tasks": "dino"}, "unsupervised.tasks"),
        ({"partitions": 0}, "partitions"),
        ({"pretrain_steps": -1}, "pretrain_steps"),
        ({"clusters": 3}, "at least task.n_way"),
        ({"pretrain_lr": 0.0}, "positive"),
        ({"n_init": "ten"}, "must be int"),
        ({"colour": 1}, "unknown key"),
        ({"features_from": "../elsewhere"}, "plain folder name"),
        ({"features_from": ".."}, "plain folder name"),
        ({"consensus": -1}, "consensus must be >= 0"),
        ({"consensus": 2, "spectral_dims": 0}, "needs spectral_dims"),
        ({"consensus": 2, "spectral_dims": 4, "consensus_dims": [0]}, "must be >= 1"),
        ({"task_augment": "28x82"}, "task_augment: unknown augmentation preset"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"val_fraction": -0.1}, r"val_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_unsupervised_tables_are_config_errors(change, message):
    raw = run_config("cactus-meta_kmeans")
    raw["unsupervised"].update(change)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_consensus_partitions_differ_are_seeded_and_the_least_cut_are_kept(monkeypatch):
    """Within a run the kept partitions are not one partition relabelled (ARI < 1); the same
    seed gives the same partitions, another seed others; and what is kept are the candidates
    with the lowest normalised cut of the pool's co-association (the label-free selection)."""
    import metaunsup.cluster.consensus as consensus

    cfg = load_config("digits-unsup").unsupervised
    z = load("digits", "train").x.reshape(901, -1).float()  # the pixels: a quick stand-in
    seen = []
    real_cut = consensus.consensus_cut

    def spy(pool: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        seen.append((pool, candidates))
        return real_cut(pool, candidates)

    monkeypatch.setattr(consensus, "consensus_cut", spy)
    parts = consensus_partitions(z, cfg, seed=0)
    assert parts.shape == (cfg.partitions, 901) and parts.dtype == torch.int32
    pairs = [ari(a, b) for i, a in enumerate(parts) for b in parts[i + 1 :]]
    assert min(pairs) < 1.0, pairs
    ((pool, candidates),) = seen
    assert candidates.shape[0] == CONSENSUS_CANDIDATES * cfg.partitions
    assert pool.shape[0] == cfg.consensus * len(cfg.consensus_dims) * len(cfg.consensus_neighbors)
    all_cuts = real_cut(pool, candidates).sort().values
    assert torch.allclose(real_cut(pool, parts).sort().values, all_cuts[: cfg.partitions])
    assert torch.equal(consensus_partitions(z, cfg, seed=0), parts)
    assert not torch.equal(consensus_partitions(z, cfg, seed=1), parts)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task_augment": "auto"}, "task_augment applies to CACTUs tasks"),
        ({"val_fraction": 0.2}, "held-out CACTUs tasks"),
    ],
)
def test_umtra_takes_neither_task_augmentation_nor_held_out_validation(change, message):
    raw = run_config("umtra-maml")
    raw["unsupervised"].update(change)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_pseudo_groups_go_with_anomaly_hard_pseudo_tasks_and_nothing_else():
    near = run_config("cactus-meta_svdd-near-anomalies")
    assert config_from_dict(near).unsupervised.pseudo_groups == 3
    near["unsupervised"]["pseudo_groups"] = 0  # hard pseudo-tasks need groups of clusters
    with pytest.raises(ConfigError, match=r"set unsupervised\.pseudo_groups"):
        config_from_dict(near)
    near["unsupervised"]["pseudo_groups"] = 1
    with pytest.raises(ConfigError, match="0 or >= 2"):
        config_from_dict(near)
    easy = run_config("cactus-meta_kmeans")
    easy["unsupervised"]["pseudo_groups"] = 3  # clustering tasks do not read it
    with pytest.raises(ConfigError, match="do not read it"):
        config_from_dict(easy)


def test_umtra_needs_one_shot_fewshot_tasks():
    raw = run_config("umtra-maml")
    raw["task"]["k_shot"] = 2
    with pytest.raises(ConfigError, match="UMTRA"):
        config_from_dict(raw)


def test_shipped_unsupervised_configs_parse_and_the_demo_runs_the_packaged_one():
    from metaunsup.app.demo import demo_config
    from metaunsup.training.config import packaged_configs

    demo = load_config("digits-unsup")  # a packaged config, by name
    assert demo == load_config(packaged_configs()["digits-unsup"]) == demo_config(seed=0)
    assert demo.unsupervised is not None and demo_config(seed=3).train.seed == 3
    for path in sorted((ROOT / "configs").glob("*unsup*.toml")):
        assert load_config(path).unsupervised is not None, path


def test_demo_writes_results_and_figure(tmp_path, monkeypatch):
    """The demo's plumbing on a shortened run (the full run is `metaunsup demo`)."""
    import metaunsup.app.demo as demo

    short = {"unsupervised.pretrain_steps": 3, "unsupervised.partitions": 2, "train.steps": 3}
    run = functools.partial(
        demo.run_demo, tasks=12, curve_tasks=6, progress=False, echo=lambda m: None,
        config_overrides=short,
    )  # fmt: skip
    report = run(tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    names = [r["method"] for r in saved["results"]]
    assert names[:3] == ["kmeans", "pca-kmeans", "gmm"] and "meta-trained, no labels" in names
    assert saved["training"]["meta_steps"] == 3 and saved["tasks"] == 12
    curves = saved["curves"]
    assert [p["steps"] for p in next(iter(curves.values()))] == list(demo.MODEL_STEPS)
    assert all(0 <= p["acc"] <= 1 for pts in curves.values() for p in pts)
    assert (tmp_path / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["files"]["figure"] is not None
    # the model scored is the run's moving average of the weights (train.ema), no step chosen
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    assert not [r for r in log if "val" in r]
    last = read_checkpoint(tmp_path / "run" / "last.safetensors")[0]
    best = read_checkpoint(tmp_path / "run" / "best.safetensors")[0]
    averaged = {k.removeprefix("ema."): v for k, v in last.items() if k.startswith("ema.")}
    assert averaged and all(torch.equal(best[f"model.{k}"], v) for k, v in averaged.items())
    assert any(not torch.equal(last[f"model.{k}"], v) for k, v in averaged.items())
    chosen = learner_method("chosen", load_learner(tmp_path / "run" / "best.safetensors"))
    scored = evaluate_clustering(
        load("digits", "test"), [chosen], n_way=10, k_shot=20, n_tasks=12, seed=0
    )
    meta = next(r for r in saved["results"] if r["method"] == "meta-trained, no labels")
    assert meta["acc"]["mean"] == pytest.approx(scored.to_json()["results"][0]["acc"]["mean"])
    # a second call reuses the finished run
    again = run(tmp_path)
    assert [r["acc"] for r in again["results"]] == [r["acc"] for r in report["results"]]


def test_demo_model_loads_as_a_clustering_checkpoint(tmp_path):
    short = {"unsupervised.pretrain_steps": 2, "unsupervised.partitions": 2, "train.steps": 2}
    train_run(load_config("digits-unsup", short), tmp_path, progress=False)
    learner = load_learner(tmp_path / "last.safetensors")
    x = load("digits", "test").x[:40].float().unsqueeze(0)
    labels = learner.cluster(x, 10, seed=0)
    assert labels.shape == (1, 40) and int(labels.max()) < 10
