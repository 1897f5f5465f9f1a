"""The full ``MoELayer`` path on the aiter backend, against a fake ``aiter`` module.

The fake ``aiter.fused_moe`` asserts the exact keyword arguments, enum members, dtypes, shapes and
layouts it receives (layouts rebuilt from the canonical tensors with the index formulas of
``conftest.py``), then returns the reference experts' output, so selection, conversion, kernel
assembly, routing and the wrapper all run end to end on CPU. One case per scheme the backend claims.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from moe_oracle import MoEConfig, MoELayer, ParallelConfig, Platform
from moe_oracle.plugin import CanonicalWeights, WeightError, unpack_nibbles
from moe_oracle.testing import assert_close, random_inputs, random_weights, reference_moe, route
from moe_oracle_rocm.aiter import arch as arch_mod
from moe_oracle_rocm.aiter.spec import AITER_SCHEMES

KEYWORDS = {"hidden_states", "w1", "w2", "topk_weight", "topk_ids", "expert_mask", "activation", "quant_type",
            "doweight_stage1", "w1_scale", "w2_scale", "a1_scale", "a2_scale", "hidden_pad", "intermediate_pad",
            "bias1", "bias2"}
QUANT_TYPE = {"bf16": "No", "fp16": "No", "fp8_tensor": "per_Tensor", "fp8_tensor_static": "per_Tensor",
              "fp8_channel": "per_Token", "fp8_block": "per_128x128", "w4a8_fp8": "per_Token",
              "mxfp4": "per_1x32", "mxfp4_a8": "per_1x32"}
ACTIVATION = {"silu": "Silu", "gelu": "Gelu", "swigluoai": "Swiglu"}

# (id, scheme, arch, MoEConfig overrides)
CASES = [
    ("bf16", "bf16", "gfx950", {}),
    ("fp16-gelu", "fp16", "gfx942", {"dtype": "fp16", "activation": "gelu"}),
    ("fp8_tensor", "fp8_tensor", "gfx950", {}),
    ("fp8_tensor_static-fnuz", "fp8_tensor_static", "gfx942", {}),
    ("fp8_channel-fnuz", "fp8_channel", "gfx942", {}),
    ("fp8_block", "fp8_block", "gfx950", {"hidden_size": 128, "intermediate_size": 128}),
    ("w4a8_fp8-gelu", "w4a8_fp8", "gfx942", {"activation": "gelu", "hidden_size": 128}),
    ("mxfp4-swigluoai-bias-padded", "mxfp4", "gfx950", {"activation": "swigluoai", "has_bias": True}),
    ("mxfp4_a8-swigluoai", "mxfp4_a8", "gfx950", {"activation": "swigluoai"}),
    ("bf16-expert-parallel", "bf16", "gfx950", {"num_experts": 8, "parallel": ParallelConfig(ep_size=2, ep_rank=1)}),
    ("bf16-router-weight-on-input", "bf16", "gfx942", {"top_k": 1, "apply_router_weight_on_input": True}),
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
    assert torch.equal(_raw(actual), _raw(expected)), f"{name}: values differ from AITER's layout"


def _pad(x: torch.Tensor, rows: int, cols: int, fill: int | float = 0) -> torch.Tensor:
    out = x.new_full((*x.shape[:-2], rows, cols), fill)
    out[..., :x.shape[-2], :x.shape[-1]] = x
    return out


def expected_tensors(config: MoEConfig, w: CanonicalWeights, arch: str,
                     layouts: types.SimpleNamespace) -> dict[str, Any]:
    """What AITER must receive for these canonical weights, built independently of the converter."""
    scheme = config.scheme.base_name
    e, h, i = config.num_local_experts, config.hidden_size, config.intermediate_size_per_partition
    out: dict[str, Any] = dict(w1_scale=None, w2_scale=None, a1_scale=None, a2_scale=None, bias1=None, bias2=None,
                               hidden_pad=0, intermediate_pad=0)
    if scheme.startswith("mxfp4"):
        hp, ip = -(-h // 256) * 256, -(-i // 256) * 256
        w13 = _pad(w.w13.reshape(e, 2, i, h // 2), ip, hp // 2).reshape(e, 2 * ip, hp // 2)
        s13 = _pad(w.w13_scale.reshape(e, 2, i, -1), ip, hp // 32, 127).reshape(e, 2 * ip, hp // 32)
        s2 = _pad(w.w2_scale, hp, ip // 32, 127)
        out.update(w1=layouts.a16w4(w13, True).view(torch.float4_e2m1fn_x2),
                   w2=layouts.a16w4(_pad(w.w2, hp, ip // 2), False).view(torch.float4_e2m1fn_x2),
                   w1_scale=layouts.a16w4_scale(s13, True).reshape(-1, hp // 32).view(torch.float8_e8m0fnu),
                   w2_scale=layouts.a16w4_scale(s2, False).reshape(-1, ip // 32).view(torch.float8_e8m0fnu),
                   hidden_pad=hp - h, intermediate_pad=ip - i)
        if config.has_bias:
            out["bias1"] = _pad(w.w13_bias.float().reshape(e, 2, i, 1), ip, 1).reshape(e, 2 * ip)
            out["bias2"] = _pad(w.w2_bias.float()[..., None], hp, 1)[..., 0]
        return out
    if scheme == "w4a8_fp8":
        for name, key in (("w13", "w1"), ("w2", "w2")):
            signed = unpack_nibbles(getattr(w, name)).to(torch.int8) - 8
            words = layouts.int4_words(layouts.tiles(signed, 32))
            out[key] = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).view(torch.uint32)
            out[f"{key}_scale"] = getattr(w, f"{name}_scale")[..., :1]
        return out
    fnuz = config.scheme.weight is not None and arch == "gfx942"
    factor = 2.0 if fnuz else 1.0
    for name, key in (("w13", "w1"), ("w2", "w2")):
        data = getattr(w, name)
        if fnuz:
            raw = data.view(torch.uint8)
            data = torch.where(raw == 0x80, 0, raw).view(torch.float8_e4m3fnuz)
        pack = 16 // data.element_size()
        out[key] = layouts.tiles(_raw(data), pack).view(data.dtype)
        if config.scheme.weight is not None:
            kind = config.scheme.weight.granularity.kind
            s = getattr(w, f"{name}_scale") * factor
            out[f"{key}_scale"] = s[:, None] if kind == "tensor" else s[..., None] if kind == "channel" else s
    if w.a13_scale is not None:
        out["a1_scale"] = (w.a13_scale * factor).reshape(1)
        out["a2_scale"] = (w.a2_scale * factor).reshape(1)
    return out


def make_responder(config: MoEConfig, weights: CanonicalWeights, expected: dict[str, Any],
                   expert_map: torch.Tensor | None, module: Callable[[], Any]) -> Callable[[dict[str, Any]], torch.Tensor]:
    def respond(kw: dict[str, Any]) -> torch.Tensor:
        aiter = module()
        assert set(kw) == KEYWORDS, f"keywords: missing {KEYWORDS - set(kw)}, unexpected {set(kw) - KEYWORDS}"
        assert kw["activation"] is aiter.ActivationType[ACTIVATION[config.activation]]
        assert kw["quant_type"] is aiter.QuantType[QUANT_TYPE[config.scheme.base_name]]
        assert kw["doweight_stage1"] is config.apply_router_weight_on_input
        t, k = kw["topk_ids"].shape
        assert k == config.top_k and kw["topk_ids"].dtype == torch.int32
        assert kw["topk_weight"].dtype == torch.float32 and kw["topk_weight"].shape == (t, k)
        h, hp = config.hidden_size, expected["hidden_pad"]
        x = kw["hidden_states"]
        assert x.dtype == config.dtype and x.shape == (t, h + hp) and not x[:, h:].any()
        assert kw["hidden_pad"] == hp and kw["intermediate_pad"] == expected["intermediate_pad"]
        for name in ("w1", "w2", "w1_scale", "w2_scale", "a1_scale", "a2_scale", "bias1", "bias2"):
            _check(name, kw[name], expected.get(name))
        assert kw["w1"].is_shuffled and kw["w2"].is_shuffled, "AITER picks its kernels by is_shuffled"
        _check("expert_mask", kw["expert_mask"], None if expert_map is None else (expert_map >= 0).to(torch.int32))
        out = reference_moe(config, weights, x[:, :h], kw["topk_weight"], kw["topk_ids"], expert_map=expert_map)
        return torch.cat([out, torch.full((t, hp), math.nan, dtype=out.dtype)], dim=1)

    return respond


def test_cases_cover_every_claimed_scheme() -> None:
    assert {scheme for _, scheme, _, _ in CASES} == set(AITER_SCHEMES)


@pytest.mark.parametrize(("scheme", "arch", "overrides"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layer_end_to_end_through_fake_aiter(scheme: str, arch: str, overrides: dict[str, Any],
                                             fake_aiter: Callable[..., Any], layouts: types.SimpleNamespace,
                                             w4a8_weights: Callable[..., CanonicalWeights],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arch_mod, "device_arch", lambda device: arch)      # as if the tensors were on that GPU
    config = MoEConfig(**{"num_experts": 4, "top_k": 2, "hidden_size": 64, "intermediate_size": 32,
                          "quant": scheme, **overrides})
    platform = Platform.simulate("rocm", arch=arch, libraries={"aiter": "0.1.7"})
    weights = w4a8_weights(config, 0) if scheme == "w4a8_fp8" else random_weights(config, seed=0)
    layer = MoELayer(config, platform=platform)
    assert layer.backend == "aiter"
    layer.load_weights(**dict(weights.items()))
    expected = expected_tensors(config, weights, arch, layouts)
    holder: list[Any] = []
    holder.append(fake_aiter(make_responder(config, weights, expected, layer.expert_map, lambda: holder[0])))

    hidden, logits = random_inputs(config, num_tokens=5, seed=1)
    out = layer(hidden, logits)

    assert len(holder[0].calls) == 1
    topk_weights, topk_ids = route(logits, config)
    want = reference_moe(config, weights, hidden, topk_weights, topk_ids, expert_map=layer.expert_map)
    assert out.shape == hidden.shape and out.dtype == hidden.dtype
    assert_close(out, want, config=config, name=f"aiter {scheme}")


def test_fp8_weights_converted_for_another_arch_are_refused(monkeypatch: pytest.MonkeyPatch,
                                                            fake_aiter: Callable[..., Any]) -> None:
    config = MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=32, quant="fp8_channel")
    layer = MoELayer(config, platform=Platform.simulate("rocm", arch="gfx942", libraries={"aiter": "0.1.7"}))
    weights = random_weights(config, seed=0)
    archs = iter(["gfx950", "gfx942"])                                      # converted on one, built on another
    monkeypatch.setattr(arch_mod, "device_arch", lambda device: next(archs))
    with pytest.raises(WeightError, match=r"^w13: expected float8_e4m3fnuz weights on gfx942 \(convert the canonical "
                                          r"weights on the GPU that runs them\), got float8_e4m3fn$"):
        layer.load_weights(**dict(weights.items()))


def test_missing_aiter_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    config = MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=32)
    layer = MoELayer(config, platform=Platform.simulate("rocm", arch="gfx950", libraries={"aiter": "0.1.7"}))
    layer.load_weights(**dict(random_weights(config, seed=0).items()))
    monkeypatch.setitem(sys.modules, "aiter", None)                        # import aiter -> ImportError
    hidden, logits = random_inputs(config, num_tokens=2, seed=1)
    with pytest.raises(ImportError, match=r"^the aiter backend needs AMD AITER \(pip install amd-aiter on a ROCm "
                                          r"machine\): "):
        layer(hidden, logits)


def test_hidden_padding_is_zero_and_sliced_off(fake_aiter: Callable[..., Any]) -> None:
    config = MoEConfig(num_experts=4, top_k=2, hidden_size=96, intermediate_size=32, quant="mxfp4",
                       activation="swigluoai")
    layer = MoELayer(config, platform=Platform.simulate("rocm", arch="gfx950", libraries={"aiter": "0.1.7"}))
    layer.load_weights(**dict(random_weights(config, seed=0).items()))
    seen: list[torch.Tensor] = []

    def respond(kw: dict[str, Any]) -> torch.Tensor:
        seen.append(kw["hidden_states"])
        return F.pad(kw["hidden_states"][:, :96] * 2, (0, 160), value=math.nan)

    fake_aiter(respond)
    hidden, logits = random_inputs(config, num_tokens=3, seed=1)
    out = layer(hidden, logits)
    assert seen[0].shape == (3, 256) and torch.equal(seen[0][:, :96], hidden) and not seen[0][:, 96:].any()
    assert torch.equal(out, hidden * 2)


def test_experts_refuse_an_activation_aiter_lacks() -> None:
    """The spec rejects relu2 at selection; building the experts directly says so too, as a config error."""
    from moe_oracle.plugin import ConfigError, KernelWeights, QuantConfig
    from moe_oracle_rocm.aiter.converter import LAYOUTS
    from moe_oracle_rocm.aiter.experts import AiterExperts

    config = MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=32, activation="relu2")
    w = random_weights(config, seed=0)
    weights = KernelWeights(backend="aiter", config=config, tensors={"w13": w.w13, "w2": w.w2}, layout=LAYOUTS["bf16"])
    with pytest.raises(ConfigError, match=r"^activation: aiter runs silu/gelu/swigluoai, got 'relu2' \(allowed: "):
        AiterExperts(config, QuantConfig(scheme=config.scheme), weights)
