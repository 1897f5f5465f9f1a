"""``cpu_zentorch``: the interleaved swigluoai layout and its round trip, support reasons, and the
op's corner cases handled around it. Numerics against the reference are in test_numerics.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch

from moe_oracle import MoEConfig, ParallelConfig, Platform, WeightError, registry
from moe_oracle.testing import assert_close, canonical_kernel_weights, oracle_for, random_weights, reference_moe
from moe_oracle_cpu.cpu_zentorch.converter import convert, to_canonical
from moe_oracle_cpu.cpu_zentorch.experts import ZentorchExperts

BASE: dict[str, Any] = {"num_experts": 8, "top_k": 2, "hidden_size": 128, "intermediate_size": 64}
AMD = Platform.simulate("cpu", features=("amd", "avx512", "avx512_bf16"), libraries={"zentorch": "2.13.0.1", "torch": "2.13.0"})


@pytest.mark.parametrize(("activation", "layout"), [("silu", "canonical"), ("swigluoai", "gate_up_interleaved")])
def test_converter_round_trip(activation: str, layout: str) -> None:
    config = MoEConfig(**BASE, activation=activation, has_bias=True, dtype="fp32")
    weights = random_weights(config, seed=0)
    before = {name: t.clone() for name, t in weights.items()}
    converted = convert(weights, config)
    assert converted.layout == layout and converted.backend == "cpu_zentorch"
    back = dict(to_canonical(converted).items())
    for name, t in before.items():
        assert torch.equal(back[name], t), name
        assert torch.equal(getattr(weights, name), t), f"convert modified the input {name}"


@pytest.mark.parametrize(("platform", "overrides", "reason"), [
    (Platform.simulate("cpu", features=("intel", "avx512"), libraries={"zentorch": "2.13.0.1", "torch": "2.13.0"}), {},
     "needs an AMD CPU (zentorch's kernels target AMD EPYC/Zen), this CPU is not AMD"),
    (Platform.simulate("cpu", features=("amd",), libraries={}), {}, "zentorch not installed (pip install zentorch)"),
    (Platform.simulate("cpu", features=("amd",), libraries={"zentorch": "2.12.0.1", "torch": "2.13.0"}), {},
     "zentorch 2.12.0.1 is built for torch 2.12, this is torch 2.13.0"),
    (AMD, {"quant": "fp8_block"}, "does not support scheme fp8_block"),
    (AMD, {"dtype": "fp16"}, "does not support scheme fp16"),
    (AMD, {"activation": "relu2"}, "does not support activation relu2"),
    (AMD, {"activation": "silu", "is_gated": False}, "zentorch's silu is gated only, config is not gated"),
    (AMD, {"swiglu_limit": 3.0}, "zentorch has no clamped silu (swiglu_limit=3.0)"),
    (AMD, {"activation": "swigluoai", "swiglu_limit": 3.0},
     "zentorch's swigluoai has alpha=1.702 and limit=7.0 built in, config has alpha=1.702 and limit=3.0"),
    (AMD, {"num_experts": 2, "parallel": ParallelConfig(ep_size=2)},
     "zentorch_fused_moe needs at least 2 local experts, config has 1"),
])
def test_support_names_what_is_missing(platform: Platform, overrides: dict[str, Any], reason: str) -> None:
    config = MoEConfig(**{**BASE, **overrides})
    support = registry().get("cpu_zentorch").supports(config, platform)
    assert (support.ok, support.reason) == (False, reason)


def test_serves_bf16_and_fp32_on_amd() -> None:
    for dtype in ("bf16", "fp32"):
        assert registry().get("cpu_zentorch").supports(MoEConfig(**BASE, dtype=dtype), AMD).ok


def test_bf16_needs_avx512_bf16_where_zentorch_was_measured_wrong() -> None:
    """On an AVX2-only Zen 3 zentorch's bf16 op answered wrongly on full-size layers: refused there, with
    the reason; fp32 is served."""
    zen3 = dataclasses.replace(AMD, features=frozenset({"amd", "avx2", "fma", "f16c"}))
    spec = registry().get("cpu_zentorch")
    support = spec.supports(MoEConfig(**BASE), zen3)
    assert not support.ok and "on full-size layers of a CPU without avx512_bf16" in support.reason
    assert "this CPU lacks avx512_bf16" in support.reason
    assert spec.supports(MoEConfig(**BASE, dtype="fp32"), zen3).ok


def test_refuses_weights_of_another_backend(zentorch_module: object) -> None:
    config = MoEConfig(**BASE)
    weights = canonical_kernel_weights(random_weights(config, seed=0), config, backend="cpu_grouped")
    with pytest.raises(WeightError, match=r"weights: expected weights converted for 'cpu_zentorch', got backend"):
        ZentorchExperts(config, oracle_for(config).make_quant_config(config, weights), weights)


def test_one_distinct_expert_gets_a_zero_weight_partner(zentorch_module: object,
                                                        build_kernel: Callable[..., Any]) -> None:
    """zentorch raises for fewer than 2 active experts; every token on one expert must still work."""
    config = MoEConfig(**{**BASE, "top_k": 1})
    weights = random_weights(config, seed=0)
    hidden = torch.randn(3, 128).to(torch.bfloat16)
    topk_weights = torch.full((3, 1), 0.7)
    topk_ids = torch.full((3, 1), 5, dtype=torch.int32)
    out = build_kernel("cpu_zentorch", config, weights).forward_routed(hidden, topk_weights, topk_ids)
    assert_close(out, reference_moe(config, weights, hidden, topk_weights, topk_ids), config=config)
