"""Tokens sorted by expert, once per forward: the bookkeeping every CPU experts class shares.

Shape letters: T tokens, K top-k, E experts (global), E_l local experts, R routed (token, slot)
pairs whose expert is on this rank, M the rows of one expert.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class ExpertRows(NamedTuple):
    """The routed pairs grouped by local expert, in ascending expert order.

    token: ``[R]`` int64, the token row of each pair. weight: ``[R]`` float32, its router weight.
    spans: ``(expert, start, end)`` for every local expert with rows, ``start:end`` indexing ``R``.
    """

    token: torch.Tensor
    weight: torch.Tensor
    spans: list[tuple[int, int, int]]


def sort_by_expert(topk_weights: torch.Tensor, topk_ids: torch.Tensor, *, num_local_experts: int,
                   expert_map: torch.Tensor | None = None) -> ExpertRows:
    """Group the (token, slot) pairs by the local expert they go to.

    Parameters
    ----------
    topk_weights : ``[T, K]`` float32.
    topk_ids : ``[T, K]`` int32/int64 expert ids (global when ``expert_map`` is given, else local).
    num_local_experts : E_l.
    expert_map : ``[E]`` int32/int64 global -> local id, -1 for another rank's expert (dropped).

    Returns
    -------
    ExpertRows whose pairs keep token order within each expert (the sort is stable).
    """
    k = topk_ids.shape[1]
    ids = topk_ids.reshape(-1).long()                                          # [T*K]
    if expert_map is not None:
        ids = expert_map.long()[ids]                                           # [T*K] local, -1 elsewhere
    order = torch.argsort(ids, stable=True)                                    # -1 (elsewhere) sorts first
    dropped = int((ids < 0).sum()) if expert_map is not None else 0
    order = order[dropped:]                                                    # [R]
    counts = torch.bincount(ids[order], minlength=num_local_experts).tolist()  # [E_l]
    spans: list[tuple[int, int, int]] = []
    start = 0
    for expert, count in enumerate(counts):
        if count:
            spans.append((expert, start, start + count))
            start += count
    return ExpertRows(order // k, topk_weights.reshape(-1)[order], spans)
