"""``FlashInferCutlassExperts``: routed tokens through ``flashinfer.fused_moe.cutlass_fused_moe``.

Per call: pad ``hidden`` ``[T, H]`` to H' when the layout padded it, quantize it where the scheme
wants quantized input (fp8 per tensor with the static ``a13_scale``; mxfp8 for ``mxfp4_a8``),
call the kernel with the top-k ids (int32) and weights (float32), keep the first H columns.
The kernel finds this rank's experts from ``ep_size``/``ep_rank`` (contiguous blocks of E/ep, the
``expert_map`` ``MoELayer`` builds). ``quant_scales`` is a positional list in FlashInfer; here it is
built from keyword-only records (``CutlassFp8Scales``, ...) whose field names say each slot's role.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from moe_oracle.plugin import ExpertsModular, KernelWeights, MoEConfig, QuantConfig, quantize_activation
from moe_oracle_cuda.activation import activation_type
from moe_oracle_cuda.flashinfer_api import check_routed_args, enum_value, fused_moe_module
from moe_oracle_cuda.flashinfer_cutlass.converter import BACKEND
from moe_oracle_cuda.layouts import pad_to, swizzle_128x4
from moe_oracle_cuda.padding import Sizes


class _ScaleList:
    """A record of ``quant_scales`` slots; ``as_list`` gives them in field (FlashInfer's) order."""

    def as_list(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in fields(self)]  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class CutlassFp8Scales(_ScaleList):
    """fp8 per tensor. fc1_dequant ``[E]`` = w13_scale * a13_scale; fc2_quant 0-D = 1 / a2_scale;
    fc2_dequant ``[E]`` = w2_scale * a2_scale; fc1_input_dequant 0-D = a13_scale. float32."""

    fc1_dequant: torch.Tensor
    fc2_quant: torch.Tensor
    fc2_dequant: torch.Tensor
    fc1_input_dequant: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class CutlassBlockScales(_ScaleList):
    """fp8 128x128 blocks: fc1 ``[E, 2I/128, H/128]`` (w31 order), fc2 ``[E, H/128, I/128]``, float32."""

    fc1_block: torch.Tensor
    fc2_block: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class CutlassW4A16Scales(_ScaleList):
    """mxfp4 x bf16 on 9.0: e8m0 scales in the SM90 interleave, fc1 ``[E, H'/128, 8I']``, fc2 ``[E, I'/128, 4H']``."""

    fc1_block: torch.Tensor
    fc2_block: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class CutlassMxfp8Scales(_ScaleList):
    """mxfp4 x mxfp8: swizzled e8m0 scales viewed int32 (``[E, 2I', H'/128]``, ``[E, H', I'/128]``)
    and the per-expert global dequantization scales ``[E]`` (1.0: e8m0 scales are complete)."""

    fc1_block: torch.Tensor
    fc1_global: torch.Tensor
    fc2_block: torch.Tensor
    fc2_global: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class CutlassNvfp4Scales(_ScaleList):
    """nvfp4: fc1_act_global 0-D = 1 / a13_scale (quantization direction); fc1_block swizzled e4m3
    viewed int32 ``[E, 2I', H/64]``; fc1_alpha ``[E]`` = w13_global_scale * a13_scale; fc2 alike."""

    fc1_act_global: torch.Tensor
    fc1_block: torch.Tensor
    fc1_alpha: torch.Tensor
    fc2_act_global: torch.Tensor
    fc2_block: torch.Tensor
    fc2_alpha: torch.Tensor


CutlassScales = CutlassFp8Scales | CutlassBlockScales | CutlassW4A16Scales | CutlassMxfp8Scales | CutlassNvfp4Scales


def _int32(scale: torch.Tensor) -> torch.Tensor:
    return scale.view(torch.uint8).view(torch.int32)


def cutlass_quant_scales(weights: KernelWeights) -> CutlassScales | None:
    """The scale record of a converted layout (``None`` for unquantized schemes)."""
    t = weights.tensors
    scheme = weights.config.scheme.base_name
    if scheme == "fp8_tensor_static":
        return CutlassFp8Scales(fc1_dequant=t["fc1_dequant"], fc2_quant=t["fc2_quant"],
                                fc2_dequant=t["fc2_dequant"], fc1_input_dequant=t["fc1_input_dequant"])
    if scheme == "fp8_block":
        return CutlassBlockScales(fc1_block=t["w13_scale"], fc2_block=t["w2_scale"])
    if scheme == "mxfp4":
        return CutlassW4A16Scales(fc1_block=t["w13_scale"], fc2_block=t["w2_scale"])
    if scheme == "mxfp4_a8":
        ones = torch.ones(weights.config.num_local_experts, dtype=torch.float32, device=t["w13"].device)
        return CutlassMxfp8Scales(fc1_block=_int32(t["w13_scale"]), fc1_global=ones,
                                  fc2_block=_int32(t["w2_scale"]), fc2_global=ones.clone())
    if scheme == "nvfp4":
        return CutlassNvfp4Scales(fc1_act_global=t["fc1_act_global"], fc1_block=_int32(t["w13_scale"]),
                                  fc1_alpha=t["fc1_alpha"], fc2_act_global=t["fc2_act_global"],
                                  fc2_block=_int32(t["w2_scale"]), fc2_alpha=t["fc2_alpha"])
    return None


class FlashInferCutlassExperts(ExpertsModular):
    """FlashInfer CUTLASS fused MoE on weights converted by ``flashinfer_cutlass.converter``."""

    activation_format: ClassVar[str] = "standard"

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        super().__init__(config, quant_config, weights)
        weights.require(BACKEND)
        self.sizes = Sizes.from_extras(config, weights.extras)
        self.scheme = config.scheme.base_name
        self.scales = cutlass_quant_scales(weights)

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``[T, H]`` in ``hidden.dtype`` (a new tensor).

        hidden ``[T, H]`` bf16/fp16; topk_weights ``[T, K]`` float32; topk_ids ``[T, K]`` global
        expert ids; expert_map is implied by (ep_size, ep_rank) and not read; expert_num_tokens
        must be None (standard format). Raises ``InputError`` naming a mismatched argument.
        """
        check_routed_args(hidden=hidden, topk_weights=topk_weights, topk_ids=topk_ids,
                          expert_num_tokens=expert_num_tokens, hidden_size=self.sizes.h, top_k=self.config.top_k,
                          dtype=self.config.dtype, who=BACKEND)
        fm = fused_moe_module()
        t, p = self.weights.tensors, self.config.parallel
        x = pad_to(hidden, dim=1, size=self.sizes.h_pad) if self.sizes.h_pad != self.sizes.h else hidden
        x, input_sf = self._quantize_input(x)
        packed = self.scheme in ("mxfp4_a8", "nvfp4")  # fp4 weights travel viewed as int64
        w13, w2 = (t["w13"].view(torch.int64), t["w2"].view(torch.int64)) if packed else (t["w13"], t["w2"])
        out = fm.cutlass_fused_moe(
            x, topk_ids.to(torch.int32), topk_weights.float(), w13, w2,
            output_dtype=hidden.dtype,
            quant_scales=None if self.scales is None else self.scales.as_list(),
            fc1_expert_biases=self._bias("w13_bias", hidden.dtype),
            fc2_expert_biases=self._bias("w2_bias", hidden.dtype),
            input_sf=input_sf,
            swiglu_alpha=t.get("swiglu_alpha"), swiglu_beta=t.get("swiglu_beta"), swiglu_limit=t.get("swiglu_limit"),
            tp_size=p.tp_size, tp_rank=p.tp_rank, ep_size=p.ep_size, ep_rank=p.ep_rank,
            use_deepseek_fp8_block_scale=self.scheme == "fp8_block",
            use_w4_group_scaling=self.scheme == "mxfp4",
            use_mxfp8_act_scaling=self.scheme == "mxfp4_a8",
            activation_type=enum_value(fm, "ActivationType", activation_type(self.config)),
        )
        return out[:, :self.sizes.h].contiguous() if self.sizes.h_pad != self.sizes.h else out

    def _quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """fp8 per tensor: e4m3 ``[T, H]``; mxfp4_a8: e4m3 ``[T, H']`` and its swizzled e8m0 scales
        (flat); other schemes take the input as it is (nvfp4 and fp8 blocks quantize inside)."""
        if self.scheme == "fp8_tensor_static":
            return quantize_activation(self.config.scheme, x, scale=self.weights.tensors["a13_scale"])[0], None
        if self.scheme == "mxfp4_a8":
            q, sf = quantize_activation(self.config.scheme, x)
            assert sf is not None
            return q, swizzle_128x4(sf[None]).reshape(-1)
        return x, None

    def _bias(self, name: str, dtype: torch.dtype) -> torch.Tensor | None:
        bias = self.weights.get(name)
        return None if bias is None else bias.to(dtype)
