"""``AiterExperts``: routed tokens through ``aiter.fused_moe`` on weights ``converter.py`` laid out.

    hidden [T, H] --(zero-pad to Hp: mxfp4)--> aiter.fused_moe(..., quant_type, activation) -> [T, Hp]
    --> [T, H]

AITER sorts tokens by expert, quantizes activations itself (per the ``quant_type`` and its own
choice of precision on the per_1x32 path), runs both GEMMs with the activation fused and applies
the router weights. The enum members are looked up by name on the imported module
(``aiter.ActivationType.Silu``, ``aiter.QuantType.per_128x128``): AITER builds them from C++ at
import, so nothing about them is copied here. Expert parallelism passes a 0/1 ``expert_mask``
over the global experts with global ``topk_ids``.
"""

from __future__ import annotations

from types import ModuleType
from typing import ClassVar

import torch
import torch.nn.functional as F

from moe_oracle.plugin import (
    ConfigError,
    ExpertsModular,
    InputError,
    KernelWeights,
    MoEConfig,
    QuantConfig,
    WeightError,
    load_library,
)
from moe_oracle_rocm.aiter import arch as arch_mod
from moe_oracle_rocm.aiter.converter import BACKEND, LAYOUTS

# Scheme -> aiter.QuantType member name.
QUANT_TYPES = {
    "bf16": "No", "fp16": "No",
    "fp8_tensor": "per_Tensor", "fp8_tensor_static": "per_Tensor",
    "fp8_channel": "per_Token", "fp8_block": "per_128x128",
    "w4a8_fp8": "per_Token",
    "mxfp4": "per_1x32", "mxfp4_a8": "per_1x32",
}
# MoEConfig.activation -> aiter.ActivationType member name.
ACTIVATION_TYPES = {"silu": "Silu", "gelu": "Gelu", "swigluoai": "Swiglu"}


def load_aiter() -> ModuleType:
    """``import aiter``, with an error that says what to install when it fails."""
    return load_library("aiter", backend="aiter", install="AMD AITER (pip install amd-aiter on a ROCm machine)")


class AiterExperts(ExpertsModular):
    """Modular experts calling ``aiter.fused_moe`` (standard activation format)."""

    activation_format: ClassVar[str] = "standard"

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        super().__init__(config, quant_config, weights)
        scheme = config.scheme.base_name
        weights.require(BACKEND, LAYOUTS[scheme])
        if config.activation not in ACTIVATION_TYPES:
            raise ConfigError("activation", f"aiter runs {'/'.join(ACTIVATION_TYPES)}, got {config.activation!r}",
                              allowed=ACTIVATION_TYPES)
        self.quant_type = QUANT_TYPES[scheme]
        self.activation_type = ACTIVATION_TYPES[config.activation]
        self._check_fp8_format()

    def _check_fp8_format(self) -> None:
        """fp8 weights converted on one arch cannot run on another (fnuz vs OCP bytes)."""
        w13 = self.weights.w13
        if w13.dtype not in (torch.float8_e4m3fn, torch.float8_e4m3fnuz):
            return
        arch = arch_mod.device_arch(w13.device)
        want = arch_mod.fp8_dtype(arch)
        if arch is not None and w13.dtype != want:
            raise WeightError("w13", f"{str(want).removeprefix('torch.')} weights on {arch} (convert the canonical "
                              "weights on the GPU that runs them)", f"{str(w13.dtype).removeprefix('torch.')}")

    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``[T, H]`` in ``hidden.dtype``, a new tensor.

        Parameters
        ----------
        hidden : ``[T, H]`` bf16/fp16, unquantized (AITER quantizes activations itself).
        topk_weights : ``[T, K]`` float32.
        topk_ids : ``[T, K]`` int32/int64 global expert ids.
        expert_map : ``[E]`` global -> local id, -1 for another rank's expert; ``None``: all local.
        expert_num_tokens : must be ``None`` (standard format).
        """
        if expert_num_tokens is not None:
            raise InputError("expert_num_tokens", "None (aiter takes the standard format)", "a tensor")
        aiter = load_aiter()
        t = self.weights.tensors
        hidden_pad = int(self.weights.extras.get("hidden_pad", 0))
        x = F.pad(hidden, (0, hidden_pad)) if hidden_pad else hidden                  # [T, Hp]
        expert_mask = None if expert_map is None else (expert_map >= 0).to(torch.int32)  # [E] 0/1
        out = aiter.fused_moe(
            hidden_states=x,
            w1=t["w13"],
            w2=t["w2"],
            topk_weight=topk_weights.to(torch.float32),
            topk_ids=topk_ids.to(torch.int32),
            expert_mask=expert_mask,
            activation=getattr(aiter.ActivationType, self.activation_type),
            quant_type=getattr(aiter.QuantType, self.quant_type),
            doweight_stage1=self.config.apply_router_weight_on_input,
            w1_scale=t.get("w13_scale"),
            w2_scale=t.get("w2_scale"),
            a1_scale=t.get("a13_scale"),
            a2_scale=t.get("a2_scale"),
            hidden_pad=hidden_pad,
            intermediate_pad=int(self.weights.extras.get("intermediate_pad", 0)),
            bias1=t.get("w13_bias"),
            bias2=t.get("w2_bias"),
        )                                                                             # [T, Hp]
        return out[:, :hidden.shape[1]].contiguous() if hidden_pad else out
