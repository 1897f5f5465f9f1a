"""Canonical weights -> AITER's layout, and back (``to_canonical`` is the exact inverse).

Shape letters: E local experts, I intermediate size per partition, H hidden size, N rows of w13
(``2*I``, gate rows then up rows), Ip / Hp the padded sizes (mxfp4 only), G = K/32 scale groups.

| scheme | layout | w13 / w2 | w13_scale / w2_scale | a13_scale / a2_scale |
|---|---|---|---|---|
| bf16, fp16 | ``aiter_tiles`` | tile-shuffled ``[E, N, H]`` / ``[E, H, I]`` | - | - |
| fp8_tensor(_static) | ``aiter_tiles`` | tile-shuffled fp8 | ``[E, 1]`` fp32 | static: ``[1]`` fp32 |
| fp8_channel | ``aiter_tiles`` | tile-shuffled fp8 | ``[E, N, 1]`` / ``[E, H, 1]`` fp32 | - |
| fp8_block | ``aiter_tiles`` | tile-shuffled fp8 | ``[E, N/128, H/128]`` fp32 as canonical | - |
| w4a8_fp8 | ``aiter_int4_words`` | tile-shuffled int4, ``[E, N, H/8]`` uint32 words | ``[E, N, 1]`` fp32 per channel | - |
| mxfp4(_a8) | ``aiter_a16w4`` | e2m1 ``[E, 2Ip, Hp/2]`` / ``[E, Hp, Ip/2]`` | e8m0 ``[E*2Ip, Hp/32]`` / ``[E*Hp, Ip/32]`` | - |

(``layout.py`` defines each shuffle.) fp8 data is ``float8_e4m3fnuz`` with doubled scales (static
activation scales included) on gfx942, ``float8_e4m3fn`` elsewhere. mxfp4 zero-pads I and H up to
multiples of 256, the granularity of the a16w4 shuffles: padded weights, biases and (e8m0 code
127 = 1.0) scales contribute exact zeros; ``extras`` records the padding, which the experts pass to
AITER as ``hidden_pad`` / ``intermediate_pad`` and undo on the output. Biases (mxfp4 only) become
float32 ``[E, 2*Ip]`` / ``[E, Hp]``. AITER's int4 x fp8 kernels scale each output channel once, so
w4a8_fp8 needs canonical group scales that are equal along each row; others raise ``WeightError``.
Converted tensors carry ``is_shuffled = True``, the attribute AITER reads to pick its kernels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from moe_oracle.plugin import CanonicalWeights, KernelWeights, MoEConfig, WeightError, pack_nibbles, unpack_nibbles
from moe_oracle_rocm.aiter import arch as arch_mod
from moe_oracle_rocm.aiter.layout import (
    from_fnuz,
    pack_int4_words,
    shuffle_a16w4,
    shuffle_a16w4_scale,
    shuffle_tiles,
    to_fnuz,
    unpack_int4_words,
    unshuffle_a16w4,
    unshuffle_a16w4_scale,
    unshuffle_tiles,
)
from moe_oracle_rocm.aiter.spec import BACKEND

MXFP4_PAD = 256
E8M0_ONE = 127
FP4X2 = getattr(torch, "float4_e2m1fn_x2", torch.uint8)
E8M0 = getattr(torch, "float8_e8m0fnu", torch.uint8)
LAYOUTS = {
    "bf16": "aiter_tiles", "fp16": "aiter_tiles",
    "fp8_tensor": "aiter_tiles", "fp8_tensor_static": "aiter_tiles", "fp8_channel": "aiter_tiles",
    "fp8_block": "aiter_tiles", "w4a8_fp8": "aiter_int4_words", "mxfp4": "aiter_a16w4", "mxfp4_a8": "aiter_a16w4",
}


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _shuffled(t: torch.Tensor) -> torch.Tensor:
    t.is_shuffled = True  # type: ignore[attr-defined]  # read by aiter.fused_moe
    return t


def convert(weights: CanonicalWeights, config: MoEConfig, *, arch: str | None = None) -> KernelWeights:
    """Canonical tensors -> ``KernelWeights(backend="aiter")`` in the layout of the table above.

    ``arch`` (``"gfx942"``, ``"gfx950"``) decides the fp8 format; by default it is read from the
    device of ``weights.w13`` (a CPU tensor counts as OCP fp8). Inputs are never modified. Raises
    ``WeightError`` for a scheme AITER does not serve or shapes its shuffles cannot tile.
    """
    scheme = config.scheme.base_name
    if scheme not in LAYOUTS:
        raise WeightError("scheme", f"one of {', '.join(LAYOUTS)} (what the aiter backend converts)", scheme)
    if arch is None:
        arch = arch_mod.device_arch(weights.w13.device)
    layout = LAYOUTS[scheme]
    tensors = dict(weights.items())
    extras: dict[str, Any] = {"arch": arch or "", "hidden_pad": 0, "intermediate_pad": 0}
    if layout == "aiter_tiles":
        _tiles(tensors, config, arch)
    elif layout == "aiter_int4_words":
        _int4_words(tensors)
    else:
        extras.update(_a16w4(tensors, config))
    for name in ("w13", "w2"):
        tensors[name] = _shuffled(tensors[name])
    return KernelWeights(backend=BACKEND, config=config, tensors=tensors, layout=layout, extras=extras)


def to_canonical(kernel: KernelWeights) -> CanonicalWeights:
    """Exact inverse of ``convert`` (the sign of an fp8 -0.0 aside, which gfx942 cannot hold)."""
    if kernel.backend != BACKEND:
        raise WeightError("kernel.backend", repr(BACKEND), repr(kernel.backend))
    config = kernel.config
    tensors = dict(kernel.tensors)
    if kernel.layout == "aiter_tiles":
        _untiles(tensors, config, str(kernel.extras["arch"]) or None)
    elif kernel.layout == "aiter_int4_words":
        _unint4_words(tensors, config)
    elif kernel.layout == "aiter_a16w4":
        _una16w4(tensors, config, kernel.extras)
    else:
        raise WeightError("kernel.layout", f"one of {sorted(set(LAYOUTS.values()))}", repr(kernel.layout))
    return CanonicalWeights(**tensors)


# bf16 / fp16 / fp8: the (16, 16) tile shuffle -----------------------------------------------------
def _tiles(t: dict[str, torch.Tensor], config: MoEConfig, arch: str | None) -> None:
    scheme = config.scheme
    fnuz = scheme.weight is not None and arch_mod.fp8_dtype(arch) == torch.float8_e4m3fnuz
    for name in ("w13", "w2"):
        data = to_fnuz(t[name]) if fnuz else t[name]
        t[name] = shuffle_tiles(data)
    if scheme.weight is None:
        return
    factor = 2.0 if fnuz else 1.0
    kind = scheme.weight.granularity.kind
    for name in ("w13_scale", "w2_scale"):
        s = t[name].float() * factor
        t[name] = s.reshape(-1, 1) if kind == "tensor" else s.unsqueeze(-1) if kind == "channel" else s.contiguous()
    for name in ("a13_scale", "a2_scale"):
        if name in t:
            t[name] = (t[name].float() * factor).reshape(1)


def _untiles(t: dict[str, torch.Tensor], config: MoEConfig, arch: str | None) -> None:
    scheme = config.scheme
    fnuz = scheme.weight is not None and arch_mod.fp8_dtype(arch) == torch.float8_e4m3fnuz
    for name in ("w13", "w2"):
        data = unshuffle_tiles(t[name])
        t[name] = from_fnuz(data) if fnuz else data
    if scheme.weight is None:
        return
    factor = 0.5 if fnuz else 1.0
    kind = scheme.weight.granularity.kind
    for name in ("w13_scale", "w2_scale"):
        s = t[name] * factor
        t[name] = s.reshape(-1) if kind == "tensor" else s.squeeze(-1) if kind == "channel" else s
    for name in ("a13_scale", "a2_scale"):
        if name in t:
            t[name] = (t[name] * factor).reshape(())


# w4a8_fp8: int4 words with per-channel scales ------------------------------------------------------
def _int4_words(t: dict[str, torch.Tensor]) -> None:
    for name in ("w13", "w2"):
        scale = t[f"{name}_scale"]                                     # [E, N, G] fp32
        uneven = (scale != scale[..., :1]).any(dim=-1)                 # [E, N]
        if bool(uneven.any()):
            e, row = (int(i) for i in uneven.nonzero()[0])
            raise WeightError(
                f"{name}_scale", "one scale per output channel (every 128-wide group of a row equal): AITER's "
                "int4 x fp8 MoE kernels scale each output channel once; quantize per channel or use another backend",
                f"expert {e} row {row} with group scales {t[f'{name}_scale'][e, row].tolist()}")
        signed = unpack_nibbles(t[name]).to(torch.int8) - 8           # [E, N, K] in [-8, 7]
        t[name] = pack_int4_words(shuffle_tiles(signed, int4=True))    # [E, N, K/8] uint32
        t[f"{name}_scale"] = scale[..., :1].float().contiguous()       # [E, N, 1]


def _unint4_words(t: dict[str, torch.Tensor], config: MoEConfig) -> None:
    group = config.scheme.group_size
    assert group is not None  # w4a8_fp8 is grouped
    for name in ("w13", "w2"):
        signed = unshuffle_tiles(unpack_int4_words(t[name]), int4=True)  # [E, N, K] int8
        t[name] = pack_nibbles((signed + 8).to(torch.uint8))
        k = signed.shape[-1]
        t[f"{name}_scale"] = t[f"{name}_scale"].expand(-1, -1, -(-k // group)).contiguous()


# mxfp4: pad to 256, a16w4 shuffles -------------------------------------------------------------------
def _pad_rows_cols(x: torch.Tensor, rows: int, cols: int, fill: int | float) -> torch.Tensor:
    """``x`` ``[..., r, c]`` -> ``[..., rows, cols]``, the new cells set to ``fill``."""
    out = x.new_full((*x.shape[:-2], rows, cols), fill)
    out[..., :x.shape[-2], :x.shape[-1]] = x
    return out


def _pad_halves(x: torch.Tensor, i: int, ip: int, cols: int, fill: int | float) -> torch.Tensor:
    """w13-like ``[E, 2*I, C]`` -> ``[E, 2*Ip, cols]``, gate and up halves padded separately."""
    e = x.shape[0]
    return _pad_rows_cols(x.reshape(e, 2, i, -1), ip, cols, fill).reshape(e, 2 * ip, cols)


def _a16w4(t: dict[str, torch.Tensor], config: MoEConfig) -> dict[str, Any]:
    e, h, i = config.num_local_experts, config.hidden_size, config.intermediate_size_per_partition
    hp, ip = _round_up(h, MXFP4_PAD), _round_up(i, MXFP4_PAD)
    w13 = _pad_halves(t["w13"], i, ip, hp // 2, 0)                                        # [E, 2Ip, Hp/2]
    s13 = _pad_halves(t["w13_scale"], i, ip, hp // 32, E8M0_ONE).reshape(e * 2 * ip, -1)  # [E*2Ip, Hp/32]
    w2 = _pad_rows_cols(t["w2"], hp, ip // 2, 0)                                          # [E, Hp, Ip/2]
    s2 = _pad_rows_cols(t["w2_scale"], hp, ip // 32, E8M0_ONE).reshape(e * hp, -1)        # [E*Hp, Ip/32]
    t["w13"] = shuffle_a16w4(w13, gate_up=True).view(FP4X2)
    t["w2"] = shuffle_a16w4(w2, gate_up=False).view(FP4X2)
    t["w13_scale"] = shuffle_a16w4_scale(s13, experts=e, gate_up=True).view(E8M0)
    t["w2_scale"] = shuffle_a16w4_scale(s2, experts=e, gate_up=False).view(E8M0)
    extras: dict[str, Any] = {"hidden_pad": hp - h, "intermediate_pad": ip - i}
    if "w13_bias" in t:
        extras["bias_dtype"] = t["w13_bias"].dtype
        t["w13_bias"] = _pad_halves(t["w13_bias"].float()[..., None], i, ip, 1, 0.0)[..., 0]  # [E, 2Ip]
        t["w2_bias"] = _pad_rows_cols(t["w2_bias"].float()[..., None], hp, 1, 0.0)[..., 0]    # [E, Hp]
    return extras


def _una16w4(t: dict[str, torch.Tensor], config: MoEConfig, extras: Mapping[str, Any]) -> None:
    e, h, i = config.num_local_experts, config.hidden_size, config.intermediate_size_per_partition
    hp, ip = h + int(extras["hidden_pad"]), i + int(extras["intermediate_pad"])
    w13 = unshuffle_a16w4(t["w13"].view(torch.uint8), gate_up=True)
    w2 = unshuffle_a16w4(t["w2"].view(torch.uint8), gate_up=False)
    s13 = unshuffle_a16w4_scale(t["w13_scale"].view(torch.uint8), experts=e, gate_up=True)
    s2 = unshuffle_a16w4_scale(t["w2_scale"].view(torch.uint8), experts=e, gate_up=False)
    t["w13"] = w13.reshape(e, 2, ip, hp // 2)[:, :, :i, :h // 2].reshape(e, 2 * i, h // 2).contiguous()
    t["w13_scale"] = s13.reshape(e, 2, ip, hp // 32)[:, :, :i, :-(-h // 32)].reshape(e, 2 * i, -1).contiguous()
    t["w2"] = w2[:, :h, :i // 2].contiguous()
    t["w2_scale"] = s2.reshape(e, hp, ip // 32)[:, :h, :-(-i // 32)].contiguous()
    if "w13_bias" in t:
        dtype = extras["bias_dtype"]
        t["w13_bias"] = t["w13_bias"].reshape(e, 2, ip)[:, :, :i].reshape(e, 2 * i).to(dtype)
        t["w2_bias"] = t["w2_bias"][:, :h].to(dtype).contiguous()
