"""AITER's layouts: each shuffle against its element-by-element definition, and its exact inverse."""

from __future__ import annotations

import types

import pytest
import torch

from moe_oracle.plugin import WeightError
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


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.element_size() == 1 else t


@pytest.mark.parametrize(("dtype", "pack"), [(torch.bfloat16, 8), (torch.float16, 8), (torch.float8_e4m3fn, 16)])
@pytest.mark.parametrize(("n", "k"), [(16, 32), (48, 96)])
def test_tiles_match_definition_and_invert(dtype: torch.dtype, pack: int, n: int, k: int,
                                           layouts: types.SimpleNamespace) -> None:
    w = torch.randn(3, n, k).to(dtype)
    shuffled = shuffle_tiles(w)
    assert shuffled.shape == w.shape and shuffled.dtype == dtype and shuffled.is_contiguous()
    assert torch.equal(_bytes(shuffled), _bytes(layouts.tiles(_bytes(w), pack)))
    assert torch.equal(_bytes(unshuffle_tiles(shuffled)), _bytes(w))


def test_tiles_of_int4_values_use_packs_of_32(layouts: types.SimpleNamespace) -> None:
    v = torch.randint(-8, 8, (2, 32, 64), dtype=torch.int8)
    shuffled = shuffle_tiles(v, int4=True)
    assert torch.equal(shuffled, layouts.tiles(v, 32))
    assert torch.equal(unshuffle_tiles(shuffled, int4=True), v)


def test_tiles_do_not_modify_input() -> None:
    w = torch.randn(1, 16, 32).to(torch.bfloat16)
    before = w.clone()
    shuffle_tiles(w)
    assert torch.equal(w, before)


@pytest.mark.parametrize(("shape", "name", "expected", "got"), [
    ((1, 24, 32), "weight rows", "N a multiple of 16", "24"),
    ((1, 16, 48), "weight columns", "K a multiple of 32", "48"),
])
def test_tiles_refuse_untileable_shapes(shape: tuple[int, ...], name: str, expected: str, got: str) -> None:
    with pytest.raises(WeightError, match=f"^{name}: expected {expected}, got {got}$"):
        shuffle_tiles(torch.zeros(shape, dtype=torch.bfloat16))


@pytest.mark.parametrize("gate_up", [True, False])
def test_a16w4_data_matches_definition_and_inverts(gate_up: bool, layouts: types.SimpleNamespace) -> None:
    w = torch.randint(0, 256, (2, 64, 128), dtype=torch.uint8)
    shuffled = shuffle_a16w4(w, gate_up=gate_up)
    assert torch.equal(shuffled, layouts.a16w4(w, gate_up))
    assert torch.equal(unshuffle_a16w4(shuffled, gate_up=gate_up), w)


def test_a16w4_gate_up_interleaves_halves_tile_by_tile() -> None:
    # Rows 0..15 of the gate half and rows 0..15 of the up half are the first two 16-row groups.
    e, n, kb = 1, 64, 64
    w = torch.arange(n, dtype=torch.uint8)[None, :, None].expand(e, n, kb).contiguous()
    rows_seen = shuffle_a16w4(w, gate_up=True).reshape(-1).unique_consecutive()
    assert rows_seen[:3].tolist() == [0, 1, 2]
    first_tile = shuffle_a16w4(w, gate_up=True).reshape(-1)[: 2 * 16 * 64]
    assert set(first_tile.tolist()) == set(range(16)) | set(range(32, 48))


@pytest.mark.parametrize("gate_up", [True, False])
def test_a16w4_scales_match_definition_and_invert(gate_up: bool, layouts: types.SimpleNamespace) -> None:
    e, n, g = 3, 64, 16
    s = torch.randint(100, 140, (e, n, g), dtype=torch.uint8)
    shuffled = shuffle_a16w4_scale(s.reshape(e * n, g), experts=e, gate_up=gate_up)
    assert shuffled.shape == (e * n, g)
    assert torch.equal(shuffled.reshape(e, n, g), layouts.a16w4_scale(s, gate_up))
    assert torch.equal(unshuffle_a16w4_scale(shuffled, experts=e, gate_up=gate_up), s.reshape(e * n, g))


def test_a16w4_refuses_short_k() -> None:
    with pytest.raises(WeightError, match=r"^mxfp4 weight bytes: expected Kb \(K/2\) a multiple of 64, got 32$"):
        shuffle_a16w4(torch.zeros(1, 32, 32, dtype=torch.uint8), gate_up=False)
    with pytest.raises(WeightError, match=r"^mxfp4 scale groups: expected K/32 a multiple of 8, got 4$"):
        shuffle_a16w4_scale(torch.zeros(32, 4, dtype=torch.uint8), experts=1, gate_up=False)


def test_int4_words_nibble_order(layouts: types.SimpleNamespace) -> None:
    v = torch.arange(8, dtype=torch.int8).reshape(1, 1, 8)                    # elements 0..7
    word = int(pack_int4_words(v).view(torch.int32).to(torch.int64)[0, 0, 0]) & 0xFFFFFFFF
    nibbles = [(word >> (4 * p)) & 0xF for p in range(8)]
    assert nibbles == list(layouts.int4_order)                              # nibble p holds element ORDER[p]


def test_int4_words_match_definition_and_invert(layouts: types.SimpleNamespace) -> None:
    v = torch.randint(-8, 8, (2, 16, 64), dtype=torch.int8)
    words = pack_int4_words(v)
    assert words.dtype == torch.uint32 and words.shape == (2, 16, 8)
    assert torch.equal(words.view(torch.int32).to(torch.int64) & 0xFFFFFFFF, layouts.int4_words(v))
    assert torch.equal(unpack_int4_words(words), v)


def test_fnuz_halves_values_and_drops_negative_zero() -> None:
    codes = torch.arange(256, dtype=torch.uint8)
    finite = codes[(codes & 0x7F) != 0x7F]                                  # e4m3fn NaNs out
    fn = finite.view(torch.float8_e4m3fn)
    fnuz = to_fnuz(fn)
    assert fnuz.dtype == torch.float8_e4m3fnuz
    assert torch.equal(fnuz.float() * 2, fn.float())                        # same bytes, half the value
    assert int(fnuz.view(torch.uint8)[finite == 0x80]) == 0                 # -0.0 -> +0.0, not fnuz NaN
    keep = finite != 0x80
    assert torch.equal(from_fnuz(fnuz).view(torch.uint8)[keep], finite[keep])
