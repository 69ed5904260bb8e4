"""A seeded stream of tasks: what every task sampler and task source shares.

A stream owns one ``torch.Generator`` seeded with ``seed`` and counts the tasks it has drawn;
:meth:`SeededStream.state_dict` / :meth:`SeededStream.load_state_dict` save and restore both
(plus the facts a saved state must match, e.g. the number of examples), which is how the Trainer
resumes a run to the exact task.
"""

from __future__ import annotations

from typing import Any

import torch

from metaunsup.errors import ConfigError

__all__ = ["SeededStream"]


class SeededStream:
    """Base of the task samplers and sources: a seeded generator and the count of tasks drawn.

    Subclasses set ``self.seed`` (validated) and call :meth:`start_stream` at the end of their
    ``__init__``; they may override :meth:`stream_facts` with what a saved state must match.
    """

    seed: int
    tasks_drawn: int
    _generator: torch.Generator

    def start_stream(self) -> None:
        """Create the generator and rewind it to the first task of ``seed``."""
        self._generator = torch.Generator(device="cpu")
        self.reset()

    def reset(self) -> None:
        """Rewind to the first task of ``seed``."""
        self._generator.manual_seed(self.seed)
        self.tasks_drawn = 0

    def stream_facts(self) -> dict[str, int]:
        """Integers a saved state must match to be loaded here (none by default)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands (tensors and JSON scalars), for :meth:`load_state_dict`."""
        return {
            "seed": self.seed,
            "tasks_drawn": self.tasks_drawn,
            **self.stream_facts(),
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` of a stream with the same seed and facts."""
        if int(state["seed"]) != self.seed:
            raise ConfigError(f"task source state is for seed {state['seed']}, not {self.seed}")
        for name, mine in self.stream_facts().items():
            if int(state[name]) != mine:
                raise ConfigError(
                    f"task source state is for {name} = {state[name]}, this source has {mine}"
                )
        self._generator.set_state(state["generator"])
        self.tasks_drawn = int(state["tasks_drawn"])
