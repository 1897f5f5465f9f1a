"""``moe_oracle.testing``: random weights and inputs, the tolerance table and ``compare``/``assert_close``."""

from __future__ import annotations

import re

import pytest
import torch

from moe_oracle import SCHEME_NAMES, MoEConfig, ParallelConfig, RoutingConfig
from moe_oracle.config.moe import dtype_name
from moe_oracle.kernel.canonical import validate_canonical
from moe_oracle.kernel.weights import CanonicalWeights
from moe_oracle.quant import dequantize_weights, fake_quantize_activation
from moe_oracle.router import route
from moe_oracle.testing import (
    ACTIVATION_TOLERANCES,
    DTYPE_TOLERANCES,
    Tolerance,
    assert_close,
    compare,
    random_inputs,
    random_weights,
    reference_moe,
    tolerance,
)

UNQUANTIZED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def config_for(scheme: str, **changes: object) -> MoEConfig:
    base: dict[str, object] = dict(num_experts=4, top_k=2, hidden_size=128, intermediate_size=128, quant=scheme,
                                   dtype=UNQUANTIZED_DTYPES.get(scheme, torch.bfloat16))
    return MoEConfig(**{**base, **changes})  # type: ignore[arg-type]


# Random weights and inputs --------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", [*SCHEME_NAMES, "int4_w4a16_g64_zp"])
def test_random_weights_are_valid_canonical_weights(scheme: str) -> None:
    routing = RoutingConfig(scoring="sigmoid", score_correction_bias=True)
    config = config_for(scheme, has_bias=True, routing=routing)
    weights = random_weights(config, seed=0)
    validate_canonical(config, weights)
    key = config.scheme.activation
    assert (weights.a13_scale is not None) == (key is not None and (key.static or key.global_scale))


def test_random_weights_cover_the_local_shard() -> None:
    config = config_for("fp8_channel", num_experts=8, intermediate_size=256,
                        parallel=ParallelConfig(tp_size=2, ep_size=2, tp_rank=1, ep_rank=1))
    weights = random_weights(config, seed=0)
    validate_canonical(config, weights)
    assert weights.w13.shape == (4, 256, 128) and weights.w2.shape == (4, 128, 128)


def test_random_weights_and_inputs_are_deterministic_per_seed() -> None:
    config = config_for("nvfp4", has_bias=True)
    a, b, c = (random_weights(config, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(t, dict(b.items())[name]) for name, t in a.items())
    assert not torch.equal(a.w13, c.w13)
    (h1, l1), (h2, l2) = random_inputs(config, 5, seed=3), random_inputs(config, 5, seed=3)
    assert torch.equal(h1, h2) and torch.equal(l1, l2)
    assert h1.shape == (5, 128) and h1.dtype == torch.bfloat16
    assert l1.shape == (5, 4) and l1.dtype == torch.float32
    assert random_inputs(config, 0, seed=0)[0].shape == (0, 128)


@pytest.mark.parametrize("activation", ["silu", "swigluoai", "relu2"])
def test_outputs_are_order_one(activation: str) -> None:
    config = config_for("bf16", activation=activation, has_bias=True)
    weights = random_weights(config, seed=0)
    hidden, logits = random_inputs(config, 32, seed=1)
    out = reference_moe(config, weights, hidden, *route(logits, config)).float()
    assert 0.3 < float(out.pow(2).mean().sqrt()) < 3.0


# The tolerance table and compare ---------------------------------------------------------------------
def test_tolerance_takes_the_looser_row_of_dtype_and_activation_format() -> None:
    assert tolerance(torch.bfloat16, "bf16") == DTYPE_TOLERANCES[torch.bfloat16]
    assert tolerance(torch.float16, "int4_w4a16") == DTYPE_TOLERANCES[torch.float16]
    fp8 = tolerance(torch.float32, "fp8_block")
    assert (fp8.atol, fp8.rtol, fp8.rms, fp8.relative) == (0.2, 0.15, 0.04, True) == tuple(
        getattr(ACTIVATION_TOLERANCES["fp8_e4m3"], f) for f in ("atol", "rtol", "rms", "relative"))
    assert tolerance(torch.bfloat16, "nvfp4").atol == ACTIVATION_TOLERANCES["fp4_e2m1"].atol


def test_compare_passes_within_tolerance() -> None:
    expected = torch.linspace(-2, 2, 50)
    result = compare(expected + 5e-6, expected, dtype=torch.float32, scheme="fp32")
    assert result.ok and result.mismatches == 0 and result.total == 50
    assert result.max_abs == pytest.approx(5e-6, rel=0.1) and result.rel_rms < 1e-5


def test_assert_close_reports_errors_count_and_first_indices() -> None:
    expected = torch.zeros(4, 6)
    actual = expected.clone()
    actual[1, 2], actual[3, 0] = 0.5, -0.25
    with pytest.raises(AssertionError) as info:
        assert_close(actual, expected, dtype=torch.float32, scheme="fp32", name="triton")
    text = str(info.value)
    assert text.startswith("triton: 2 of 24 elements differ beyond atol=0.00015*rms(expected) rtol=0.0001 rms=1e-05")
    assert "(atol 0 here)" in text.splitlines()[0]
    assert "max abs error 5.000e-01, max rel error 3.333e+03" in text
    assert "at [1, 2]: actual 0.5, expected 0" in text and "at [3, 0]: actual -0.25, expected 0" in text


def test_relative_rms_bound_catches_a_small_systematic_error() -> None:
    expected = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    scaled = (expected.float() * 1.02).to(torch.bfloat16)  # every element within bf16's elementwise bound
    result = compare(scaled, expected, dtype=torch.bfloat16, scheme="bf16")
    assert result.mismatches == 0 and not result.ok
    assert result.rel_rms == pytest.approx(0.02, rel=0.1)
    assert re.search(r"relative RMS error 2\.\d+e-02 \(bound 0\.01\)", result.describe())


def test_compare_fails_on_nan_shape_and_dtype() -> None:
    expected = torch.ones(3)
    nan = compare(torch.tensor([1.0, float("nan"), 1.0]), expected, dtype=torch.float32, scheme="fp32")
    assert not nan.ok and nan.mismatches == 1
    shape = compare(torch.ones(4), expected, dtype=torch.float32, scheme="fp32")
    assert not shape.ok and "shape [4] dtype torch.float32 vs expected shape [3]" in shape.describe()
    dtype = compare(torch.ones(3, dtype=torch.bfloat16), expected, dtype=torch.float32, scheme="fp32")
    assert not dtype.ok and "dtype torch.bfloat16 vs expected shape [3] dtype torch.float32" in dtype.describe()
    assert compare(torch.empty(0, 4), torch.empty(0, 4), tol=Tolerance(0, 0, 0)).ok


def test_compare_needs_one_source_of_tolerance() -> None:
    with pytest.raises(TypeError, match=r"compare: pass config=..., or both dtype=... and scheme=..., or tol=..."):
        compare(torch.ones(1), torch.ones(1), dtype=torch.float32)
    with pytest.raises(TypeError, match=r"compare: pass config, or dtype and scheme, not both"):
        compare(torch.ones(1), torch.ones(1), config=config_for("fp32"), dtype=torch.float32)


# The table is achievable by a kernel computing in its dtype, and still catches bugs -----------------
def kernel_like(config: MoEConfig, weights: CanonicalWeights, hidden: torch.Tensor, topk_weights: torch.Tensor,
                topk_ids: torch.Tensor, *, drop_w2_bias: bool = False, swap_gate_up: bool = False) -> torch.Tensor:
    """A fused kernel as Triton's: GEMM1 output, activation, per-slot weighted GEMM2 output and the
    top-k sum each rounded to the compute dtype; activations quantized from the rounded values."""
    dtype, scheme, tensors = config.dtype, config.scheme, dict(weights.items())

    def rounded(x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype).float()

    def quantize(x: torch.Tensor, scale: str) -> torch.Tensor:
        x = rounded(x)
        return x if scheme.activation is None else fake_quantize_activation(scheme, x, scale=tensors.get(scale))

    def weight(name: str) -> torch.Tensor:
        return rounded(dequantize_weights(scheme, tensors[name], scale=tensors.get(f"{name}_scale"),
                                          zero_point=tensors.get(f"{name}_zero_point"),
                                          global_scale=tensors.get(f"{name}_global_scale")))

    t, k = topk_ids.shape
    token, expert = torch.arange(t).repeat_interleave(k), topk_ids.reshape(-1).long()   # [T*K]
    h = torch.einsum("rh,rnh->rn", quantize(hidden.float(), "a13_scale")[token], weight("w13")[expert])
    h = rounded(h + tensors["w13_bias"].float()[expert]) if config.has_bias else rounded(h)
    gate, up = h.chunk(2, dim=-1)
    if swap_gate_up:
        gate, up = up, gate
    act = quantize(torch.nn.functional.silu(gate) * up, "a2_scale")                     # [T*K, I]
    y = torch.einsum("ri,rhi->rh", act, weight("w2")[expert])
    if config.has_bias and not drop_w2_bias:
        y = y + tensors["w2_bias"].float()[expert]
    y = (y * topk_weights.reshape(-1, 1)).to(dtype)
    return y.view(t, k, -1).sum(dim=1).to(dtype)


TABLE_CASES = [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp8_block", torch.bfloat16),
               ("int8_w8a8", torch.float16), ("int4_w4a16", torch.bfloat16), ("nvfp4", torch.bfloat16),
               ("mxfp4_a8", torch.bfloat16)]


@pytest.mark.parametrize(("scheme", "dtype"), TABLE_CASES, ids=[f"{s}-{dtype_name(d)}" for s, d in TABLE_CASES])
def test_tolerance_table_passes_a_kernel_computing_in_its_dtype(scheme: str, dtype: torch.dtype) -> None:
    config = config_for(scheme, dtype=dtype, num_experts=8, top_k=4, intermediate_size=256, has_bias=True)
    weights = random_weights(config, seed=1)
    hidden, logits = random_inputs(config, 24, seed=2)
    topk_weights, topk_ids = route(logits, config)
    expected = reference_moe(config, weights, hidden, topk_weights, topk_ids)
    assert_close(kernel_like(config, weights, hidden, topk_weights, topk_ids), expected, config=config)
    for bug in ("drop_w2_bias", "swap_gate_up"):
        broken = kernel_like(config, weights, hidden, topk_weights, topk_ids, **{bug: True})
        assert not compare(broken, expected, config=config).ok, bug



# Issue 13, item 10: the table scales with the output -------------------------------------------------
SCALE_CASES = [(scheme, top_k, factor) for scheme in ("bf16", "fp8_block", "mxfp8", "nvfp4", "mxfp4_a8", "int8_w8a8")
               for top_k, factor in ((1, 1.0), (1, 2.5), (4, 2.5), (8, 1.0))]


@pytest.mark.parametrize(("scheme", "top_k", "factor"), SCALE_CASES)
def test_tolerance_scales_with_the_output(scheme: str, top_k: int, factor: float) -> None:
    """One expert per token and a routed scaling factor of 2.5 make outputs 3x larger than the
    table's usual O(1): a correct kernel still passes and the planted bugs still fail."""
    dtype = torch.float16 if scheme == "int8_w8a8" else torch.bfloat16
    config = config_for(scheme, dtype=dtype, num_experts=8, top_k=top_k, intermediate_size=256, has_bias=True,
                        routing=RoutingConfig(routed_scaling_factor=factor))
    weights = random_weights(config, seed=1)
    hidden, logits = random_inputs(config, 24, seed=2)
    topk_weights, topk_ids = route(logits, config)
    expected = reference_moe(config, weights, hidden, topk_weights, topk_ids)
    assert_close(kernel_like(config, weights, hidden, topk_weights, topk_ids), expected, config=config)
    for bug in ("drop_w2_bias", "swap_gate_up"):
        broken = kernel_like(config, weights, hidden, topk_weights, topk_ids, **{bug: True})
        assert not compare(broken, expected, config=config).ok, bug


def test_relative_atol_is_scaled_by_the_expected_rms_and_absolute_stays_absolute() -> None:
    expected = torch.full((4, 4), 3.0)
    actual = expected.clone()
    actual[0, 0] += 0.5  # 0.5 > 0.2 absolute, < 0.2 * rms 3.0 = 0.6
    loose = Tolerance(0.2, 0.0, 1.0, relative=True)
    assert compare(actual, expected, tol=loose).ok and compare(actual, expected, tol=loose).atol == pytest.approx(0.6)
    assert not compare(actual, expected, tol=Tolerance(0.2, 0.0, 1.0)).ok
    assert not compare(expected / 3 + (actual - expected), expected / 3, tol=loose).ok  # same error, smaller output
