"""Checkpoint files: round trip, atomic writes, and clear refusals of bad files."""

from __future__ import annotations

import pickle

import pytest
import torch

from metaunsup.checkpoint import (
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from metaunsup.errors import CheckpointError, ConfigError
from metaunsup.fileio import atomic_write_text, check_output_path


def _save(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3)}
    save_checkpoint(path, tensors, {"kind": "model", "learner": {"name": "toy"}})
    return path, tensors


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    path, tensors = _save(tmp_path)
    loaded, meta = read_checkpoint(path)
    assert set(loaded) == set(tensors)
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value)
    assert meta["learner"] == {"name": "toy"}
    assert meta["format"] == "metaunsup-checkpoint" and meta["version"] == 1
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


def test_truncated_file_is_refused(tmp_path):
    path, _ = _save(tmp_path)
    data = path.read_bytes()
    for cut in (4, 20, len(data) - 5):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"truncated|corrupt|not a"):
            read_checkpoint(path)


def test_empty_and_missing_files_are_refused(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(empty)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.safetensors")


def test_pickle_is_refused_without_loading(tmp_path):
    class Boom:
        def __reduce__(self):  # would run on unpickling
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Boom(), protocol=4))
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_checkpoint(path)
    torch_file = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, torch_file)
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_checkpoint(torch_file)


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a metaunsup checkpoint"):
        read_checkpoint(path)


def test_newer_version_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "future.safetensors"
    meta = '{"format": "metaunsup-checkpoint", "version": 99}'
    save_file({"w": torch.zeros(2)}, str(path), metadata={"metaunsup": meta})
    with pytest.raises(CheckpointError, match="upgrade metaunsup"):
        read_checkpoint(path)


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("hello, this is not a checkpoint at all")
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_unknown_name_lists_choices(tmp_path):
    with pytest.raises(CheckpointError, match="unknown checkpoint 'nonexistent-model'"):
        resolve_checkpoint("nonexistent-model")
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(str(tmp_path / "missing.safetensors"))


def test_output_in_missing_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        check_output_path(tmp_path / "no" / "such" / "out.json")
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_path(tmp_path)


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "first version, long text")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
