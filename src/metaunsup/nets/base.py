"""The backbone protocol: networks used functionally with explicit, task-batched parameters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

from metaunsup.errors import ConfigError, DataError
from metaunsup.nets.functional import task_linear

#: Parameters by name, as in ``dict(net.named_parameters())``. Each entry is either *shared*
#: (its ordinary shape) or *task-batched* (a leading task dimension ``B``).
ParamDict = dict[str, Tensor]

NORMS = ("batch", "group", "none")


class FunctionalNet(nn.Module, ABC):
    """A backbone that can run all tasks of a meta-batch in one pass.

    Subclasses hold ordinary ``nn`` sub-modules (so ``state_dict`` names are the familiar ones)
    and implement two forwards that must agree:

    * ``forward(x)``: the ordinary module forward on one task, ``x`` ``[n, *example_shape]``
      → ``[n, n_way]`` (or ``[n, feature_dim]`` when there is no head);
    * ``functional_forward(params, x)``: ``x`` ``[B, n, *example_shape]`` and a parameter dict
      whose entries are shared or task-batched → ``[B, n, n_way]``, all tasks at once.

    A new backbone is one module with a subclass (``__init__`` arguments that are its config,
    ``example_shape``, ``n_way``, ``feature_dim``, ``head_names``, ``forward``,
    ``functional_features``, ``config``) and one line that registers it under its config
    name (:func:`~metaunsup.nets.register_backbone`); learners, checkpoints and the command
    line then build it with :func:`~metaunsup.nets.build_net`.

    Attributes
    ----------
    example_shape:
        Shape of one input example, e.g. ``(C, H, W)`` for images or ``(D,)`` for vectors:
        ``forward`` reads ``[n, *example_shape]``, ``functional_forward``
        ``[B, n, *example_shape]``. Declared by every backbone, so that callers build inputs
        and decoders from it instead of guessing from the backbone's type or config.
    n_way:
        Outputs of the linear head, or ``None`` for an embedding network without head.
    feature_dim:
        Size of the features the head reads (the embedding size when there is no head).
    head_names:
        Names of the head's parameters (empty without head).
    """

    example_shape: tuple[int, ...]
    n_way: int | None
    feature_dim: int
    head_names: tuple[str, ...]

    def params(self) -> ParamDict:
        """The module's own (shared) parameters as a dict."""
        return dict(self.named_parameters())

    @abstractmethod
    def functional_features(self, params: ParamDict, x: Tensor) -> Tensor:
        """Body features ``[B, n, feature_dim]`` of ``x`` ``[B, n, *example_shape]``."""

    def functional_head(self, params: ParamDict, features: Tensor) -> Tensor:
        """Head logits ``[B, n, n_way]`` from ``features`` ``[B, n, feature_dim]``.

        ``params`` needs only the head's entries (shared ``[n_way, D]`` or batched
        ``[B, n_way, D]``). Without a head the features are returned unchanged.
        """
        if self.n_way is None:
            return features
        return task_linear(features, params["head.weight"], params["head.bias"])

    def functional_forward(self, params: ParamDict, x: Tensor) -> Tensor:
        """Logits ``[B, n, n_way]`` (features without head) of all ``B`` tasks in one pass."""
        return self.functional_head(params, self.functional_features(params, x))

    @classmethod
    @abstractmethod
    def shape_config(cls, example_shape: tuple[int, ...]) -> dict[str, Any]:
        """The constructor arguments that fit examples of ``example_shape`` (the inverse of
        :attr:`example_shape`): what a run config may leave out of ``[learner.net]``, to be
        taken from the data. :class:`~metaunsup.errors.ConfigError` when the backbone cannot
        take such examples."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable architecture, with ``"name"``; ``build_net(config)`` rebuilds it."""

    def _check_batched_input(self, x: Tensor, example_dims: int) -> None:
        if x.dim() != 2 + example_dims:
            raise DataError(
                f"{type(self).__name__}.functional_forward expects [B, n, ...] with "
                f"{example_dims} example dimensions, got shape {tuple(x.shape)}"
            )


def check_norm(norm: str, width: int, groups: int) -> None:
    """Validate a ``norm`` choice (and ``groups`` dividing ``width`` for group norm)."""
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    if norm == "group" and (groups < 1 or width % groups):
        raise ConfigError(f"group norm: groups={groups} must divide the width {width}")
