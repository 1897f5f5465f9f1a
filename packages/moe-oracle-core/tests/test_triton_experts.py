"""Triton experts against the reference, on CPU through the Triton interpreter.

Shapes are tiny (the interpreter runs each program in Python, ~1000x slower than compiled) and odd
where the scheme allows (H=80, I=48: partial tiles and masked K loops). bf16 is not tested here:
the interpreter multiplies bf16 bit patterns in ``tl.dot`` and truncates bf16 stores, so bf16 is
checked on the GPU (``tests/gpu/test_triton_gpu.py``). Every case compares the whole
``[T, H]`` output with ``moe_oracle.testing.assert_close`` at the shared tolerance table.
"""

from __future__ import annotations

import pytest
import torch
import triton_interpreter  # noqa: F401  (skips this module where the interpreter cannot run)

import moe_oracle
from moe_oracle import FusedMoEKernel, MoEConfig, ParallelConfig, Platform, oracle_for
from moe_oracle.kernel.weights import canonical_kernel_weights
from moe_oracle.router import route
from moe_oracle.testing import assert_close, random_inputs, random_weights, reference_moe
from moe_oracle.triton.batched import BatchedPrepareFinalize
from moe_oracle.triton.configs import LayerConfigs, TritonConfig
from moe_oracle.triton.experts import BatchedTritonExperts, TritonExperts

T = 5


pytestmark = pytest.mark.usefixtures("triton_interpret")


def _experts(config: MoEConfig, weights, cls=TritonExperts, backend: str = "triton"):
    kw = canonical_kernel_weights(weights, config, backend=backend)
    return cls(config, oracle_for(config).make_quant_config(config, kw), kw)


def _check(config: MoEConfig, *, tokens: int = T, seed: int = 0, expert_map: torch.Tensor | None = None,
           configs: LayerConfigs | None = None) -> None:
    weights = random_weights(config, seed=seed)
    hidden, logits = random_inputs(config, tokens, seed=seed + 1)
    topk_weights, topk_ids = route(logits, config)
    expected = reference_moe(config, weights, hidden, topk_weights, topk_ids, expert_map=expert_map)
    experts = _experts(config, weights)
    experts.configs_override = configs
    actual = experts.apply(hidden, topk_weights, topk_ids, expert_map=expert_map)
    assert_close(actual, expected, config=config, name=f"triton {config.scheme.name} {config.activation}")


@pytest.mark.parametrize(("quant", "h", "i"), [
    ("fp32", 80, 48),
    ("fp16", 80, 48),
    ("fp8_tensor", 80, 48),
    ("fp8_tensor_static", 80, 48),
    ("fp8_channel", 80, 48),
    ("fp8_block", 256, 192),
    ("int8_w8a8", 80, 48),
    ("int8_w8a16", 80, 48),
    ("int4_w4a16", 128, 64),
    ("int4_w4a16_g32_zp", 128, 64),
    ("int8_w8a16_group_g64", 128, 64),
    ("int8_w8a16_group_g32_zp", 128, 64),
])
def test_schemes_match_reference(quant: str, h: int, i: int) -> None:
    dtype = torch.float32 if quant == "fp32" else torch.float16
    _check(MoEConfig(num_experts=4, top_k=2, hidden_size=h, intermediate_size=i, dtype=dtype, quant=quant))


@pytest.mark.parametrize(("activation", "gated"), [("gelu", True), ("swigluoai", True), ("relu2", False),
                                                    ("silu", False)])
def test_activations_with_bias(activation: str, gated: bool) -> None:
    _check(MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=48, activation=activation,
                     is_gated=gated, dtype=torch.float16, has_bias=True))


def test_swiglu_limit_on_silu() -> None:
    _check(MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=48, dtype=torch.float16,
                     swiglu_limit=0.5))


def test_expert_map_drops_other_ranks_experts() -> None:
    config = MoEConfig(num_experts=8, top_k=3, hidden_size=64, intermediate_size=48, dtype=torch.float16,
                       quant="fp8_tensor", parallel=ParallelConfig(ep_size=2, ep_rank=1))
    expert_map = torch.full((8,), -1, dtype=torch.int32)
    expert_map[4:] = torch.arange(4, dtype=torch.int32)
    _check(config, expert_map=expert_map)


def test_router_weight_on_input() -> None:
    _check(MoEConfig(num_experts=4, top_k=1, hidden_size=64, intermediate_size=48, dtype=torch.float16,
                     has_bias=True, apply_router_weight_on_input=True))


def test_split_k_and_distinct_block_m() -> None:
    """GEMM2 split along I into float32 partials, and two alignments (BLOCK_M 16 and 32)."""
    configs = LayerConfigs(TritonConfig(block_m=16, block_n=32, block_k=32),
                           TritonConfig(block_m=32, block_n=32, block_k=16, split_k=2))
    _check(MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=48, dtype=torch.float16,
                     has_bias=True), tokens=9, configs=configs)


def test_fp8_block_wide_tile_groups() -> None:
    """A 256-wide GEMM1 tile quantizes two 128-column groups of its output; I=192 leaves a partial one."""
    configs = LayerConfigs(TritonConfig(block_m=16, block_n=256, block_k=128),
                           TritonConfig(block_m=16, block_n=64, block_k=64))
    _check(MoEConfig(num_experts=4, top_k=2, hidden_size=256, intermediate_size=192, dtype=torch.float16,
                     quant="fp8_block"), configs=configs)


@pytest.mark.parametrize("quant", ["fp16", "fp8_block"])
def test_single_token_skips_alignment(quant: str) -> None:
    """T == 1 runs each pair as its own block (no alignment launch), with and without an expert map."""
    h, i = (256, 192) if quant == "fp8_block" else (64, 48)
    config = MoEConfig(num_experts=8, top_k=3, hidden_size=h, intermediate_size=i, dtype=torch.float16,
                       quant=quant, parallel=ParallelConfig(ep_size=2, ep_rank=0))
    expert_map = torch.full((8,), -1, dtype=torch.int32)
    expert_map[:4] = torch.arange(4, dtype=torch.int32)
    _check(config, tokens=1, expert_map=expert_map)
    _check(config.replace(parallel=ParallelConfig()), tokens=1)


def test_fp8_block_narrow_tiles_quantize_separately() -> None:
    """A 64-wide GEMM1 tile cannot hold a 128-column group: the group-quant kernel takes over."""
    configs = LayerConfigs(TritonConfig(block_m=16, block_n=64, block_k=128),
                           TritonConfig(block_m=16, block_n=64, block_k=64))
    _check(MoEConfig(num_experts=4, top_k=2, hidden_size=256, intermediate_size=192, dtype=torch.float16,
                     quant="fp8_block"), configs=configs)


def test_batched_experts_end_to_end() -> None:
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=64, intermediate_size=48, dtype=torch.float16,
                       has_bias=True, parallel=ParallelConfig(ep_size=2, ep_rank=0, all2all="torch_batched"))
    weights = random_weights(config, seed=3)
    hidden, logits = random_inputs(config, 6, seed=4)
    topk_weights, topk_ids = route(logits, config)
    expert_map = torch.full((8,), -1, dtype=torch.int32)
    expert_map[:4] = torch.arange(4, dtype=torch.int32)
    expected = reference_moe(config, weights, hidden, topk_weights, topk_ids, expert_map=expert_map)
    experts = _experts(config, weights, BatchedTritonExperts, "batched_triton")
    kernel = FusedMoEKernel(BatchedPrepareFinalize(4, expert_map), experts)
    actual = kernel.forward_routed(hidden, topk_weights, topk_ids, expert_map=expert_map)
    assert_close(actual, expected, config=config, name="batched_triton")


def test_batched_experts_need_token_counts() -> None:
    config = MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=48, dtype=torch.float16)
    experts = _experts(config, random_weights(config, seed=0), BatchedTritonExperts, "batched_triton")
    hidden = torch.zeros(4, 3, 64, dtype=torch.float16)
    ids = torch.zeros(3, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"expert_num_tokens: the batched format needs the \[E_l\] valid-row "
                                         r"counts, got None"):
        experts.apply(hidden, torch.ones(3, 2), ids)


@pytest.mark.parametrize(("cls", "backend"), [(TritonExperts, "triton"), (BatchedTritonExperts, "batched_triton")])
def test_experts_refuse_weights_converted_for_another_backend(cls: type, backend: str) -> None:
    from moe_oracle import WeightError

    config = MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=48, dtype=torch.float16)
    other = "batched_triton" if backend == "triton" else "triton"
    with pytest.raises(WeightError, match=rf"weights: expected weights converted for '{backend}' in layout "
                                          rf"'canonical', got backend '{other}' layout 'canonical'"):
        _experts(config, random_weights(config, seed=0), cls, other)


def test_moe_layer_runs_on_cpu_with_the_interpreter() -> None:
    """With TRITON_INTERPRET=1 the detected CPU platform accepts triton and MoELayer runs it."""
    from moe_oracle import MoELayer

    config = MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=48, dtype=torch.float16)
    platform = Platform.detect()
    assert platform.vendor == "cpu" and platform.triton_interpreter
    assert "Triton interpreter" in moe_oracle.explain(config, platform).candidate("triton").reason
    layer = MoELayer(config, backend="triton", platform=platform)
    weights = random_weights(config, seed=5)
    layer.load_weights(**dict(weights.items()))
    hidden, logits = random_inputs(config, T, seed=6)
    topk_weights, topk_ids = route(logits, config)
    expected = reference_moe(config, weights, hidden, topk_weights, topk_ids)
    assert_close(layer(hidden, logits), expected, config=config, name="MoELayer(triton)")


def test_routed_inputs_are_checked_without_reading_values() -> None:
    """Shapes, dtypes and devices raise InputError before any launch; ids are not range-checked
    here (that would synchronize and break CUDA-graph capture; MoELayer checks them)."""
    from moe_oracle import InputError

    config = MoEConfig.preset("tiny", dtype="fp32", hidden_size=64, intermediate_size=32)
    weights = random_weights(config, seed=0)
    hidden, logits = random_inputs(config, T, seed=1)
    topk_weights, topk_ids = route(logits, config)
    experts = _experts(config, weights)
    with pytest.raises(InputError, match=r"^hidden: expected shape \[T, 64\], got shape \[5, 32\]$"):
        experts.apply(hidden[:, :32], topk_weights, topk_ids)
    with pytest.raises(InputError, match=r"^topk_weights: expected dtype float32, got dtype float16$"):
        experts.apply(hidden, topk_weights.half(), topk_ids)
    with pytest.raises(InputError, match=r"^expert_num_tokens: expected None \(the triton experts take the standard"):
        experts.apply(hidden, topk_weights, topk_ids, expert_num_tokens=torch.ones(8, dtype=torch.int32))


@pytest.mark.parametrize(("quant", "h", "i"), [("int8_w8a8", 80, 48)])
def test_nan_rows_stay_nan_under_quantized_activations(quant: str, h: int, i: int) -> None:
    """Issue 13, item 4: int8 cannot hold NaN, so the row's scale carries it: the row comes out NaN
    (not finite and wrong) and the other rows are as without it. (The Triton experts do not run
    w4a8_int8; its reference path is tested in test_reference_experts.py.)"""
    config = MoEConfig(num_experts=4, top_k=2, hidden_size=h, intermediate_size=i, dtype="fp32", quant=quant)
    weights = random_weights(config, seed=0)
    hidden, logits = random_inputs(config, 4, seed=1)
    topk_weights, topk_ids = route(logits, config)
    experts = _experts(config, weights)
    clean = experts.apply(hidden, topk_weights, topk_ids)
    hidden[2, 5] = float("nan")
    out = experts.apply(hidden, topk_weights, topk_ids)
    assert out[2].isnan().all()
    keep = torch.tensor([0, 1, 3])
    assert torch.equal(out[keep], clean[keep])


# Mixed input (issue 17): packed weights dequantized in registers, and schemes served at a higher
# activation precision. H=96 leaves a partial 64- or 128-wide K tile; I=64.
def _check_served(config: MoEConfig, *, tokens: int = T, seed: int = 0, configs: LayerConfigs | None = None,
                  fp8_mma: bool = True, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    from moe_oracle.testing import served_reference_moe
    from moe_oracle.triton import experts as experts_module

    if monkeypatch is not None:
        monkeypatch.setattr(experts_module, "fp8_mma_supported", lambda device: fp8_mma)
    weights = random_weights(config, seed=seed)
    hidden, logits = random_inputs(config, tokens, seed=seed + 1)
    topk_weights, topk_ids = route(logits, config)
    experts = _experts(config, weights)
    served = experts.plan.served or config.scheme.name
    expected, served_config = served_reference_moe(config, served, weights, hidden, topk_weights, topk_ids)
    experts.configs_override = configs
    actual = experts.apply(hidden, topk_weights, topk_ids)
    assert_close(actual, expected, config=served_config, name=f"triton {config.scheme.name} served as {served}")


@pytest.mark.parametrize(("quant", "served"), [
    ("mxfp4", "mxfp4"),
    ("mxfp4_a8", "mxfp4"),
    ("nvfp4", "nvfp4_a16"),
    ("w4a8_int8", "int4_w4a16"),
    ("w4a8_int8_g64", "int4_w4a16_g64"),
    ("w4a8_fp8", "int4_w4a16"),
    ("int4_w4a16_g32_zp", "int4_w4a16_g32_zp"),
    ("int8_w8a16_group_g32", "int8_w8a16_group_g32"),
])
def test_mixed_input_schemes_match_reference(quant: str, served: str) -> None:
    h = 128 if quant.startswith("w4a8") else 96  # H a multiple of the group size (128 / 64 there)
    config = MoEConfig(num_experts=4, top_k=2, hidden_size=h, intermediate_size=64, dtype=torch.float16, quant=quant)
    from moe_oracle.triton.experts import _plan

    assert (_plan(config).served or quant) == served
    _check_served(config)


@pytest.mark.parametrize("quant", ["fp8_tensor", "fp8_tensor_static", "fp8_channel", "fp8_block"])
def test_fp8_weights_without_fp8_mma(quant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No fp8 MMA (Ampere): e4m3 weights decoded in registers, fp16 activations (``<scheme>_a16``)."""
    h, i = (256, 192) if quant == "fp8_block" else (96, 64)
    config = MoEConfig(num_experts=4, top_k=2, hidden_size=h, intermediate_size=i, dtype=torch.float16, quant=quant)
    _check_served(config, fp8_mma=False, monkeypatch=monkeypatch)


def test_mxfp4_gpt_oss_style_bias_swigluoai() -> None:
    """gpt-oss: mxfp4 weights, biases, swigluoai with alpha 1.702 and limit 7 (clamped)."""
    config = MoEConfig(num_experts=4, top_k=2, hidden_size=96, intermediate_size=64, dtype=torch.float16,
                       quant="mxfp4", activation="swigluoai", has_bias=True, swiglu_limit=7.0)
    _check_served(config, tokens=7)


@pytest.mark.parametrize("quant", ["mxfp4", "nvfp4", "int4_w4a16_g32"])
def test_mixed_input_tiles_span_several_groups(quant: str) -> None:
    """128-wide K tiles hold 4 (mxfp4, g32) or 8 (nvfp4) scale groups; split-K on GEMM2; T > 1 alignment."""
    configs = LayerConfigs(TritonConfig(block_m=16, block_n=32, block_k=128),
                           TritonConfig(block_m=16, block_n=32, block_k=64, split_k=2))
    config = MoEConfig(num_experts=4, top_k=2, hidden_size=256, intermediate_size=128, dtype=torch.float16,
                       quant=quant)
    _check_served(config, tokens=6, configs=configs)
