"""Property tests of the config dataclasses (issue 13): every valid combination of field values
constructs, and every invalid value of any one field (the others valid) is a ``ConfigError`` whose
``field`` names it. Bools must be bools, floats finite, sizes positive ints."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_oracle import ACTIVATIONS, SCHEME_NAMES, ConfigError, MoEConfig, ParallelConfig, QuantScheme, RoutingConfig
from moe_oracle.config.parallel import ALL2ALL_BACKENDS

SETTINGS = settings(max_examples=80, deadline=None)

# Values of the wrong kind, shared by every field ----------------------------------------------------------
NAN, INF = math.nan, math.inf
odd_text = st.text(alphabet="qxz!- ", min_size=0, max_size=6)  # never a valid name, in any case
not_bool = st.one_of(st.integers(-3, 3), st.floats(allow_nan=True), odd_text, st.sampled_from(
    ["yes", "no", "true", "false", "True", None, [], [True], {}]))
not_int = st.one_of(st.booleans(), st.floats(allow_nan=True), odd_text, st.sampled_from(["4", None, [4], 4j]),
                    st.integers(max_value=0), st.sampled_from([-(10 ** 5000)]))
not_number = st.one_of(st.booleans(), odd_text, st.sampled_from(["1", "2.5", None, [1.0], 1j]),
                       st.sampled_from([NAN, INF, -INF, 10 ** 400]))
not_positive_number = st.one_of(not_number, st.floats(max_value=0, allow_nan=False), st.integers(-5, 0))
not_name = st.one_of(odd_text, st.integers(), st.sampled_from([None, ["silu"], b"silu", 1.5]))
finite_positive = st.one_of(st.floats(min_value=1e-3, max_value=1e3), st.integers(1, 100))


# RoutingConfig ---------------------------------------------------------------------------------------------
@st.composite
def routing_kwargs(draw: st.DrawFn, num_experts: int | None = None, top_k: int = 1) -> dict[str, Any]:
    scoring = draw(st.sampled_from(["softmax", "sigmoid"]))
    kw: dict[str, Any] = dict(scoring=scoring, renormalize=draw(st.booleans()),
                              softmax_after_topk=scoring == "softmax" and draw(st.booleans()),
                              score_correction_bias=draw(st.booleans()), routed_scaling_factor=draw(finite_positive))
    if draw(st.booleans()):
        divisors = [n for n in range(1, 9) if num_experts is None or num_experts % n == 0]
        groups = draw(st.sampled_from(divisors))
        per_group = None if num_experts is None else num_experts // groups
        low = 1 if per_group is None else max(1, -(-top_k // per_group))
        if low <= groups:
            kw.update(num_expert_groups=groups, topk_groups=draw(st.integers(low, groups)))
    return kw


ROUTING_INVALID: dict[str, st.SearchStrategy[Any]] = {
    "scoring": not_name,
    "renormalize": not_bool,
    "softmax_after_topk": not_bool,
    "score_correction_bias": not_bool,
    "routed_scaling_factor": not_positive_number,
    "num_expert_groups": not_int,
    "topk_groups": st.one_of(not_int, st.integers(5, 100)),  # with num_expert_groups=4
}


@SETTINGS
@given(routing_kwargs())
def test_valid_routing_constructs(kw: dict[str, Any]) -> None:
    assert RoutingConfig(**kw).grouped == (kw.get("num_expert_groups") is not None)


@SETTINGS
@given(st.data())
def test_invalid_routing_field_is_named(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(ROUTING_INVALID)))
    value = data.draw(ROUTING_INVALID[name])
    kw: dict[str, Any] = dict(num_expert_groups=4, topk_groups=2) if "groups" in name else {}
    kw[name] = value
    with pytest.raises(ConfigError) as info:
        RoutingConfig(**kw)
    assert info.value.field == f"routing.{name}", (name, value, str(info.value))


# ParallelConfig ---------------------------------------------------------------------------------------------
@st.composite
def parallel_kwargs(draw: st.DrawFn, ep_sizes: tuple[int, ...] = (1, 2, 4, 8)) -> dict[str, Any]:
    tp, dp, ep = draw(st.sampled_from([1, 2, 4])), draw(st.integers(1, 4)), draw(st.sampled_from(ep_sizes))
    return dict(tp_size=tp, dp_size=dp, ep_size=ep, tp_rank=draw(st.integers(0, tp - 1)),
                dp_rank=draw(st.integers(0, dp - 1)), ep_rank=draw(st.integers(0, ep - 1)),
                all2all=draw(st.sampled_from(ALL2ALL_BACKENDS)) if ep > 1 else "none")


PARALLEL_INVALID: dict[str, st.SearchStrategy[Any]] = {
    **{f"{p}_size": not_int for p in ("tp", "dp", "ep")},
    **{f"{p}_rank": st.one_of(st.integers(max_value=-1), st.integers(2, 50), not_int.filter(lambda v: v != 0))
       for p in ("tp", "dp", "ep")},  # sizes are 2 in the base
    "all2all": st.one_of(not_name, st.sampled_from(ALL2ALL_BACKENDS[1:])),  # ep_size=1 in the all2all base
}


@SETTINGS
@given(parallel_kwargs())
def test_valid_parallel_constructs(kw: dict[str, Any]) -> None:
    p = ParallelConfig(**kw)
    assert p.activation_format in ("standard", "batched") and p.use_ep == (kw["ep_size"] > 1)


@SETTINGS
@given(st.data())
def test_invalid_parallel_field_is_named(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(PARALLEL_INVALID)))
    value = data.draw(PARALLEL_INVALID[name])
    kw: dict[str, Any] = {} if name == "all2all" else dict(tp_size=2, dp_size=2, ep_size=2)
    kw[name] = value
    with pytest.raises(ConfigError) as info:
        ParallelConfig(**kw)
    assert info.value.field == f"parallel.{name}", (name, value, str(info.value))


# MoEConfig --------------------------------------------------------------------------------------------------
QUANTIZED = [n for n in SCHEME_NAMES if QuantScheme.parse(n).is_quantized]


@st.composite
def moe_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    e = draw(st.sampled_from([1, 2, 4, 8, 16, 64]))
    top_k = draw(st.integers(1, e))
    parallel = draw(parallel_kwargs(ep_sizes=tuple(s for s in (1, 2, 4, 8) if e % s == 0)))
    activation = draw(st.sampled_from(ACTIVATIONS))
    kw: dict[str, Any] = dict(
        num_experts=e, top_k=top_k, hidden_size=128 * draw(st.integers(1, 8)),
        intermediate_size=2 * parallel["tp_size"] * draw(st.integers(1, 64)), activation=activation,
        dtype=draw(st.sampled_from(["bf16", "fp16", "fp32", torch.bfloat16, "BFloat16", "torch.float32"])),
        has_bias=draw(st.booleans()), parallel=ParallelConfig(**parallel),
        routing=RoutingConfig(**draw(routing_kwargs(num_experts=e, top_k=top_k))),
        apply_router_weight_on_input=top_k == 1 and draw(st.booleans()))
    if draw(st.booleans()):
        kw["quant"] = draw(st.sampled_from(QUANTIZED))
    if activation == "swigluoai":
        kw["swiglu_alpha"] = draw(st.one_of(st.none(), st.floats(-10, 10), st.integers(-3, 3)))
        kw["swiglu_limit"] = draw(st.one_of(st.none(), finite_positive))
    return kw


MOE_INVALID: dict[str, st.SearchStrategy[Any]] = {
    "num_experts": not_int,
    "top_k": st.one_of(not_int, st.integers(9, 1000)),  # num_experts=8 in the base
    "hidden_size": not_int,
    "intermediate_size": not_int,
    "activation": not_name,
    "is_gated": not_bool.filter(lambda v: v is not None),
    "dtype": st.one_of(odd_text, st.integers(), st.sampled_from([torch.int8, torch.float64, None, ["bf16"]])),
    "has_bias": not_bool,
    "apply_router_weight_on_input": not_bool,
    "quant": st.one_of(odd_text, st.integers(), st.sampled_from([["fp8_block"], 1.5, b"bf16"])),
    "parallel": st.sampled_from([None, "tp=2", {"tp_size": 2}, RoutingConfig()]),
    "routing": st.sampled_from([None, "softmax", {"scoring": "softmax"}, ParallelConfig()]),
    # with activation="swigluoai"; None is valid there (gpt-oss's constants)
    "swiglu_alpha": not_number.filter(lambda v: v is not None),
    "swiglu_limit": not_positive_number.filter(lambda v: v is not None),
}


@SETTINGS
@given(moe_kwargs())
def test_valid_moe_config_constructs(kw: dict[str, Any]) -> None:
    config = MoEConfig(**kw)
    assert config.num_local_experts * config.parallel.ep_size == config.num_experts
    assert config.is_gated in (True, False) and isinstance(config.dtype, torch.dtype)


@SETTINGS
@given(st.data())
def test_invalid_moe_field_is_named(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(MOE_INVALID)))
    value = data.draw(MOE_INVALID[name])
    kw: dict[str, Any] = dict(num_experts=8, top_k=2, hidden_size=256, intermediate_size=512)
    if name.startswith("swiglu"):
        kw["activation"] = "swigluoai"
    kw[name] = value
    with pytest.raises(ConfigError) as info:
        MoEConfig(**kw)
    assert info.value.field == name, (name, value, str(info.value))
