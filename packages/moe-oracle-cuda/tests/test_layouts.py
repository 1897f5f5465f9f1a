"""Layout transforms: each against its definition (or FlashInfer's own helper when installed) and
its inverse, bit for bit."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from moe_oracle_cuda import layouts as L

HAS_FLASHINFER = importlib.util.find_spec("flashinfer") is not None
needs_flashinfer = pytest.mark.skipif(not HAS_FLASHINFER, reason="flashinfer not installed (pip install flashinfer-python)")


def _bytes(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# Gate/up halves and padding ------------------------------------------------------------------------
def test_swap_halves_puts_up_first_and_is_its_own_inverse() -> None:
    w13 = torch.arange(2 * 6 * 3).reshape(2, 6, 3)
    w31 = L.swap_halves(w13, dim=1)
    assert torch.equal(w31[:, :3], w13[:, 3:]) and torch.equal(w31[:, 3:], w13[:, :3])
    assert torch.equal(L.swap_halves(w31, dim=1), w13)


def test_swap_halves_rejects_an_odd_dimension() -> None:
    with pytest.raises(ValueError, match=r"dimension 1 has odd size 5, expected \[gate; up\] halves"):
        L.swap_halves(torch.zeros(2, 5, 3), dim=1)


# TRTLLM row permutations ---------------------------------------------------------------------------
def test_gated_interleave_alternates_up_and_gate_rows() -> None:
    assert L.gated_interleave_rows(8).tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    with pytest.raises(ValueError, match="expected an even row count, got 7"):
        L.gated_interleave_rows(7)


def test_shuffle_rows_moves_row_r_of_a_32_block_to_r_mod_4_times_8_plus_r_div_4() -> None:
    idx = L.shuffle_rows(64)
    for old in range(64):
        block, r = divmod(old, 32)
        assert idx[block * 32 + (r % 4) * 8 + r // 4] == old
    with pytest.raises(ValueError, match="48 rows is not a multiple of the 32-row shuffle block"):
        L.shuffle_rows(48)
    assert L.shuffle_rows(48, epilogue_tile_m=64).shape == (48,)  # 16-row blocks below a 128 tile


def test_invert_undoes_a_permutation() -> None:
    t = torch.randn(64, 3)
    idx = L.gated_interleave_rows(64)[L.shuffle_rows(64)]
    assert torch.equal(t[idx][L.invert(idx)], t)


@needs_flashinfer
@pytest.mark.parametrize("rows", [64, 256])
def test_row_permutations_match_flashinfer(rows: int) -> None:
    from flashinfer import shuffle_matrix_a
    from flashinfer.fused_moe.core import reorder_rows_for_gated_act_gemm

    x = torch.randn(rows, 40).to(torch.bfloat16)
    assert torch.equal(x[L.gated_interleave_rows(rows)], reorder_rows_for_gated_act_gemm(x))
    for tile in (128, 64):
        assert torch.equal(x[L.shuffle_rows(rows, tile)], shuffle_matrix_a(x, tile))


# BlockMajorK ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("dtype", "bk"), [(torch.bfloat16, 64), (torch.float8_e4m3fn, 128), (torch.uint8, 128)])
def test_block_major_k_blocks_128_bytes(dtype: torch.dtype, bk: int) -> None:
    w = torch.randn(3, 32, 256).to(dtype)
    b = L.to_block_major_k(w)
    assert b.shape == (3, 256 // bk, 32, bk)
    assert torch.equal(b[1, 1, 5].view(torch.uint8), w[1, 5, bk:2 * bk].view(torch.uint8))
    assert torch.equal(L.from_block_major_k(b).view(torch.uint8), w.view(torch.uint8))


def test_block_major_k_rejects_a_ragged_k() -> None:
    with pytest.raises(ValueError, match=r"K=96 is not a multiple of the 64-element \(128-byte\) block"):
        L.to_block_major_k(torch.zeros(1, 4, 96, dtype=torch.bfloat16))


@needs_flashinfer
def test_block_major_k_matches_flashinfer_on_bytes() -> None:
    from flashinfer.fused_moe.core import convert_to_block_layout

    w = torch.randn(2, 64, 256).to(torch.bfloat16)
    theirs = torch.stack([convert_to_block_layout(w[e].view(torch.uint8), 128) for e in range(2)])
    assert torch.equal(L.to_block_major_k(w).view(torch.uint8).reshape(theirs.shape), theirs)


# 128x4 scale swizzle -------------------------------------------------------------------------------
def _swizzle_index(r: int, c: int, cols_padded: int) -> int:
    """TensorRT-LLM's computeSFIndex for the 128x4 layout, written out."""
    return (c % 4 + (c // 4) * 512 + (r % 32) * 16 + (r % 128 // 32) * 4 + (r // 128) * 128 * cols_padded)


@pytest.mark.parametrize(("rows", "cols"), [(128, 4), (130, 6), (256, 16)])
def test_swizzle_128x4_follows_the_tiled_index_and_pads_with_zeros(rows: int, cols: int) -> None:
    sf = _bytes(2, rows, cols)
    sw = L.swizzle_128x4(sf)
    rp, cp = -(-rows // 128) * 128, -(-cols // 4) * 4
    assert sw.shape == (2, rp, cp)
    flat = sw.reshape(2, -1)
    for r in (0, 1, 31, 32, 127, rows - 1):
        for c in (0, 3, cols - 1):
            assert flat[1, _swizzle_index(r, c, cp)] == sf[1, r, c]
    assert int(flat.ne(0).sum()) == int(sf.ne(0).sum())  # the padding is zeros
    assert torch.equal(L.unswizzle_128x4(sw, rows=rows, cols=cols), sf)


# SM90 mixed-input interleave -----------------------------------------------------------------------
def _sm90_interleave_loop(w: torch.Tensor) -> torch.Tensor:
    """The SM90 fp4 interleave kernel's loops, one byte pair at a time (the definition)."""
    rows, kb = w.shape
    out = torch.empty_like(w)
    for block_id in range(rows // 2):
        row = block_id // 8 * 16 + block_id % 8
        for part in range(kb // 32):
            for lane in range(32):
                dst_row = row + (lane // 8 % 2) * 8
                dst_col = part * 32 + lane // 16 * 16 + (lane % 4) * 4 + (lane % 8) // 4 * 2
                a, b = int(w[row, part * 32 + lane]), int(w[row + 8, part * 32 + lane])
                out[dst_row, dst_col] = (a & 0x0F) | ((b & 0x0F) << 4)
                out[dst_row, dst_col + 1] = (b & 0xF0) | ((a & 0xF0) >> 4)
    return out


def test_sm90_interleave_fp4_matches_the_kernel_loops_and_inverts() -> None:
    w = _bytes(2, 32, 64)
    mine = L.sm90_interleave_fp4(w)
    assert torch.equal(mine[1], _sm90_interleave_loop(w[1]))
    assert torch.equal(L.sm90_deinterleave_fp4(mine), w)


def test_sm90_interleave_fp4_rejects_unaligned_shapes() -> None:
    with pytest.raises(ValueError, match="needs N % 16 == 0 and K % 64 == 0, got N=24, K=64"):
        L.sm90_interleave_fp4(_bytes(1, 24, 32))


def test_sm90_interleave_scales_groups_four_scales_of_a_row() -> None:
    sf = _bytes(2, 6, 8)
    out = L.sm90_interleave_scales(sf)
    assert out.shape == (2, 2, 24)
    assert out[1, 1, 4 * 5:4 * 6].tolist() == sf[1, 5, 4:8].tolist()
    assert torch.equal(L.sm90_deinterleave_scales(out), sf)
    with pytest.raises(ValueError, match="6 scale columns is not a multiple of 4"):
        L.sm90_interleave_scales(_bytes(1, 2, 6))


@needs_flashinfer
def test_sm90_interleave_scales_matches_flashinfer() -> None:
    from flashinfer.fused_moe import interleave_moe_scales_for_sm90_mixed_gemm

    sf = _bytes(3, 16, 8)
    assert torch.equal(L.sm90_interleave_scales(sf), interleave_moe_scales_for_sm90_mixed_gemm(sf))
