"""AITER's weight layouts in plain torch, each with its exact inverse.

Shape letters: E experts, N output rows of a weight (``2*I`` for w13, ``H`` for w2), K its input
length in elements, Kb the same in bytes for packed 4-bit data (``K/2``).

Tile shuffle ``(16, 16)`` (what ``aiter.ops.shuffle.shuffle_weight`` does for bf16, fp8 and int4
weights): rows are cut into blocks of 16, K into blocks of 32, and each 32-wide block into packs of
``P`` consecutive elements (16 bytes: P = 8 for bf16, 16 for fp8; P = 32 for int4 values held one
per int8). Viewing ``[E, N, K]`` as ``[E, N/16, 16, K/32, 32/P, P]`` the shuffle stores it in the
order ``[E, N/16, K/32, 32/P, 16, P]``: one 16-row x 32-column tile after another, and within a
tile the 16 rows' first packs, then their second packs.

a16w4 shuffles (``shuffle_weight_a16w4`` / ``shuffle_scale_a16w4``, the MXFP4 kernels'):

- data ``[E, N, Kb]`` uint8: with 16 lanes of 16-byte packs (KLane = 4), ``[E, N/16, 16, Kb/64,
  4, 16]`` is stored as ``[E, N/16, Kb/64, 4, 16, 16]``; for w13 (``gate_up``) the gate and up
  halves are interleaved tile by tile first: ``[E, 2, I/16, 16, Kb/64, 4, 16]`` is stored as
  ``[E, I/16, 2, Kb/64, 4, 16, 16]``.
- e8m0 scales ``[E*N, G]`` (G = K/32 groups): with N_Pack = K_Pack = 2, N_Lane = 16, K_Lane = 4,
  ``[E, N/32, 2, 16, G/8, 2, 4]`` is stored as ``[E, N/32, G/8, 4, 16, 2, 2]``; for w13 the gate /
  up halves are the N_Pack axis: ``[E, 2, I/16, 16, G/8, 2, 4]`` stored as ``[E, I/16, G/8, 4, 16,
  2, 2]``.

int4 words (AITER's w4a8 weights, after the tile shuffle with P = 32): eight signed 4-bit values
per uint32, ``[E, N, K]`` int8 -> ``[E, N, K/8]`` uint32; nibble ``p`` (bits ``4p..4p+3``) of word
``j`` holds element ``8j + ORDER[p]`` with ``ORDER = (0, 2, 4, 6, 1, 3, 5, 7)``, as AITER's
``convert_int8_to_uint32_int4`` then ``rearrange_4bit_elements`` leave it.

fnuz fp8 (gfx942): the same byte is worth half as much in ``float8_e4m3fnuz`` as in
``float8_e4m3fn``, so bytes are kept and scales doubled; the e4m3fn byte 0x80 (-0.0) is NaN in
fnuz and becomes 0x00.
"""

from __future__ import annotations

import torch

from moe_oracle.plugin import WeightError

TILE_ROWS = 16
TILE_COLS = 32
INT4_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32}


def _as_int(t: torch.Tensor) -> torch.Tensor:
    """A same-size integer view, so permutes and copies work for every dtype (fp8, fp4x2, uint32)."""
    return t.view(_SAME_SIZE_INT[t.element_size()])


def _pack(dtype: torch.dtype, int4: bool) -> int:
    return 32 if int4 else 16 // dtype.itemsize


def _need(name: str, size: int, multiple: int, what: str) -> None:
    if size % multiple:
        raise WeightError(name, f"{what} a multiple of {multiple}", size)


# (16, 16) tile shuffle ---------------------------------------------------------------------------
def shuffle_tiles(w: torch.Tensor, *, int4: bool = False) -> torch.Tensor:
    """AITER's ``(16, 16)`` tile shuffle of ``w`` ``[E, N, K]`` (any 1-, 2- or 4-byte dtype).

    ``int4=True``: ``w`` holds one signed int4 value per int8 element (packs of 32). Returns a new
    contiguous tensor of the same shape and dtype. Raises ``WeightError`` unless N % 16 == 0 and
    K % 32 == 0.
    """
    e, n, k = w.shape
    _need("weight rows", n, TILE_ROWS, "N")
    _need("weight columns", k, TILE_COLS, "K")
    p = _pack(w.dtype, int4)
    x = _as_int(w).reshape(e, n // TILE_ROWS, TILE_ROWS, k // TILE_COLS, TILE_COLS // p, p)
    return x.permute(0, 1, 3, 4, 2, 5).contiguous().reshape(e, n, k).view(w.dtype)


def unshuffle_tiles(w: torch.Tensor, *, int4: bool = False) -> torch.Tensor:
    """Exact inverse of ``shuffle_tiles``: ``[E, N, K]`` shuffled -> ``[E, N, K]`` row-major."""
    e, n, k = w.shape
    p = _pack(w.dtype, int4)
    x = _as_int(w).reshape(e, n // TILE_ROWS, k // TILE_COLS, TILE_COLS // p, TILE_ROWS, p)
    return x.permute(0, 1, 4, 2, 3, 5).contiguous().reshape(e, n, k).view(w.dtype)


# a16w4 (MXFP4) shuffles ----------------------------------------------------------------------------
_LANES, _K_LANES, _K_PACK = 16, 4, 16


def shuffle_a16w4(w: torch.Tensor, *, gate_up: bool) -> torch.Tensor:
    """AITER's a16w4 shuffle of packed e2m1 data ``[E, N, Kb]`` uint8; ``gate_up`` for w13.

    Raises ``WeightError`` unless (N/2 if gate_up else N) % 16 == 0 and Kb % 64 == 0.
    """
    e, n, kb = w.shape
    rows = n // 2 if gate_up else n
    _need("mxfp4 weight rows", rows, _LANES, "rows per half" if gate_up else "N")
    _need("mxfp4 weight bytes", kb, _K_LANES * _K_PACK, "Kb (K/2)")
    n0, k0 = rows // _LANES, kb // (_K_LANES * _K_PACK)
    x = _as_int(w)
    if gate_up:
        x = x.reshape(e, 2, n0, _LANES, k0, _K_LANES, _K_PACK).permute(0, 2, 1, 4, 5, 3, 6)
    else:
        x = x.reshape(e, n0, _LANES, k0, _K_LANES, _K_PACK).permute(0, 1, 3, 4, 2, 5)
    return x.contiguous().reshape(e, n, kb).view(w.dtype)


def unshuffle_a16w4(w: torch.Tensor, *, gate_up: bool) -> torch.Tensor:
    """Exact inverse of ``shuffle_a16w4``."""
    e, n, kb = w.shape
    rows = n // 2 if gate_up else n
    n0, k0 = rows // _LANES, kb // (_K_LANES * _K_PACK)
    x = _as_int(w)
    if gate_up:
        x = x.reshape(e, n0, 2, k0, _K_LANES, _LANES, _K_PACK).permute(0, 2, 1, 5, 3, 4, 6)
    else:
        x = x.reshape(e, n0, k0, _K_LANES, _LANES, _K_PACK).permute(0, 1, 4, 2, 3, 5)
    return x.contiguous().reshape(e, n, kb).view(w.dtype)


_S_NPACK, _S_KPACK, _S_NLANE, _S_KLANE = 2, 2, 16, 4


def shuffle_a16w4_scale(s: torch.Tensor, *, experts: int, gate_up: bool) -> torch.Tensor:
    """AITER's a16w4 shuffle of e8m0 scales ``[E*N, G]`` (one byte each); ``gate_up`` for w13.

    Raises ``WeightError`` unless N % 32 == 0 and G % 8 == 0 (K a multiple of 256).
    """
    rows, g = s.shape
    n = rows // experts
    _need("mxfp4 scale rows per expert", n, _S_NPACK * _S_NLANE, "N")
    _need("mxfp4 scale groups", g, _S_KPACK * _S_KLANE, "K/32")
    n1, k1 = n // (_S_NPACK * _S_NLANE), g // (_S_KPACK * _S_KLANE)
    x = _as_int(s)
    if gate_up:
        x = x.reshape(experts, _S_NPACK, n1, _S_NLANE, k1, _S_KPACK, _S_KLANE).permute(0, 2, 4, 6, 3, 5, 1)
    else:
        x = x.reshape(experts, n1, _S_NPACK, _S_NLANE, k1, _S_KPACK, _S_KLANE).permute(0, 1, 4, 6, 3, 5, 2)
    return x.contiguous().reshape(rows, g).view(s.dtype)


def unshuffle_a16w4_scale(s: torch.Tensor, *, experts: int, gate_up: bool) -> torch.Tensor:
    """Exact inverse of ``shuffle_a16w4_scale``."""
    rows, g = s.shape
    n1, k1 = rows // experts // (_S_NPACK * _S_NLANE), g // (_S_KPACK * _S_KLANE)
    x = _as_int(s).reshape(experts, n1, k1, _S_KLANE, _S_NLANE, _S_KPACK, _S_NPACK)
    x = x.permute(0, 6, 1, 4, 2, 5, 3) if gate_up else x.permute(0, 1, 6, 4, 2, 5, 3)
    return x.contiguous().reshape(rows, g).view(s.dtype)


# int4 words ------------------------------------------------------------------------------------------
def pack_int4_words(v: torch.Tensor) -> torch.Tensor:
    """Signed int4 values ``[E, N, K]`` int8 (each in [-8, 7]) -> ``[E, N, K/8]`` uint32 words."""
    e, n, k = v.shape
    _need("int4 values", k, 8, "K")
    nibbles = (v.to(torch.int64) & 0xF).reshape(e, n, k // 8, 8)[..., list(INT4_ORDER)]  # [E, N, K/8, 8]
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=v.device)
    words = (nibbles << shifts).sum(dim=-1)                                             # [E, N, K/8] in [0, 2^32)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).view(torch.uint32)


def unpack_int4_words(words: torch.Tensor) -> torch.Tensor:
    """Exact inverse of ``pack_int4_words``: ``[E, N, K/8]`` uint32 -> ``[E, N, K]`` int8."""
    e, n, kw = words.shape
    w64 = words.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=words.device)
    nibbles = (w64[..., None] >> shifts) & 0xF                                        # [E, N, K/8, 8] by nibble
    values = torch.empty_like(nibbles)
    values[..., list(INT4_ORDER)] = nibbles                                            # by element
    return ((values ^ 8) - 8).to(torch.int8).reshape(e, n, kw * 8)


# fnuz fp8 ---------------------------------------------------------------------------------------------
def to_fnuz(data: torch.Tensor) -> torch.Tensor:
    """e4m3fn bytes -> e4m3fnuz (value halves; pair with ``scale * 2``); -0.0 becomes +0.0."""
    raw = data.view(torch.uint8)
    return torch.where(raw == 0x80, torch.zeros_like(raw), raw).view(torch.float8_e4m3fnuz)


def from_fnuz(data: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_fnuz`` (pair with ``scale / 2``)."""
    return data.view(torch.uint8).view(torch.float8_e4m3fn)
