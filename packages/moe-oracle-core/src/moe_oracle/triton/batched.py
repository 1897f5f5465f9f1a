"""``BatchedPrepareFinalize``: the batched activation format in one process.

It stands where an expert-parallel low-latency dispatcher (DeepEP low-latency, torch batched
all-to-all) stands, without the communication, so batched experts run end to end in
``FusedMoEKernel``:

    prepare:  hidden [T, H], pairs [T, K] -> buffer [E_l, max_tokens, H], expert_num_tokens [E_l]
    finalize: expert outputs [E_l, max_tokens, H] -> sum_k weight[t, k] * out[e(t, k), slot(t, k)] -> [T, H]

max_tokens = T (a token picks an expert at most once), so every shape follows from T and the
forward needs no host synchronisation. Rows past ``expert_num_tokens[e]`` are zero. Pairs whose
expert ``expert_map`` marks -1 (another rank's) are dropped and contribute zero.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch

from moe_oracle.kernel.modular import PrepareFinalize, PrepareResult


class _Slots(NamedTuple):
    local: torch.Tensor  # [T*K] local expert of each pair, E_l for dropped pairs
    slot: torch.Tensor  # [T*K] row of each pair inside its expert's block
    keep: torch.Tensor  # [T*K] bool, the pair's expert is local


class BatchedPrepareFinalize(PrepareFinalize):
    """Single-process batched dispatch and combine for ``num_local_experts`` experts.

    ``expert_map`` [E] int32 (global -> local, -1 elsewhere) is fixed at construction, as a
    dispatcher knows its rank's experts; ``None`` means every expert is local.
    """

    activation_format: ClassVar[str] = "batched"

    def __init__(self, num_local_experts: int, expert_map: torch.Tensor | None = None) -> None:
        if num_local_experts < 1:
            raise ValueError(f"num_local_experts: expected a positive int, got {num_local_experts}")
        self.num_local_experts = num_local_experts
        self.expert_map = expert_map
        self._slots: _Slots | None = None

    def _assign(self, topk_ids: torch.Tensor) -> _Slots:
        e = self.num_local_experts
        ids = topk_ids.reshape(-1).long()
        local = ids if self.expert_map is None else self.expert_map.to(ids.device).long()[ids]
        keep = local >= 0
        local = torch.where(keep, local, torch.full_like(local, e))
        order = torch.sort(local, stable=True).indices
        counts = torch.zeros(e + 1, dtype=torch.long, device=ids.device).scatter_add_(0, local, torch.ones_like(local))
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=ids.device)
        slot = torch.where(keep, rank - starts[local], torch.zeros_like(rank))  # dropped pairs share a dummy row
        return _Slots(local, slot, keep)

    def prepare(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> PrepareResult:
        """hidden [T, H] -> PrepareResult(hidden=[E_l, T, H], expert_num_tokens=[E_l] int32)."""
        t, k = topk_ids.shape
        e = self.num_local_experts
        s = self._assign(topk_ids)
        self._slots = s
        buffer = torch.zeros((e + 1, max(t, 1), hidden.shape[1]), dtype=hidden.dtype, device=hidden.device)
        tokens = torch.arange(t, device=hidden.device).repeat_interleave(k)
        buffer[s.local, s.slot] = hidden[tokens]
        counts = torch.zeros(e + 1, dtype=torch.int32, device=hidden.device)
        counts.scatter_add_(0, s.local, torch.ones_like(s.local, dtype=torch.int32))
        return PrepareResult(buffer[:e], topk_weights, topk_ids, counts[:e])

    def finalize(self, expert_output: torch.Tensor, prepared: PrepareResult) -> torch.Tensor:
        """expert_output [E_l, max_tokens, H] (no router weight) -> [T, H] weighted sum over k."""
        if self._slots is None:
            raise RuntimeError("finalize: call prepare first")
        s = self._slots
        t, k = prepared.topk_ids.shape
        e = self.num_local_experts
        local = torch.where(s.keep, s.local, torch.zeros_like(s.local)).clamp(max=e - 1)
        rows = expert_output[local, s.slot].float()  # [T*K, H]; dropped pairs read an unwritten row
        rows = torch.where(s.keep[:, None], rows * prepared.topk_weights.reshape(-1, 1).float(), 0.0)
        return rows.reshape(t, k, -1).sum(dim=1).to(expert_output.dtype)
