"""The full ``MoELayer`` path on the xpu and xpu_ipex backends, against fake vendor modules.

The fake ``XpuFusedMoe`` / ``GatedMLPMOE`` assert the exact keyword arguments, dtypes, shapes and
layouts they receive (rebuilt here from the canonical tensors by transposes and an explicit
gate/up row order), then return the reference experts' output (the IPEX fake routes with the
routing arguments it was given), so selection, conversion, kernel assembly and the wrappers all
run end to end on CPU. One case per scheme and activation each backend claims.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from moe_oracle import MoEConfig, MoELayer, ParallelConfig, Platform, RoutingConfig
from moe_oracle.plugin import CanonicalWeights
from moe_oracle.testing import assert_close, random_inputs, random_weights, reference_moe, route
from moe_oracle_xpu.xpu.spec import XPU_SCHEMES

XPU = Platform.simulate("xpu", libraries={"vllm_xpu_kernels": "0.1.16"})
IPEX = Platform.simulate("xpu", libraries={"intel_extension_for_pytorch": "2.8.10+xpu", "torch": "2.8.0"})
INIT_KEYWORDS = {"w13", "w13_scales", "w13_bias", "w2", "w2_scales", "w2_bias", "n_experts_per_token", "activation",
                 "num_experts", "ep_rank", "ep_size", "gemm1_clamp_limit"}
APPLY_KEYWORDS = {"output", "hidden_states", "topk_weights", "topk_ids", "expert_map"}
LIBRARY_ACTIVATION = {"silu": "silu", "gelu": "gelu", "swigluoai": "swigluoai", "relu2": "relu2_no_mul"}

# (id, scheme, MoEConfig overrides)
CASES = [
    ("bf16-silu", "bf16", {}),
    ("fp16-gelu-bias", "fp16", {"dtype": "fp16", "activation": "gelu", "has_bias": True}),
    ("bf16-relu2", "bf16", {"activation": "relu2"}),
    ("bf16-clamped-silu", "bf16", {"swiglu_limit": 0.5}),
    ("fp8_tensor", "fp8_tensor", {}),
    ("mxfp8-swigluoai", "mxfp8", {"activation": "swigluoai", "has_bias": True}),
    ("mxfp4-swigluoai-bias", "mxfp4", {"activation": "swigluoai", "has_bias": True}),
    ("mxfp4-silu", "mxfp4", {}),
    ("int4_w4a16", "int4_w4a16", {"hidden_size": 128, "intermediate_size": 128}),
    ("bf16-expert-parallel", "bf16", {"num_experts": 8, "parallel": ParallelConfig(ep_size=2, ep_rank=1)}),
]


def _raw(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.element_size() == 1 else t


def _check(name: str, actual: Any, expected: torch.Tensor | None) -> None:
    if expected is None:
        assert actual is None, f"{name}: expected None, got {type(actual).__name__}"
        return
    assert isinstance(actual, torch.Tensor), f"{name}: expected a tensor, got {type(actual).__name__}"
    assert (tuple(actual.shape), actual.dtype) == (tuple(expected.shape), expected.dtype), (
        f"{name}: expected {list(expected.shape)} {expected.dtype}, got {list(actual.shape)} {actual.dtype}")
    assert actual.is_contiguous(), f"{name}: the library asserts contiguous weights"
    assert torch.equal(_raw(actual), _raw(expected)), f"{name}: values differ from the library's layout"


def expected_init(config: MoEConfig, w: CanonicalWeights) -> dict[str, Any]:
    """What ``XpuFusedMoe`` must be built with for these canonical weights."""
    scheme, i = config.scheme.base_name, config.intermediate_size_per_partition
    rows = torch.arange(config.w13_rows)
    if config.activation == "swigluoai":                                    # the kernel reads g0 u0 g1 u1 ...
        rows = torch.stack((torch.arange(i), torch.arange(i) + i), dim=1).reshape(-1)

    def kn(t: torch.Tensor) -> torch.Tensor:
        return _raw(t).transpose(1, 2).contiguous().view(t.dtype)

    w13, w2 = w.w13[:, rows], w.w2
    s13 = None if w.w13_scale is None else w.w13_scale[:, rows] if w.w13_scale.dim() > 1 else w.w13_scale
    s2 = w.w2_scale
    if scheme in ("bf16", "fp16", "fp8_tensor", "mxfp8"):
        w13, w2 = kn(w13), kn(w2)
        if scheme == "mxfp8":
            s13, s2 = kn(s13), kn(s2)  # type: ignore[arg-type]
    elif scheme == "mxfp4":
        w13, w2 = w13.view(torch.float4_e2m1fn_x2), w2.view(torch.float4_e2m1fn_x2)
    else:
        s13, s2 = s13.to(config.dtype), s2.to(config.dtype)  # type: ignore[union-attr]
    bias = (None, None) if w.w13_bias is None else (w.w13_bias[:, rows].to(config.dtype), w.w2_bias.to(config.dtype))
    return dict(w13=w13, w2=w2, w13_scales=s13, w2_scales=s2, w13_bias=bias[0], w2_bias=bias[1])


def test_cases_cover_every_claimed_scheme_and_activation() -> None:
    assert {scheme for _, scheme, _ in CASES} == set(XPU_SCHEMES)
    activations = {kw.get("activation", "silu") for _, _, kw in CASES}
    assert activations == {"silu", "gelu", "swigluoai", "relu2"}


@pytest.mark.parametrize(("scheme", "overrides"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layer_end_to_end_through_fake_xpu_kernels(scheme: str, overrides: dict[str, Any],
                                                   fake_xpu_kernels: Callable[..., Any]) -> None:
    config = MoEConfig(**{"num_experts": 4, "top_k": 2, "hidden_size": 64, "intermediate_size": 64,
                          "quant": scheme, **overrides})
    weights = random_weights(config, seed=0)
    if scheme == "int4_w4a16":                                              # scales bf16 holds exactly
        weights = CanonicalWeights(**{**dict(weights.items()), "w13_scale": weights.w13_scale.bfloat16().float(),
                                      "w2_scale": weights.w2_scale.bfloat16().float()})
    layer = MoELayer(config, platform=XPU)
    assert layer.backend == "xpu"
    expected = expected_init(config, weights)
    clamp = config.swiglu_limit if config.activation in ("silu", "gelu") else None

    def on_init(kw: dict[str, Any]) -> None:
        assert set(kw) == INIT_KEYWORDS, f"missing {INIT_KEYWORDS - set(kw)}, unexpected {set(kw) - INIT_KEYWORDS}"
        for name, tensor in expected.items():
            _check(name, kw[name], tensor)
        assert kw["n_experts_per_token"] == config.top_k and kw["num_experts"] == config.num_local_experts
        assert kw["activation"] == LIBRARY_ACTIVATION[config.activation]
        assert (kw["ep_rank"], kw["ep_size"]) == (config.parallel.ep_rank, config.parallel.ep_size)
        assert kw["gemm1_clamp_limit"] == clamp

    def on_apply(fused: Any, kw: dict[str, Any]) -> torch.Tensor:
        assert set(kw) == APPLY_KEYWORDS, f"missing {APPLY_KEYWORDS - set(kw)}, unexpected {set(kw) - APPLY_KEYWORDS}"
        t = kw["hidden_states"].shape[0]
        assert kw["output"].shape == (t, config.hidden_size) and kw["output"].dtype == config.dtype
        assert kw["topk_weights"].dtype == torch.float32 and kw["topk_ids"].dtype == torch.int32
        _check("expert_map", kw["expert_map"], None if layer.expert_map is None else layer.expert_map)
        return reference_moe(config, weights, kw["hidden_states"], kw["topk_weights"], kw["topk_ids"],
                             expert_map=kw["expert_map"])

    fake = fake_xpu_kernels(on_init, on_apply)
    layer.load_weights(**dict(weights.items()))
    assert len(fake.instances) == 1                                          # built once, with the weights

    hidden, logits = random_inputs(config, num_tokens=5, seed=1)
    out = layer(hidden, logits)
    assert len(fake.instances[0].apply_calls) == 1
    topk_weights, topk_ids = route(logits, config)
    assert_close(out, reference_moe(config, weights, hidden, topk_weights, topk_ids, expert_map=layer.expert_map),
                 config=config, name=f"xpu {scheme}")


IPEX_ROUTINGS = [
    ("softmax-renormalize", RoutingConfig()),
    ("softmax-no-renormalize", RoutingConfig(renormalize=False)),
    ("grouped-sigmoid", RoutingConfig(scoring="sigmoid", num_expert_groups=4, topk_groups=2)),
]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("routing", [r for _, r in IPEX_ROUTINGS], ids=[n for n, _ in IPEX_ROUTINGS])
def test_layer_end_to_end_through_fake_ipex(dtype: str, routing: RoutingConfig,
                                            fake_ipex: Callable[..., Any]) -> None:
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=64, intermediate_size=32, dtype=dtype, routing=routing)
    weights = random_weights(config, seed=0)
    layer = MoELayer(config, platform=IPEX)
    assert layer.backend == "xpu_ipex"

    def on_init(kw: dict[str, Any]) -> None:
        assert set(kw) == {"W13", "W2", "use_prepack"} and kw["use_prepack"] is True
        _check("W13", kw["W13"], weights.w13)                               # [w1 (gate); w3 (up)]: canonical
        _check("W2", kw["W2"], weights.w2)
        assert kw["W13"].data_ptr() != weights.w13.data_ptr(), "IPEX takes its W13 over; give it a copy"

    def on_forward(module: Any, kw: dict[str, Any]) -> torch.Tensor:
        assert set(kw) == {"hidden_states", "use_grouped_topk", "top_k", "router_logits", "renormalize",
                           "topk_group", "num_expert_group", "scoring_func"}
        assert kw["use_grouped_topk"] is routing.grouped and kw["top_k"] == config.top_k
        ipex_routing = RoutingConfig(scoring=kw["scoring_func"], renormalize=kw["renormalize"],
                                     num_expert_groups=kw["num_expert_group"], topk_groups=kw["topk_group"])
        topk_weights, topk_ids = route(kw["router_logits"], ipex_routing, top_k=kw["top_k"])
        return reference_moe(config, weights, kw["hidden_states"], topk_weights, topk_ids)

    fake = fake_ipex(on_init, on_forward)
    layer.load_weights(**dict(weights.items()))
    hidden, logits = random_inputs(config, num_tokens=5, seed=1)
    out = layer(hidden, logits)
    assert len(fake.instances) == 1 and len(fake.instances[0].calls) == 1
    topk_weights, topk_ids = route(logits, config)
    assert_close(out, reference_moe(config, weights, hidden, topk_weights, topk_ids), config=config, name="xpu_ipex")


def test_missing_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    config = MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=64)
    layer = MoELayer(config, platform=XPU)
    monkeypatch.setitem(sys.modules, "vllm_xpu_kernels", None)
    with pytest.raises(ImportError, match=r"^the xpu backend needs vllm-xpu-kernels \(pip install vllm-xpu-kernels\): "):
        layer.load_weights(**dict(random_weights(config, seed=0).items()))
