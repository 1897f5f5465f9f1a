"""The reference experts against the independent dense computation of ``moe_oracle.testing``, plus
hand-computed activations and the errors of bad inputs.

Both sides simulate the same activation quantization in float32, so they agree to float32 rounding:
the fp32 row of the tolerance table applies even for quantized schemes, and an activation
quantization the reference skipped or misplaced would fail it.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from moe_oracle import (
    SCHEME_NAMES,
    CanonicalWeights,
    ConfigError,
    InputError,
    MoEConfig,
    ParallelConfig,
    QuantConfig,
    QuantDesc,
    RoutingConfig,
    WeightError,
)
from moe_oracle.backends.reference.experts import ReferenceExperts
from moe_oracle.config.moe import dtype_name
from moe_oracle.kernel.weights import KernelWeights, canonical_kernel_weights
from moe_oracle.oracle.schemes import oracle_for
from moe_oracle.router import route
from moe_oracle.testing import assert_close, dense_moe, random_inputs, random_weights, reference_moe


def make_config(**changes: object) -> MoEConfig:
    base: dict[str, object] = dict(num_experts=8, top_k=2, hidden_size=64, intermediate_size=32, dtype=torch.float32)
    return MoEConfig(**{**base, **changes})  # type: ignore[arg-type]


def experts_for(config: MoEConfig, weights: CanonicalWeights) -> ReferenceExperts:
    kernel_weights = canonical_kernel_weights(weights, config, backend="reference")
    return ReferenceExperts(config, oracle_for(config).make_quant_config(config, kernel_weights), kernel_weights)


def check_against_dense(config: MoEConfig, num_tokens: int, *, seed: int = 0,
                        topk_ids: torch.Tensor | None = None,
                        expert_map: torch.Tensor | None = None) -> torch.Tensor:
    """Reference == dense on random weights and inputs; returns the reference output."""
    weights = random_weights(config, seed=seed)
    hidden, logits = random_inputs(config, num_tokens, seed=seed + 1)
    topk_weights, ids = route(logits, config, score_correction_bias=weights.score_correction_bias)
    if topk_ids is not None:
        ids = topk_ids
    out = reference_moe(config, weights, hidden, topk_weights, ids, expert_map=expert_map)
    expected = dense_moe(config, weights, hidden, topk_weights, ids, expert_map=expert_map)
    assert out.shape == (num_tokens, config.hidden_size) and out.dtype == config.dtype
    assert_close(out, expected, dtype=config.dtype, scheme=dtype_name(config.dtype), name=f"{config.scheme.name}")
    return out


# Agreement with the dense computation --------------------------------------------------------------
QUANTIZED = [s for s in SCHEME_NAMES if s not in ("bf16", "fp16", "fp32")]


@pytest.mark.parametrize("scheme", QUANTIZED)
def test_every_quantized_scheme_matches_dense(scheme: str) -> None:
    # 128 covers the 128-wide groups and blocks; biases on for every other scheme.
    has_bias = QUANTIZED.index(scheme) % 2 == 1
    config = make_config(hidden_size=128, intermediate_size=128, quant=scheme, has_bias=has_bias)
    check_against_dense(config, 9, seed=QUANTIZED.index(scheme))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_unquantized_schemes_match_dense_in_their_dtype(dtype: torch.dtype) -> None:
    check_against_dense(make_config(dtype=dtype, has_bias=True), 11)


@pytest.mark.parametrize("scheme", ["fp8_block", "nvfp4", "int4_w4a16_g32_zp"])
def test_quantized_schemes_return_the_compute_dtype(scheme: str) -> None:
    config = make_config(hidden_size=128, intermediate_size=128, quant=scheme, dtype=torch.bfloat16)
    check_against_dense(config, 5)


ACTIVATIONS = [
    dict(activation="silu"),
    dict(activation="gelu"),
    dict(activation="swigluoai"),
    dict(activation="swigluoai", swiglu_alpha=1.0, swiglu_limit=0.5),
    dict(activation="relu2"),
    dict(activation="silu", is_gated=False),
    dict(activation="gelu", is_gated=False),
    dict(activation="silu", swiglu_limit=0.5),
    dict(activation="gelu", swiglu_limit=0.5),
]


@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
def test_every_activation_matches_dense(activation: dict[str, object], has_bias: bool) -> None:
    check_against_dense(make_config(has_bias=has_bias, **activation), 13)


@pytest.mark.parametrize("top_k", range(1, 9))
def test_every_top_k_matches_dense(top_k: int) -> None:
    check_against_dense(make_config(top_k=top_k), 6, seed=top_k)


@pytest.mark.parametrize("num_tokens", [0, 1, 2, 17])
@pytest.mark.parametrize("scheme", ["fp32", "fp8_tensor", "int8_w8a8"])
def test_ragged_token_counts(num_tokens: int, scheme: str) -> None:
    config = make_config(hidden_size=128, intermediate_size=64, quant=scheme)
    check_against_dense(config, num_tokens)


def test_routed_scaling_and_grouped_sigmoid_routing_match_dense() -> None:
    routing = RoutingConfig(scoring="sigmoid", num_expert_groups=4, topk_groups=2, score_correction_bias=True,
                            routed_scaling_factor=2.5)
    config = make_config(num_experts=16, top_k=4, routing=routing)
    check_against_dense(config, 7)


# Experts that receive nothing, and expert parallelism ---------------------------------------------
def test_only_experts_that_receive_tokens_are_dequantized(monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(hidden_size=128, intermediate_size=128, quant="fp8_block")
    ids = torch.tensor([[0, 3], [3, 0], [0, 3]], dtype=torch.int32)
    calls: list[tuple[str, int]] = []
    original = ReferenceExperts._dequantized

    def spy(self: ReferenceExperts, name: str, e: int) -> torch.Tensor:
        calls.append((name, e))
        return original(self, name, e)

    monkeypatch.setattr(ReferenceExperts, "_dequantized", spy)
    check_against_dense(config, 3, topk_ids=ids)
    assert sorted(calls) == [("w13", 0), ("w13", 3), ("w2", 0), ("w2", 3)]


def test_tokens_all_on_one_expert() -> None:
    check_against_dense(make_config(top_k=1), 5, topk_ids=torch.full((5, 1), 6, dtype=torch.int64))


def rank_map(num_experts: int, ep_size: int, rank: int) -> torch.Tensor:
    local = num_experts // ep_size
    expert_map = torch.full((num_experts,), -1, dtype=torch.int32)
    expert_map[rank * local:(rank + 1) * local] = torch.arange(local, dtype=torch.int32)
    return expert_map


@pytest.mark.parametrize("rank", [0, 1])
def test_expert_map_matches_dense(rank: int) -> None:
    config = make_config(parallel=ParallelConfig(ep_size=2, ep_rank=rank), has_bias=True)
    check_against_dense(config, 9, expert_map=rank_map(8, 2, rank))


def test_permuted_expert_map_matches_dense() -> None:
    config = make_config(num_experts=8, parallel=ParallelConfig(ep_size=2, ep_rank=1))
    expert_map = torch.tensor([-1, 2, -1, 0, 3, -1, 1, -1], dtype=torch.int64)
    check_against_dense(config, 9, expert_map=expert_map)


@pytest.mark.parametrize("scheme", ["fp32", "fp8_channel", "mxfp4"])
def test_ranks_sum_to_the_unsharded_layer(scheme: str) -> None:
    """Splitting the experts over two ranks and adding their outputs gives the one-rank output."""
    whole = make_config(hidden_size=128, intermediate_size=64, quant=scheme, has_bias=True)
    weights = random_weights(whole, seed=4)
    hidden, logits = random_inputs(whole, 10, seed=5)
    topk_weights, topk_ids = route(logits, whole)
    expected = reference_moe(whole, weights, hidden, topk_weights, topk_ids)
    total = torch.zeros_like(expected)
    for rank in (0, 1):
        config = whole.replace(parallel=ParallelConfig(ep_size=2, ep_rank=rank))
        shard = CanonicalWeights(**{name: t[rank * 4:(rank + 1) * 4] for name, t in weights.items()})
        total += reference_moe(config, shard, hidden, topk_weights, topk_ids, expert_map=rank_map(8, 2, rank))
    assert_close(total, expected, config=whole)


# Router weight on the input ---------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["fp32", "fp8_tensor"])
def test_router_weight_on_input_matches_dense(scheme: str) -> None:
    config = make_config(top_k=1, apply_router_weight_on_input=True, hidden_size=128, quant=scheme)
    check_against_dense(config, 7)


def test_router_weight_on_input_scales_the_input_not_the_output() -> None:
    # relu2 is homogeneous of degree 2 without biases: weight w on the input gives w^2 on the output.
    config = make_config(top_k=1, activation="relu2")
    on_input = config.replace(apply_router_weight_on_input=True)
    weights = random_weights(config, seed=6)
    hidden, _ = random_inputs(config, 4, seed=7)
    ids = torch.tensor([[1], [2], [3], [1]], dtype=torch.int32)
    w = torch.tensor([[0.5], [2.0], [1.0], [0.25]])
    expected = reference_moe(config, weights, hidden, w * w, ids)
    assert_close(reference_moe(on_input, weights, hidden, w, ids), expected, config=config)


def test_router_weight_on_input_needs_top_k_one() -> None:
    with pytest.raises(ConfigError, match=r"apply_router_weight_on_input: needs top_k == 1, got top_k=2: scaling a "
                                          r"token's input by its router weight equals scaling the expert's output "
                                          r"only when the token has one expert"):
        make_config(top_k=2, apply_router_weight_on_input=True)


# Hand-computed activations ------------------------------------------------------------------------
def one_expert(activation: str, gate: float, up: float, **changes: object) -> float:
    """H = I = 1, one expert: x = 1, w13 = [[gate], [up]], w2 = 1, so the output is act(gate, up)."""
    config = MoEConfig(num_experts=1, top_k=1, hidden_size=1, intermediate_size=1, dtype=torch.float32,
                       activation=activation, **changes)  # type: ignore[arg-type]
    w13 = torch.tensor([[[gate], [up]]]) if config.is_gated else torch.tensor([[[gate]]])
    weights = CanonicalWeights(w13=w13, w2=torch.ones(1, 1, 1))
    out = experts_for(config, weights).apply(torch.ones(1, 1), torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.int32))
    return float(out)


def test_swigluoai_clamps_gate_above_and_up_both_ways_as_gpt_oss() -> None:
    # gate 10 -> 7, up -9 -> -7: (up + 1) * gate * sigmoid(1.702 * gate)
    expected = (-7 + 1) * 7 / (1 + math.exp(-1.702 * 7))
    assert one_expert("swigluoai", 10.0, -9.0) == pytest.approx(expected, rel=1e-6)
    # A negative gate is not clamped from below: gate -3, up 2
    assert one_expert("swigluoai", -3.0, 2.0) == pytest.approx(3 * -3 / (1 + math.exp(1.702 * 3)), rel=1e-6)


def test_silu_with_a_limit_clamps_like_vllm() -> None:
    silu = lambda v: v / (1 + math.exp(-v))
    assert one_expert("silu", 2.0, 3.0) == pytest.approx(silu(2.0) * 3.0, rel=1e-6)
    assert one_expert("silu", 9.0, -9.0, swiglu_limit=7.0) == pytest.approx(silu(7.0) * -7.0, rel=1e-6)
    assert one_expert("silu", -9.0, 9.0, swiglu_limit=7.0) == pytest.approx(silu(-9.0) * 7.0, rel=1e-6)


def test_gelu_is_the_exact_erf_form() -> None:
    exact = 0.5 * (1 + math.erf(1 / math.sqrt(2)))                  # 0.841345
    tanh = 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (1 + 0.044715)))  # 0.841192
    assert one_expert("gelu", 1.0, 1.0) == pytest.approx(exact, rel=1e-6)
    assert abs(one_expert("gelu", 1.0, 1.0) - tanh) > 1e-4


def test_relu2_and_ungated_activations() -> None:
    assert one_expert("relu2", 3.0, 0.0) == pytest.approx(9.0)
    assert one_expert("relu2", -3.0, 0.0) == 0.0
    assert one_expert("silu", 2.0, 0.0, is_gated=False) == pytest.approx(2.0 / (1 + math.exp(-2.0)), rel=1e-6)


def test_biases_come_before_the_router_weight() -> None:
    # x = 1, w13 = [[1], [1]], b13 = [0, 1]: h = (1, 2); silu(1) * 2; w2 = 1, b2 = 3; weight 0.5
    config = MoEConfig(num_experts=1, top_k=1, hidden_size=1, intermediate_size=1, dtype=torch.float32,
                       has_bias=True)
    weights = CanonicalWeights(w13=torch.ones(1, 2, 1), w2=torch.ones(1, 1, 1), w13_bias=torch.tensor([[0.0, 1.0]]),
                               w2_bias=torch.tensor([[3.0]]))
    out = experts_for(config, weights).apply(torch.ones(1, 1), torch.full((1, 1), 0.5),
                                             torch.zeros(1, 1, dtype=torch.int32))
    assert float(out) == pytest.approx(0.5 * (2.0 / (1 + math.exp(-1.0)) + 3.0), rel=1e-6)


def test_static_activation_scales_come_from_the_quant_config() -> None:
    config = make_config(hidden_size=128, quant="fp8_tensor_static")
    weights = random_weights(config, seed=8)
    hidden, logits = random_inputs(config, 6, seed=9)
    topk_weights, topk_ids = route(logits, config)
    base = reference_moe(config, weights, hidden, topk_weights, topk_ids)
    # A 4x smaller input scale saturates large inputs at 448 * scale: the output must change.
    clipped = CanonicalWeights(**{**dict(weights.items()), "a13_scale": weights.a13_scale / 4})
    assert not torch.allclose(reference_moe(config, clipped, hidden, topk_weights, topk_ids), base, atol=1e-3)


# Errors ---------------------------------------------------------------------------------------------
CONFIG = make_config()


@pytest.fixture(scope="module")
def experts() -> ReferenceExperts:
    return experts_for(CONFIG, random_weights(CONFIG, seed=0))


def call(experts: ReferenceExperts, **changes: object) -> None:
    args: dict[str, object] = dict(hidden=torch.zeros(3, 64), topk_weights=torch.zeros(3, 2),
                                   topk_ids=torch.zeros(3, 2, dtype=torch.int32))
    args.update(changes)
    experts.apply(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("changes", "message"), [
    (dict(hidden=torch.zeros(3, 32)), "hidden: expected shape [T, 64], got shape [3, 32]"),
    (dict(hidden=torch.zeros(3, 64, dtype=torch.bfloat16)), "hidden: expected dtype float32, got dtype bfloat16"),
    (dict(topk_weights=torch.zeros(3, 3)), "topk_weights: expected shape [3, 2], got shape [3, 3]"),
    (dict(topk_weights=torch.zeros(3, 2, dtype=torch.float16)),
     "topk_weights: expected dtype float32, got dtype float16"),
    (dict(topk_ids=torch.zeros(2, 2, dtype=torch.int32)), "topk_ids: expected shape [3, 2], got shape [2, 2]"),
    (dict(topk_ids=torch.zeros(3, 2)), "topk_ids: expected dtype int32/int64, got dtype float32"),
    (dict(topk_ids=torch.tensor([[0, 8], [1, 2], [3, 4]])),
     "topk_ids: expected expert ids (no expert_map: all local) in [0, 8), got values in [0, 8]"),
    (dict(expert_map=torch.zeros(4, dtype=torch.int32)), "expert_map: expected shape [8], got shape [4]"),
    (dict(expert_map=torch.full((8,), 8, dtype=torch.int32)),
     "expert_map: expected local ids, or -1 for another rank's expert in [-1, 8), got values in [8, 8]"),
    (dict(expert_num_tokens=torch.zeros(8, dtype=torch.int32)),
     "expert_num_tokens: expected None (the reference experts take the standard format), got a tensor"),
])
def test_bad_inputs(experts: ReferenceExperts, changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        call(experts, **changes)


def test_missing_static_scale_fails_on_construction() -> None:
    config = make_config(hidden_size=128, quant="fp8_tensor_static")
    weights = dict(random_weights(config, seed=0).items())
    kernel_weights = KernelWeights(backend="reference", config=config, tensors=weights)
    quant_config = oracle_for(config).make_quant_config(config, kernel_weights)
    no_scale = QuantConfig(scheme=quant_config.scheme, w13=quant_config.w13, w2=quant_config.w2,
                           a13=QuantDesc(key=quant_config.a13.key), a2=quant_config.a2)
    with pytest.raises(WeightError, match=r"quant_config.a13_scale: expected a tensor with shape \[\] dtype float32 "
                                          r"for scheme fp8_tensor_static, got None"):
        ReferenceExperts(config, no_scale, kernel_weights)
    del weights["w2_scale"]
    with pytest.raises(WeightError, match=r"w2_scale: expected a tensor with shape \[8\] dtype float32"):
        ReferenceExperts(config, quant_config, KernelWeights(backend="reference", config=config, tensors=weights))


def test_weights_in_another_layout_fail_on_construction() -> None:
    config = make_config()
    tensors = dict(random_weights(config, seed=0).items())
    kernel_weights = KernelWeights(backend="reference", config=config, tensors=tensors, layout="w31")
    quant_config = oracle_for(config).make_quant_config(config, kernel_weights)
    with pytest.raises(WeightError, match=r"weights: expected the canonical layout \(the reference converts "
                                          r"nothing\), got layout 'w31'"):
        ReferenceExperts(config, quant_config, kernel_weights)


@pytest.mark.parametrize("scheme", ["int8_w8a8", "w4a8_int8", "fp8_channel", "bf16"])
def test_nan_rows_stay_nan(scheme: str) -> None:
    """Issue 13, item 4: a NaN in one token's hidden state gives a NaN output row under every
    activation quantization (int8 cannot hold NaN: the row's scale carries it), and the other rows
    are untouched."""
    config = MoEConfig(num_experts=4, top_k=2, hidden_size=128, intermediate_size=64, quant=scheme)
    weights = random_weights(config, seed=0)
    hidden, logits = random_inputs(config, 4, seed=1)
    topk_weights, topk_ids = route(logits, config)
    clean = reference_moe(config, weights, hidden, topk_weights, topk_ids)
    hidden[2, 5] = float("nan")
    out = reference_moe(config, weights, hidden, topk_weights, topk_ids)
    assert out[2].isnan().all()
    keep = torch.tensor([0, 1, 3])
    assert torch.equal(out[keep], clean[keep])


def test_int8_per_token_quantization_carries_nan_in_the_scale() -> None:
    from moe_oracle.quant.int8 import quantize_int8_per_token

    x = torch.tensor([[1.0, -2.0, 0.5], [float("nan"), 1.0, 2.0], [0.0, 0.0, 0.0]])
    q, scale = quantize_int8_per_token(x)
    assert q.dtype == torch.int8 and q[1].tolist() == [0, 0, 0] and q[0].tolist() == [64, -127, 32]
    assert scale[1].isnan().all() and scale[2].item() == 1.0 and scale[0].item() == pytest.approx(2 / 127)
    assert (q.float() * scale)[1].isnan().all()


# The accelerators' path: no host synchronization (issue 14) -------------------------------------
@pytest.mark.parametrize("scheme", ["fp32", "bf16", "fp8_tensor", "fp8_block", "int4_w4a16", "mxfp4"])
@pytest.mark.parametrize("ep", [False, True])
def test_masked_path_matches_the_cpu_path(monkeypatch: pytest.MonkeyPatch, scheme: str, ep: bool) -> None:
    """The sync-free formulation GPUs run (every expert over every slot, ``where`` keeps its own rows)
    gives the CPU path's answer, expert-parallel ranks included."""
    dtype = torch.float32 if scheme == "fp32" else torch.bfloat16
    config = make_config(quant=scheme, dtype=dtype, hidden_size=128, intermediate_size=128)
    expert_map = None
    if ep:
        from moe_oracle import ParallelConfig

        config = config.replace(parallel=ParallelConfig(ep_size=2, ep_rank=1))
        expert_map = torch.tensor([-1, -1, -1, -1, 0, 1, 2, 3], dtype=torch.int32)
    weights = random_weights(config, seed=3)
    hidden, logits = random_inputs(config, 9, seed=4)
    topk_weights, ids = route(logits, config)
    experts = experts_for(config, weights)
    expected = experts.apply(hidden, topk_weights, ids, expert_map=expert_map)
    monkeypatch.setattr(ReferenceExperts, "_masked", True)
    got = experts.apply(hidden, topk_weights, ids, expert_map=expert_map)
    assert_close(got, expected, dtype=config.dtype, scheme=config.scheme.name, name=scheme)
    if ep:
        remote = (ids < 4).all(dim=1)
        assert torch.equal(got[remote], torch.zeros_like(got[remote]))
