"""Chunked top-k nearest neighbours by inner product, so that n x m similarities never exist at once.

Bitext mining compares every source sentence with every target sentence. For 100k x 100k that matrix
alone is 40 GB in float32; here it is computed one ``query_chunk x key_chunk`` tile at a time and only
a running top-k per query (``n x k`` values and indices) is kept. With unit vectors the inner product
is the cosine similarity. The work runs on the GPU when there is one (``device=None``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from collections.abc import Callable


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the first CUDA device when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def as_float_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A 2-d float32 CPU-or-device tensor view of ``x`` (a NumPy array or a tensor), detached."""
    tensor = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x.detach()
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2:
        raise ValueError(f"expected embeddings of shape [n, d], got {tuple(tensor.shape)}")
    return tensor.float()


def l2_normalize(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (zero rows stay zero), as float32: inner products become cosines."""
    tensor = as_float_tensor(x)
    return torch.nn.functional.normalize(tensor, p=2, dim=1)


@torch.inference_mode()
def chunked_topk(
    queries: np.ndarray | torch.Tensor,
    keys: np.ndarray | torch.Tensor,
    k: int,
    *,
    query_chunk: int | None = None,
    key_chunk: int | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest inner products ``queries[i] . keys[j]`` for every query, and their ``j``.

    Args:
        queries: ``[n, d]`` embeddings (normalise them first for cosine similarity).
        keys: ``[m, d]`` embeddings.
        k: neighbours to keep per query; clipped to ``m``.
        query_chunk, key_chunk: tile size; the largest temporary is ``query_chunk x (key_chunk + k)``
            floats. Defaults: 4096 x 32768 on a GPU, 1024 x 8192 on the CPU.
        device: where to compute (``None``: CUDA when available).
        progress: called with the number of queries finished after each query chunk.

    Returns:
        ``(values, indices)``, both ``[n, k]`` CPU tensors, sorted by decreasing value per row.
    """
    target = resolve_device(device)
    on_gpu = target.type == "cuda"
    query_chunk = query_chunk or (4096 if on_gpu else 1024)
    key_chunk = key_chunk or (32768 if on_gpu else 8192)
    q = as_float_tensor(queries)
    kk = as_float_tensor(keys)
    if q.shape[1] != kk.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but keys {kk.shape[1]}")
    n, m = q.shape[0], kk.shape[0]
    k = min(k, m)
    if n == 0 or k == 0:
        return torch.empty((n, k)), torch.empty((n, k), dtype=torch.long)
    keys_on_device = kk.to(target)
    out_values = torch.empty((n, k), dtype=torch.float32)
    out_indices = torch.empty((n, k), dtype=torch.long)
    for q_start in range(0, n, query_chunk):
        block = q[q_start : q_start + query_chunk].to(target)
        best_values: torch.Tensor | None = None
        best_indices: torch.Tensor | None = None
        for k_start in range(0, m, key_chunk):
            scores = block @ keys_on_device[k_start : k_start + key_chunk].T
            tile_k = min(k, scores.shape[1])
            values, indices = torch.topk(scores, tile_k, dim=1, largest=True, sorted=True)
            indices = indices + k_start
            if best_values is None:
                best_values, best_indices = values, indices
            else:
                merged_values = torch.cat([best_values, values], dim=1)
                merged_indices = torch.cat([best_indices, indices], dim=1)
                best_values, order = torch.topk(merged_values, k, dim=1, largest=True, sorted=True)
                best_indices = torch.gather(merged_indices, 1, order)
        assert best_values is not None and best_indices is not None
        out_values[q_start : q_start + block.shape[0]] = best_values.cpu()
        out_indices[q_start : q_start + block.shape[0]] = best_indices.cpu()
        if progress is not None:
            progress(block.shape[0])
    return out_values, out_indices
