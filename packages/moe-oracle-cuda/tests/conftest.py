"""A fake ``flashinfer.fused_moe`` for CPU tests of the FlashInfer experts wrappers.

Its entry points have FlashInfer 0.6.13's exact parameter lists (``SIGNATURES``; checked against
the real module when flashinfer is installed): a call with an unknown keyword or a missing
required argument fails as it would there. Each call is recorded with its bound arguments and
answers with ``result(name, arguments)``, which a test sets to the reference output, so
``MoELayer`` runs end to end on CPU while the test inspects exactly what the kernel received.
"""

from __future__ import annotations

import enum
import inspect
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

_REQUIRED_CUTLASS = ("input", "token_selected_experts", "token_final_scales", "fc1_expert_weights",
                     "fc2_expert_weights", "output_dtype", "quant_scales")
_SIZES = ("num_experts", "top_k", "n_group", "topk_group", "intermediate_size", "local_expert_offset",
          "local_num_experts")
_FP4_TENSORS = ("hidden_states", "hidden_states_scale", "gemm1_weights", "gemm1_weights_scale", "gemm1_bias",
                "gemm1_alpha", "gemm1_beta", "gemm1_clamp_limit", "gemm2_weights", "gemm2_weights_scale", "gemm2_bias",
                "output1_scale_scalar", "output1_scale_gate_scalar", "output2_scale_scalar")
_FP8_BLOCK_TENSORS = ("hidden_states", "hidden_states_scale", "gemm1_weights", "gemm1_weights_scale", "gemm2_weights",
                      "gemm2_weights_scale")
# name -> (required parameters in order, optional parameters), FlashInfer 0.6.13.
SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cutlass_fused_moe": (_REQUIRED_CUTLASS, (
        "fc1_expert_biases", "fc2_expert_biases", "input_sf", "swiglu_alpha", "swiglu_beta", "swiglu_limit",
        "tp_size", "tp_rank", "ep_size", "ep_rank", "cluster_size", "cluster_rank", "output", "enable_alltoall",
        "use_deepseek_fp8_block_scale", "use_w4_group_scaling", "use_mxfp8_act_scaling", "min_latency_mode",
        "use_packed_weights", "tune_max_num_tokens", "enable_pdl", "activation_type", "swizzled_input_sf")),
    "trtllm_bf16_moe": (("routing_logits", "routing_bias", "hidden_states", "gemm1_weights", "gemm2_weights",
                         *_SIZES), (
        "routed_scaling_factor", "routing_method_type", "use_shuffled_weight", "weight_layout", "do_finalize",
        "enable_pdl", "tune_max_num_tokens", "activation_type", "norm_topk_prob", "routing_replay_out",
        "gemm1_alpha", "gemm1_beta", "gemm1_clamp_limit")),
    "trtllm_bf16_routed_moe": (("topk_ids", "hidden_states", "gemm1_weights", "gemm2_weights", *_SIZES), (
        "routed_scaling_factor", "routing_method_type", "use_shuffled_weight", "weight_layout", "do_finalize",
        "enable_pdl", "gemm1_lora_delta", "tune_max_num_tokens", "activation_type", "routing_replay_out",
        "gemm1_alpha", "gemm1_beta", "gemm1_clamp_limit")),
    "trtllm_fp8_per_tensor_scale_moe": (("routing_logits", "routing_bias", "hidden_states", "gemm1_weights",
                                         "output1_scales_scalar", "output1_scales_gate_scalar", "gemm2_weights",
                                         "output2_scales_scalar", *_SIZES, "routed_scaling_factor",
                                         "use_routing_scales_on_input"), (
        "routing_method_type", "do_finalize", "enable_pdl", "tune_max_num_tokens", "activation_type",
        "norm_topk_prob", "routing_replay_out")),
    "trtllm_fp8_block_scale_moe": (("routing_logits", "routing_bias", *_FP8_BLOCK_TENSORS, *_SIZES,
                                    "routed_scaling_factor"), (
        "routing_method_type", "use_shuffled_weight", "weight_layout", "do_finalize", "enable_pdl",
        "tune_max_num_tokens", "fp8_quantization_type", "activation_type", "norm_topk_prob", "routing_replay_out",
        "gemm1_alpha", "gemm1_beta", "gemm1_clamp_limit")),
    "trtllm_fp8_block_scale_routed_moe": (("topk_ids", "routing_bias", *_FP8_BLOCK_TENSORS, *_SIZES,
                                           "routed_scaling_factor"), (
        "routing_method_type", "use_shuffled_weight", "weight_layout", "do_finalize", "enable_pdl",
        "gemm1_lora_delta", "output", "tune_max_num_tokens", "fp8_quantization_type", "activation_type",
        "gemm1_alpha", "gemm1_beta", "gemm1_clamp_limit")),
    "trtllm_fp4_block_scale_moe": (("routing_logits", "routing_bias", *_FP4_TENSORS, *_SIZES, "routed_scaling_factor"), (
        "routing_method_type", "do_finalize", "enable_pdl", "activation_type", "per_token_scale", "output",
        "tune_max_num_tokens", "norm_topk_prob", "routing_replay_out")),
    "trtllm_fp4_block_scale_routed_moe": (("topk_ids", "routing_bias", *_FP4_TENSORS, *_SIZES,
                                           "routed_scaling_factor"), (
        "routing_method_type", "do_finalize", "enable_pdl", "activation_type", "per_token_scale", "output",
        "tune_max_num_tokens")),
}
# FlashInfer 0.6.13's enums (flashinfer/tllm_enums.py), the members our wrappers use.
ENUMS = {
    "ActivationType": {"Swiglu": 3, "SwigluBias": 5, "Relu2": 6},
    "RoutingMethodType": {"Default": 0, "Renormalize": 1, "DeepSeekV3": 2, "RenormalizeNaive": 4, "TopK": 5},
    "WeightLayout": {"MajorK": 0, "MajorMn": 1, "BlockMajorK": 2},
    "Fp8QuantizationType": {"NoneFp8": 0, "DeepSeekFp8": 1, "MxFp8": 2},
}


def _signature(name: str) -> inspect.Signature:
    required, optional = SIGNATURES[name]
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature([inspect.Parameter(p, kind) for p in required] +
                             [inspect.Parameter(p, kind, default=None) for p in optional])


@dataclass
class Call:
    name: str
    args: dict[str, Any]
    positional: int


@dataclass
class FakeFusedMoE:
    """The installed fake: ``calls`` in order; set ``result`` before the forward."""

    module: types.ModuleType
    calls: list[Call] = field(default_factory=list)
    result: Callable[[str, dict[str, Any]], torch.Tensor] | None = None

    @property
    def last(self) -> Call:
        assert self.calls, "no FlashInfer entry point was called"
        return self.calls[-1]


def _install(fake: FakeFusedMoE, name: str) -> None:
    sig = _signature(name)

    def entry(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(*args, **kwargs)  # TypeError on unknown keywords or missing required ones
        fake.calls.append(Call(name, dict(bound.arguments), len(args)))
        assert fake.result is not None, "the test did not set fake.result"
        out = fake.result(name, bound.arguments)
        return [out] if name.startswith("trtllm_fp4") else out

    entry.__name__ = name
    setattr(fake.module, name, entry)


@pytest.fixture
def fake_flashinfer(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFusedMoE]:
    """Replace ``flashinfer`` and ``flashinfer.fused_moe`` in ``sys.modules`` by the fake."""
    module = types.ModuleType("flashinfer.fused_moe")
    for enum_name, members in ENUMS.items():
        setattr(module, enum_name, enum.IntEnum(enum_name, members))
    fake = FakeFusedMoE(module)
    for name in SIGNATURES:
        _install(fake, name)
    package = types.ModuleType("flashinfer")
    package.fused_moe = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flashinfer", package)
    monkeypatch.setitem(sys.modules, "flashinfer.fused_moe", module)
    yield fake


@pytest.fixture
def fake_tables() -> tuple[dict[str, tuple[tuple[str, ...], tuple[str, ...]]], dict[str, dict[str, int]]]:
    """The fake's signature and enum tables, to check them against an installed flashinfer."""
    return SIGNATURES, ENUMS
