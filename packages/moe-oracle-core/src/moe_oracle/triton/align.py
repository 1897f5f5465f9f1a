"""Token-to-expert alignment: group the P = T*K (token, expert) pairs by expert in BLOCK_M blocks.

Count pairs per local expert (``tl.histogram`` per chunk of pairs), pad each count to a multiple of
BLOCK_M, prefix-sum the padded counts, then scatter each pair id to its expert's next slot (an
atomic cursor per expert, per chunk). Up to ``CHUNK`` pairs this is one single-program launch
(decode); beyond, three launches over chunks (count, scan, scatter). No host synchronisation, and
every output is sized from T, K, E and BLOCK_M alone, so the launches can sit in a CUDA graph:

- ``sorted_ids`` ``[max_blocks * BLOCK_M]`` int32: pair ids (``t * K + k``); padding holds P.
- ``block_expert`` ``[max_blocks]`` int32: the local expert of each block in use (entries past
  ``num_padded / BLOCK_M`` are undefined).
- ``num_padded`` ``[1]`` int32: blocks in use times BLOCK_M; GEMM programs past it exit.

Pairs whose expert is not local (``expert_map`` gives -1) land in no block: they contribute zero.
Within an expert the order of pairs follows the atomics and may vary from run to run; each row of
a GEMM is computed on its own, so the results do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

CHUNK = 1024  # pairs per program of the count and scatter passes

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


@dataclass(frozen=True)
class DirectRouting:
    """No alignment: every pair is its own row block, its expert read from ``topk_ids`` [P] int32
    (through ``expert_map`` when given). Exact and cheapest for one token (T == 1), whose K experts
    are distinct, so no weight tile is read twice and the alignment launch is skipped."""

    topk_ids: torch.Tensor
    expert_map: torch.Tensor | None
    num_pairs: int


@triton.jit
def _local_experts(topk_ids_ptr, expert_map_ptr, offs, num_pairs, HAS_MAP: tl.constexpr):
    """Local expert of each pair in ``offs``, -1 for padding lanes and other ranks' experts."""
    mask = offs < num_pairs
    e = tl.load(topk_ids_ptr + offs, mask=mask, other=-1).to(tl.int32)
    if HAS_MAP:
        e = tl.load(expert_map_ptr + e, mask=mask & (e >= 0), other=-1).to(tl.int32)
    return e


@triton.jit
def _layout(counts, sorted_ids_ptr, block_expert_ptr, num_padded_ptr, num_pairs, num_experts,
            BLOCK_M: tl.constexpr, NUM_BINS: tl.constexpr):
    """From per-expert counts: store the padded length, each block's expert and the padding
    sentinels; return each expert's first slot."""
    experts = tl.arange(0, NUM_BINS)
    padded = tl.where(experts < num_experts, (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M, 0)
    ends = tl.cumsum(padded, axis=0)
    starts = ends - padded
    tl.store(num_padded_ptr, tl.sum(padded, axis=0))
    blocks = padded // BLOCK_M
    offs_j = tl.arange(0, 16)
    for j0 in range(0, tl.max(blocks, axis=0), 16):
        j = j0 + offs_j[None, :]
        owner = tl.zeros((NUM_BINS, 16), dtype=tl.int32) + experts[:, None]
        tl.store(block_expert_ptr + starts[:, None] // BLOCK_M + j, owner, mask=j < blocks[:, None])
    first_pad = tl.where(experts < num_experts, starts + counts, ends)
    for j0 in tl.static_range(0, BLOCK_M, 16):
        pad_pos = first_pad[:, None] + j0 + offs_j[None, :]
        tl.store(sorted_ids_ptr + pad_pos, tl.zeros((NUM_BINS, 16), dtype=tl.int32) + num_pairs,
                 mask=pad_pos < ends[:, None])
    return starts


@triton.jit
def _align_small_kernel(
    topk_ids_ptr, expert_map_ptr, sorted_ids_ptr, block_expert_ptr, num_padded_ptr, cursor_ptr,
    num_pairs, num_experts,
    HAS_MAP: tl.constexpr, BLOCK_M: tl.constexpr, NUM_BINS: tl.constexpr, CHUNK: tl.constexpr,
):
    """All of it in one program, for P <= CHUNK."""
    offs = tl.arange(0, CHUNK)
    e = _local_experts(topk_ids_ptr, expert_map_ptr, offs, num_pairs, HAS_MAP)
    valid = e >= 0
    counts = tl.histogram(tl.where(valid, e, NUM_BINS - 1), NUM_BINS)
    starts = _layout(counts, sorted_ids_ptr, block_expert_ptr, num_padded_ptr, num_pairs, num_experts,
                     BLOCK_M, NUM_BINS)
    tl.store(cursor_ptr + tl.arange(0, NUM_BINS), starts)
    tl.debug_barrier()
    pos = tl.atomic_add(cursor_ptr + e, 1, mask=valid)
    tl.store(sorted_ids_ptr + pos, offs, mask=valid)


@triton.jit
def _count_kernel(topk_ids_ptr, expert_map_ptr, partial_ptr, num_pairs,
                  HAS_MAP: tl.constexpr, NUM_BINS: tl.constexpr, CHUNK: tl.constexpr):
    """partial[c, e]: pairs of chunk c on local expert e."""
    c = tl.program_id(0)
    offs = c * CHUNK + tl.arange(0, CHUNK)
    e = _local_experts(topk_ids_ptr, expert_map_ptr, offs, num_pairs, HAS_MAP)
    counts = tl.histogram(tl.where(e >= 0, e, NUM_BINS - 1), NUM_BINS)
    tl.store(partial_ptr + c * NUM_BINS + tl.arange(0, NUM_BINS), counts)


@triton.jit
def _scan_kernel(partial_ptr, sorted_ids_ptr, block_expert_ptr, num_padded_ptr, cursor_ptr,
                 num_pairs, num_experts, num_chunks,
                 BLOCK_M: tl.constexpr, NUM_BINS: tl.constexpr):
    """Totals, layout, and each chunk's first slot per expert (cursor[c, e])."""
    experts = tl.arange(0, NUM_BINS)
    counts = tl.zeros((NUM_BINS,), dtype=tl.int32)
    for c in range(num_chunks):
        counts += tl.load(partial_ptr + c * NUM_BINS + experts)
    running = _layout(counts, sorted_ids_ptr, block_expert_ptr, num_padded_ptr, num_pairs, num_experts,
                      BLOCK_M, NUM_BINS)
    for c in range(num_chunks):
        tl.store(cursor_ptr + c * NUM_BINS + experts, running)
        running += tl.load(partial_ptr + c * NUM_BINS + experts)


@triton.jit
def _scatter_kernel(topk_ids_ptr, expert_map_ptr, sorted_ids_ptr, cursor_ptr, num_pairs,
                    HAS_MAP: tl.constexpr, NUM_BINS: tl.constexpr, CHUNK: tl.constexpr):
    c = tl.program_id(0)
    offs = c * CHUNK + tl.arange(0, CHUNK)
    e = _local_experts(topk_ids_ptr, expert_map_ptr, offs, num_pairs, HAS_MAP)
    valid = e >= 0
    pos = tl.atomic_add(cursor_ptr + c * NUM_BINS + e, 1, mask=valid)
    tl.store(sorted_ids_ptr + pos, offs, mask=valid)


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
    bins = triton.next_power_of_2(num_experts + 1)  # one spare bin for pairs that go nowhere
    emap = expert_map if expert_map is not None else ids
    has_map = expert_map is not None
    if num_pairs <= CHUNK:
        chunk = max(16, triton.next_power_of_2(num_pairs))
        cursor = torch.empty(bins, dtype=torch.int32, device=device)
        _align_small_kernel[(1,)](ids, emap, sorted_ids, block_expert, num_padded, cursor, num_pairs, num_experts,
                                  HAS_MAP=has_map, BLOCK_M=block_m, NUM_BINS=bins, CHUNK=chunk, num_warps=4)
    else:
        chunks = triton.cdiv(num_pairs, CHUNK)
        partial = torch.empty((chunks, bins), dtype=torch.int32, device=device)
        cursor = torch.empty((chunks, bins), dtype=torch.int32, device=device)
        _count_kernel[(chunks,)](ids, emap, partial, num_pairs, HAS_MAP=has_map, NUM_BINS=bins, CHUNK=CHUNK,
                                 num_warps=4)
        _scan_kernel[(1,)](partial, sorted_ids, block_expert, num_padded, cursor, num_pairs, num_experts, chunks,
                           BLOCK_M=block_m, NUM_BINS=bins, num_warps=4)
        _scatter_kernel[(chunks,)](ids, emap, sorted_ids, cursor, num_pairs, HAS_MAP=has_map, NUM_BINS=bins,
                                   CHUNK=CHUNK, num_warps=4)
    return AlignedRouting(sorted_ids, block_expert, num_padded, block_m, num_pairs)
