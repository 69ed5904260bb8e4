"""A run folder is never replaced unasked, a resume checks what it needs before any work, and
Ctrl-C at any moment of a run (pre-training, partitioning, meta-training) then ``--resume`` ends
with the weights of an unbroken run.

The interruptions here are in-process (a ``KeyboardInterrupt`` raised at a chosen moment);
``test_ctrl_c_at_every_stage_of_the_demo_config`` sends a real SIGINT to a real
``metaunsup train`` process.
"""

from __future__ import annotations

import copy
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import metaunsup.tasks.pseudo.cactus as cactus
from metaunsup.app.cli import main
from metaunsup.checkpoint import read_checkpoint
from metaunsup.errors import CheckpointError, ConfigError
from metaunsup.training.build import run_state, train_run
from metaunsup.training.config import config_from_dict, packaged_configs
from metaunsup.training.trainer import Trainer
from metaunsup.training.unsupervised import PARTITIONS_FILE, PRETRAIN_DIR, PRETRAIN_FILE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A small run of the demo's kind: SimCLR pre-training, CACTUs partitions, Meta-K-means.
RUN = {
    "name": "small",
    "data": {"dataset": "digits", "split": "train"},
    "task": {"kind": "clustering", "n_way": 5, "k_shot": 4},
    "unsupervised": {"tasks": "cactus", "pretrain_steps": 6, "pretrain_batch": 32,
                     "partitions": 3, "spectral_dims": 4},
    "learner": {"name": "meta_kmeans", "n_iter": 2,
                "net": {"name": "conv4", "hidden": 8, "norm": "batch"}},
    "train": {"steps": 6, "meta_batch": 2, "lr": 0.001, "checkpoint_every": 2, "seed": 0},
}  # fmt: skip


def _cfg(**train):
    raw = copy.deepcopy(RUN)
    raw["train"].update(train)
    return config_from_dict(raw)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_checkpoint(run / "last.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def _same_weights(a: Path, b: Path) -> None:
    x, y = _weights(a), _weights(b)
    assert x.keys() == y.keys()
    for key in x:
        assert torch.equal(x[key], y[key]), key


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("unbroken")
    train_run(_cfg(), run, progress=False)
    return run


def interrupt(monkeypatch, stage: str) -> None:
    """Raise KeyboardInterrupt (as Ctrl-C does) at step 3 of pre-training or meta-training (one
    step after a checkpoint), or in the first k-means of the partitioning."""
    if stage == "partitioning":

        def ctrl_c(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(cactus, "kmeans", ctrl_c)
        return
    real = Trainer._after_step
    prefix = {"pre-training": "contrastive", "meta-training": "meta-train"}[stage]

    def after_step(self, metrics, log_file):
        real(self, metrics, log_file)
        if self.name.startswith(prefix) and self.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_after_step", after_step)


KEPT = {
    "pre-training": "pre-training at step 2 of 6",
    "partitioning": "the finished pre-training",
    "meta-training": "the finished pre-training and the CACTUs partitions and meta-training "
    "at step 2 of 6",
}


@pytest.mark.parametrize("stage", list(KEPT))
def test_interrupted_run_resumes_to_the_unbroken_weights(stage, tmp_path, monkeypatch, unbroken):
    interrupt(monkeypatch, stage)
    with pytest.raises(KeyboardInterrupt):
        train_run(_cfg(), tmp_path, progress=False)
    monkeypatch.undo()
    state = run_state(tmp_path)
    assert state.resumable and state.describe(_cfg()) == KEPT[stage]
    if state.holds_run:  # not replaced unasked (a finished pre-training alone is reused)
        with pytest.raises(ConfigError, match="holds a run"):
            train_run(_cfg(), tmp_path, progress=False)
    train_run(_cfg(), tmp_path, resume=True, progress=False)
    _same_weights(unbroken, tmp_path)
    assert not (tmp_path / PRETRAIN_DIR / "last.safetensors").exists()  # done: kept as a file


def test_ctrl_c_says_what_was_kept_and_the_command_that_continues(tmp_path, monkeypatch, capsys):
    config = tmp_path / "small.toml"
    config.write_text(_toml(RUN | {"train": {**RUN["train"], "steps": 100}}))
    run = tmp_path / "run"
    interrupt(monkeypatch, "pre-training")
    assert main(["train", str(config), "--out", str(run), "--steps", "6", "--quiet"]) == 130
    monkeypatch.undo()
    lines = capsys.readouterr().err.strip().splitlines()
    command = shlex.join(
        ["metaunsup", "train", str(config), "--out", str(run), "--steps", "6", "--resume"]
    )
    assert lines == [
        f"metaunsup: interrupted: kept pre-training at step 2 of 6 in {run}; continue with: "
        f"{command}"
    ]
    assert main(shlex.split(command)[1:]) == 0  # the printed command, word for word
    other = tmp_path / "unbroken"
    assert main(["train", str(config), "--out", str(other), "--steps", "6", "--quiet"]) == 0
    _same_weights(other, run)


def test_ctrl_c_before_anything_was_kept_says_to_start_again(tmp_path, monkeypatch, capsys):
    raw = copy.deepcopy(RUN)
    raw["unsupervised"]["pretrain_steps"] = 0  # the partitioning is the first stage
    config = tmp_path / "small.toml"
    config.write_text(_toml(raw))
    run = tmp_path / "run"
    interrupt(monkeypatch, "partitioning")
    assert main(["train", str(config), "--out", str(run), "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == (
        "metaunsup: interrupted: nothing was kept yet; start again with: metaunsup train "
        f"{config} --out {run}"
    )


def test_resume_checks_what_it_needs_before_any_work(tmp_path, monkeypatch):
    train_run(_cfg(steps=2), tmp_path, progress=False)
    (tmp_path / PRETRAIN_FILE).unlink()  # so that a resume would pre-train again first
    raw = copy.deepcopy(RUN)
    raw["learner"]["n_iter"] = 3  # another learner than the one in last.safetensors
    monkeypatch.setattr(
        "metaunsup.training.unsupervised.pretrain_contrastive",
        lambda *a, **k: pytest.fail("pre-training ran before the resume was checked"),
    )
    with pytest.raises(CheckpointError, match="another learner configuration"):
        train_run(config_from_dict(raw), tmp_path, resume=True, progress=False)
    assert not (tmp_path / PRETRAIN_DIR / "last.safetensors").exists()


def test_resume_of_a_folder_with_nothing_to_resume_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "metaunsup.training.unsupervised.pretrain_contrastive",
        lambda *a, **k: pytest.fail("pre-training ran before the resume was checked"),
    )
    with pytest.raises(CheckpointError, match="holds no run to continue"):
        train_run(_cfg(), tmp_path / "new", resume=True, progress=False)
    assert not (tmp_path / "new").exists()


def test_a_folder_holding_a_run_needs_resume_or_overwrite(tmp_path):
    train_run(_cfg(steps=2), tmp_path, progress=False)
    before = (tmp_path / "last.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=r"holds a run \(.*meta-training at step 2 of 4\)"):
        train_run(_cfg(steps=4), tmp_path, progress=False)
    assert (tmp_path / "last.safetensors").read_bytes() == before


def test_overwrite_leaves_no_file_of_the_old_run(tmp_path):
    """The old run (another seed and partitions, more steps) is replaced whole: the new one's
    files equal those of the same run trained into an empty folder."""
    old = copy.deepcopy(RUN)
    old["train"].update(seed=1, steps=8)
    old["unsupervised"]["partitions"] = 4
    train_run(config_from_dict(old), tmp_path / "run", progress=False)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    train_run(_cfg(steps=4), tmp_path / "run", overwrite=True, progress=False)
    train_run(_cfg(steps=4), tmp_path / "fresh", progress=False)
    _same_weights(tmp_path / "fresh", tmp_path / "run")
    for name in ("last.safetensors", "best.safetensors", PRETRAIN_FILE, PARTITIONS_FILE):
        a, _ = read_checkpoint(tmp_path / "fresh" / name)
        b, _ = read_checkpoint(tmp_path / "run" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3, 4]
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"  # not a run's file: kept


def test_the_demo_continues_an_interrupted_pretraining(tmp_path, monkeypatch):
    import metaunsup.app.demo as demo

    short = {"unsupervised.pretrain_steps": 4, "unsupervised.partitions": 2, "train.steps": 2,
             "train.checkpoint_every": 2}  # fmt: skip
    interrupt(monkeypatch, "pre-training")
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path, tasks=4, curve_tasks=2, progress=False, echo=lambda m: None,
                      config_overrides=short)  # fmt: skip
    monkeypatch.undo()
    assert run_state(tmp_path / "run").pretrain_step == 2
    report = demo.run_demo(tmp_path, tasks=4, curve_tasks=2, progress=False,
                           echo=lambda m: None, config_overrides=short)  # fmt: skip
    assert report["training"]["meta_steps"] == 2


# ----------------------------------------------------------------------------- a real Ctrl-C
def _toml(raw: dict) -> str:
    lines = [f"name = {json.dumps(raw['name'])}"]
    for table in ("data", "task", "unsupervised", "learner", "learner.net", "train"):
        values = raw
        for part in table.split("."):
            values = values.get(part, {})
        if not values:
            continue
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict)]
    return "\n".join(lines) + "\n"


def _demo_config_small() -> dict:
    """The demo's packaged config (``digits-unsup``) with smaller numbers: the same stages
    (SimCLR pre-training, spectral CACTUs partitions, Meta-K-means, averaged weights), in
    seconds, plus a label-free validation on held-out pseudo-tasks (which the demo's config
    does without), so that what is checked of it holds with one too."""
    raw = tomllib.loads(packaged_configs()["digits-unsup"].read_text())
    raw["unsupervised"].update(
        pretrain_steps=200, pretrain_batch=32, partitions=400, n_init=4, val_fraction=0.2
    )
    raw["learner"].update(restarts=1)
    raw["learner"]["net"].update(hidden=8)
    raw["train"].update(meta_batch=2, checkpoint_every=10, val_every=50, val_tasks=10)
    return raw


def _wait(proc: subprocess.Popen, ready, what: str, limit: float = 180.0) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.stderr.read().decode()}")
        if ready():
            return
        time.sleep(0.02)
    pytest.fail(f"waited {limit} s for {what}")


def _hear_ctrl_c() -> None:
    """In the child before it starts: SIGINT back to its default disposition. A test process
    started in the background by a non-interactive shell (``make test &``) inherits SIGINT
    *ignored*, and a Python started with it ignored never raises ``KeyboardInterrupt``: the
    run would finish as if no signal came."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _step(path: Path) -> int:
    try:
        return int(read_checkpoint(path)[1]["step"]) if path.is_file() else 0
    except CheckpointError:
        return 0


@pytest.mark.slow
def test_ctrl_c_at_every_stage_of_the_demo_config(tmp_path):
    """SIGINT to a real ``metaunsup train`` of the demo's config during pre-training, then
    (resumed with the printed command) during partitioning, then during meta-training; the
    last resume finishes with exactly the weights of an unbroken run."""
    config = tmp_path / "digits-unsup-small.toml"
    config.write_text(_toml(_demo_config_small()))
    run, base = tmp_path / "run", [sys.executable, "-m", "metaunsup"]
    # 200 meta-steps, the signal after 10: a loaded machine that leaves this test unscheduled
    # for a while must not let the run finish before the signal arrives
    command = [*base, "train", str(config), "--out", str(run), "--steps", "200", "--threads", "1"]
    stages = {
        "pre-training": lambda: _step(run / PRETRAIN_DIR / "last.safetensors") >= 20,
        "partitioning": lambda: (run / PRETRAIN_FILE).is_file(),
        "meta-training": lambda: _step(run / "last.safetensors") >= 10,
    }
    for stage, ready in stages.items():
        proc = subprocess.Popen([*command, "--quiet"], stderr=subprocess.PIPE,
                                preexec_fn=_hear_ctrl_c)  # fmt: skip
        _wait(proc, ready, stage)
        if stage == "partitioning":
            assert not (run / PARTITIONS_FILE).exists(), "partitioning ended before the signal"
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1].decode().strip().splitlines()
        assert proc.returncode == 130 and len(err) == 1, err
        assert err[0].startswith("metaunsup: interrupted: kept "), err
        if stage == "partitioning":  # the signal came before the partitions were written
            assert "partitions" not in err[0], err
        printed = shlex.split(err[0].split("continue with: ")[1])
        assert printed[0] == "metaunsup" and printed[-1] == "--resume"
        command = [*base, *printed[1:]]
    done = subprocess.run([*command, "--quiet"], capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    unbroken = tmp_path / "unbroken"
    whole = [*base, "train", str(config), "--out", str(unbroken), "--steps", "200", "--threads",
             "1", "--quiet"]  # fmt: skip
    assert subprocess.run(whole, capture_output=True, timeout=600).returncode == 0
    _same_weights(unbroken, run)
    for name in (PRETRAIN_FILE, PARTITIONS_FILE):
        a, b = read_checkpoint(unbroken / name)[0], read_checkpoint(run / name)[0]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    logs = [
        [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}  # all but the clock
            for line in (folder / "train_log.jsonl").read_text().splitlines()
        ]
        for folder in (run, unbroken)
    ]
    assert any("val" in r for r in logs[0])  # validated without labels
    assert logs[0] == logs[1]  # the log, losses and validations, is the unbroken run's


def test_train_summary_says_a_label_free_validation_scored_pseudo_classes(tmp_path, capsys):
    """An unsupervised run's best validation score is agreement with pseudo-classes, not an
    accuracy against labels: the summary says so."""
    raw = _demo_config_small()
    raw["unsupervised"].update(pretrain_steps=2, partitions=2, consensus=0)
    raw["train"].update(val_every=1, val_tasks=2)
    config = tmp_path / "run.toml"
    config.write_text(_toml(raw))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--steps", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "best acc against the held-out examples' pseudo-classes " in out, out
