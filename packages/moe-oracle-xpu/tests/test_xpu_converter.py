"""The xpu and xpu_ipex converters: layouts, exact round trips, purity, refusals."""

from __future__ import annotations

import pytest
import torch

from moe_oracle import MoEConfig
from moe_oracle.plugin import CanonicalWeights, WeightError
from moe_oracle.testing import random_weights
from moe_oracle_xpu.xpu.converter import convert, to_canonical
from moe_oracle_xpu.xpu_ipex import converter as ipex_converter


def _raw(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.element_size() == 1 else t


def _assert_same(a: CanonicalWeights, b: CanonicalWeights) -> None:
    assert sorted(n for n, _ in a.items()) == sorted(n for n, _ in b.items())
    for name, t in a.items():
        u = getattr(b, name)
        assert (u.shape, u.dtype) == (t.shape, t.dtype), name
        assert torch.equal(_raw(u), _raw(t)), name


def _config(scheme: str, **kw: object) -> MoEConfig:
    sizes = dict(num_experts=4, top_k=2, hidden_size=256, intermediate_size=128)
    return MoEConfig(**{**sizes, "quant": scheme, **kw})  # type: ignore[arg-type]


def _bf16_exact(weights: CanonicalWeights) -> CanonicalWeights:
    """int4 scales that bf16 holds exactly (the library takes them in the compute dtype)."""
    t = dict(weights.items())
    for name in ("w13_scale", "w2_scale"):
        if name in t and t[name].dtype == torch.float32:
            t[name] = t[name].to(torch.bfloat16).float()
    return CanonicalWeights(**t)


SCHEMES = ["bf16", "fp8_tensor", "mxfp8", "mxfp4", "int4_w4a16"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("activation", ["silu", "swigluoai", "relu2"])
def test_round_trip_is_exact(scheme: str, activation: str) -> None:
    config = _config(scheme, activation=activation, has_bias=True)
    weights = _bf16_exact(random_weights(config, seed=4))
    before = {n: t.clone() for n, t in weights.items()}
    converted = convert(weights, config)
    assert converted.backend == "xpu" and converted.config == config
    _assert_same(to_canonical(converted), weights)
    for name, t in weights.items():
        assert torch.equal(_raw(t), _raw(before[name])), name


@pytest.mark.parametrize(("scheme", "w13", "w2", "s13"), [
    ("bf16", ((4, 256, 256), torch.bfloat16), ((4, 128, 256), torch.bfloat16), None),
    ("fp8_tensor", ((4, 256, 256), torch.float8_e4m3fn), ((4, 128, 256), torch.float8_e4m3fn), ((4,), torch.float32)),
    ("mxfp8", ((4, 256, 256), torch.float8_e4m3fn), ((4, 128, 256), torch.float8_e4m3fn), ((4, 8, 256), torch.uint8)),
    ("mxfp4", ((4, 256, 128), torch.float4_e2m1fn_x2), ((4, 256, 64), torch.float4_e2m1fn_x2),
     ((4, 256, 8), torch.uint8)),
    ("int4_w4a16", ((4, 256, 128), torch.uint8), ((4, 256, 64), torch.uint8), ((4, 256, 2), torch.bfloat16)),
])
def test_layouts(scheme: str, w13: tuple, w2: tuple, s13: tuple | None) -> None:
    config = _config(scheme)
    weights = random_weights(config, seed=0)
    converted = convert(weights, config)
    assert (tuple(converted.w13.shape), converted.w13.dtype) == w13
    assert (tuple(converted.w2.shape), converted.w2.dtype) == w2
    scale = converted.get("w13_scale")
    assert (None if scale is None else (tuple(scale.shape), scale.dtype)) == s13
    if scheme in ("bf16", "fp8_tensor", "mxfp8"):                             # [E, K, N]: transposed
        assert torch.equal(_raw(converted.w13), _raw(weights.w13).transpose(1, 2))
    else:                                                                   # [E, N, K/2]: canonical bytes
        assert torch.equal(converted.w13.view(torch.uint8), weights.w13)


def test_swigluoai_interleaves_gate_and_up_rows() -> None:
    config = _config("bf16", activation="swigluoai", has_bias=True)
    weights = random_weights(config, seed=0)
    converted = convert(weights, config)
    i = 128
    order = torch.stack((torch.arange(i), torch.arange(i) + i), dim=1).reshape(-1)  # g0 u0 g1 u1 ...
    assert torch.equal(converted.w13, weights.w13[:, order, :].transpose(1, 2))
    assert torch.equal(converted.tensors["w13_bias"], weights.w13_bias[:, order])  # type: ignore[index]
    assert torch.equal(converted.w2, weights.w2.transpose(1, 2))          # w2 has no gate/up axis


def test_refuses_other_schemes_and_backends() -> None:
    config = _config("fp8_block")
    with pytest.raises(WeightError, match=r"^scheme: expected one of bf16, fp16, fp8_tensor, mxfp8, mxfp4, int4_w4a16 "
                                          r"\(what the xpu backend converts\), got fp8_block$"):
        convert(random_weights(config, seed=0), config)
    bf16 = _config("bf16")
    with pytest.raises(WeightError, match=r"^kernel.backend: expected 'xpu', got 'xpu_ipex'$"):
        to_canonical(ipex_converter.convert(random_weights(bf16, seed=0), bf16))


def test_ipex_converter_copies_canonical_layout() -> None:
    config = _config("bf16")
    weights = random_weights(config, seed=0)
    converted = ipex_converter.convert(weights, config)
    assert converted.backend == "xpu_ipex" and converted.layout == "ipex_gated"
    assert torch.equal(converted.w13, weights.w13) and converted.w13.data_ptr() != weights.w13.data_ptr()
    _assert_same(ipex_converter.to_canonical(converted), weights)
    with pytest.raises(WeightError, match=r"^scheme: expected bf16 or fp16 \(what the xpu_ipex backend converts\), "
                                          r"got fp8_tensor$"):
        ipex_converter.convert(random_weights(_config("fp8_tensor"), seed=0), _config("fp8_tensor"))
