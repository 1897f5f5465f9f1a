"""Quantization formats: quantize/dequantize for every scheme, in torch (CPU and GPU).

``quantize_weights`` / ``dequantize_weights`` convert ``[E, N, K]`` weights to and from the
canonical layout of ``kernel/canonical.py``; ``quantize_activation`` / ``fake_quantize_activation``
quantize ``[M, K]`` activations as a kernel for the scheme would. Each storage layout is
documented at the top of its module: ``fp8`` (e4m3), ``int8`` (per channel / per token),
``intn`` (grouped int4/int8 with zero points, nibble packing), ``mx`` (e2m1, e8m0, MXFP4, MXFP8),
``nvfp4``.
"""

from moe_oracle.quant._common import pack_nibbles, unpack_nibbles
from moe_oracle.quant.api import (
    QuantizedWeights,
    dequantize_weights,
    fake_quantize_activation,
    quantize_activation,
    quantize_weights,
    static_activation_scale,
)
from moe_oracle.quant.fp8 import FP8_E4M3_MAX, to_e4m3
from moe_oracle.quant.mx import E2M1_VALUES, decode_e2m1, decode_e8m0, encode_e2m1

__all__ = [
    "E2M1_VALUES",
    "FP8_E4M3_MAX",
    "QuantizedWeights",
    "decode_e2m1",
    "decode_e8m0",
    "dequantize_weights",
    "encode_e2m1",
    "fake_quantize_activation",
    "pack_nibbles",
    "quantize_activation",
    "quantize_weights",
    "static_activation_scale",
    "to_e4m3",
    "unpack_nibbles",
]
