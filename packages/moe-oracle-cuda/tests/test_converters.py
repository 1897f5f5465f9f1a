"""Weight converters: every scheme round-trips to canonical bit for bit, inputs stay untouched,
the padded config is returned, scales fold exactly, and the TRTLLM layouts equal FlashInfer's own
preparation (when flashinfer is installed; its helpers run on CPU tensors)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
import torch

from moe_oracle import MoEConfig, ParallelConfig
from moe_oracle.plugin import CanonicalWeights
from moe_oracle.testing import random_weights
from moe_oracle_cuda.flashinfer_cutlass import converter as cutlass
from moe_oracle_cuda.flashinfer_trtllm import converter as trtllm
from moe_oracle_cuda.layouts import unswizzle_128x4

HAS_FLASHINFER = importlib.util.find_spec("flashinfer") is not None
needs_flashinfer = pytest.mark.skipif(not HAS_FLASHINFER, reason="flashinfer not installed (pip install flashinfer-python)")

# (scheme, activation, has_bias, H, I): odd I everywhere a converter pads it.
CUTLASS_CASES = [
    ("bf16", "silu", False, 64, 40), ("bf16", "swigluoai", True, 64, 40), ("bf16", "relu2", False, 64, 40),
    ("fp16", "silu", True, 64, 48), ("fp8_tensor_static", "silu", False, 64, 40),
    ("fp8_tensor_static", "relu2", False, 64, 40), ("fp8_block", "silu", False, 256, 128),
    ("mxfp4", "swigluoai", True, 96, 40), ("mxfp4", "silu", False, 128, 128), ("mxfp4_a8", "silu", False, 96, 40),
    ("nvfp4", "silu", True, 128, 40), ("nvfp4", "relu2", False, 128, 40),
]
TRTLLM_CASES = [
    ("bf16", "silu", False, 128, 40), ("bf16", "relu2", False, 128, 40), ("bf16", "swigluoai", False, 128, 200),
    ("fp8_tensor_static", "silu", False, 128, 40), ("fp8_block", "silu", False, 256, 128),
    ("nvfp4", "silu", True, 128, 40), ("nvfp4", "relu2", True, 128, 40),
    ("mxfp4", "swigluoai", True, 96, 40), ("mxfp4_a8", "silu", True, 96, 300),
]


def _config(scheme: str, activation: str, bias: bool, h: int, i: int, **kw: object) -> MoEConfig:
    dtype = "fp16" if scheme == "fp16" else "bf16"
    return MoEConfig(num_experts=4, top_k=2, hidden_size=h, intermediate_size=i, quant=scheme,
                     activation=activation, has_bias=bias, dtype=dtype, **kw)


def _raw(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.element_size() == 1 else t


def _assert_same(a: CanonicalWeights, b: CanonicalWeights) -> None:
    assert sorted(n for n, _ in a.items()) == sorted(n for n, _ in b.items())
    for name, t in a.items():
        other = getattr(b, name)
        assert other.dtype == t.dtype and other.shape == t.shape, name
        assert torch.equal(_raw(other), _raw(t)), name


def _round_trip(module: ModuleType, config: MoEConfig) -> None:
    weights = random_weights(config, seed=0)
    before = {name: t.clone() for name, t in weights.items()}
    converted = module.convert(weights, config)
    assert converted.backend == module.BACKEND
    assert converted.layout == f"{module.BACKEND}/{config.scheme.name}"
    _assert_same(module.to_canonical(converted), weights)
    _assert_same(CanonicalWeights(**before), weights)  # the canonical tensors are untouched


@pytest.mark.parametrize(("scheme", "activation", "bias", "h", "i"), CUTLASS_CASES)
def test_cutlass_layout_round_trips(scheme: str, activation: str, bias: bool, h: int, i: int) -> None:
    _round_trip(cutlass, _config(scheme, activation, bias, h, i))


@pytest.mark.parametrize(("scheme", "activation", "bias", "h", "i"), TRTLLM_CASES)
def test_trtllm_layout_round_trips(scheme: str, activation: str, bias: bool, h: int, i: int) -> None:
    _round_trip(trtllm, _config(scheme, activation, bias, h, i))


def test_round_trip_under_tensor_parallelism_pads_the_partition() -> None:
    config = _config("bf16", "silu", False, 128, 80, parallel=ParallelConfig(tp_size=2, tp_rank=1))
    converted = trtllm.convert(random_weights(config, seed=1), config)
    assert converted.config.intermediate_size_per_partition == 128
    assert converted.config.intermediate_size == 256
    _round_trip(trtllm, config)


# Padding and the config it implies ------------------------------------------------------------------
@pytest.mark.parametrize(("module", "scheme", "h", "i", "h_pad", "i_pad"), [
    (cutlass, "bf16", 64, 40, 64, 48),
    (cutlass, "mxfp4", 96, 40, 128, 128),
    (cutlass, "nvfp4", 128, 40, 128, 128),
    (trtllm, "bf16", 128, 200, 128, 256),
    (trtllm, "mxfp4", 96, 40, 256, 256),
    (trtllm, "fp8_block", 256, 128, 256, 128),
])
def test_converter_returns_the_padded_config_and_keeps_the_callers(
        module: ModuleType, scheme: str, h: int, i: int, h_pad: int, i_pad: int) -> None:
    config = _config(scheme, "silu", False, h, i)
    converted = module.convert(random_weights(config, seed=2), config)
    assert (converted.config.hidden_size, converted.config.intermediate_size) == (h_pad, i_pad)
    assert converted.extras == {"hidden_size": h, "intermediate_size_per_partition": i}
    assert (config.hidden_size, config.intermediate_size) == (h, i)  # the caller's config is unchanged
    assert converted.config.scheme == config.scheme


def test_padding_is_zero_for_each_half() -> None:
    config = _config("bf16", "silu", True, 64, 40)
    w = random_weights(config, seed=3)
    t = cutlass.convert(w, config).tensors
    up, gate = t["w13"][:, :48], t["w13"][:, 48:]
    assert torch.equal(up[:, :40], w.w13[:, 40:]) and torch.equal(gate[:, :40], w.w13[:, :40])
    assert not up[:, 40:].any() and not gate[:, 40:].any() and not t["w2"][:, :, 40:].any()
    assert torch.equal(t["w13_bias"][:, :40], w.w13_bias[:, 40:]) and not t["w13_bias"][:, 40:48].any()


# CUTLASS specifics ------------------------------------------------------------------------------------
def test_cutlass_puts_up_rows_first() -> None:
    config = _config("fp8_block", "silu", False, 256, 256)
    w = random_weights(config, seed=4)
    t = cutlass.convert(w, config).tensors
    assert torch.equal(_raw(t["w13"]), _raw(torch.cat((w.w13[:, 256:], w.w13[:, :256]), dim=1)))
    assert torch.equal(t["w13_scale"], torch.cat((w.w13_scale[:, 2:], w.w13_scale[:, :2]), dim=1))
    assert torch.equal(_raw(t["w2"]), _raw(w.w2)) and torch.equal(t["w2_scale"], w.w2_scale)


def test_cutlass_relu2_keeps_rows_in_order() -> None:
    config = _config("bf16", "relu2", False, 64, 48)
    w = random_weights(config, seed=5)
    assert torch.equal(cutlass.convert(w, config).tensors["w13"], w.w13)


def test_cutlass_fp8_per_tensor_folds_scales_into_flashinfers_slots() -> None:
    config = _config("fp8_tensor_static", "silu", False, 64, 48)
    w = random_weights(config, seed=6)
    t = cutlass.convert(w, config).tensors
    assert torch.equal(t["fc1_dequant"], w.w13_scale * w.a13_scale)
    assert torch.equal(t["fc2_quant"], 1.0 / w.a2_scale) and t["fc2_quant"].dim() == 0
    assert torch.equal(t["fc2_dequant"], w.w2_scale * w.a2_scale)
    assert torch.equal(t["fc1_input_dequant"], w.a13_scale) and t["fc1_input_dequant"].dim() == 0
    assert all(t[n].dtype == torch.float32 for n in ("fc1_dequant", "fc2_quant", "fc2_dequant", "fc1_input_dequant"))


def test_cutlass_nvfp4_folds_global_scales_and_swizzles_block_scales() -> None:
    config = _config("nvfp4", "silu", False, 128, 128)
    w = random_weights(config, seed=7)
    t = cutlass.convert(w, config).tensors
    assert torch.equal(t["fc1_act_global"], 1.0 / w.a13_scale) and torch.equal(t["fc2_act_global"], 1.0 / w.a2_scale)
    assert torch.equal(t["fc1_alpha"], w.w13_global_scale * w.a13_scale)
    assert torch.equal(t["fc2_alpha"], w.w2_global_scale * w.a2_scale)
    w31_scale = torch.cat((w.w13_scale[:, 128:], w.w13_scale[:, :128]), dim=1)
    assert torch.equal(unswizzle_128x4(t["w13_scale"].view(torch.uint8), rows=256, cols=8), w31_scale.view(torch.uint8))


def test_swiglu_tensors_carry_the_config_constants() -> None:
    oai = _config("bf16", "swigluoai", True, 64, 48)
    t = cutlass.convert(random_weights(oai, seed=8), oai).tensors
    assert t["swiglu_alpha"].tolist() == pytest.approx([1.702] * 4)
    assert t["swiglu_beta"].tolist() == [1.0] * 4 and t["swiglu_limit"].tolist() == [7.0] * 4
    clamped = _config("bf16", "silu", False, 64, 48, swiglu_limit=5.0)
    t = cutlass.convert(random_weights(clamped, seed=8), clamped).tensors
    assert (t["swiglu_alpha"].tolist(), t["swiglu_beta"].tolist(), t["swiglu_limit"].tolist()) == (
        [1.0] * 4, [0.0] * 4, [5.0] * 4)
    plain = _config("bf16", "silu", False, 64, 48)
    assert "swiglu_alpha" not in cutlass.convert(random_weights(plain, seed=8), plain).tensors


def test_converters_refuse_a_scheme_they_do_not_serve() -> None:
    config = _config("bf16", "silu", False, 64, 48).replace(quant="int8_w8a16")
    with pytest.raises(ValueError, match=r"scheme: flashinfer_trtllm converts bf16, .*, got int8_w8a16"):
        trtllm.convert(random_weights(config, seed=0), config)


# TRTLLM specifics, against FlashInfer's own preparation ---------------------------------------------
def test_trtllm_fp8_per_tensor_output_scales() -> None:
    config = _config("fp8_tensor_static", "silu", False, 128, 48)
    w = random_weights(config, seed=9)
    t = trtllm.convert(w, config).tensors
    assert torch.equal(t["output1_scale"], w.w13_scale * w.a13_scale / w.a2_scale)
    assert torch.equal(t["output1_gate_scale"], w.w13_scale * w.a13_scale)
    assert torch.equal(t["output2_scale"], w.w2_scale * w.a2_scale)


@needs_flashinfer
def test_trtllm_bf16_layout_equals_flashinfers_preparation() -> None:
    from flashinfer.fused_moe.core import (
        _maybe_get_cached_w3_w1_permute_indices,
        convert_to_block_layout,
        get_w2_permute_indices_with_cache,
    )

    config = _config("bf16", "silu", False, 128, 128)
    w = random_weights(config, seed=10)
    t = trtllm.convert(w, config).tensors
    cache: dict = {}
    for e in range(4):
        w31 = torch.cat((w.w13[e, 128:], w.w13[e, :128])).view(torch.uint8)
        p13 = _maybe_get_cached_w3_w1_permute_indices(cache, w31, 128)
        ref13 = convert_to_block_layout(w31[p13].contiguous(), 128).view(torch.bfloat16)
        w2 = w.w2[e].view(torch.uint8)
        p2 = get_w2_permute_indices_with_cache(cache, w2, 128)
        ref2 = convert_to_block_layout(w2[p2].contiguous(), 128).view(torch.bfloat16)
        assert torch.equal(t["w13"][e], ref13) and torch.equal(t["w2"][e], ref2)


@needs_flashinfer
def test_trtllm_fp8_per_tensor_layout_equals_flashinfers_rotation() -> None:
    from flashinfer import shuffle_matrix_a
    from flashinfer.fused_moe.core import reorder_rows_for_gated_act_gemm

    config = _config("fp8_tensor_static", "silu", False, 128, 64)
    w = random_weights(config, seed=11)
    t = trtllm.convert(w, config).tensors
    for e in range(4):
        w31 = torch.cat((w.w13[e, 64:], w.w13[e, :64])).view(torch.uint8)
        assert torch.equal(t["w13"][e].view(torch.uint8), shuffle_matrix_a(reorder_rows_for_gated_act_gemm(w31), 128))
        assert torch.equal(t["w2"][e].view(torch.uint8), shuffle_matrix_a(w.w2[e].view(torch.uint8), 128))


@needs_flashinfer
def test_trtllm_nvfp4_rows_follow_flashinfers_permutation() -> None:
    from flashinfer.fused_moe.core import _maybe_get_cached_w3_w1_permute_indices, get_w2_permute_indices_with_cache

    config = _config("nvfp4", "silu", True, 128, 128)
    w = random_weights(config, seed=12)
    t = trtllm.convert(w, config).tensors
    cache: dict = {}
    w31 = torch.cat((w.w13[:, 128:], w.w13[:, :128]), dim=1)
    s31 = torch.cat((w.w13_scale[:, 128:], w.w13_scale[:, :128]), dim=1).view(torch.uint8)
    b31 = torch.cat((w.w13_bias[:, 128:], w.w13_bias[:, :128]), dim=1)
    for e in range(4):
        p13 = _maybe_get_cached_w3_w1_permute_indices(cache, w31[e], 128)
        p13_sf = _maybe_get_cached_w3_w1_permute_indices(cache, s31[e], 128, num_elts_per_sf=16)
        p2 = get_w2_permute_indices_with_cache(cache, w.w2[e], 128)
        assert torch.equal(t["w13"][e], w31[e][p13])
        assert torch.equal(t["w13_bias"][e], b31[e][p13])
        assert torch.equal(unswizzle_128x4(t["w13_scale"][e:e + 1].view(torch.uint8), rows=256, cols=8)[0],
                           s31[e][p13_sf])
        assert torch.equal(t["w2"][e], w.w2[e][p2])
        assert torch.equal(t["w2_bias"][e], w.w2_bias[e][p2])
