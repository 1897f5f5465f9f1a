"""The scheme-level API: canonical shapes for every scheme, argument errors, CPU/GPU agreement."""

import re
from contextlib import AbstractContextManager

import pytest
import torch

from moe_oracle import SCHEME_NAMES, ConfigError, MoEConfig
from moe_oracle.kernel.canonical import expected_tensors, validate_canonical
from moe_oracle.kernel.weights import CanonicalWeights
from moe_oracle.quant import (
    QuantizedWeights,
    dequantize_weights,
    fake_quantize_activation,
    quantize_activation,
    quantize_weights,
    static_activation_scale,
)

OPTIONS = ("int4_w4a16_g32", "int4_w4a16_zp", "int4_w4a16_g64_zp", "int8_w8a16_group_g32_zp", "w4a8_int8_g64")
ALL_SCHEMES = (*SCHEME_NAMES, *OPTIONS)
UNQUANTIZED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
STATIC = ("fp8_tensor_static", "nvfp4")  # schemes whose activations take a given scale


def small_config(scheme: str) -> MoEConfig:
    # H = 256 is a multiple of every group size; I = 48 leaves partial groups and blocks in w2 [E, H, I].
    return MoEConfig(num_experts=2, top_k=1, hidden_size=256, intermediate_size=48, quant=scheme,
                     dtype=UNQUANTIZED_DTYPES.get(scheme, torch.bfloat16))


def canonical(config: MoEConfig, seed: int = 0) -> CanonicalWeights:
    gen = torch.Generator().manual_seed(seed)
    e, n, h, i = config.num_local_experts, config.w13_rows, config.hidden_size, config.intermediate_size_per_partition
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in (("w13", (e, n, h)), ("w2", (e, h, i))):
        q = quantize_weights(config.scheme, torch.randn(shape, generator=gen).to(config.dtype))
        tensors[name] = q.data
        for field in ("scale", "zero_point", "global_scale"):
            if getattr(q, field) is not None:
                tensors[f"{name}_{field}"] = getattr(q, field)
    if config.scheme.name in STATIC:
        x = torch.randn(4, h, generator=gen)
        tensors["a13_scale"] = tensors["a2_scale"] = static_activation_scale(config.scheme, x)
    return CanonicalWeights(**tensors)


@pytest.mark.parametrize("scheme", ALL_SCHEMES)
def test_outputs_match_expected_tensors(scheme: str) -> None:
    config = small_config(scheme)
    weights = canonical(config)
    expected = expected_tensors(config)
    given = dict(weights.items())
    assert set(given) == set(expected)
    for name, spec in expected.items():
        assert tuple(given[name].shape) == spec.shape and given[name].dtype in spec.dtypes, name
    validate_canonical(config, weights)


@pytest.mark.parametrize("scheme", ALL_SCHEMES)
def test_dequantize_inverts_storage_and_activation_shapes(scheme: str) -> None:
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(2, 6, 256, generator=gen)
    q = quantize_weights(scheme, w)
    d = dequantize_weights(scheme, q.data, q.scale, q.zero_point, q.global_scale)
    assert d.shape == w.shape and d.dtype == torch.float32
    # dequantized values are representable: quantizing them again reproduces them (up to float32
    # rounding of recomputed scales)
    q2 = quantize_weights(scheme, d)
    d2 = dequantize_weights(scheme, q2.data, q2.scale, q2.zero_point, q2.global_scale)
    torch.testing.assert_close(d2, d, rtol=1e-6, atol=1e-6)
    x = torch.randn(3, 256, generator=gen, dtype=torch.bfloat16)
    scale = static_activation_scale(scheme, x) if scheme in STATIC else None
    fx = fake_quantize_activation(scheme, x, scale=scale)
    assert fx.shape == x.shape and fx.dtype == torch.float32
    if small_config(scheme).scheme.activation is None:
        assert torch.equal(fx, x.float())


@pytest.mark.parametrize("scheme", SCHEME_NAMES)
def test_no_tokens_and_no_experts(scheme: str) -> None:
    """Experts that receive no tokens quantize a [0, K] activation; an EP rank may hold no experts."""
    scale = static_activation_scale(scheme, torch.ones(2, 64)) if scheme in STATIC else None
    assert fake_quantize_activation(scheme, torch.zeros(0, 64), scale=scale).shape == (0, 64)
    q = quantize_weights(scheme, torch.zeros(0, 4, 64))
    assert dequantize_weights(scheme, q.data, q.scale, q.zero_point, q.global_scale).shape == (0, 4, 64)


def test_unquantized_data_is_the_input() -> None:
    w = torch.randn(1, 2, 4, dtype=torch.bfloat16)
    q = quantize_weights("bf16", w)
    assert q.data is w and q.scale is None and q.zero_point is None and q.global_scale is None
    assert repr(q) == "QuantizedWeights(data=[1, 2, 4]:bfloat16, scale=None, zero_point=None, global_scale=None)"
    x = w[0]
    q_x, s_x = quantize_activation("bf16", x)
    assert q_x is x and s_x is None
    with pytest.raises(TypeError):
        QuantizedWeights(w)  # keyword-only


def raises(match: str) -> AbstractContextManager[object]:
    return pytest.raises(ValueError, match="^" + re.escape(match) + "$")


def test_weight_argument_errors() -> None:
    with raises("w: expected a 3-D tensor [E, N, K], got shape [4, 4]"):
        quantize_weights("fp8_tensor", torch.zeros(4, 4))
    with raises("w: expected a floating-point tensor [E, N, K], got dtype int32"):
        quantize_weights("fp8_tensor", torch.zeros(1, 4, 4, dtype=torch.int32))
    with raises("w: int4_w4a16_g32 (int4) packs two values per byte along the last dimension, which must be even, "
                "got 33"):
        quantize_weights("int4_w4a16_g32", torch.zeros(1, 4, 33))
    with raises("w: nvfp4 (e2m1) packs two values per byte along the last dimension, which must be even, got 17"):
        quantize_weights("nvfp4", torch.zeros(1, 4, 17))
    with pytest.raises(ConfigError, match="unknown scheme 'fp7'"):
        quantize_weights("fp7", torch.zeros(1, 4, 4))


def test_dequantize_argument_errors() -> None:
    w = torch.randn(1, 2, 64)
    fp8 = quantize_weights("fp8_channel", w)
    with raises("data: scheme fp8_channel expects a 3-D [E, N, K] float8_e4m3fn tensor, got shape [1, 2, 64] "
                "dtype float32"):
        dequantize_weights("fp8_channel", w, fp8.scale)
    with raises("scale: expected shape [1, 2] dtype float32, got shape [1, 3] dtype float32"):
        dequantize_weights("fp8_channel", fp8.data, torch.ones(1, 3))
    with raises("scale: expected shape [1, 2] dtype float32, got shape [1, 2] dtype bfloat16"):
        dequantize_weights("fp8_channel", fp8.data, fp8.scale.bfloat16())
    mx = quantize_weights("mxfp4", w)
    with raises("data: scheme mxfp4 expects a 3-D [E, N, K/2] uint8 tensor, got shape [2, 32] dtype uint8"):
        dequantize_weights("mxfp4", mx.data[0], mx.scale)
    with raises("scale: scheme mxfp4 needs shape [1, 2, 2] dtype uint8, got None"):
        dequantize_weights("mxfp4", mx.data)
    zp = quantize_weights("int4_w4a16_g32_zp", w)
    with raises("zero_point: scheme int4_w4a16_g32_zp needs shape [1, 2, 2] dtype uint8, got None"):
        dequantize_weights("int4_w4a16_g32_zp", zp.data, zp.scale)
    with raises("zero_point: scheme int4_w4a16_g32 is symmetric and takes no zero point, got a tensor of shape "
                "[1, 2, 2]"):
        dequantize_weights("int4_w4a16_g32", zp.data, zp.scale, zp.zero_point)
    nv = quantize_weights("nvfp4", w)
    with raises("global_scale: scheme nvfp4 needs shape [1] dtype float32, got None"):
        dequantize_weights("nvfp4", nv.data, nv.scale)
    with raises("global_scale: scheme fp8_channel takes no global scale, got a tensor of shape [1]"):
        dequantize_weights("fp8_channel", fp8.data, fp8.scale, global_scale=nv.global_scale)
    with raises("scale: scheme bf16 is unquantized and takes no scales, got a tensor of shape [1, 2]"):
        dequantize_weights("bf16", w.bfloat16(), fp8.scale)


def test_activation_argument_errors() -> None:
    x = torch.randn(3, 64)
    with raises("scale: scheme fp8_tensor_static quantizes activations with a static per-tensor scale; pass it as "
                "a 0-D or [1] float32 tensor, got None"):
        fake_quantize_activation("fp8_tensor_static", x)
    with raises("scale: scheme nvfp4 quantizes activations with a global scale; pass it as a 0-D or [1] float32 "
                "tensor, got None"):
        quantize_activation("nvfp4", x)
    with raises("scale: scheme fp8_tensor_static expects a 0-D or [1] floating tensor (a static per-tensor "
                "scale), got shape [3] dtype float32"):
        fake_quantize_activation("fp8_tensor_static", x, scale=torch.ones(3))
    with raises("scale: scheme fp8_channel computes activation scales dynamically and takes none, got a tensor "
                "of shape []"):
        fake_quantize_activation("fp8_channel", x, scale=torch.tensor(1.0))
    with raises("scale: scheme int4_w4a16 does not quantize activations, got a tensor of shape []"):
        fake_quantize_activation("int4_w4a16", x, scale=torch.tensor(1.0))
    with raises("x: expected a floating-point tensor [M, K], got dtype int64"):
        fake_quantize_activation("fp8_channel", torch.ones(2, 2, dtype=torch.long))
    with raises("x: nvfp4 (e2m1) packs two values per byte along the last dimension, which must be even, got 63"):
        quantize_activation("nvfp4", x[:, :63], scale=torch.tensor(1.0))
    with raises("scheme fp8_channel takes no static activation scale (only fp8_tensor_static and nvfp4 do)"):
        static_activation_scale("fp8_channel", x)


def test_static_scales() -> None:
    x = torch.tensor([[1.0, -896.0], [3.0, 4.0]])
    assert static_activation_scale("fp8_tensor_static", x).item() == 2.0
    assert static_activation_scale("nvfp4", x).item() == (torch.tensor(896.0) / 2688).item()
    assert static_activation_scale("fp8_tensor_static", torch.zeros(2, 2)).item() == 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to compare against the CPU results")
@pytest.mark.parametrize("scheme", ALL_SCHEMES)
def test_cuda_matches_cpu_bit_for_bit(scheme: str) -> None:
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(2, 40, 320, generator=gen, dtype=torch.bfloat16) * torch.logspace(-3, 2, 320).bfloat16()
    x = torch.randn(5, 320, generator=gen) * torch.logspace(-3, 2, 320)
    cpu, gpu = quantize_weights(scheme, w), quantize_weights(scheme, w.cuda())
    for field in ("data", "scale", "zero_point", "global_scale"):
        a, b = getattr(cpu, field), getattr(gpu, field)
        assert (a is None) == (b is None), field
        if a is not None:
            assert b.device.type == "cuda" and torch.equal(a.view(torch.uint8) if a.element_size() == 1 else a,
                                                           (b.view(torch.uint8) if b.element_size() == 1 else b).cpu())
    d_cpu = dequantize_weights(scheme, cpu.data, cpu.scale, cpu.zero_point, cpu.global_scale)
    d_gpu = dequantize_weights(scheme, gpu.data, gpu.scale, gpu.zero_point, gpu.global_scale)
    assert torch.equal(d_cpu, d_gpu.cpu())
    scale = static_activation_scale(scheme, x) if scheme in STATIC else None
    a_cpu = fake_quantize_activation(scheme, x, scale=scale)
    a_gpu = fake_quantize_activation(scheme, x.cuda(), scale=None if scale is None else scale.cuda())
    assert torch.equal(a_cpu, a_gpu.cpu())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to capture a CUDA graph")
@pytest.mark.parametrize("scheme", [s for s in SCHEME_NAMES if small_config(s).scheme.activation is not None])
def test_activation_quantization_captures_in_a_cuda_graph(scheme: str) -> None:
    """Kernels quantize activations inside captured forwards: no host sync, no host-to-device copy."""
    x = torch.randn(8, 256, device="cuda")
    scale = static_activation_scale(scheme, x) if scheme in STATIC else None
    eager = fake_quantize_activation(scheme, x, scale=scale)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fake_quantize_activation(scheme, x, scale=scale)  # warm up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = fake_quantize_activation(scheme, x, scale=scale)
    x.copy_(x * 2)
    graph.replay()
    torch.testing.assert_close(captured, fake_quantize_activation(scheme, x, scale=scale), rtol=0, atol=0)
    assert not torch.equal(captured, eager)
