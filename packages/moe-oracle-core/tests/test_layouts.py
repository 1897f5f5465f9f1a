"""The layout helpers converters share (``moe_oracle.kernel.layouts``): each against its definition and
its inverse."""

from __future__ import annotations

import pytest
import torch

from moe_oracle.kernel.layouts import deinterleave_gate_up, interleave_gate_up, pad_halves, pad_to, unpad_halves


def test_interleave_puts_gate_j_and_up_j_on_rows_2j_and_2j_plus_1() -> None:
    w = torch.arange(1 * 6 * 2).reshape(1, 6, 2)                              # gate rows 0-2, up rows 3-5
    mixed = interleave_gate_up(w)
    assert mixed[0, :, 0].tolist() == [0, 6, 2, 8, 4, 10]
    assert torch.equal(deinterleave_gate_up(mixed), w)


def test_interleave_along_another_dim() -> None:
    x = torch.arange(2 * 3 * 6).reshape(2, 3, 6)
    mixed = interleave_gate_up(x, dim=2)
    assert mixed[0, 0].tolist() == [0, 3, 1, 4, 2, 5]
    assert torch.equal(deinterleave_gate_up(mixed, dim=2), x)


def test_block_interleave_keeps_blocks_of_gate_then_up_rows() -> None:
    w = torch.arange(128).reshape(1, 128, 1)                                    # I = 64, blocks of 32
    mixed = interleave_gate_up(w, block=32)[0, :, 0].tolist()
    assert mixed[:32] == list(range(32)) and mixed[32:64] == list(range(64, 96))
    assert mixed[64:96] == list(range(32, 64)) and mixed[96:] == list(range(96, 128))
    assert torch.equal(deinterleave_gate_up(interleave_gate_up(w, block=32), block=32), w)
    with pytest.raises(ValueError, match="not two halves of multiples of 32"):
        interleave_gate_up(torch.zeros(1, 96, 1), block=32)


def test_padding_round_trips() -> None:
    t = torch.randn(2, 6, 5)
    padded = pad_halves(t, dim=1, half=4)
    assert padded.shape == (2, 8, 5) and torch.equal(padded[:, 3], torch.zeros(2, 5))
    assert torch.equal(unpad_halves(padded, dim=1, half=3), t)
    assert torch.equal(pad_to(t, dim=2, size=7)[..., :5], t) and pad_to(t, dim=2, size=7).shape == (2, 6, 7)
    e4m3 = t.to(torch.float8_e4m3fn)
    assert pad_to(e4m3, dim=2, size=8).dtype == torch.float8_e4m3fn
    with pytest.raises(ValueError, match="more than 4"):
        pad_to(t, dim=2, size=4)


def test_pad_halves_pads_gate_and_up_separately() -> None:
    t = torch.arange(1, 7).reshape(1, 6).float()  # gate 1 2 3, up 4 5 6
    padded = pad_halves(t, dim=1, half=5)
    assert padded.tolist() == [[1, 2, 3, 0, 0, 4, 5, 6, 0, 0]]
    assert torch.equal(unpad_halves(padded, dim=1, half=3), t)


def test_pad_halves_rejects_shrinking() -> None:
    with pytest.raises(ValueError, match="dimension 1 of size 6 cannot be padded to two halves of 2"):
        pad_halves(torch.zeros(1, 6), dim=1, half=2)


def test_pad_to_pads_fp8_through_its_bytes_with_zeros() -> None:
    t = torch.randn(2, 3, 4).to(torch.float8_e4m3fn)
    padded = pad_to(t, dim=2, size=6)
    assert padded.dtype == torch.float8_e4m3fn and padded.shape == (2, 3, 6)
    assert torch.equal(padded[..., :4].view(torch.uint8), t.view(torch.uint8))
    assert not padded[..., 4:].float().any()
    with pytest.raises(ValueError, match="dimension 2 has 4 entries, more than 3"):
        pad_to(t, dim=2, size=3)
