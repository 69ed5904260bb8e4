"""Features of a backbone for every example of a data set, in chunks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaunsup._validation import check_int
from metaunsup.nets import FunctionalNet

__all__ = ["net_embeddings"]


@torch.no_grad()
def net_embeddings(
    net: FunctionalNet,
    x: torch.Tensor,
    *,
    chunk: int = 512,
    normalize: bool = True,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``float32 [n, D]`` body features of ``x`` ``[n, *example_shape]`` (floats, as
    :func:`~metaunsup.data.to_float` gives them), on the CPU.

    Examples go through ``chunk`` at a time, each chunk as one task (batch-norm statistics are
    the chunk's). ``normalize`` scales every row to unit length (cosine geometry, the one the
    contrastive loss shapes).
    """
    chunk = check_int("chunk", chunk, 2)
    params = net.params()
    out = []
    for s in range(0, x.shape[0], chunk):
        part = x[s : s + chunk].to(device=device, dtype=torch.float32)
        if part.shape[0] < 2 and s > 0:  # a lone last example: normalise it with its neighbours
            part = x[s - 1 : s + 1].to(device=device, dtype=torch.float32)
            out.append(net.functional_features(params, part.unsqueeze(0))[0, 1:].cpu())
            continue
        out.append(net.functional_features(params, part.unsqueeze(0))[0].cpu())
    z = torch.cat(out).float()
    return F.normalize(z, dim=1) if normalize else z
