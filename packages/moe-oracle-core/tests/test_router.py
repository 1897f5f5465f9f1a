"""The router: hand-checked small cases for every routing mode, tie-breaking, and input errors."""

from __future__ import annotations

import math
import re

import pytest
import torch

from moe_oracle import InputError, MoEConfig, RoutingConfig
from moe_oracle.router import Router, RouterOutput, route


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def logits(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def check(out: RouterOutput, ids: list[list[int]], weights: list[list[float]]) -> None:
    assert out.topk_ids.dtype == torch.int32 and out.topk_weights.dtype == torch.float32
    assert out.topk_ids.tolist() == ids
    torch.testing.assert_close(out.topk_weights, torch.tensor(weights), rtol=1e-6, atol=1e-6)


# Softmax ----------------------------------------------------------------------------------------
def test_softmax_topk_renormalized() -> None:
    out = route(logits([1.0, 3.0, 2.0, 0.0]), RoutingConfig(), top_k=2)
    check(out, [[1, 2]], [[sig(1.0), sig(-1.0)]])  # e^3 / (e^3 + e^2) = sigmoid(1)


def test_softmax_topk_not_renormalized_keeps_full_softmax_probabilities() -> None:
    total = math.e + math.e**3 + math.e**2 + 1.0
    out = route(logits([1.0, 3.0, 2.0, 0.0]), RoutingConfig(renormalize=False), top_k=2)
    check(out, [[1, 2]], [[math.e**3 / total, math.e**2 / total]])


@pytest.mark.parametrize("renormalize", [True, False])
def test_softmax_after_topk_is_softmax_over_the_chosen_logits(renormalize: bool) -> None:
    routing = RoutingConfig(softmax_after_topk=True, renormalize=renormalize)
    out = route(logits([1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 5.0, 1.0]), routing, top_k=2)
    check(out, [[1, 2], [2, 3]], [[sig(1.0), sig(-1.0)], [sig(4.0), sig(-4.0)]])


def test_routed_scaling_factor_multiplies_the_final_weights() -> None:
    out = route(logits([1.0, 3.0, 2.0, 0.0]), RoutingConfig(routed_scaling_factor=2.5), top_k=2)
    check(out, [[1, 2]], [[2.5 * sig(1.0), 2.5 * sig(-1.0)]])


# Sigmoid and the score-correction bias ---------------------------------------------------------
def test_sigmoid_topk_without_bias() -> None:
    out = route(logits([0.0, 1.0, 2.0, -1.0]), RoutingConfig(scoring="sigmoid", renormalize=False), top_k=2)
    check(out, [[2, 1]], [[sig(2.0), sig(1.0)]])


def test_sigmoid_bias_chooses_but_unbiased_scores_weigh() -> None:
    # sigmoid = [.5, .731, .881, .269]; + bias [1, 0, -1, 0] = [1.5, .731, -.119, .269]: experts 0 and 1
    routing = RoutingConfig(scoring="sigmoid", score_correction_bias=True)
    bias = torch.tensor([1.0, 0.0, -1.0, 0.0])
    out = route(logits([0.0, 1.0, 2.0, -1.0]), routing, top_k=2, score_correction_bias=bias)
    total = sig(0.0) + sig(1.0)
    check(out, [[0, 1]], [[sig(0.0) / total, sig(1.0) / total]])


# Grouped top-k ---------------------------------------------------------------------------------
def test_grouped_without_bias_scores_groups_by_their_best_expert() -> None:
    # 4 groups of 2: maxima g0=5, g1=4, g2=0, g3=0; one group kept -> experts 0 and 1, not 0 and 2
    row = [5.0, 0.0, 4.0, 4.0, 0.0, 0.0, 0.0, 0.0]
    routing = RoutingConfig(num_expert_groups=4, topk_groups=1, renormalize=False)
    out = route(logits(row), routing, top_k=2)
    total = sum(math.exp(v) for v in row)
    check(out, [[0, 1]], [[math.exp(5.0) / total, 1.0 / total]])
    ungrouped = route(logits(row), RoutingConfig(renormalize=False), top_k=2)
    assert ungrouped.topk_ids.tolist() == [[0, 2]]


def test_grouped_with_bias_scores_groups_by_the_sum_of_their_top_two() -> None:
    # DeepSeek-V3: sigmoid [.993, .5, .982, .982, .5, .5, .5, .5]; group sums g0=1.49, g1=1.96
    # -> group 1 wins although expert 0 is the best; its two experts tie: lower id first.
    row = [5.0, 0.0, 4.0, 4.0, 0.0, 0.0, 0.0, 0.0]
    routing = RoutingConfig(scoring="sigmoid", num_expert_groups=4, topk_groups=1, score_correction_bias=True,
                            routed_scaling_factor=2.5)
    out = route(logits(row), routing, top_k=2, score_correction_bias=torch.zeros(8))
    check(out, [[2, 3]], [[1.25, 1.25]])


def test_grouped_bias_enters_group_scores_and_choice() -> None:
    # Unbiased, group 0 (sum 1.49) loses to group 1 (1.96); a +1 bias on expert 1 lifts group 0 to 2.49.
    row = [5.0, 0.0, 4.0, 4.0, 0.0, 0.0, 0.0, 0.0]
    bias = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    routing = RoutingConfig(scoring="sigmoid", num_expert_groups=4, topk_groups=1, score_correction_bias=True)
    out = route(logits(row), routing, top_k=2, score_correction_bias=bias)
    total = sig(5.0) + sig(0.0)
    check(out, [[1, 0]], [[sig(0.0) / total, sig(5.0) / total]])  # choice 1.5 > .993: expert 1 first


def test_grouped_masked_experts_never_beat_negative_scores_in_kept_groups() -> None:
    # A -1 bias makes every kept choice score negative; masking with 0.0 (DeepSeek's code) would pick
    # experts of the dropped group.
    routing = RoutingConfig(scoring="sigmoid", num_expert_groups=2, topk_groups=1, score_correction_bias=True,
                            renormalize=False)
    bias = torch.full((4,), -1.0)
    out = route(logits([3.0, 2.0, -3.0, -3.0]), routing, top_k=2, score_correction_bias=bias)
    check(out, [[0, 1]], [[sig(3.0), sig(2.0)]])


def test_grouped_with_every_group_kept_equals_ungrouped() -> None:
    x = torch.randn(16, 12, generator=torch.Generator().manual_seed(0))
    grouped = route(x, RoutingConfig(num_expert_groups=3, topk_groups=3), top_k=4)
    plain = route(x, RoutingConfig(), top_k=4)
    assert torch.equal(grouped.topk_ids, plain.topk_ids)
    assert torch.equal(grouped.topk_weights, plain.topk_weights)


# Ties, order, dtypes, shapes ---------------------------------------------------------------------
def test_ties_go_to_the_lower_expert_id() -> None:
    out = route(logits([0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 2.0, 2.0], [2.0, 1.0, 2.0, 1.0]), RoutingConfig(), top_k=2)
    assert out.topk_ids.tolist() == [[0, 1], [1, 2], [0, 2]]


def test_group_ties_go_to_the_lower_group_id() -> None:
    routing = RoutingConfig(num_expert_groups=2, topk_groups=1)
    out = route(logits([1.0, 0.0, 1.0, 0.0]), routing, top_k=2)
    assert out.topk_ids.tolist() == [[0, 1]]


def test_slots_are_ordered_by_choice_score_and_match_torch_topk() -> None:
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    out = route(x, RoutingConfig(renormalize=False), top_k=5)
    values, indices = torch.topk(torch.softmax(x, dim=-1), 5)
    assert torch.equal(out.topk_ids.long(), indices)
    torch.testing.assert_close(out.topk_weights, values)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_logits_are_routed_in_float32(dtype: torch.dtype) -> None:
    x = torch.randn(8, 8, generator=torch.Generator().manual_seed(2)).to(dtype)
    low, high = route(x, RoutingConfig(), top_k=2), route(x.float(), RoutingConfig(), top_k=2)
    assert low.topk_weights.dtype == torch.float32
    assert torch.equal(low.topk_ids, high.topk_ids) and torch.equal(low.topk_weights, high.topk_weights)


def test_zero_tokens() -> None:
    out = route(torch.empty(0, 8), RoutingConfig(num_expert_groups=4, topk_groups=2), top_k=3)
    assert out.topk_ids.shape == (0, 3) and out.topk_weights.shape == (0, 3)


def test_presets_route_as_their_models() -> None:
    deepseek = MoEConfig.preset("deepseek-v3")
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(3))
    weights, ids = route(x, deepseek, score_correction_bias=torch.zeros(256))
    assert ids.shape == (4, 8)
    torch.testing.assert_close(weights.sum(dim=-1), torch.full((4,), 2.5))  # renormalized, then scaled
    groups = (ids // 32).tolist()  # 8 groups of 32 experts, 4 kept
    assert all(len(set(row)) <= 4 for row in groups)
    gpt_oss = MoEConfig.preset("gpt-oss-20b")
    weights, ids = route(torch.randn(4, 32), gpt_oss)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(4))


def test_router_class_binds_config_and_bias() -> None:
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=64, intermediate_size=64,
                       routing=RoutingConfig(scoring="sigmoid", score_correction_bias=True))
    bias = torch.linspace(-0.5, 0.5, 8)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(4))
    router = Router(config, bias)
    expected = route(x, config, score_correction_bias=bias)
    got = router(x)
    assert torch.equal(got.topk_ids, expected.topk_ids) and torch.equal(got.topk_weights, expected.topk_weights)
    assert "top_k=2" in repr(router)


# Errors ------------------------------------------------------------------------------------------
CONFIG = MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=64)


@pytest.mark.parametrize(("bad", "message"), [
    (torch.tensor([[0.0, float("nan"), 0.0, 0.0]]),
     "router_logits: expected finite values, got NaN or inf (first at index [0, 1])"),
    (torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, float("inf"), 0.0]]), "first at index [1, 2]"),
    (torch.zeros(4), "router_logits: expected shape [T, 4], got shape [4]"),
    (torch.zeros(3, 5), "router_logits: expected shape [T, 4], got shape [3, 5]"),
    (torch.zeros(3, 4, dtype=torch.int64), "router_logits: expected dtype float32/bfloat16/float16, got dtype int64"),
    ([[0.0, 1.0, 2.0, 3.0]], "router_logits: expected a torch.Tensor, got list"),
])
def test_bad_logits(bad: object, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)) as info:
        route(bad, CONFIG)  # type: ignore[arg-type]
    assert info.value.name == "router_logits"


def test_top_k_errors() -> None:
    with pytest.raises(InputError, match=r"top_k: expected a positive int \(a RoutingConfig does not carry top_k\), "
                                         r"got None"):
        route(torch.zeros(2, 4), RoutingConfig())
    with pytest.raises(InputError, match=r"top_k: expected at most the 4 experts of router_logits, got 5"):
        route(torch.zeros(2, 4), RoutingConfig(), top_k=5)
    with pytest.raises(InputError, match=r"top_k: expected None or config.top_k=2 \(a MoEConfig carries top_k\), got 3"):
        route(torch.zeros(2, 4), CONFIG, top_k=3)
    grouped = RoutingConfig(num_expert_groups=4, topk_groups=1)
    with pytest.raises(InputError, match=r"top_k: expected at most the 2 experts of 1 kept groups, got 3"):
        route(torch.zeros(2, 8), grouped, top_k=3)
    with pytest.raises(InputError, match=r"router_logits: expected an expert count divisible into 4 groups, got 6"):
        route(torch.zeros(2, 6), grouped, top_k=1)


def test_score_correction_bias_errors() -> None:
    with_bias = RoutingConfig(scoring="sigmoid", score_correction_bias=True)
    x = torch.zeros(2, 4)
    with pytest.raises(InputError, match=r"score_correction_bias: expected a \[4\] tensor \(routing.score_correction_"
                                         r"bias is set\), got None"):
        route(x, with_bias, top_k=2)
    with pytest.raises(InputError, match=r"score_correction_bias: expected None \(routing.score_correction_bias is "
                                         r"not set\), got a tensor"):
        route(x, RoutingConfig(), top_k=2, score_correction_bias=torch.zeros(4))
    with pytest.raises(InputError, match=r"score_correction_bias: expected shape \[4\], got shape \[8\]"):
        route(x, with_bias, top_k=2, score_correction_bias=torch.zeros(8))
    with pytest.raises(InputError, match=r"score_correction_bias: expected finite values, got NaN or inf"):
        route(x, with_bias, top_k=2, score_correction_bias=torch.tensor([0.0, float("nan"), 0.0, 0.0]))
    with pytest.raises(InputError, match=r"config: expected a MoEConfig, got RoutingConfig"):
        Router(with_bias)  # type: ignore[arg-type]
