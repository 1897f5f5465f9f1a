"""Quantize and dequantize by scheme: the checked entry points over the per-format modules.

Weights go in as ``[E, N, K]`` (``w13`` ``[E, 2*I, H]`` or ``w2`` ``[E, H, I]``) and come out in
the canonical layout of ``kernel/canonical.py`` for the scheme; ``dequantize_weights`` is its
exact inverse to float32. Activations ``[M, K]`` (any ``[..., K]``) are quantized the way a
kernel quantizing them for the scheme would (``quantize_activation``), and
``fake_quantize_activation`` returns ``dequantize(quantize(x))`` in float32 for reference
computations. The format is decided by the scheme's ``QuantKey`` (dtype, granularity, scale
dtype), never by which tensors arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from moe_oracle.config.quant import QuantKey, QuantScheme
from moe_oracle.quant import fp8, int8, intn, mx, nvfp4
from moe_oracle.quant._common import amax_all, cdiv, check_even, check_float, check_tensor, dtype_name, safe_scale

Scheme = QuantScheme | str


@dataclass(frozen=True, kw_only=True, eq=False)
class QuantizedWeights:
    """One quantized weight tensor in canonical layout; fields absent for the scheme are ``None``.

    data: ``[E, N, K]`` (``[E, N, K/2]`` uint8 for packed 4-bit). scale: per the scheme
    (``[E]``, ``[E, N]``, ``[E, N/bn, K/bk]`` or ``[E, N, K/g]``). zero_point: uint8 like
    ``scale`` for ``_zp`` schemes. global_scale: ``[E]`` float32 for nvfp4.
    """

    data: torch.Tensor
    scale: torch.Tensor | None = None
    zero_point: torch.Tensor | None = None
    global_scale: torch.Tensor | None = None

    def __repr__(self) -> str:
        def show(t: torch.Tensor | None) -> str:
            return "None" if t is None else f"{list(t.shape)}:{dtype_name(t.dtype)}"

        return (f"QuantizedWeights(data={show(self.data)}, scale={show(self.scale)}, "
                f"zero_point={show(self.zero_point)}, global_scale={show(self.global_scale)})")


def _weight_format(key: QuantKey) -> str:
    """The storage format of a weight key (one of the branches below)."""
    kind = key.granularity.kind
    if key.dtype == "fp8_e4m3":
        return "mxfp8" if key.scale_dtype == "e8m0" else f"fp8_{kind}"
    if key.dtype == "fp4_e2m1":
        return "mxfp4" if key.scale_dtype == "e8m0" else "nvfp4"
    if kind == "group":
        return "int_group"
    return "int8_channel"


# Element dtype of the stored values, by the weight key's dtype (4-bit values are packed in uint8).
_DATA_DTYPES = {"fp8_e4m3": torch.float8_e4m3fn, "int8": torch.int8, "int4": torch.uint8, "fp4_e2m1": torch.uint8}


def quantize_weights(scheme: Scheme, w: torch.Tensor) -> QuantizedWeights:
    """Quantize expert weights into the scheme's canonical layout.

    Parameters
    ----------
    scheme : a ``QuantScheme`` or its name (``"fp8_block"``, ``"int4_w4a16_g64_zp"``, ...)
    w : [E, N, K] any float dtype, on any device; K even for int4/fp4 schemes

    Returns
    -------
    QuantizedWeights with shapes and dtypes of ``expected_tensors`` for the scheme; for an
    unquantized scheme ``data`` is ``w`` itself.

    Raises
    ------
    ValueError
        ``w`` is not a 3-D floating tensor, or K is odd for a packed 4-bit scheme.
    """
    s = QuantScheme.parse(scheme)
    check_float("w", w, ndim=3, what=" [E, N, K]")
    key = s.weight
    if key is None:
        return QuantizedWeights(data=w)
    fmt = _weight_format(key)
    if fmt == "int_group":
        bits = s.weight_bits
        assert bits is not None, f"{s.name}: a quantized weight has a bit width"
        if bits == 4:
            check_even("w", w.shape[-1], f"{s.name} (int4)")
        data, scale, zp = intn.quantize_int_grouped(w, bits=bits, group_size=key.granularity.shape[0],
                                                    symmetric=key.symmetric)
        return QuantizedWeights(data=data, scale=scale, zero_point=zp)
    if fmt in ("mxfp4", "nvfp4"):
        check_even("w", w.shape[-1], f"{s.name} (e2m1)")
    if fmt == "nvfp4":
        data, scale, global_scale = nvfp4.quantize_nvfp4_weights(w)
        return QuantizedWeights(data=data, scale=scale, global_scale=global_scale)
    quantize: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = {
        "fp8_tensor": fp8.quantize_fp8_per_tensor,
        "fp8_channel": fp8.quantize_fp8_per_channel,
        "fp8_block": lambda t: fp8.quantize_fp8_block(t, _block_shape(key)),
        "mxfp8": mx.quantize_mxfp8,
        "mxfp4": mx.quantize_mxfp4,
        "int8_channel": int8.quantize_int8_per_channel,
    }[fmt]
    data, scale = quantize(w)
    return QuantizedWeights(data=data, scale=scale)


def _block_shape(key: QuantKey) -> tuple[int, int]:
    """(rows, columns) of a block-scaled key's blocks."""
    bn, bk = key.granularity.shape
    return bn, bk


def _scale_spec(key: QuantKey, e: int, n: int, k: int) -> tuple[tuple[int, ...], torch.dtype]:
    """Canonical shape and dtype of the weight scale for data of logical shape ``[E, N, K]``."""
    gran = key.granularity
    dtype = {"fp32": torch.float32, "e8m0": torch.uint8, "fp8_e4m3": torch.float8_e4m3fn}[key.scale_dtype]
    if gran.kind == "tensor":
        return (e,), dtype
    if gran.kind == "channel":
        return (e, n), dtype
    if gran.kind == "block":
        bn, bk = gran.shape
        return (e, cdiv(n, bn), cdiv(k, bk)), dtype
    return (e, n, cdiv(k, gran.shape[0])), dtype


def _check_absent(name: str, t: torch.Tensor | None, scheme: QuantScheme, why: str) -> None:
    if t is not None:
        raise ValueError(f"{name}: scheme {scheme.name} {why}, got a tensor of shape {list(t.shape)}")


def dequantize_weights(scheme: Scheme, data: torch.Tensor, scale: torch.Tensor | None = None,
                       zero_point: torch.Tensor | None = None,
                       global_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Exact inverse of the scheme's storage format: canonical tensors -> float32 weights.

    Parameters
    ----------
    scheme : a ``QuantScheme`` or its name
    data : [E, N, K] (``[E, N, K/2]`` uint8 for packed 4-bit) in the scheme's dtype
    scale, zero_point, global_scale : as ``quantize_weights`` returns them for the scheme

    Returns
    -------
    [E, N, K] float32 (K unpacked), a new tensor on ``data``'s device.

    Raises
    ------
    ValueError
        A tensor has the wrong type, dtype or shape, a tensor the scheme needs is missing, or one
        it does not take is given.
    """
    s = QuantScheme.parse(scheme)
    key = s.weight
    if key is None:
        check_float("data", data, ndim=3, what=f" [E, N, K] for unquantized scheme {s.name}")
        for name, t in (("scale", scale), ("zero_point", zero_point), ("global_scale", global_scale)):
            _check_absent(name, t, s, "is unquantized and takes no scales")
        return data.float()
    fmt = _weight_format(key)
    packed = key.dtype in ("int4", "fp4_e2m1")
    want = _DATA_DTYPES[key.dtype]
    if not isinstance(data, torch.Tensor) or data.dim() != 3 or data.dtype != want:
        got = (f"shape {list(data.shape)} dtype {dtype_name(data.dtype)}" if isinstance(data, torch.Tensor)
               else type(data).__name__)
        raise ValueError(f"data: scheme {s.name} expects a 3-D [E, N, K{'/2' if packed else ''}] "
                         f"{dtype_name(want)} tensor, got {got}")
    e, n, k = data.shape[0], data.shape[1], data.shape[2] * (2 if packed else 1)
    scale_shape, scale_dtype = _scale_spec(key, e, n, k)
    if scale is None:
        raise ValueError(f"scale: scheme {s.name} needs shape {list(scale_shape)} dtype "
                         f"{dtype_name(scale_dtype)}, got None")
    check_tensor("scale", scale, shape=scale_shape, dtype=scale_dtype)
    if key.symmetric:
        _check_absent("zero_point", zero_point, s, "is symmetric and takes no zero point")
    else:
        if zero_point is None:
            raise ValueError(f"zero_point: scheme {s.name} needs shape {list(scale_shape)} dtype uint8, got None")
        check_tensor("zero_point", zero_point, shape=scale_shape, dtype=torch.uint8)
    if key.global_scale:
        if global_scale is None:
            raise ValueError(f"global_scale: scheme {s.name} needs shape [{e}] dtype float32, got None")
        check_tensor("global_scale", global_scale, shape=(e,), dtype=torch.float32)
    else:
        _check_absent("global_scale", global_scale, s, "takes no global scale")

    if fmt == "int_group":
        bits = s.weight_bits
        assert bits is not None, f"{s.name}: a quantized weight has a bit width"
        return intn.dequantize_int_grouped(data, scale, zero_point, bits=bits, group_size=key.granularity.shape[0])
    if fmt == "nvfp4":
        assert global_scale is not None, f"{s.name}: nvfp4 keys take a global scale (checked above)"
        return nvfp4.dequantize_nvfp4(data, scale, global_scale[:, None, None])
    if fmt == "fp8_block":
        return fp8.dequantize_fp8_block(data, scale, _block_shape(key))
    dequantize: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = {
        "fp8_tensor": fp8.dequantize_fp8_per_tensor,
        "fp8_channel": fp8.dequantize_fp8_per_channel,
        "mxfp8": mx.dequantize_mxfp8,
        "mxfp4": mx.dequantize_mxfp4,
        "int8_channel": int8.dequantize_int8_per_channel,
    }[fmt]
    return dequantize(data, scale)


def _activation_format(key: QuantKey) -> str:
    """The activation quantizer of a key (one of the branches of ``quantize_activation``)."""
    kind = key.granularity.kind
    if key.dtype == "fp4_e2m1":
        return "nvfp4"
    if key.dtype == "int8":
        return "int8_token"
    if key.scale_dtype == "e8m0":
        return "mxfp8"
    if kind == "tensor":
        return "fp8_tensor_static" if key.static else "fp8_tensor"
    return f"fp8_{kind}"


def _scalar_scale(scheme: QuantScheme, scale: torch.Tensor | None, x: torch.Tensor, what: str) -> torch.Tensor:
    """Check a given scalar activation scale and return it 0-D float32 on ``x``'s device."""
    if scale is None:
        raise ValueError(f"scale: scheme {scheme.name} quantizes activations with {what}; "
                         f"pass it as a 0-D or [1] float32 tensor, got None")
    if not isinstance(scale, torch.Tensor) or not scale.is_floating_point() or scale.numel() != 1:
        got = (f"shape {list(scale.shape)} dtype {dtype_name(scale.dtype)}" if isinstance(scale, torch.Tensor)
               else type(scale).__name__)
        raise ValueError(f"scale: scheme {scheme.name} expects a 0-D or [1] floating tensor ({what}), got {got}")
    return scale.float().reshape(()).to(x.device)


def quantize_activation(scheme: Scheme, x: torch.Tensor, *,
                        scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Quantize activations as a kernel for the scheme does, returning what the kernel consumes.

    Parameters
    ----------
    scheme : a ``QuantScheme`` or its name
    x : [M, K] float (any ``[..., K]``); K even for nvfp4
    scale : the static activation scale (fp8_tensor_static) or nvfp4's global activation scale
        (dequantization direction, ``amax / (448 * 6)``), 0-D or ``[1]``; must be None otherwise

    Returns
    -------
    (q, scales) by the scheme's activation key:
        unquantized: ``(x, None)``;
        fp8 per tensor: e4m3 ``[M, K]``, 0-D float32 (the given scale when static);
        fp8 per token: e4m3 ``[M, K]``, float32 ``[M, 1]``;
        fp8 per token group of 128: e4m3 ``[M, K]``, float32 ``[M, ceil(K/128)]``;
        int8 per token: int8 ``[M, K]``, float32 ``[M, 1]``;
        mxfp8: e4m3 ``[M, K]``, uint8 e8m0 ``[M, ceil(K/32)]``;
        nvfp4: packed e2m1 uint8 ``[M, K/2]``, e4m3 ``[M, ceil(K/16)]`` (the global scale is ``scale``).

    Raises
    ------
    ValueError
        ``x`` is not floating, a needed ``scale`` is missing or malformed, a dynamic scheme got
        one, or K is odd for nvfp4.
    """
    s = QuantScheme.parse(scheme)
    check_float("x", x, what=" [M, K]")
    key = s.activation
    if key is None:
        _check_absent("scale", scale, s, "does not quantize activations")
        return x, None
    fmt = _activation_format(key)
    if fmt == "fp8_tensor_static":
        sc = _scalar_scale(s, scale, x, "a static per-tensor scale")
        return fp8.quantize_fp8_static(x, sc), sc
    if fmt == "nvfp4":
        check_even("x", x.shape[-1], f"{s.name} (e2m1)")
        return nvfp4.quantize_nvfp4(x, _scalar_scale(s, scale, x, "a global scale"))
    _check_absent("scale", scale, s, "computes activation scales dynamically and takes none")
    if fmt == "fp8_group":
        return fp8.quantize_fp8_per_token_group(x, key.granularity.shape[0])
    quantize: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = {
        "fp8_tensor": fp8.quantize_fp8_per_tensor_dynamic,
        "fp8_token": fp8.quantize_fp8_per_token,
        "int8_token": int8.quantize_int8_per_token,
        "mxfp8": mx.quantize_mxfp8,
    }[fmt]
    return quantize(x)


def fake_quantize_activation(scheme: Scheme, x: torch.Tensor, *, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``dequantize(quantize(x))`` in float32: the values a kernel's GEMM sees for these activations.

    Parameters and errors as ``quantize_activation``; returns float32 ``[M, K]`` (``x.float()``
    for schemes whose activations are not quantized).
    """
    s = QuantScheme.parse(scheme)
    q, qs = quantize_activation(s, x, scale=scale)
    key = s.activation
    if key is None:
        return x.float()
    assert qs is not None, f"{s.name}: quantized activations come with scales"
    fmt = _activation_format(key)
    if fmt == "nvfp4":
        return nvfp4.dequantize_nvfp4(q, qs, _scalar_scale(s, scale, x, "a global scale"))
    if fmt == "mxfp8":
        return mx.dequantize_mxfp8(q, qs)
    if fmt == "fp8_group":
        return fp8.dequantize_fp8_per_token_group(q, qs, key.granularity.shape[0])
    return q.float() * qs  # per tensor (0-D scale) or per token ([M, 1] scales)


def static_activation_scale(scheme: Scheme, x: torch.Tensor) -> torch.Tensor:
    """A calibrated scalar activation scale for schemes that take one, from sample activations.

    Parameters
    ----------
    x : [M, K] float (any shape): calibration activations

    Returns
    -------
    0-D float32: ``amax / 448`` for fp8_tensor_static, the nvfp4 global activation scale
    ``amax / (448 * 6)`` for nvfp4 (1.0 if ``x`` is all zero).

    Raises
    ------
    ValueError
        The scheme's activations take no static scale, or ``x`` is not floating.
    """
    s = QuantScheme.parse(scheme)
    check_float("x", x, what=" [M, K]")
    key = s.activation
    if key is not None and _activation_format(key) == "fp8_tensor_static":
        return safe_scale(amax_all(x.float()), fp8.FP8_E4M3_MAX)
    if key is not None and _activation_format(key) == "nvfp4":
        return nvfp4.nvfp4_global_scale(amax_all(x.float()))
    raise ValueError(f"scheme {s.name} takes no static activation scale (only fp8_tensor_static and nvfp4 do)")
