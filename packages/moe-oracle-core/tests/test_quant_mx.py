"""OCP MX: e2m1 and e8m0 against the spec's definitions, MXFP4/MXFP8 hand-computed bytes and bounds."""

import math

import pytest
import torch

from moe_oracle.quant import (
    E2M1_VALUES,
    decode_e2m1,
    decode_e8m0,
    dequantize_weights,
    encode_e2m1,
    fake_quantize_activation,
    quantize_activation,
    quantize_weights,
)
from moe_oracle.quant.mx import mx_scale_codes

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def e2m1_value(code: int) -> float:
    """e2m1 by the OCP MX definition: S EE M, exponent bias 1, E=0 subnormal (M * 0.5)."""
    sign = -1.0 if code & 0x8 else 1.0
    exp, man = (code >> 1) & 0x3, code & 0x1
    return sign * (man * 0.5 if exp == 0 else 2.0 ** (exp - 1) * (1 + man / 2))


def test_e2m1_code_table() -> None:
    assert E2M1_VALUES == (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # the spec's list
    table = decode_e2m1(torch.arange(16, dtype=torch.uint8))
    assert table.tolist() == [e2m1_value(c) for c in range(16)]
    assert table[8].item() == 0.0 and math.copysign(1.0, table[8].item()) == -1.0  # 0x8 is -0
    assert torch.equal(encode_e2m1(table), torch.arange(16, dtype=torch.uint8))


def test_e8m0_definition() -> None:
    codes = torch.arange(256, dtype=torch.uint8)
    ours = decode_e8m0(codes)
    assert ours[:255].tolist() == [2.0 ** (c - 127) for c in range(255)]  # exact powers, 2**-127 included
    assert math.isnan(ours[255].item())  # 0xFF is NaN
    assert ours[[0, 126, 127, 128, 254]].tolist() == [2.0 ** -127, 0.5, 1.0, 2.0, 2.0 ** 127]
    torch_e8m0 = codes.view(torch.float8_e8m0fnu).float()  # torch's implementation of the same format
    assert torch.equal(ours.isnan(), torch_e8m0.isnan()) and torch.equal(ours[:255], torch_e8m0[:255])


@pytest.mark.parametrize("device", DEVICES)
def test_encode_e2m1_ties_to_even_and_saturates(device: str) -> None:
    x = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0,  # ties: to the even code
                      0.2501, 0.7499, 5.01, 6.0, 7.0, 1e9,
                      -0.5, -6.0, -100.0, -0.1, 0.0], device=device)
    assert encode_e2m1(x).tolist() == [0, 2, 2, 4, 4, 6, 6,
                                       1, 1, 7, 7, 7, 7,
                                       9, 15, 15, 8, 0]


@pytest.mark.parametrize("device", DEVICES)
def test_scale_is_floor_log2_amax_minus_emax(device: str) -> None:
    amax = torch.tensor([6.0, 7.99, 8.0, 0.75, 1.0, 448.0, 2.0 ** -140, 1.5 * 2.0 ** 127, 0.0], device=device)
    want_fp4 = [min(max(math.floor(math.log2(a)) - 2 + 127, 0), 254) if a > 0 else 0 for a in amax.tolist()]
    want_fp8 = [min(max(math.floor(math.log2(a)) - 8 + 127, 0), 254) if a > 0 else 0 for a in amax.tolist()]
    assert mx_scale_codes(amax, 2).tolist() == want_fp4 == [127, 127, 128, 124, 125, 133, 0, 252, 0]
    assert mx_scale_codes(amax, 8).tolist() == want_fp8


@pytest.mark.parametrize("device", DEVICES)
def test_mxfp4_hand_bytes(device: str) -> None:
    w = torch.zeros(1, 1, 96, device=device)
    # block 0: amax 7 -> X = 2**(2 - 2) = 1 (code 127); 7 saturates to 6, 5 and 3.5 tie to 4, -0.25 ties to -0.
    w[0, 0, :8] = torch.tensor([7.0, -6.0, 0.5, 1.25, 3.5, 5.0, -0.25, 0.1])
    # block 1: amax 0.75 -> X = 2**(-1 - 2) = 1/8 (code 124): 6 -> 7, 1.5 -> 3, -0.5 -> 9.
    w[0, 0, 32:35] = torch.tensor([0.75, 0.1875, -0.0625])
    # block 2: all zero -> code 0, no NaN.
    q = quantize_weights("mxfp4", w)
    assert q.data.dtype == torch.uint8 and q.data.shape == (1, 1, 48)
    assert q.scale.tolist() == [[[127, 124, 0]]]
    assert q.data[0, 0, :16].tolist() == [0xF7, 0x21, 0x66, 0x08] + [0] * 12
    assert q.data[0, 0, 16:32].tolist() == [0x37, 0x09] + [0] * 14
    assert not q.data[0, 0, 32:].any()
    d = dequantize_weights("mxfp4", q.data, q.scale)
    assert d[0, 0, :8].tolist() == [6.0, -6.0, 0.5, 1.0, 4.0, 4.0, -0.0, 0.0]
    assert d[0, 0, 32:35].tolist() == [0.75, 0.1875, -0.0625] and not d.isnan().any()


@pytest.mark.parametrize("device", DEVICES)
def test_mxfp8_hand_bytes(device: str) -> None:
    w = torch.zeros(1, 2, 40, device=device)  # 40: one full block and a partial one of 8
    w[0, 0, :3] = torch.tensor([448.0, 1.0, -0.0625])  # amax 448 -> X = 2**(8 - 8) = 1: stored as is
    w[0, 0, 32] = 1.0  # amax 1 -> X = 2**-8 (code 119): 256 = 2**8 -> 0x78
    w[0, 1, 0] = 500.0  # amax 500 -> X = 1: 500 saturates to 448
    q = quantize_weights("mxfp8", w)
    assert q.data.dtype == torch.float8_e4m3fn and q.scale.tolist() == [[[127, 119], [127, 0]]]
    assert q.data[0, 0, :3].view(torch.uint8).tolist() == [0x7E, 0x38, 0x98]
    assert q.data[0, 0, 32:33].view(torch.uint8).tolist() == [0x78]
    assert q.data[0, 1, :1].view(torch.uint8).tolist() == [0x7E]
    d = dequantize_weights("mxfp8", q.data, q.scale)
    assert d[0, 0, :3].tolist() == [448.0, 1.0, -0.0625] and d[0, 0, 32].item() == 1.0 and d[0, 1, 0].item() == 448.0


@pytest.mark.parametrize("device", DEVICES)
def test_mx_activations(device: str) -> None:
    x = torch.zeros(2, 64, device=device)
    x[0, :2] = torch.tensor([3.0, 0.3])  # amax 3 -> X = 2**(1 - 8): 384 and 38.4 -> 40 (1.25 * 2**5)
    x[1, 40] = -1.0
    q, s = quantize_activation("mxfp8", x)
    assert q.dtype == torch.float8_e4m3fn and s.tolist() == [[120, 0], [0, 119]]
    assert fake_quantize_activation("mxfp8", x)[0, :2].tolist() == [3.0, 40 * 2.0 ** -7]
    assert torch.equal(fake_quantize_activation("mxfp4_a8", x), fake_quantize_activation("mxfp8", x))
    assert torch.equal(fake_quantize_activation("mxfp4", x), x)  # mxfp4: bf16 activations, unquantized


@pytest.mark.parametrize("device", DEVICES)
def test_round_trip_bounds(device: str) -> None:
    gen = torch.Generator().manual_seed(3)
    w = (torch.randn(2, 16, 256, generator=gen) * torch.logspace(-4, 2, 256)).to(device, torch.bfloat16)
    wf = w.float()
    for scheme, rel in (("mxfp4", 0.25), ("mxfp8", 2.0 ** -4)):
        q = quantize_weights(scheme, w)
        x_scale = decode_e8m0(q.scale).repeat_interleave(32, dim=-1)
        d = dequantize_weights(scheme, q.data, q.scale)
        top = 6.0 if scheme == "mxfp4" else 448.0
        # half a step at |w| (relative above the subnormals, absolute below), plus what saturation at
        # the element format's max clips off (the spec's floor(log2) scale lets amax / X reach 2 * 2**emax).
        half_step = torch.maximum(wf.abs() * rel, x_scale * (0.25 if scheme == "mxfp4" else 2.0 ** -10))
        clipped = (wf.abs() - top * x_scale).clamp(min=0)
        assert torch.all((d - wf).abs() <= half_step + clipped), scheme
        assert (wf.abs() / x_scale).amax() < 2 * top * (1 if scheme == "mxfp4" else 8 / 7)
