"""``XpuExperts``: routed tokens through vllm-xpu-kernels' ``XpuFusedMoe`` on converted weights.

    hidden [T, H] --remap by expert--> grouped GEMM1 (w13) --activation--> grouped GEMM2 (w2)
    --gather, router weights--> output [T, H]

The library object is built once per loaded weights (here, when the kernel is assembled), then
``apply`` writes into an output this class allocates. It computes with unquantized activations
on the fp8 per-tensor and mxfp8 paths (fp8 or mxfp8 weights x bf16/fp16 activations), as vLLM
calls it. For int4 weights it rewrites ``w13``/``w2`` in place to its signed form on first
construction and marks them (``xpu_fused_moe``), so a rebuild from the same weights skips it.
"""

from __future__ import annotations

from types import ModuleType
from typing import ClassVar

import torch

from moe_oracle.plugin import ExpertsModular, InputError, KernelWeights, MoEConfig, QuantConfig, load_library
from moe_oracle_xpu.xpu.converter import BACKEND, LAYOUTS

INTERFACE = "vllm_xpu_kernels.fused_moe_interface"
# MoEConfig.activation -> the library's activation string.
ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "swigluoai": "swigluoai", "relu2": "relu2_no_mul"}


def load_interface() -> ModuleType:
    """``vllm_xpu_kernels.fused_moe_interface``, with an error that says what to install."""
    return load_library(INTERFACE, backend="xpu", install="vllm-xpu-kernels (pip install vllm-xpu-kernels)")


class XpuExperts(ExpertsModular):
    """Modular experts calling ``XpuFusedMoe`` (standard activation format)."""

    activation_format: ClassVar[str] = "standard"

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        super().__init__(config, quant_config, weights)
        scheme = config.scheme.base_name
        weights.require(BACKEND, LAYOUTS[scheme])
        t = weights.tensors
        clamp = config.swiglu_limit if config.activation in ("silu", "gelu") else None
        self.fused = load_interface().XpuFusedMoe(
            w13=t["w13"],
            w13_scales=t.get("w13_scale"),
            w13_bias=t.get("w13_bias"),
            w2=t["w2"],
            w2_scales=t.get("w2_scale"),
            w2_bias=t.get("w2_bias"),
            n_experts_per_token=config.top_k,
            activation=ACTIVATIONS[config.activation],
            num_experts=config.num_local_experts,
            ep_rank=config.parallel.ep_rank,
            ep_size=config.parallel.ep_size,
            gemm1_clamp_limit=clamp,
        )

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``[T, H]`` in ``hidden.dtype``, a new tensor.

        Parameters
        ----------
        hidden : ``[T, H]`` bf16/fp16.
        topk_weights : ``[T, K]`` float32.
        topk_ids : ``[T, K]`` int32/int64 global expert ids.
        expert_map : ``[E]`` global -> local id, -1 for another rank's expert; ``None``: all local.
        expert_num_tokens : must be ``None`` (standard format).
        """
        if expert_num_tokens is not None:
            raise InputError("expert_num_tokens", "None (xpu takes the standard format)", "a tensor")
        output = torch.empty_like(hidden)                                              # [T, H]
        self.fused.apply(
            output=output,
            hidden_states=hidden,
            topk_weights=topk_weights.to(torch.float32),
            topk_ids=topk_ids.to(torch.int32),
            expert_map=None if expert_map is None else expert_map.to(torch.int32),
        )
        return output
