"""INT8 per-channel weights (w8a8, w8a16) and per-token activations: hand-computed bytes and bounds."""

import pytest
import torch

from moe_oracle.quant import dequantize_weights, fake_quantize_activation, quantize_activation, quantize_weights

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme", ["int8_w8a8", "int8_w8a16"])
def test_per_channel_hand_bytes(device: str, scheme: str) -> None:
    w = torch.tensor([[[127.0, -63.5, 0.5, 1.5], [0.0, 0.0, 0.0, 0.0], [254.0, 1.0, 3.0, -254.0]]], device=device)
    q = quantize_weights(scheme, w)
    assert q.data.dtype == torch.int8 and q.scale.dtype == torch.float32
    assert q.scale.tolist() == [[1.0, 1.0, 2.0]]  # amax / 127; an all-zero row gets 1
    # round half to even: -63.5 -> -64, 0.5 -> 0, 1.5 -> 2; row 2: 0.5 -> 0, 1.5 -> 2.
    assert q.data.tolist() == [[[127, -64, 0, 2], [0, 0, 0, 0], [127, 0, 2, -127]]]
    d = dequantize_weights(scheme, q.data, q.scale)
    assert d.tolist() == [[[127.0, -64.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [254.0, 0.0, 4.0, -254.0]]]


@pytest.mark.parametrize("device", DEVICES)
def test_per_token_activation_hand_bytes(device: str) -> None:
    x = torch.tensor([[254.0, -127.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0]], device=device)
    q, s = quantize_activation("int8_w8a8", x)
    assert s.tolist() == [[2.0], [1.0]]
    assert q.dtype == torch.int8 and q.tolist() == [[127, -64, 0, 2], [0, 0, 0, 0]]
    assert fake_quantize_activation("int8_w8a8", x).tolist() == [[254.0, -128.0, 0.0, 4.0], [0.0] * 4]
    assert torch.equal(fake_quantize_activation("int8_w8a16", x), x)  # w8a16: activations stay


@pytest.mark.parametrize("device", DEVICES)
def test_round_trip_within_half_a_step(device: str) -> None:
    gen = torch.Generator().manual_seed(1)
    w = (torch.randn(2, 48, 100, generator=gen) * torch.logspace(-2, 2, 48)[:, None]).to(device, torch.float16)
    q = quantize_weights("int8_w8a8", w)
    d = dequantize_weights("int8_w8a8", q.data, q.scale)
    assert torch.all((d - w.float()).abs() <= q.scale[..., None] * 0.5 * (1 + 1e-6))
    x = torch.randn(7, 100, generator=gen).to(device)
    s = x.abs().amax(dim=-1, keepdim=True) / 127
    assert torch.all((fake_quantize_activation("w4a8_int8", x) - x).abs() <= s * 0.5 * (1 + 1e-6))
