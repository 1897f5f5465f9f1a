"""``torch_grouped`` experts: one grouped GEMM per projection over the rows sorted by expert.

Shape letters: T tokens, H hidden size, K top-k, E_l local experts, I intermediate size per
partition, N rows of w13 (2*I gated, I otherwise), R = T*K routed (token, slot) pairs.

Weights are canonical (``w13`` ``[E_l, N, H]``, ``w2`` ``[E_l, H, I]``); the GEMMs read them
transposed in place (``w.transpose(-2, -1)``: ``[E_l, H, N]`` column-major), so no copy is made.

One forward, with no host synchronization (CUDA-graph capturable):

1. ``ids`` ``[R]`` local expert of each pair (another rank's expert, ``-1`` in ``expert_map``,
   becomes E_l and sorts last); ``order = argsort(ids)`` (stable), ``offs`` ``[E_l]`` int32 the end
   row of each expert's group (a cumulative count by ``scatter_add_``, not ``bincount``, which syncs).
2. ``xs = hidden[order // K]`` ``[R, H]``; GEMM1 ``h = grouped_mm(xs, w13^T, offs)`` ``[R, N]`` (+ bias).
3. The activation (as the reference's, in float32) ``[R, I]``, back to bf16 (or quantized to e4m3
   per row for fp8).
4. GEMM2 ``y = grouped_mm(a, w2^T, offs)`` ``[R, H]`` (+ bias); rows past the last group (pairs of
   other ranks' experts) are zeroed; ``y`` times each pair's router weight.
5. Unsorted into ``[T, K, H]`` and summed over K in float32 -> ``[T, H]`` in ``hidden.dtype``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from moe_oracle.backends.torch_grouped.spec import BACKEND
from moe_oracle.config.moe import MoEConfig
from moe_oracle.kernel.inputs import check_routed_inputs
from moe_oracle.kernel.modular import ExpertsModular
from moe_oracle.kernel.quant_config import QuantConfig
from moe_oracle.kernel.weights import KernelWeights


class TorchGroupedExperts(ExpertsModular):
    """Sorted-by-expert grouped GEMMs from torch; bf16, or fp8 e4m3 with row-wise scales.

    Raises ``WeightError`` if ``weights`` were converted for another backend or layout."""

    activation_format: ClassVar[str] = "standard"

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        weights.require(BACKEND, "canonical")
        super().__init__(config, quant_config, weights)
        self.fp8 = config.scheme.weight is not None
        self.w13_t = weights.w13.transpose(-2, -1)                                # [E_l, H, N] view
        self.w2_t = weights.w2.transpose(-2, -1)                                  # [E_l, I, H] view
        if self.fp8:
            assert quant_config.w13.scale is not None and quant_config.w2.scale is not None
            self.s13 = quant_config.w13.scale.float().reshape(weights.w13.shape[0], -1).contiguous()  # [E_l, N]
            self.s2 = quant_config.w2.scale.float().reshape(weights.w2.shape[0], -1).contiguous()     # [E_l, H]
        self.b13 = quant_config.w13.bias                                          # [E_l, N] or None
        self.b2 = quant_config.w2.bias                                            # [E_l, H] or None

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``sum_k topk_weights[t, k] * expert_{topk_ids[t, k]}(hidden[t])``.

        Parameters
        ----------
        hidden : ``[T, H]`` bf16.
        topk_weights : ``[T, K]`` float32.
        topk_ids : ``[T, K]`` int32/int64 expert ids (global with ``expert_map``, else local).
        expert_map : ``[E]`` global -> local id, -1 for another rank's expert (contributes zero).
        expert_num_tokens : must be None (standard format).

        Returns
        -------
        ``[T, H]`` in ``hidden.dtype``, newly allocated.
        """
        # Id ranges are read back to the host only on a CPU (on a GPU that would synchronize).
        check_routed_inputs(self.config, hidden, topk_weights, topk_ids, expert_map=expert_map,
                            expert_num_tokens=expert_num_tokens, who=BACKEND,
                            check_values=hidden.device.type == "cpu")
        config = self.config
        t, k = topk_ids.shape
        e_local = config.num_local_experts
        ids = topk_ids.reshape(-1).long()                                         # [R]
        if expert_map is not None:
            ids = expert_map.long()[ids]
            ids = torch.where(ids < 0, torch.full_like(ids, e_local), ids)        # elsewhere: sorts last
        order = torch.argsort(ids, stable=True)                                   # [R]
        counts = torch.zeros(e_local + 1, dtype=torch.int32, device=ids.device)
        counts.scatter_add_(0, ids, torch.ones_like(ids, dtype=torch.int32))
        offs = torch.cumsum(counts[:e_local], 0, dtype=torch.int32)               # [E_l]
        sorted_ids = ids[order]                                                   # [R]
        xs = hidden.index_select(0, order // k)                                   # [R, H]
        h = self._gemm(xs, self.w13_t, self.s13 if self.fp8 else None, offs)      # [R, N]
        if self.b13 is not None:
            h = h + self.b13.index_select(0, sorted_ids.clamp(max=e_local - 1)).to(h.dtype)
        from moe_oracle.backends.reference.experts import _activation

        a = _activation(config, h.float())                                        # [R, I] float32
        y = self._gemm(a if self.fp8 else a.to(hidden.dtype), self.w2_t, self.s2 if self.fp8 else None, offs)
        y = y.float()                                                             # [R, H]
        if self.b2 is not None:
            y = y + self.b2.index_select(0, sorted_ids.clamp(max=e_local - 1)).float()
        weight = topk_weights.reshape(-1).float()[order]                          # [R]
        weight = torch.where(sorted_ids < e_local, weight, torch.zeros_like(weight))
        y = torch.where((sorted_ids < e_local)[:, None], y * weight[:, None], torch.zeros_like(y))
        unsorted = torch.empty_like(y)
        unsorted[order] = y                                                       # [R, H]
        return unsorted.view(t, k, -1).sum(dim=1).to(hidden.dtype)                # [T, H]

    def _gemm(self, x: torch.Tensor, w_t: torch.Tensor, w_scale: torch.Tensor | None,
              offs: torch.Tensor) -> torch.Tensor:
        """``x`` ``[R, K_in]`` times each group's ``w_t`` ``[K_in, N_out]`` -> ``[R, N_out]`` bf16."""
        if w_scale is None:
            return torch._grouped_mm(x, w_t, offs=offs)
        from moe_oracle.quant import quantize_activation

        q, scale = quantize_activation(self.config.scheme, x)                     # e4m3 [R, K_in], [R, 1]
        assert scale is not None
        return torch._scaled_grouped_mm(q, w_t, scale.float().reshape(-1), w_scale, offs=offs,
                                        out_dtype=torch.bfloat16)
