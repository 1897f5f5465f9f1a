"""NVFP4: e2m1 values, e4m3 scales per 16, float32 global scale; hand-computed bytes and the definition."""

import pytest
import torch

from moe_oracle.quant import (
    decode_e2m1,
    dequantize_weights,
    fake_quantize_activation,
    quantize_activation,
    quantize_weights,
    static_activation_scale,
)
from moe_oracle.quant.nvfp4 import dequantize_nvfp4

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_dequantize_is_value_times_block_scale_times_global() -> None:
    data = torch.tensor([[[0xF7] + [0x2C] * 7 + [0x51] * 8]], dtype=torch.uint8)  # codes (7, 15), (12, 2), (1, 5)
    scale = torch.tensor([[[0x38, 0x30]]], dtype=torch.uint8).view(torch.float8_e4m3fn)  # 1.0, 0.5
    out = dequantize_weights("nvfp4", data, scale, global_scale=torch.tensor([0.25]))
    assert out[0, 0, :4].tolist() == [6 * 0.25, -6 * 0.25, -2 * 0.25, 1 * 0.25]
    assert out[0, 0, 16:18].tolist() == [0.5 * 0.5 * 0.25, 3 * 0.5 * 0.25]
    codes = torch.tensor([7, 15, 12, 2, 1, 5])
    assert torch.equal(dequantize_nvfp4(data[..., [0, 1, 8]], scale[..., :1], torch.tensor(1.0)).flatten(),
                       decode_e2m1(codes))


@pytest.mark.parametrize("device", DEVICES)
def test_weights_hand_bytes(device: str) -> None:
    w = torch.zeros(2, 1, 48, device=device)
    # expert 0: amax 2688 = 448 * 6 -> global scale 1.0.
    w[0, 0, :4] = torch.tensor([2688.0, -1344.0, 672.0, 224.0])  # block 0: amax 2688 -> e4m3 448 (0x7E)
    w[0, 0, 16:19] = torch.tensor([6.0, 1.0, -2.0])  # block 1: amax 6 -> block scale 1.0 (0x38)
    w[0, 0, 32] = 253.0  # block 2: 253 / 6 = 42.17 is no e4m3 value
    q = quantize_weights("nvfp4", w)
    assert q.global_scale.tolist() == [1.0, 1.0]  # an all-zero expert gets 1.0, not 0
    assert q.scale.dtype == torch.float8_e4m3fn and q.scale.shape == (2, 1, 3)
    # 42.17 lies between 40 and 44 (1.25 and 1.375 * 2**5): nearest is 44 -> 0 1100 011.
    assert q.scale[0, 0].view(torch.uint8).tolist() == [0x7E, 0x38, 0x63]
    assert not q.scale[1].view(torch.uint8).any()
    # block 0 divided by 448: 6, -3, 1.5, 0.5 -> codes 7, 13, 3, 1; block 1: 6, 1, -2 -> 7, 2, 12;
    # block 2: 253 / 44 = 5.75 -> 6 (code 7), dequantized 6 * 44 = 264.
    assert q.data[0, 0].tolist() == [0xD7, 0x13] + [0] * 6 + [0x27, 0x0C] + [0] * 6 + [0x07] + [0] * 7
    assert not q.data[1].any()
    d = dequantize_weights("nvfp4", q.data, q.scale, global_scale=q.global_scale)
    assert d[0, 0, :4].tolist() == [2688.0, -1344.0, 672.0, 224.0] and d[0, 0, 32].item() == 264.0
    assert not d[1].any() and not d.isnan().any()


@pytest.mark.parametrize("device", DEVICES)
def test_global_scale_is_amax_over_448_times_6(device: str) -> None:
    w = torch.zeros(1, 2, 16, device=device)
    w[0, 1, 5] = -26.88
    q = quantize_weights("nvfp4", w)
    assert q.global_scale.tolist() == [(torch.tensor(-26.88).abs() / 2688).item()]
    # the amax block's scale is amax / 6 / global = 448 (exactly, up to float32 rounding of the division)
    assert q.scale[0, 1].view(torch.uint8).tolist() == [0x7E] and q.data[0, 1, 2].item() == 0xF0


@pytest.mark.parametrize("device", DEVICES)
def test_activations_use_the_given_global_scale(device: str) -> None:
    x = torch.zeros(2, 32, device=device)
    x[0, :3] = torch.tensor([12.0, -3.0, 0.9])
    x[1, 20] = 1.5
    gs = static_activation_scale("nvfp4", x)
    assert gs.shape == () and gs.item() == (torch.tensor(12.0) / 2688).item()
    q, s = quantize_activation("nvfp4", x, scale=torch.tensor(0.5, device=device))
    # token 0 block 0: amax 12 -> 12 / 6 / 0.5 = 4.0 (0x48); 12 / 2 = 6, -3 / 2 = -1.5, 0.9 / 2 = 0.45 -> 0.5
    # (codes 7, 11, 1).
    assert q.dtype == torch.uint8 and q.shape == (2, 16) and s.dtype == torch.float8_e4m3fn
    assert s.view(torch.uint8).tolist() == [[0x48, 0x00], [0x00, 0x30]]  # token 1 block 1: 1.5 / 3 = 0.5
    assert q[0, :2].tolist() == [0xB7, 0x01] and q[1, 10].item() == 0x07  # 1.5 / 0.25 = 6, low nibble
    assert fake_quantize_activation("nvfp4", x, scale=torch.tensor(0.5))[0, :3].tolist() == [12.0, -3.0, 1.0]


@pytest.mark.parametrize("device", DEVICES)
def test_round_trip_bound(device: str) -> None:
    gen = torch.Generator().manual_seed(4)
    w = (torch.randn(2, 8, 128, generator=gen) * torch.logspace(-2, 1, 128)).to(device, torch.bfloat16)
    q = quantize_weights("nvfp4", w)
    d = dequantize_weights("nvfp4", q.data, q.scale, global_scale=q.global_scale)
    step = q.scale.float().repeat_interleave(16, dim=-1) * q.global_scale[:, None, None]
    wf = w.float()
    # e2m1's half step (25 % above 1, 0.25 below) plus e4m3 rounding of the block scale (<= 1/16, so
    # the block amax may sit up to 6 * 17/16 and clip to 6).
    bound = torch.maximum(wf.abs() * 0.25, step * 0.25) + (wf.abs() - 6 * step).clamp(min=0)
    assert torch.all((d - wf).abs() <= bound * (1 + 1e-6))
    rel = ((d - wf).norm() / wf.norm()).item()
    assert rel < 0.12
