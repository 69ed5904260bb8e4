"""Checkpoints: one safetensors file whose header metadata holds the JSON configuration.

Why one file: the weights and the configuration that explains them are renamed into place in one
atomic step, so a crash can never pair new weights with an old configuration. The JSON lives in
the safetensors header under the key ``"metaunsup"``; nothing is ever unpickled, and files written
by ``torch.save``/``pickle`` are refused with a message saying so.

Layout of the JSON: ``{"format": "metaunsup-checkpoint", "version": 1, "kind": ..., ...}`` where
``kind`` is ``"model"`` (weights + learner config) or ``"training"`` (also optimiser state, step
and every RNG state, for exact resume).
"""

from __future__ import annotations

import json
import os
import struct
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metaunsup.errors import CheckpointError
from metaunsup.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from torch import nn

FORMAT = "metaunsup-checkpoint"
VERSION = 1
META_KEY = "metaunsup"
SUFFIX = ".safetensors"

_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_HEADER = 100 * 1024 * 1024


def save_checkpoint(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``tensors`` and the JSON-serialisable ``meta`` to ``path`` atomically.

    Tensors are made contiguous and moved to the CPU; ``meta`` gains ``format`` and ``version``.
    """
    from safetensors.torch import save

    header = {"format": FORMAT, "version": VERSION, **meta}
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    data = save(cpu, metadata={META_KEY: json.dumps(header)})
    return atomic_write_bytes(path, data)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and validate a checkpoint: ``(tensors, meta)``.

    Raises :class:`CheckpointError` for a missing, empty, truncated, pickled, foreign or
    newer-version file, always naming the file and what is wrong with it.
    """
    p = Path(path).expanduser()
    name = str(p)
    if p.is_dir():
        raise CheckpointError(_folder_message(p))
    if not p.is_file():
        raise CheckpointError(f"checkpoint {name!r} not found")
    try:
        data = p.read_bytes()
    except OSError as err:
        raise _unreadable(name, err) from None
    if not data:
        raise CheckpointError(f"checkpoint {name!r} is empty")
    _refuse_pickle(data, name)
    meta = _header_meta(data, name)
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"checkpoint {name!r} is corrupt or truncated: {err}") from None
    return tensors, meta


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON of a checkpoint without reading its tensors (what it is, its step, ...).

    Raises :class:`CheckpointError` as :func:`read_checkpoint` does for a missing, unreadable,
    pickled, foreign or truncated header; the tensors are not checked.
    """
    p = Path(path).expanduser()
    name = str(p)
    if p.is_dir():
        raise CheckpointError(_folder_message(p))
    try:
        with open(p, "rb") as handle:
            head = handle.read(8)
            _refuse_pickle(head, name)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            data = head + handle.read(min(size, _MAX_HEADER + 1))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {name!r} not found") from None
    except OSError as err:
        raise _unreadable(name, err) from None
    if not data:
        raise CheckpointError(f"checkpoint {name!r} is empty")
    return _header_meta(data, name)


def _refuse_pickle(head: bytes, name: str) -> None:
    """Raise when ``head`` (the file's first bytes) is a pickle or a ``torch.save`` zip."""
    if head.startswith(_PICKLE_MAGIC) or head.startswith(_ZIP_MAGIC):
        raise CheckpointError(
            f"{name!r} is a pickle/torch.save file; metaunsup never unpickles files (unsafe). "
            "Use a metaunsup .safetensors checkpoint"
        )


def _unreadable(name: str, err: OSError) -> CheckpointError:
    return CheckpointError(
        f"cannot read checkpoint {name!r} ({err.strerror or err}); check its permissions"
    )


def _header_meta(data: bytes, name: str) -> dict[str, Any]:
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {name!r} is truncated (only {len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > _MAX_HEADER or 8 + size > len(data):
        raise CheckpointError(
            f"{name!r} is not a safetensors checkpoint, or it is truncated (header says "
            f"{size} bytes, file has {len(data) - 8})"
        )
    try:
        header = json.loads(data[8 : 8 + size])
        raw = header["__metadata__"][META_KEY]
        meta = json.loads(raw)
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(
            f"{name!r} is not a metaunsup checkpoint (no metaunsup metadata in its header)"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{name!r} is not a metaunsup checkpoint (unknown format)")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise CheckpointError(
            f"{name!r} has checkpoint version {meta.get('version')!r}; this metaunsup reads "
            f"version {VERSION} or older: upgrade metaunsup"
        )
    return meta


def packaged_dir() -> Path:
    """Folder of the checkpoints shipped inside the package (``metaunsup/checkpoints``)."""
    return Path(str(resources.files("metaunsup") / "checkpoints"))


def packaged_names() -> list[str]:
    """Names of the packaged checkpoints, e.g. ``["digits", "mnist"]``."""
    folder = packaged_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in folder.glob(f"*{SUFFIX}"))


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A packaged checkpoint name (``"mnist"``) or a path → the file's path.

    Raises :class:`CheckpointError` naming the packaged checkpoints when neither exists.
    """
    text = str(name_or_path)
    p = Path(text).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        raise CheckpointError(_folder_message(p))
    packaged = packaged_dir() / f"{text}{SUFFIX}"
    if packaged.is_file():
        return packaged
    if p.suffix or os.sep in text:
        raise CheckpointError(f"checkpoint file {text!r} not found")
    names = packaged_names()
    choices = ", ".join(names) if names else "none are installed"
    raise CheckpointError(
        f"unknown checkpoint {text!r}: not a file, and not a packaged name ({choices})"
    )


def checkpoint_card(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The JSON card beside a checkpoint (``NAME.json`` next to ``NAME.safetensors``, as the
    packaged ones have), or ``{}`` when it has none. Cards say how a model was made and, under
    ``"input"``, the input convention it expects (:mod:`metaunsup.data.normalize`); older
    cards without that key stay valid."""
    path = resolve_checkpoint(name_or_path)
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        return {}
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"card {str(card_path)!r} of the checkpoint is unreadable: {err}"
        ) from None
    return card if isinstance(card, dict) else {}


def k_calibration(name_or_path: str | os.PathLike) -> dict[str, Any] | None:
    """The calibrated choice of ``k`` on a checkpoint's card (key ``"k_selection"``, written
    by ``scripts/calibrate_k.py``): ``{"rule": "eigencount", "threshold": float,
    "calibrated_on": str, ...}``, or ``None`` when the card has none."""
    entry = checkpoint_card(name_or_path).get("k_selection")
    if not isinstance(entry, dict) or entry.get("rule") != "eigencount":
        return None
    threshold = entry.get("threshold")
    if not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise CheckpointError(
            f"the card of checkpoint {str(name_or_path)!r} has a bad k_selection threshold "
            f"{threshold!r}; it must be a number in (0, 1): re-run scripts/calibrate_k.py"
        )
    return entry


def _folder_message(folder: Path) -> str:
    """What to say when a folder is given as a checkpoint: the checkpoints it holds, if any."""
    inside = sorted(p.name for p in folder.glob(f"*{SUFFIX}"))
    hint = f"; it holds {', '.join(inside[:4])}" if inside else ""
    if "best.safetensors" in inside:
        hint += f" (a run's model: {str(folder / 'best.safetensors')!r})"
    return f"checkpoint {str(folder)!r} is a folder, not a file{hint}; give a .safetensors file"


def load_model_state(model: nn.Module, tensors: dict[str, torch.Tensor], name: str) -> None:
    """Load the ``model.*`` tensors of a checkpoint into ``model``, strictly (except the
    buffers the model names in ``optional_state``, which keep their value when absent).

    Raises :class:`CheckpointError` listing missing, unexpected or mis-shaped weights.
    """
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    absent = set(own) - set(state)
    missing = sorted(absent - set(getattr(model, "optional_state", ())))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}")
        if shapes:
            parts.append(f"shape mismatch {', '.join(shapes[:3])}")
        raise CheckpointError(
            f"checkpoint {name!r} does not match the model architecture: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=not absent)
