"""``cpu_zentorch`` experts: one call of AMD zentorch's ``zentorch_fused_moe``.

The op groups tokens by expert, runs both GEMMs on its own prepacked copies of the weights (made
and cached on first use), applies the activation and writes the weighted top-k sum into a
preallocated ``[T, H]`` output, on torch's OpenMP threads. Three things it does not do, handled here:

- an expert map: pairs whose expert is on another rank get weight 0 and a local id, adding nothing;
- the router weight on the input: the input rows are scaled here and the op gets weights of 1;
- fewer than two distinct experts in a call (it raises "requires at least 2 active experts", e.g.
  top_k == 1 at one token): a zero-weight slot for a second expert is appended, costing that
  expert's GEMMs only in this case.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from moe_oracle.plugin import ExpertsModular, KernelWeights, MoEConfig, QuantConfig, load_library
from moe_oracle_cpu._inputs import check_inputs
from moe_oracle_cpu.cpu_zentorch.spec import BACKEND


class ZentorchExperts(ExpertsModular):
    """``torch.ops.zentorch.zentorch_fused_moe`` on weights from ``zen.converter.convert``.

    Raises ``VendorLibraryError`` if zentorch cannot be imported, ``WeightError`` for weights converted
    for another backend.
    """

    activation_format: ClassVar[str] = "standard"

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        super().__init__(config, quant_config, weights)
        weights.require(BACKEND)
        load_library("zentorch", backend="cpu_zentorch", install="zentorch (pip install moe-oracle-cpu[zen])")
        self.op = torch.ops.zentorch.zentorch_fused_moe
        self.act = config.activation

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``sum_k topk_weights[t, k] * expert_{topk_ids[t, k]}(hidden[t])``.

        hidden ``[T, H]`` bf16/fp32; topk_weights ``[T, K]`` float32; topk_ids ``[T, K]`` int32/int64;
        expert_map ``[E]`` global -> local id or -1. Returns ``[T, H]`` in ``hidden.dtype``, new.
        """
        config = self.config
        check_inputs(config, hidden, topk_weights, topk_ids, expert_map, expert_num_tokens)
        out = torch.empty_like(hidden)                                           # [T, H], written by the op
        if hidden.shape[0] == 0:
            return out
        ids = topk_ids.to(torch.int32)                                           # [T, K], as the op wants
        weights = topk_weights                                                   # [T, K]
        if expert_map is not None:
            local = expert_map.to(torch.int32)[topk_ids.long()]                  # [T, K], -1 elsewhere
            weights = torch.where(local >= 0, weights, 0.0)
            ids = local.clamp(min=0)
        x = hidden
        if config.apply_router_weight_on_input:
            x = (hidden * topk_weights).to(hidden.dtype)                         # top_k == 1
            weights = torch.ones_like(topk_weights)
        lo, hi = torch.aminmax(ids)
        if bool(lo == hi):                                                       # one distinct expert
            other = (ids[:, :1] + 1) % config.num_local_experts
            ids = torch.cat([ids, other], dim=1)                                 # [T, K+1]
            weights = torch.cat([weights, torch.zeros_like(weights[:, :1])], dim=1)
        self.op(output=out, input=x.contiguous(), w13=self.weights.w13, w2=self.weights.w2,
                w13_bias=self.weights.get("w13_bias"), w2_bias=self.weights.get("w2_bias"),
                topk_weights=weights.contiguous(), topk_id=ids.contiguous(),
                skip_weighted=False, act=self.act)
        return out
