"""TRT-LLM-gen experts: monolithic (router logits in, routing inside the kernel) and routed.

``FlashInferTrtllmExperts(config, quant_config, weights)`` builds ``TrtllmMonolithicExperts`` when
an in-kernel router computes the config's routing and no all-to-all delivers the tokens, else
``TrtllmRoutedExperts`` (top-k from ``moe_oracle.router``, packed for the ``*_routed_moe``
kernels). Both call one FlashInfer entry point per scheme, every argument by keyword:

=====================  ================================  ===================================
scheme                 monolithic                        routed
=====================  ================================  ===================================
bf16                   ``trtllm_bf16_moe``               ``trtllm_bf16_routed_moe``
fp8_tensor_static      ``trtllm_fp8_per_tensor_scale_moe``  (none: the spec rejects it)
fp8_block              ``trtllm_fp8_block_scale_moe``    ``trtllm_fp8_block_scale_routed_moe``
nvfp4, mxfp4(_a8)      ``trtllm_fp4_block_scale_moe``    ``trtllm_fp4_block_scale_routed_moe``
=====================  ================================  ===================================

Inputs are quantized here as the kernels expect: fp8 per tensor with ``a13_scale``; fp8 per
128-channel group with scales ``[H/128, T]`` (transposed); nvfp4 with the global ``a13_scale`` and
linear e4m3 scales ``[T, H/16]``; mxfp8 (``mxfp4_a8``) with linear e8m0 scales ``[T, H'/32]``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from moe_oracle.plugin import (
    Experts,
    ExpertsModular,
    ExpertsMonolithic,
    KernelWeights,
    MoEConfig,
    QuantConfig,
    quantize_activation,
)
from moe_oracle_cuda.activation import activation_type
from moe_oracle_cuda.flashinfer_api import check_routed_args, enum_value, first_output, fused_moe_module, pack_topk
from moe_oracle_cuda.flashinfer_trtllm.converter import BACKEND
from moe_oracle_cuda.flashinfer_trtllm.routing import routing_method, uses_routed_kernel
from moe_oracle_cuda.layouts import pad_to
from moe_oracle_cuda.padding import Sizes

_MONOLITHIC = {"bf16": "trtllm_bf16_moe", "fp8_tensor_static": "trtllm_fp8_per_tensor_scale_moe",
               "fp8_block": "trtllm_fp8_block_scale_moe", "nvfp4": "trtllm_fp4_block_scale_moe",
               "mxfp4": "trtllm_fp4_block_scale_moe", "mxfp4_a8": "trtllm_fp4_block_scale_moe"}
_ROUTED = {"bf16": "trtllm_bf16_routed_moe", "fp8_block": "trtllm_fp8_block_scale_routed_moe",
           "nvfp4": "trtllm_fp4_block_scale_routed_moe", "mxfp4": "trtllm_fp4_block_scale_routed_moe",
           "mxfp4_a8": "trtllm_fp4_block_scale_routed_moe"}


class FlashInferTrtllmExperts(Experts):
    """The spec's experts entry: constructs the monolithic or the routed variant for ``config``."""

    def __new__(cls, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> FlashInferTrtllmExperts:
        if cls is FlashInferTrtllmExperts:
            cls = TrtllmRoutedExperts if uses_routed_kernel(config) else TrtllmMonolithicExperts
        return super().__new__(cls)

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        super().__init__(config, quant_config, weights)
        weights.require(BACKEND)
        self.sizes = Sizes.from_extras(config, weights.extras)
        self.scheme = config.scheme.base_name

    # Arguments shared by every entry point ------------------------------------------------------
    def _sizes_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {"num_experts": c.num_experts, "top_k": c.top_k, "intermediate_size": c.intermediate_size_per_partition,
                "local_expert_offset": c.parallel.ep_rank * c.num_local_experts,
                "local_num_experts": c.num_local_experts}

    def _hidden(self, hidden: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """``hidden_states`` (padded to H', quantized per scheme) and, where it has one, its scale."""
        x = pad_to(hidden, dim=1, size=self.sizes.h_pad) if self.sizes.h_pad != self.sizes.h else hidden
        scheme, t = self.config.scheme, self.weights.tensors
        if self.scheme in ("bf16", "mxfp4"):
            return {"hidden_states": x} if self.scheme == "bf16" else {"hidden_states": x, "hidden_states_scale": None}
        if self.scheme == "fp8_tensor_static":
            return {"hidden_states": quantize_activation(scheme, x, scale=t["a13_scale"])[0]}
        if self.scheme == "nvfp4":
            q, sf = quantize_activation(scheme, x, scale=t["a13_scale"])
        else:
            q, sf = quantize_activation(scheme, x)
        assert sf is not None
        if self.scheme == "fp8_block":
            return {"hidden_states": q, "hidden_states_scale": sf.t().contiguous()}
        return {"hidden_states": q, "hidden_states_scale": sf.view(torch.float8_e4m3fn)}

    def _weights_kwargs(self) -> dict[str, Any]:
        t = self.weights.tensors
        swiglu = {"gemm1_alpha": t.get("swiglu_alpha"), "gemm1_beta": t.get("swiglu_beta"),
                  "gemm1_clamp_limit": t.get("swiglu_limit")}
        if self.scheme == "bf16":
            return {"gemm1_weights": t["w13"], "gemm2_weights": t["w2"], "use_shuffled_weight": True,
                    "weight_layout": enum_value(self.fm, "WeightLayout", "BlockMajorK"), **swiglu}
        if self.scheme == "fp8_tensor_static":
            return {"gemm1_weights": t["w13"], "output1_scales_scalar": t["output1_scale"],
                    "output1_scales_gate_scalar": t["output1_gate_scale"], "gemm2_weights": t["w2"],
                    "output2_scales_scalar": t["output2_scale"], "use_routing_scales_on_input": False}
        if self.scheme == "fp8_block":
            return {"gemm1_weights": t["w13"], "gemm1_weights_scale": t["w13_scale"], "gemm2_weights": t["w2"],
                    "gemm2_weights_scale": t["w2_scale"], "use_shuffled_weight": False,
                    "weight_layout": enum_value(self.fm, "WeightLayout", "MajorK"),
                    "fp8_quantization_type": self.fm.Fp8QuantizationType.DeepSeekFp8, **swiglu}
        scale_dtype = torch.float8_e4m3fn

        def bias(name: str) -> torch.Tensor | None:
            b = t.get(name)
            return None if b is None else b.float()

        return {"gemm1_weights": t["w13"], "gemm1_weights_scale": t["w13_scale"].view(scale_dtype),
                "gemm1_bias": bias("w13_bias"), **swiglu,
                "gemm2_weights": t["w2"], "gemm2_weights_scale": t["w2_scale"].view(scale_dtype),
                "gemm2_bias": bias("w2_bias"),
                "output1_scale_scalar": t.get("output1_scale"), "output1_scale_gate_scalar": t.get("output1_gate_scale"),
                "output2_scale_scalar": t.get("output2_scale")}

    def _call(self, entry: str, **kwargs: Any) -> torch.Tensor:
        kwargs["activation_type"] = enum_value(self.fm, "ActivationType", activation_type(self.config))
        out = first_output(getattr(self.fm, entry)(**kwargs))
        return out[:, :self.sizes.h].contiguous() if self.sizes.h_pad != self.sizes.h else out

    @property
    def fm(self) -> ModuleType:
        return fused_moe_module()


class TrtllmMonolithicExperts(FlashInferTrtllmExperts, ExpertsMonolithic):
    """Router logits in; the kernel routes (``RoutingMethodType`` from ``routing.routing_method``)."""

    def apply(self, hidden: torch.Tensor, router_logits: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              score_correction_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``[T, H]`` bf16 (new). hidden ``[T, H]`` bf16; router_logits ``[T, E]``; the
        score-correction bias ``[E]`` for DeepSeek-V3 routing; local experts from ``ep_rank``."""
        c = self.config
        method = routing_method(c)
        assert method is not None  # the constructor chose this class because one fits
        deepseek = method == "DeepSeekV3"
        routing = {
            "routing_logits": router_logits.float() if deepseek else router_logits.to(torch.bfloat16),
            "routing_bias": None if score_correction_bias is None else score_correction_bias.to(torch.bfloat16),
            "n_group": c.routing.num_expert_groups, "topk_group": c.routing.topk_groups,
            "routed_scaling_factor": c.routing.routed_scaling_factor if deepseek else None,
            "routing_method_type": enum_value(self.fm, "RoutingMethodType", method),
        }
        return self._call(_MONOLITHIC[self.scheme], **routing, **self._hidden(hidden), **self._weights_kwargs(),
                          **self._sizes_kwargs())


class TrtllmRoutedExperts(FlashInferTrtllmExperts, ExpertsModular):
    """Top-k ids and weights in (packed ``(id << 16) | bf16 weight``); the kernel only computes."""

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``[T, H]`` bf16 (new). topk ``[T, K]`` global ids and float32 weights; local experts
        from ``ep_rank`` (expert_map is implied and not read); expert_num_tokens must be None
        (standard format). Raises ``InputError`` naming a mismatched argument."""
        check_routed_args(hidden=hidden, topk_weights=topk_weights, topk_ids=topk_ids,
                          expert_num_tokens=expert_num_tokens, hidden_size=self.sizes.h, top_k=self.config.top_k,
                          dtype=self.config.dtype, who=BACKEND)
        routing: dict[str, Any] = {
            "topk_ids": pack_topk(topk_ids, topk_weights), "n_group": None, "topk_group": None,
            "routed_scaling_factor": None, "routing_method_type": enum_value(self.fm, "RoutingMethodType", "TopK"),
        }
        if self.scheme != "bf16":
            routing["routing_bias"] = None
        return self._call(_ROUTED[self.scheme], **routing, **self._hidden(hidden), **self._weights_kwargs(),
                          **self._sizes_kwargs())
