"""Grouped int4/int8 weights (int4_w4a16, int8_w8a16_group, w4a8_*): nibble order, offsets, zero points."""

import pytest
import torch

from moe_oracle.config.quant import QuantScheme
from moe_oracle.quant import dequantize_weights, pack_nibbles, quantize_weights, unpack_nibbles

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_nibble_order_low_first() -> None:
    codes = torch.tensor([[1, 2, 3, 4, 15, 0]], dtype=torch.uint8)
    packed = pack_nibbles(codes)
    assert packed.tolist() == [[0x21, 0x43, 0x0F]]
    assert torch.equal(unpack_nibbles(packed), codes)
    every = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(pack_nibbles(unpack_nibbles(every)), every)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme", ["int4_w4a16_g32", "w4a8_int8_g32"])
def test_int4_symmetric_hand_bytes(device: str, scheme: str) -> None:
    w = torch.zeros(1, 1, 32, device=device)
    w[0, 0, :8] = torch.tensor([7.0, -7.0, 0.0, 1.0, -1.0, 2.5, -2.5, 3.5])
    q = quantize_weights(scheme, w)
    # amax 7 -> scale 1; q = 7 -7 0 1 -1 2 -2 4 (ties to even), stored u = q + 8 = 15 1 8 9 7 10 6 12.
    assert q.scale.tolist() == [[[1.0]]] and q.zero_point is None
    assert q.data.tolist() == [[[0x1F, 0x98, 0xA7, 0xC6] + [0x88] * 12]]
    d = dequantize_weights(scheme, q.data, q.scale)
    assert d[0, 0, :8].tolist() == [7.0, -7.0, 0.0, 1.0, -1.0, 2.0, -2.0, 4.0] and not d[0, 0, 8:].any()


@pytest.mark.parametrize("device", DEVICES)
def test_int4_asymmetric_hand_bytes(device: str) -> None:
    w = torch.zeros(1, 2, 32, device=device)
    w[0, 0, :6] = torch.tensor([-1.0, 14.0, 0.0, 2.5, 3.5, 5.0])
    w[0, 1, :2] = torch.tensor([3.0, 1.5])  # all >= 0: min clamps to 0, zero point 0, scale 3/15
    q = quantize_weights("int4_w4a16_g32_zp", w)
    # row 0: scale (14 - -1) / 15 = 1, zero point round(1 / 1) = 1, u = round(x) + 1 = 0 15 1 3 5 6, rest 1.
    assert q.zero_point.dtype == torch.uint8 and q.zero_point.tolist() == [[[1], [0]]]
    assert q.data[0, 0].tolist() == [0xF0, 0x31, 0x65] + [0x11] * 13
    assert q.data[0, 1].tolist() == [0x8F] + [0x00] * 15  # 3 / 0.2 = 15, 1.5 / 0.2 = 7.5 -> 8
    assert q.scale[0, 0].item() == 1.0 and q.scale[0, 1].item() == (torch.tensor(3.0) / 15).item()
    d = dequantize_weights("int4_w4a16_g32_zp", q.data, q.scale, q.zero_point)
    assert d[0, 0, :6].tolist() == [-1.0, 14.0, 0.0, 2.0, 4.0, 5.0]
    torch.testing.assert_close(d[0, 1, :2], torch.tensor([3.0, 1.6], device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_int8_grouped_hand_bytes(device: str) -> None:
    w = torch.zeros(1, 1, 64, device=device)
    w[0, 0, :3] = torch.tensor([127.0, -0.5, 1.5])  # group 0 (symmetric): scale 1
    w[0, 0, 32:36] = torch.tensor([-1.0, 254.0, 0.0, 100.5])  # group 1
    q = quantize_weights("int8_w8a16_group_g32", w)
    assert q.data.dtype == torch.int8 and q.scale.tolist() == [[[1.0, 2.0]]]
    assert q.data[0, 0, :3].tolist() == [127, 0, 2] and q.data[0, 0, 32:36].tolist() == [0, 127, 0, 50]
    # asymmetric group 1: scale 255/255 = 1, zero point 1, u = round(x) + 1 = 0 255 1 101, stored
    # as u - 128; group 0: scale 127.5/255 = 0.5, zero point round(0.5 / 0.5) = 1.
    qz = quantize_weights("int8_w8a16_group_g32_zp", w)
    assert qz.zero_point.tolist() == [[[1, 1]]] and qz.scale.tolist() == [[[0.5, 1.0]]]
    assert qz.data[0, 0, 32:36].tolist() == [-128, 127, -127, -27]
    d = dequantize_weights("int8_w8a16_group_g32_zp", qz.data, qz.scale, qz.zero_point)
    assert d[0, 0, 32:36].tolist() == [-1.0, 254.0, 0.0, 100.0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme", ["int4_w4a16", "int4_w4a16_g64_zp", "int8_w8a16_group_g32",
                                    "int8_w8a16_group_zp", "w4a8_int8_g64", "w4a8_fp8"])
def test_round_trip_within_half_a_step(device: str, scheme: str) -> None:
    gen = torch.Generator().manual_seed(2)
    w = (torch.randn(2, 24, 320, generator=gen) + 0.3).to(device, torch.bfloat16)  # 320: a partial group of 64
    q = quantize_weights(scheme, w)
    d = dequantize_weights(scheme, q.data, q.scale, q.zero_point)
    g = QuantScheme.parse(scheme).group_size
    s = q.scale.repeat_interleave(g, dim=-1)[..., :320]
    # the largest element of an asymmetric group can land exactly half a step away (its code
    # round(x/s) + z rounds up to 2**bits and is clamped); 1e-6 * |w| is float32 arithmetic slack.
    assert d.shape == w.shape and torch.all((d - w.float()).abs() <= s * 0.5 + w.float().abs() * 1e-6)

