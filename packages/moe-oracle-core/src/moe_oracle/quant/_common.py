"""Helpers every format shares: argument checks, grouping along K, 2-D blocks, nibble packing.

Groups and blocks follow ``kernel/canonical.py``: a scale covers ``g`` consecutive input elements
(or a ``bn x bk`` block), and a trailing partial group is allowed (``ceil(K / g)`` scales). It is
quantized as if zero-padded to a full group, so the padding never changes the group's amax.

Nibble packing (int4 and fp4 e2m1): two 4-bit codes per uint8 along K, the element at the even
index in the low nibble: ``byte[j] = code[2j] | code[2j + 1] << 4``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_float(name: str, x: object, *, ndim: int | None = None, what: str = "") -> torch.Tensor:
    """Raise ``ValueError`` unless ``x`` is a floating tensor (with ``ndim`` dims if given)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor{what}, got dtype {dtype_name(x.dtype)}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor{what}, got shape {list(x.shape)}")
    if ndim is None and x.dim() == 0:
        raise ValueError(f"{name}: expected at least 1 dimension{what}, got a 0-D tensor")
    return x


def check_tensor(name: str, x: object, *, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Raise ``ValueError`` unless ``x`` is a tensor of exactly ``shape`` and ``dtype``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape {list(shape)} dtype {dtype_name(dtype)}, "
                         f"got {type(x).__name__}")
    if tuple(x.shape) != tuple(shape) or x.dtype != dtype:
        raise ValueError(f"{name}: expected shape {list(shape)} dtype {dtype_name(dtype)}, "
                         f"got shape {list(x.shape)} dtype {dtype_name(x.dtype)}")
    return x


def check_even(name: str, k: int, fmt: str) -> None:
    if k % 2:
        raise ValueError(f"{name}: {fmt} packs two values per byte along the last dimension, "
                         f"which must be even, got {k}")


def div_scalar(t: torch.Tensor, value: float) -> torch.Tensor:
    """``t / value``, correctly rounded on every device.

    On CUDA, torch divides by a Python number as ``t * (1 / value)``, which differs from the
    division in the last bit (3 / 15 != 3 * (1 / 15)) and so from the CPU; a 0-D tensor on ``t``'s
    device makes it a true division (and, unlike ``torch.tensor(value, device=...)``, needs no copy
    from the host, so it can be captured in a CUDA graph).
    """
    return t / torch.full((), value, dtype=t.dtype, device=t.device)


def amax_all(x: torch.Tensor) -> torch.Tensor:
    """0-D amax of ``|x|`` over every element; 0 for an empty tensor (no tokens), where torch raises."""
    return x.abs().amax() if x.numel() else x.new_zeros(())


def safe_scale(amax: torch.Tensor, qmax: float) -> torch.Tensor:
    """``amax / qmax`` in float32, with 1.0 where that is zero (all-zero groups stay finite)."""
    scale = div_scalar(amax.float(), qmax)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def split_groups(x: torch.Tensor, g: int) -> torch.Tensor:
    """``[..., K]`` -> ``[..., ceil(K/g), g]``, zero-padding a trailing partial group."""
    k = x.shape[-1]
    pad = cdiv(k, g) * g - k
    if pad:
        x = F.pad(x, (0, pad))
    return x.reshape(*x.shape[:-1], (k + pad) // g, g)  # sizes spelled out: valid for 0 rows too


def merge_groups(xg: torch.Tensor, k: int) -> torch.Tensor:
    """``[..., ceil(K/g), g]`` -> ``[..., K]``, dropping the padding."""
    return xg.reshape(*xg.shape[:-2], xg.shape[-2] * xg.shape[-1])[..., :k]


def mul_groups(x: torch.Tensor, s: torch.Tensor, g: int) -> torch.Tensor:
    """``x`` ``[..., K]`` times per-group ``s`` ``[..., ceil(K/g)]``, broadcast over each group."""
    return merge_groups(split_groups(x, g) * s[..., None], x.shape[-1])


def div_groups(x: torch.Tensor, s: torch.Tensor, g: int) -> torch.Tensor:
    """``x`` ``[..., K]`` divided by per-group ``s`` ``[..., ceil(K/g)]``."""
    return merge_groups(split_groups(x, g) / s[..., None], x.shape[-1])


def block_amax(w: torch.Tensor, bn: int, bk: int) -> torch.Tensor:
    """``[E, N, K]`` -> amax of |w| per ``bn x bk`` block, ``[E, ceil(N/bn), ceil(K/bk)]`` float32."""
    e, n, k = w.shape
    pn, pk = cdiv(n, bn) * bn - n, cdiv(k, bk) * bk - k
    a = F.pad(w.float().abs(), (0, pk, 0, pn))
    return a.reshape(e, (n + pn) // bn, bn, (k + pk) // bk, bk).amax(dim=(2, 4))


def expand_blocks(s: torch.Tensor, bn: int, bk: int, n: int, k: int) -> torch.Tensor:
    """Per-block values ``[E, ceil(N/bn), ceil(K/bk)]`` -> one per element ``[E, N, K]``."""
    e, gn, gk = s.shape
    full = s[:, :, None, :, None].expand(e, gn, bn, gk, bk).reshape(e, gn * bn, gk * bk)
    return full[:, :n, :k]


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """4-bit codes ``[..., K]`` uint8 (values 0..15, K even) -> ``[..., K/2]`` uint8, even index low."""
    pairs = codes.to(torch.uint8).reshape(*codes.shape[:-1], codes.shape[-1] // 2, 2)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def lookup_nibbles(packed: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``table[code]`` for every 4-bit code of ``packed`` ``[..., K/2]`` uint8 -> ``[..., K]``.

    ``table`` is float32 ``[16]`` on ``packed``'s device. One int32 ``index_select`` per byte into a
    ``[256, 2]`` table of value pairs unpacks and decodes in one pass (several times faster on CPU
    than unpacking and then gathering with int64 indices).
    """
    byte = torch.arange(256, dtype=torch.int32, device=packed.device)
    pairs = torch.stack((table[byte & 0x0F], table[byte >> 4]), dim=-1)  # [256, 2]
    values = pairs.index_select(0, packed.reshape(-1).to(torch.int32))
    return values.reshape(*packed.shape[:-1], 2 * packed.shape[-1])


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """``[..., K/2]`` uint8 -> 4-bit codes ``[..., K]`` uint8, low nibble first."""
    codes = torch.stack((packed & 0x0F, packed >> 4), dim=-1)
    return codes.reshape(*packed.shape[:-1], 2 * packed.shape[-1])
