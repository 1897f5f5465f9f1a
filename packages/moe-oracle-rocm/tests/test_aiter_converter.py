"""The aiter converter: layout per scheme, exact round trip back to canonical, purity, refusals."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest
import torch

from moe_oracle import MoEConfig
from moe_oracle.plugin import CanonicalWeights, WeightError
from moe_oracle.testing import random_weights
from moe_oracle_rocm.aiter.converter import convert, to_canonical


def _raw(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.element_size() == 1 else t


def _assert_same(a: CanonicalWeights, b: CanonicalWeights) -> None:
    names_a, names_b = [n for n, _ in a.items()], [n for n, _ in b.items()]
    assert sorted(names_a) == sorted(names_b)
    for name, t in a.items():
        u = getattr(b, name)
        assert (u.shape, u.dtype) == (t.shape, t.dtype), name
        assert torch.equal(_raw(u), _raw(t)), name


def _config(scheme: str, **kw: object) -> MoEConfig:
    sizes = dict(num_experts=4, top_k=2, hidden_size=128, intermediate_size=128)
    return MoEConfig(**{**sizes, "quant": scheme, **kw})  # type: ignore[arg-type]


ROUND_TRIP = [
    ("bf16", {}), ("fp16", {"dtype": "fp16", "activation": "gelu"}),
    ("fp8_tensor", {}), ("fp8_tensor_static", {}), ("fp8_channel", {}), ("fp8_block", {}),
    ("mxfp4", {"activation": "swigluoai", "has_bias": True}), ("mxfp4_a8", {}),
    ("mxfp4", {"hidden_size": 96, "intermediate_size": 160, "has_bias": True}),  # padded to 256 both ways
]


@pytest.mark.parametrize(("scheme", "kw"), ROUND_TRIP, ids=lambda v: v if isinstance(v, str) else "")
def test_round_trip_is_exact(scheme: str, kw: dict[str, object]) -> None:
    config = _config(scheme, **kw)
    weights = random_weights(config, seed=3)
    before = {n: t.clone() for n, t in weights.items()}
    converted = convert(weights, config)
    assert converted.backend == "aiter" and converted.config == config
    _assert_same(to_canonical(converted), weights)
    for name, t in weights.items():                                         # the inputs are untouched
        assert torch.equal(_raw(t), _raw(before[name])), name
    assert converted.w13.is_shuffled and converted.w2.is_shuffled  # type: ignore[attr-defined]


def test_w4a8_round_trip_and_layout(layouts: types.SimpleNamespace, w4a8_weights: Callable[..., Any]) -> None:
    config = _config("w4a8_fp8")
    weights = w4a8_weights(config, 1)
    converted = convert(weights, config)
    assert converted.layout == "aiter_int4_words"
    assert converted.w13.dtype == torch.uint32 and converted.w13.shape == (4, 256, 16)
    assert converted.get("w13_scale").shape == (4, 256, 1)  # type: ignore[union-attr]
    from moe_oracle.plugin import unpack_nibbles

    signed = unpack_nibbles(weights.w13).to(torch.int8) - 8
    expected = layouts.int4_words(layouts.tiles(signed, 32))
    assert torch.equal(converted.w13.view(torch.int32).to(torch.int64) & 0xFFFFFFFF, expected)
    _assert_same(to_canonical(converted), weights)


def test_w4a8_refuses_scales_that_vary_along_a_row(w4a8_weights: Callable[..., Any]) -> None:
    config = _config("w4a8_fp8", hidden_size=256)                           # two groups per w13 row
    weights = w4a8_weights(config, 1)
    uneven = weights.w13_scale.clone()  # type: ignore[union-attr]
    uneven[2, 5, 0] *= 2
    bad = CanonicalWeights(**{**dict(weights.items()), "w13_scale": uneven})
    with pytest.raises(WeightError, match=r"^w13_scale: expected one scale per output channel .* got expert 2 row 5 "):
        convert(bad, config)


@pytest.mark.parametrize("scheme", ["fp8_tensor_static", "fp8_channel", "fp8_block"])
def test_gfx942_gets_fnuz_bytes_and_doubled_scales(scheme: str) -> None:
    config = _config(scheme)
    weights = random_weights(config, seed=5)
    ocp, fnuz = convert(weights, config, arch="gfx950"), convert(weights, config, arch="gfx942")
    assert ocp.w13.dtype == torch.float8_e4m3fn and fnuz.w13.dtype == torch.float8_e4m3fnuz
    keep = ocp.w13.view(torch.uint8) != 0x80                                # -0.0 has no fnuz byte
    assert torch.equal(fnuz.w13.view(torch.uint8)[keep], ocp.w13.view(torch.uint8)[keep])
    for name in ("w13_scale", "w2_scale", "a13_scale", "a2_scale"):
        if ocp.get(name) is not None:
            assert torch.equal(fnuz.tensors[name], ocp.tensors[name] * 2), name
    back = to_canonical(fnuz)
    assert torch.equal(back.w13.float(), weights.w13.float())               # equal values (-0.0 == 0.0)
    assert torch.equal(back.w2_scale, weights.w2_scale)  # type: ignore[arg-type]


def test_fp8_scale_shapes() -> None:
    for scheme, shape in (("fp8_tensor", (4, 1)), ("fp8_channel", (4, 256, 1)), ("fp8_block", (4, 2, 1))):
        converted = convert(random_weights(_config(scheme), seed=0), _config(scheme))
        assert tuple(converted.tensors["w13_scale"].shape) == shape, scheme


def test_mxfp4_pads_to_256_and_records_it(layouts: types.SimpleNamespace) -> None:
    config = _config("mxfp4", hidden_size=96, intermediate_size=160, has_bias=True)
    weights = random_weights(config, seed=2)
    converted = convert(weights, config)
    assert converted.extras["hidden_pad"] == 160 and converted.extras["intermediate_pad"] == 96
    assert converted.w13.shape == (4, 512, 128) and converted.w2.shape == (4, 256, 128)
    assert converted.tensors["w13_bias"].dtype == torch.float32 and converted.tensors["w13_bias"].shape == (4, 512)
    # The gate half of expert 0, padded, then shuffled with the up half: check against the definition.
    padded = torch.zeros(4, 2, 256, 128, dtype=torch.uint8)
    padded[:, :, :160, :48] = weights.w13.reshape(4, 2, 160, 48)
    expected = layouts.a16w4(padded.reshape(4, 512, 128), True)
    assert torch.equal(converted.w13.view(torch.uint8), expected)
    scales = converted.tensors["w13_scale"].view(torch.uint8).reshape(4, 512, 8)
    padded_scales = torch.full((4, 2, 256, 8), 127, dtype=torch.uint8)
    padded_scales[:, :, :160, :3] = weights.w13_scale.reshape(4, 2, 160, 3)  # type: ignore[union-attr]
    assert torch.equal(scales, layouts.a16w4_scale(padded_scales.reshape(4, 512, 8), True))


def test_refuses_a_scheme_aiter_does_not_run() -> None:
    config = _config("int8_w8a8")
    with pytest.raises(WeightError, match=r"^scheme: expected one of bf16, .*mxfp4_a8 \(what the aiter backend "
                                          r"converts\), got int8_w8a8$"):
        convert(random_weights(config, seed=0), config)


def test_inverse_refuses_other_backends() -> None:
    from moe_oracle.testing import canonical_kernel_weights

    config = _config("bf16")
    with pytest.raises(WeightError, match=r"^kernel.backend: expected 'aiter', got 'triton'$"):
        to_canonical(canonical_kernel_weights(random_weights(config, seed=0), config, backend="triton"))
