"""Layout helpers that several backends' converters share: gate/up interleaving and zero padding.

Each helper returns a new tensor and has an exact inverse; converters combine them into their
layouts (documented next to each converter) and their round trips back to canonical.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def interleave_gate_up(t: torch.Tensor, *, dim: int = 1, block: int = 1) -> torch.Tensor:
    """``[gate (I) ; up (I)]`` along ``dim`` -> blocks of ``block`` gate rows each followed by the same
    ``block`` up rows: ``block=1`` gives ``g0 u0 g1 u1 ...``; ``block=32`` puts 32 gate rows and their 32
    up rows in each 64-row panel. ``I`` must be a multiple of ``block``. A new tensor."""
    x = t.movedim(dim, 0)
    n = x.shape[0]
    if n % (2 * block):
        raise ValueError(f"interleave_gate_up: dimension {dim} has size {n}, not two halves of multiples of {block}")
    x = x.reshape(2, n // (2 * block), block, *x.shape[1:]).transpose(0, 1).reshape(x.shape)
    return x.movedim(0, dim).contiguous()


def deinterleave_gate_up(t: torch.Tensor, *, dim: int = 1, block: int = 1) -> torch.Tensor:
    """The exact inverse of ``interleave_gate_up``."""
    x = t.movedim(dim, 0)
    n = x.shape[0]
    x = x.reshape(n // (2 * block), 2, block, *x.shape[1:]).transpose(0, 1).reshape(x.shape)
    return x.movedim(0, dim).contiguous()


def pad_to(t: torch.Tensor, *, dim: int, size: int) -> torch.Tensor:
    """Zero-pad ``dim`` at its end to ``size`` entries (a copy even when nothing is added)."""
    extra = size - t.shape[dim]
    if extra < 0:
        raise ValueError(f"pad_to: dimension {dim} has {t.shape[dim]} entries, more than {size}")
    if extra == 0:
        return t.clone()
    d = dim % t.dim()
    pads = [0, 0] * (t.dim() - d - 1) + [0, extra]
    if t.dtype in (torch.uint8, torch.int8, torch.int32, torch.int64, torch.float32, torch.float16, torch.bfloat16):
        return F.pad(t, pads)
    # float8 and other storage-only dtypes: pad their bytes (zero bytes are +0.0 in e4m3/e2m1).
    return F.pad(t.view(torch.uint8), pads).view(t.dtype)


def pad_halves(t: torch.Tensor, *, dim: int, half: int) -> torch.Tensor:
    """Zero-pad each of the two halves of ``dim`` to ``half`` entries: ``[a; b]`` -> ``[a, 0; b, 0]``."""
    n = t.shape[dim]
    if n % 2 or n // 2 > half:
        raise ValueError(f"pad_halves: dimension {dim} of size {n} cannot be padded to two halves of {half}")
    first, second = t.split(n // 2, dim=dim)
    return torch.cat((pad_to(first, dim=dim, size=half), pad_to(second, dim=dim, size=half)), dim=dim)


def unpad_halves(t: torch.Tensor, *, dim: int, half: int) -> torch.Tensor:
    """Inverse of ``pad_halves``: keep the first ``half`` entries of each half."""
    first, second = t.split(t.shape[dim] // 2, dim=dim)
    return torch.cat((first.narrow(dim, 0, half), second.narrow(dim, 0, half)), dim=dim)
