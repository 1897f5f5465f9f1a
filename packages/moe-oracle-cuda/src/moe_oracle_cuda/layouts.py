"""Pure-torch layout transforms the FlashInfer kernels need, each with its exact inverse.

Shape letters: E experts, N rows of a weight (``2*I`` for gated w13), K its input dimension,
I intermediate size, H hidden size, R/C rows/columns of a scale matrix. Every function returns a
new tensor and leaves its input untouched; converters chain them and the round-trip tests chain
the inverses back to the canonical tensors, bit for bit.

- Gate/up order. Canonical w13 is ``[gate; up]`` (``w13``); FlashInfer's gated GEMMs read
  ``[up; gate]`` (``w31``). ``swap_halves`` converts either way (it is its own inverse).
- Padding: core's ``pad_halves`` / ``pad_to`` (``moe_oracle.plugin``), undone by slicing.
- TRTLLM row permutations. ``gated_interleave_rows`` interleaves the two halves of w31
  (rows ``u0, g0, u1, g1, ...``) so the gated epilogue reads a pair in one load;
  ``shuffle_rows`` is TRT-LLM-gen's ``shuffleMatrixA`` for a 128-row epilogue tile: inside each
  block of 32 rows, row ``r`` moves to ``(r % 4) * 8 + r // 4``. Both are index vectors applied
  with ``t[..., idx, :]``; ``invert`` gives the inverse index.
- BlockMajorK. ``to_block_major_k`` turns ``[E, M, K]`` into ``[E, K/bk, M, bk]`` with ``bk`` the
  number of elements in 128 bytes (64 bf16, 128 fp8).
- Scale swizzle (nvfp4 / mxfp8 / mxfp4 on Blackwell). ``swizzle_128x4`` pads a ``[E, R, C]``
  scale matrix to ``R' = ceil(R/128)*128`` rows and ``C' = ceil(C/4)*4`` columns and stores each
  128x4 tile as ``[32, 4, 4]`` (row ``r`` of the tile at ``[r % 32, r // 32]``), tiles ordered row
  tile major: memory ``[E, R'/128, C'/4, 32, 4, 4]``, returned viewed as ``[E, R', C']``.
- SM90 mixed-input GEMM (mxfp4 weights, bf16 activations). ``sm90_interleave_fp4`` regroups the
  packed e2m1 bytes of rows ``r`` and ``r + 8`` (in groups of 16 rows) and 32-byte column groups
  as the Hopper LUT conversion reads them; ``sm90_interleave_scales`` stores ``[E, R, K/32]``
  e8m0 scales as ``[E, K/128, 4*R]`` (four consecutive scales of a row together).
"""

from __future__ import annotations

import functools

import torch

from moe_oracle.plugin import pad_to, round_up

BLOCK_MAJOR_K_BYTES = 128
EPILOGUE_TILE_M = 128




# Gate/up order and padding ---------------------------------------------------------------
def swap_halves(t: torch.Tensor, *, dim: int) -> torch.Tensor:
    """``[gate; up]`` <-> ``[up; gate]`` along ``dim`` (its size must be even); self-inverse."""
    n = t.shape[dim]
    if n % 2:
        raise ValueError(f"swap_halves: dimension {dim} has odd size {n}, expected [gate; up] halves")
    gate, up = t.split(n // 2, dim=dim)
    return torch.cat((up, gate), dim=dim)








# TRTLLM row permutations -------------------------------------------------------------------
@functools.cache
def _gated_interleave(n: int) -> torch.Tensor:
    idx = torch.arange(n)
    out = torch.empty(n, dtype=torch.long)
    out[0::2] = idx[: n // 2]
    out[1::2] = idx[n // 2:]
    return out


def gated_interleave_rows(n: int) -> torch.Tensor:
    """Row index ``[n]`` taking ``[u0..u(n/2-1); g0..]`` to ``u0, g0, u1, g1, ...`` (n even)."""
    if n % 2:
        raise ValueError(f"gated_interleave_rows: expected an even row count, got {n}")
    return _gated_interleave(n)


@functools.cache
def _shuffle(n: int, block: int) -> torch.Tensor:
    old = torch.arange(n)
    within = old % block
    per = block // 8
    new = old // block * block + (within % per) * 8 + within // per
    out = torch.empty(n, dtype=torch.long)
    out[new] = old
    return out


def shuffle_rows(n: int, epilogue_tile_m: int = EPILOGUE_TILE_M) -> torch.Tensor:
    """Row index ``[n]`` of TRT-LLM-gen's ``shuffleMatrixA``: ``out[i] = t[idx[i]]``.

    The block is 32 rows for a tile of a multiple of 128 rows, else 16; ``n`` must be a multiple.
    """
    block = 32 if epilogue_tile_m % 128 == 0 else 16
    if n % block:
        raise ValueError(f"shuffle_rows: {n} rows is not a multiple of the {block}-row shuffle block")
    return _shuffle(n, block)


def invert(index: torch.Tensor) -> torch.Tensor:
    """The inverse permutation: ``t[index][invert(index)] == t``."""
    return torch.argsort(index)


def permute_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[..., index, :]`` for ``[E, N, K]`` (rows are dim -2) or ``[E, N]`` (dim -1) tensors."""
    index = index.to(t.device)
    if t.dim() == 2:
        return t[:, index].contiguous()
    return t[:, index, :].contiguous()


# BlockMajorK ---------------------------------------------------------------------------------
def block_k_elements(dtype: torch.dtype, block_bytes: int = BLOCK_MAJOR_K_BYTES) -> int:
    return block_bytes // torch.empty((), dtype=dtype).element_size()


def to_block_major_k(t: torch.Tensor, block_bytes: int = BLOCK_MAJOR_K_BYTES) -> torch.Tensor:
    """``[E, M, K]`` -> ``[E, K/bk, M, bk]``, ``bk`` elements filling ``block_bytes`` (contiguous)."""
    e, m, k = t.shape
    bk = block_k_elements(t.dtype, block_bytes)
    if k % bk:
        raise ValueError(f"to_block_major_k: K={k} is not a multiple of the {bk}-element ({block_bytes}-byte) block")
    return t.reshape(e, m, k // bk, bk).permute(0, 2, 1, 3).contiguous()


def from_block_major_k(t: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_block_major_k``: ``[E, K/bk, M, bk]`` -> ``[E, M, K]``."""
    e, kb, m, bk = t.shape
    return t.permute(0, 2, 1, 3).reshape(e, m, kb * bk).contiguous()


# 128x4 scale swizzle --------------------------------------------------------------------------
def swizzle_128x4(sf: torch.Tensor) -> torch.Tensor:
    """``[E, R, C]`` scale bytes -> the 128x4-tiled layout, viewed ``[E, R', C']`` (zero padded)."""
    e, r, c = sf.shape
    rp, cp = round_up(r, 128), round_up(c, 4)
    padded = pad_to(pad_to(sf, dim=1, size=rp), dim=2, size=cp)
    tiles = padded.reshape(e, rp // 128, 4, 32, cp // 4, 4).permute(0, 1, 4, 3, 2, 5)
    return tiles.contiguous().reshape(e, rp, cp)


def unswizzle_128x4(sf: torch.Tensor, *, rows: int, cols: int) -> torch.Tensor:
    """Inverse of ``swizzle_128x4``: back to ``[E, rows, cols]``."""
    e, rp, cp = sf.shape
    tiles = sf.reshape(e, rp // 128, cp // 4, 32, 4, 4).permute(0, 1, 4, 3, 2, 5)
    return tiles.reshape(e, rp, cp)[:, :rows, :cols].contiguous()


# SM90 mixed-input GEMM (mxfp4 weights x bf16 activations) -------------------------------------
@functools.cache
def _sm90_lane_targets() -> tuple[torch.Tensor, torch.Tensor]:
    """For each of the 32 byte lanes of a column group: destination half (0: row r, 1: row r+8)
    and destination byte within the 32-byte group (the first of the two bytes it writes)."""
    lane = torch.arange(32)
    half = (lane // 8) % 2
    pos = lane // 16 * 16 + (lane % 4) * 4 + (lane % 8) // 4 * 2
    return half, pos


def sm90_interleave_fp4(w: torch.Tensor) -> torch.Tensor:
    """Packed e2m1 ``[E, N, K/2]`` uint8 -> the SM90 mixed-GEMM layout, same shape.

    For rows ``r`` and ``r + 8`` of each 16-row group and byte ``j`` of each 32-byte column group,
    bytes ``a = w[r, j]`` and ``b = w[r + 8, j]`` become ``a' = lo(a) | lo(b) << 4`` and
    ``b' = hi(a) | hi(b) << 4``, written to bytes ``pos(j), pos(j) + 1`` of row ``r + 8 * half(j)``.
    Needs N % 16 == 0 and K % 64 == 0.
    """
    e, n, kb = w.shape
    if n % 16 or kb % 32:
        raise ValueError(f"sm90_interleave_fp4: needs N % 16 == 0 and K % 64 == 0, got N={n}, K={2 * kb}")
    g = w.reshape(e, n // 16, 2, 8, kb // 32, 32)
    a, b = g[:, :, 0], g[:, :, 1]  # [E, N/16, 8, K/64, 32]
    a_new = (a & 0x0F) | ((b & 0x0F) << 4)
    b_new = (a >> 4) | (b & 0xF0)
    half, pos = _sm90_lane_targets()
    slots = (half * 32 + pos).to(w.device)
    out = torch.empty(e, n // 16, 8, kb // 32, 64, dtype=torch.uint8, device=w.device)
    out[..., slots] = a_new
    out[..., slots + 1] = b_new
    return out.reshape(e, n // 16, 8, kb // 32, 2, 32).permute(0, 1, 4, 2, 3, 5).reshape(e, n, kb).contiguous()


def sm90_deinterleave_fp4(w: torch.Tensor) -> torch.Tensor:
    """Inverse of ``sm90_interleave_fp4``."""
    e, n, kb = w.shape
    out64 = w.reshape(e, n // 16, 2, 8, kb // 32, 32).permute(0, 1, 3, 4, 2, 5).reshape(e, n // 16, 8, kb // 32, 64)
    half, pos = _sm90_lane_targets()
    slots = (half * 32 + pos).to(w.device)
    a_new, b_new = out64[..., slots], out64[..., slots + 1]
    a = (a_new & 0x0F) | ((b_new & 0x0F) << 4)
    b = (a_new >> 4) | (b_new & 0xF0)
    return torch.stack((a, b), dim=2).reshape(e, n, kb).contiguous()


def sm90_interleave_scales(sf: torch.Tensor, *, group: int = 32) -> torch.Tensor:
    """e8m0 ``[E, R, K/group]`` -> ``[E, K/(4*group), 4*R]``: each row's 4 consecutive scales together."""
    e, r, c = sf.shape
    factor = 128 // group
    if c % factor:
        raise ValueError(f"sm90_interleave_scales: {c} scale columns is not a multiple of {factor}")
    return sf.reshape(e, r, c // factor, factor).permute(0, 2, 1, 3).reshape(e, c // factor, r * factor).contiguous()


def sm90_deinterleave_scales(sf: torch.Tensor, *, group: int = 32) -> torch.Tensor:
    """Inverse of ``sm90_interleave_scales``."""
    e, cf, rf = sf.shape
    factor = 128 // group
    return sf.reshape(e, cf, rf // factor, factor).permute(0, 2, 1, 3).reshape(e, rf // factor, cf * factor).contiguous()
