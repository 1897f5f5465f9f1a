"""Canonical tensor shapes and dtypes per scheme (DESIGN.md's table), and their validation.

E = local experts, N = rows of w13 (2*I gated, I otherwise), I = intermediate size per
partition, H = hidden size, g = the weight group size. Packed 4-bit weights hold two values per
uint8 along the input dimension (low nibble first), so their last dimension is halved.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moe_oracle.config.moe import MoEConfig
from moe_oracle.errors import WeightError
from moe_oracle.kernel.weights import CanonicalWeights

FP32 = (torch.float32,)
E8M0 = (torch.uint8,)
_WEIGHT_DTYPES = {
    "fp8_e4m3": (torch.float8_e4m3fn,), "int8": (torch.int8,), "int4": (torch.uint8,), "fp4_e2m1": (torch.uint8,),
}


@dataclass(frozen=True)
class TensorSpec:
    """Expected shape and allowed dtypes of one canonical tensor; ``required`` or optional."""

    shape: tuple[int, ...]
    dtypes: tuple[torch.dtype, ...]
    required: bool = True

    def describe(self) -> str:
        names = "/".join(str(d).removeprefix("torch.") for d in self.dtypes)
        return f"shape {list(self.shape)} dtype {names}"


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def expected_tensors(config: MoEConfig) -> dict[str, TensorSpec]:
    """Every tensor ``load_weights`` accepts for ``config``, with shape and dtype."""
    s = config.scheme
    e, n, i, h = config.num_local_experts, config.w13_rows, config.intermediate_size_per_partition, config.hidden_size
    act = (config.dtype,)
    out: dict[str, TensorSpec] = {}
    w = s.weight
    if w is None:
        out["w13"] = TensorSpec((e, n, h), act)
        out["w2"] = TensorSpec((e, h, i), act)
    else:
        packed = w.dtype in ("int4", "fp4_e2m1")
        out["w13"] = TensorSpec((e, n, h // 2 if packed else h), _WEIGHT_DTYPES[w.dtype])
        out["w2"] = TensorSpec((e, h, i // 2 if packed else i), _WEIGHT_DTYPES[w.dtype])
        gran = w.granularity
        s13: tuple[int, ...]
        s2: tuple[int, ...]
        scale_dtypes = {"fp32": FP32, "e8m0": E8M0, "fp8_e4m3": (torch.float8_e4m3fn,)}[w.scale_dtype]
        if gran.kind == "tensor":
            s13, s2 = (e,), (e,)
        elif gran.kind == "channel":
            s13, s2 = (e, n), (e, h)
        elif gran.kind == "block":
            bn, bk = gran.shape
            s13, s2 = (e, _cdiv(n, bn), _cdiv(h, bk)), (e, _cdiv(h, bn), _cdiv(i, bk))
        else:
            g = gran.shape[0]
            s13, s2 = (e, n, _cdiv(h, g)), (e, h, _cdiv(i, g))
        out["w13_scale"] = TensorSpec(s13, scale_dtypes)
        out["w2_scale"] = TensorSpec(s2, scale_dtypes)
        if not w.symmetric:
            zp = (torch.uint8,)
            out["w13_zero_point"] = TensorSpec(s13, zp)
            out["w2_zero_point"] = TensorSpec(s2, zp)
        if w.global_scale:
            out["w13_global_scale"] = TensorSpec((e,), FP32)
            out["w2_global_scale"] = TensorSpec((e,), FP32)
    a = s.activation
    if a is not None and (a.static or a.global_scale):
        out["a13_scale"] = TensorSpec((), FP32)
        out["a2_scale"] = TensorSpec((), FP32)
    if config.has_bias:
        out["w13_bias"] = TensorSpec((e, n), (*act, torch.float32))
        out["w2_bias"] = TensorSpec((e, h), (*act, torch.float32))
    if config.routing.score_correction_bias:
        out["score_correction_bias"] = TensorSpec((config.num_experts,), (torch.float32, *act))
    return out


def validate_canonical(config: MoEConfig, weights: CanonicalWeights) -> None:
    """Raise ``WeightError`` naming the first tensor that is missing, unexpected or mis-shaped.

    Scalar activation scales may also come as shape ``[1]``.
    """
    expected = expected_tensors(config)
    given = dict(weights.items())
    for name, spec in expected.items():
        if name not in given:
            if spec.required:
                raise WeightError(name, f"a tensor with {spec.describe()} for scheme {config.scheme.name}", "None")
            continue
        t = given[name]
        if not isinstance(t, torch.Tensor):
            raise WeightError(name, "a torch.Tensor", type(t).__name__)
        shape = tuple(t.shape)
        if shape != spec.shape and not (spec.shape == () and shape == (1,)):
            raise WeightError(name, f"shape {list(spec.shape)}", f"shape {list(shape)}")
        if t.dtype not in spec.dtypes:
            raise WeightError(name, f"dtype {'/'.join(str(d).removeprefix('torch.') for d in spec.dtypes)}",
                              f"dtype {str(t.dtype).removeprefix('torch.')}")
    for name in given:
        if name not in expected:
            raise WeightError(name, f"no such tensor for scheme {config.scheme.name}"
                              f"{'' if config.has_bias else ' without has_bias'}"
                              f" (accepted: {', '.join(expected)})", "a tensor")
    devices = {t.device for t in given.values()}
    if len(devices) > 1:
        raise WeightError("weights", "every tensor on one device", f"devices {sorted(map(str, devices))}")
