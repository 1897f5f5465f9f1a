"""FP8 e4m3: hand-computed bytes, the e4m3fn definition, round-trip bounds, per-tensor/channel/block/group."""

import pytest
import torch

from moe_oracle.quant import dequantize_weights, fake_quantize_activation, quantize_activation, quantize_weights
from moe_oracle.quant.fp8 import FP8_E4M3_MAX, to_e4m3

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def raw(t: torch.Tensor) -> list[int]:
    """The stored bytes of a float8 tensor, flattened."""
    return t.cpu().view(torch.uint8).flatten().tolist()


def e4m3_value(byte: int) -> float:
    """e4m3fn by its definition: 1 sign, 4 exponent bits (bias 7), 3 mantissa bits, S.1111.111 = NaN."""
    sign = -1.0 if byte & 0x80 else 1.0
    exp, man = (byte >> 3) & 0xF, byte & 0x7
    if exp == 0xF and man == 0x7:
        return float("nan")
    if exp == 0:
        return sign * man / 8 * 2.0 ** -6
    return sign * (1 + man / 8) * 2.0 ** (exp - 7)


def test_e4m3_definition() -> None:
    codes = torch.arange(256, dtype=torch.uint8)
    ours = codes.view(torch.float8_e4m3fn).float()
    ref = torch.tensor([e4m3_value(b) for b in range(256)])
    assert torch.equal(ours.isnan(), ref.isnan())
    assert torch.equal(ours[~ref.isnan()], ref[~ref.isnan()])
    assert FP8_E4M3_MAX == 448.0 == e4m3_value(0x7E) == torch.finfo(torch.float8_e4m3fn).max
    assert ref.isnan().sum() == 2  # only 0x7F and 0xFF


@pytest.mark.parametrize("device", DEVICES)
def test_to_e4m3_rounds_to_nearest_even_and_saturates(device: str) -> None:
    x = torch.tensor([1.0, 0.5, 1.125, 1.0625, 1.1875, 448.0, 460.0, 500.0, -1e6, 2.0 ** -9, 2.0 ** -11, 0.0],
                     device=device)
    # 1.0625 is the midpoint of 1.0 (m=000) and 1.125 (m=001): even -> 1.0; 1.1875 between 1.125 and
    # 1.25 (m=010) -> 1.25; above 448 saturates (0x7E); 2**-9 is the smallest subnormal; 2**-11 -> 0.
    assert raw(to_e4m3(x)) == [0x38, 0x30, 0x39, 0x38, 0x3A, 0x7E, 0x7E, 0x7E, 0xFE, 0x01, 0x00, 0x00]


@pytest.mark.parametrize("device", DEVICES)
def test_per_tensor_hand_bytes(device: str) -> None:
    w = torch.tensor([[[1.0, -2.0], [7.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]], device=device)
    q = quantize_weights("fp8_tensor", w)
    # expert 0: amax 7 -> scale 7/448 = 1/64; w/s = 64, -128, 448, 32 = 2**6, -2**7, 1.75 * 2**8, 2**5.
    assert raw(q.data) == [0x68, 0xF0, 0x7E, 0x60, 0, 0, 0, 0]
    assert q.scale.tolist() == [1 / 64, 1.0]  # an all-zero expert gets scale 1, not 0
    assert torch.equal(dequantize_weights("fp8_tensor", q.data, q.scale), w)


@pytest.mark.parametrize("device", DEVICES)
def test_per_channel_hand_bytes(device: str) -> None:
    w = torch.tensor([[[448.0, -1.0, 0.0], [0.5, 0.25, -0.125]]], device=device)
    q = quantize_weights("fp8_channel", w)
    assert q.scale.tolist() == [[1.0, (torch.tensor(0.5) / 448).item()]]  # amax / 448 in float32
    # row 0 is stored as is (-1.0 = 1 0111 000); row 1 scaled to 448, 224, -112 (1.75 * 2**(8, 7, 6)).
    assert raw(q.data) == [0x7E, 0xB8, 0x00, 0x7E, 0x76, 0xEE]
    torch.testing.assert_close(dequantize_weights("fp8_channel", q.data, q.scale), w, rtol=1e-6, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_block_scales_with_partial_edge_blocks(device: str) -> None:
    w = torch.zeros(1, 129, 257, device=device)
    w[0, :128, :256] = 1.0
    w[0, 0, 0] = 896.0  # block (0, 0): amax 896 -> scale 2
    w[0, 128, 256] = -14.0  # block (1, 2) is this single element: scale 14/448 = 1/32
    q = quantize_weights("fp8_block", w)
    assert q.scale.shape == (1, 2, 3) and q.data.shape == (1, 129, 257)
    # block (0, 1) is all ones: 1/448; blocks (0, 2), (1, 0), (1, 1) are all zero: scale 1.
    assert q.scale[0].tolist() == [[2.0, (torch.tensor(1.0) / 448).item(), 1.0], [1.0, 1.0, 1 / 32]]
    assert raw(q.data[0, 0, :2]) == [0x7E, 0x30]  # 896/2 = 448; 1/2 = 2**-1 (exponent 6)
    assert raw(q.data[0, 5, 130:131]) == [0x7E]  # 1 / (1/448)
    assert raw(q.data[0, 128, 255:257]) == [0x00, 0xFE]
    torch.testing.assert_close(dequantize_weights("fp8_block", q.data, q.scale), w, rtol=1e-6, atol=0)


def e4m3_error_bound(v: torch.Tensor) -> torch.Tensor:
    """Half an e4m3 step at |v| (v already divided by its scale): 2**-4 relative, 2**-10 absolute below 2**-6."""
    return torch.maximum(v.abs() * 2.0 ** -4, torch.full_like(v, 2.0 ** -10))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme", ["fp8_tensor", "fp8_channel", "fp8_block"])
def test_weight_round_trip_within_half_a_step(device: str, scheme: str) -> None:
    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(3, 136, 200, generator=gen) * torch.logspace(-3, 1, 200)).to(device, torch.bfloat16)
    q = quantize_weights(scheme, w)
    d = dequantize_weights(scheme, q.data, q.scale)
    if scheme == "fp8_tensor":
        s = q.scale[:, None, None]
    elif scheme == "fp8_channel":
        s = q.scale[..., None]
    else:
        s = q.scale.repeat_interleave(128, 1)[:, :136].repeat_interleave(128, 2)[..., :200]
    assert torch.all((d - w.float()).abs() <= e4m3_error_bound(w.float() / s) * s * (1 + 1e-6))
    assert d.dtype == torch.float32 and d.device == w.device


@pytest.mark.parametrize("device", DEVICES)
def test_activation_per_token_group_hand_values(device: str) -> None:
    x = torch.zeros(2, 200, device=device)
    x[0, 3] = -7.0  # group 0 of token 0: amax 7 -> 1/64
    x[0, 150] = 0.875  # group 1 of token 0 (a partial group of 72): amax 0.875 -> 1/512
    x[1, :] = 1.0  # token 1: 1/448 in both groups
    q, s = quantize_activation("fp8_block", x)
    one = (torch.tensor(1.0) / 448).item()
    assert s.tolist() == [[1 / 64, 1 / 512], [one, one]]
    assert raw(q[0, 3]) == [0xFE] and raw(q[0, 150]) == [0x7E] and raw(q[1, :1]) == [0x7E]
    torch.testing.assert_close(fake_quantize_activation("fp8_block", x), x, rtol=1e-6, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_activation_per_token_and_per_tensor(device: str) -> None:
    x = torch.tensor([[7.0, 1.0, -0.5], [0.0, 0.0, 0.0], [448.0, 100.0, 3.0]], device=device)
    q, s = quantize_activation("fp8_channel", x)  # per-token dynamic
    assert s.shape == (3, 1) and s[:, 0].tolist() == [1 / 64, 1.0, 1.0]
    assert raw(q[0]) == [0x7E, 0x68, 0xE0]  # 448, 64, -32
    q, s = quantize_activation("fp8_tensor", x)  # one dynamic scale: amax 448 -> 1
    assert s.shape == () and s.item() == 1.0
    assert raw(q[2]) == [0x7E, 0x6C, 0x44]  # 100/64 = 1.5625 is a tie: even -> 96; 3 = 1.5 * 2**1
    assert fake_quantize_activation("fp8_tensor", x)[2].tolist() == [448.0, 96.0, 3.0]
    q, s = quantize_activation("fp8_tensor_static", x, scale=torch.tensor([0.5], device=device))
    assert s.shape == () and s.item() == 0.5
    assert raw(q[2]) == [0x7E, 0x74, 0x4C]  # 896 saturates to 448; 200 is a tie -> 192; 6 = 1.5 * 2**2
    assert fake_quantize_activation("fp8_tensor_static", x, scale=torch.tensor(0.5))[2].tolist() == [224.0, 96.0, 3.0]
