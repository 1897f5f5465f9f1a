"""Token-to-expert alignment: group the P = T*K (token, expert) pairs by expert in BLOCK_M blocks.

One Triton program does it in two passes over ``topk_ids`` with no host synchronisation: count
pairs per local expert, pad each count to a multiple of BLOCK_M, prefix-sum the padded counts,
then scatter each pair id to its expert's next slot. Outputs, sized from T, K, E and BLOCK_M
alone so the launch can sit in a CUDA graph:

- ``sorted_ids`` ``[max_blocks * BLOCK_M]`` int32: pair ids (``t * K + k``); padding holds P.
- ``block_expert`` ``[max_blocks]`` int32: the local expert of each block, -1 past the end.
- ``num_padded`` ``[1]`` int32: blocks in use times BLOCK_M; GEMM programs past it exit.

Pairs whose expert is not local (``expert_map`` gives -1) land in no block: they contribute zero.
Within an expert pairs keep their order, so the layout (and the result) is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class AlignedRouting:
    """Pairs grouped by expert for GEMMs with row blocks of ``block_m``; see the module docstring."""

    sorted_ids: torch.Tensor
    block_expert: torch.Tensor
    num_padded: torch.Tensor
    block_m: int
    num_pairs: int

    @property
    def max_blocks(self) -> int:
        return self.block_expert.shape[0]


@triton.jit
def _align_kernel(
    topk_ids_ptr, expert_map_ptr, sorted_ids_ptr, block_expert_ptr, num_padded_ptr,
    num_pairs, num_experts, max_blocks,
    HAS_MAP: tl.constexpr, BLOCK_M: tl.constexpr, E_POW2: tl.constexpr, CHUNK: tl.constexpr,
    BLOCK_CHUNK: tl.constexpr,
):
    experts = tl.arange(0, E_POW2)
    counts = tl.zeros((E_POW2,), dtype=tl.int32)
    for start in range(0, num_pairs, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        mask = offs < num_pairs
        e = tl.load(topk_ids_ptr + offs, mask=mask, other=-1).to(tl.int32)
        if HAS_MAP:
            e = tl.load(expert_map_ptr + e, mask=mask & (e >= 0), other=-1).to(tl.int32)
        onehot = (e[:, None] == experts[None, :]).to(tl.int32)  # [CHUNK, E_POW2]
        counts += tl.sum(onehot, axis=0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, axis=0)
    starts = ends - padded
    total = tl.sum(padded, axis=0)
    tl.store(num_padded_ptr, total)

    # Expert of each block: the number of experts whose padded range ends at or before it.
    for b0 in range(0, max_blocks, BLOCK_CHUNK):
        blocks = b0 + tl.arange(0, BLOCK_CHUNK)
        owner = tl.sum((ends[None, :] <= (blocks * BLOCK_M)[:, None]).to(tl.int32), axis=1)
        owner = tl.where(blocks * BLOCK_M < total, owner, -1)
        tl.store(block_expert_ptr + blocks, owner, mask=blocks < max_blocks)

    # Padding slots of each expert hold the sentinel num_pairs.
    offs_pad = tl.arange(0, BLOCK_M)
    pad_pos = (starts + counts)[:, None] + offs_pad[None, :]
    tl.store(sorted_ids_ptr + pad_pos, tl.zeros((E_POW2, BLOCK_M), dtype=tl.int32) + num_pairs,
             mask=pad_pos < ends[:, None])

    # Scatter: a pair's slot is its expert's running start plus its rank among this chunk's pairs
    # of the same expert (an inclusive prefix sum of the one-hot matrix).
    running = starts
    for start in range(0, num_pairs, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        mask = offs < num_pairs
        e = tl.load(topk_ids_ptr + offs, mask=mask, other=-1).to(tl.int32)
        if HAS_MAP:
            e = tl.load(expert_map_ptr + e, mask=mask & (e >= 0), other=-1).to(tl.int32)
        onehot = (e[:, None] == experts[None, :]).to(tl.int32)
        rank = tl.cumsum(onehot, axis=0)
        pos = tl.sum(onehot * (running[None, :] + rank - 1), axis=1)
        tl.store(sorted_ids_ptr + pos, offs, mask=mask & (e >= 0))
        running += tl.sum(onehot, axis=0)


def max_blocks_for(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Upper bound on blocks: every hit expert adds at most one partial block, and at most
    ``min(P, E)`` experts are hit."""
    return triton.cdiv(num_pairs, block_m) + min(num_pairs, num_experts)


def moe_align(topk_ids: torch.Tensor, num_experts: int, block_m: int, *,
              expert_map: torch.Tensor | None = None) -> AlignedRouting:
    """Group the pairs of ``topk_ids`` by local expert in blocks of ``block_m`` rows.

    Parameters
    ----------
    topk_ids : [T, K] int32/int64, global expert ids.
    num_experts : E, the local experts (the range of ``expert_map``'s values, or of the ids).
    block_m : rows per block; the GEMMs that read the result must use the same BLOCK_M.
    expert_map : [E_global] int32, global -> local id, -1 for experts of other ranks; or None.

    Returns
    -------
    AlignedRouting, its tensors on ``topk_ids.device``.
    """
    if topk_ids.dim() != 2:
        raise ValueError(f"topk_ids: expected shape [T, K], got {list(topk_ids.shape)}")
    if block_m < 1 or block_m & (block_m - 1):
        raise ValueError(f"block_m: expected a power of two, got {block_m}")
    ids = topk_ids.contiguous()
    num_pairs = ids.numel()
    max_blocks = max_blocks_for(num_pairs, num_experts, block_m)
    device = ids.device
    sorted_ids = torch.empty(max_blocks * block_m, dtype=torch.int32, device=device)
    block_expert = torch.empty(max_blocks, dtype=torch.int32, device=device)
    num_padded = torch.empty(1, dtype=torch.int32, device=device)
    e_pow2 = triton.next_power_of_2(num_experts)
    # Keep the [CHUNK, E] one-hot matrix near 16K elements.
    chunk = max(16, min(triton.next_power_of_2(max(num_pairs, 1)), 16384 // e_pow2))
    _align_kernel[(1,)](
        ids, expert_map if expert_map is not None else ids, sorted_ids, block_expert, num_padded,
        num_pairs, num_experts, max_blocks,
        HAS_MAP=expert_map is not None, BLOCK_M=block_m, E_POW2=e_pow2, CHUNK=chunk,
        BLOCK_CHUNK=max(16, min(triton.next_power_of_2(max_blocks), 16384 // e_pow2)),
        num_warps=8 if e_pow2 * chunk >= 8192 else 4,
    )
    return AlignedRouting(sorted_ids, block_expert, num_padded, block_m, num_pairs)
