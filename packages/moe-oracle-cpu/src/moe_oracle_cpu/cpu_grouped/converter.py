"""``cpu_grouped`` weight layout: canonical tensors, plus packed experts where that is faster.

``tensors`` always holds the canonical tensors unchanged (``w13`` ``[E_l, N, H]``, ``w2``
``[E_l, H, I]``, scales, zero points, biases). Where a native build runs the config
(``native.choose_build``), the experts are also packed for it, else (unquantized bf16/fp32 with
oneDNN) reordered for oneDNN; fp16, and quantized schemes without a native build, are read from the
canonical tensors one expert tile at a time.

Layout ``canonical+native_panels:<build>``: ``extras`` ``"w13_panels"`` (or, for gated silu without a
limit, bias or quantized activations between the GEMMs, ``"w13_gate_up_panels"``: gate and up rows
interleaved per panel so GEMM1's epilogue computes the activation) and ``"w2_panels"``, each a
``native.Panels``: bf16 ``[E_l, N/64, K/2, 64, 2]`` / fp32 ``[E_l, N/64, K, 64]`` (``native.pack``), or
quantized codes with float32 scales per group (``panels.pack_quantized``).

Layout ``canonical+onednn_packed``: ``extras`` adds each expert's weights reordered by
``torch.ops.mkldnn._reorder_linear_weight`` into oneDNN's blocked layout (opaque ``torch._mkldnn``
tensors of the same logical shape), consumed by ``torch.ops.mkldnn._linear_pointwise``:

- ``"gate"``, ``"up"``: tuples of E_l ``[I, H]`` tensors, for gated ``silu``/``gelu`` without a
  ``swiglu_limit``: GEMM1 runs as two products whose activation (``swish``/``gelu``) and
  ``mul`` are oneDNN post-ops, so ``silu(gate) * up`` never leaves the GEMM;
- ``"w13"``: a tuple of E_l ``[N, H]`` tensors otherwise (the activation runs in place after it);
- ``"w2"``: a tuple of E_l ``[H, I]`` tensors.

oneDNN packs bf16 only where torch reports oneDNN bf16 support (feature ``onednn_bf16``: AVX-512
BW/VL/DQ or AVX-NE-CONVERT); elsewhere its reorder raises. Measured on this project's 2-core AMD Zen 4
(Qwen3-30B-A3B expert shapes, 8 experts per call, 2 threads): packed bf16 experts ran 1.2-1.6x faster
than ``F.linear`` on the plain weights at 1-64 rows per expert, and packed fp32 2.2-2.8x faster than
MKL's; the fused gate/up post-ops added 2-10% more. ``to_canonical`` undoes the packing.
"""

from __future__ import annotations

import functools
import logging

import torch

from moe_oracle.plugin import CanonicalWeights, KernelWeights, MoEConfig, Platform, WeightError
from moe_oracle_cpu.cpu_grouped import native
from moe_oracle_cpu.cpu_grouped.panels import pack_quantized
from moe_oracle_cpu.cpu_grouped.spec import BACKEND

NATIVE_LAYOUT = "canonical+native_panels"
PACKED_LAYOUT = "canonical+onednn_packed"
ONEDNN_BF16 = "onednn_bf16"
# oneDNN post-op (attr, algorithm) of each activation it can fuse into GEMM1.
POST_OPS = {"silu": ("swish", ""), "gelu": ("gelu", "none")}
_log = logging.getLogger(__name__)


def cpu_features() -> frozenset[str]:
    return Platform.detect().features


def native_build(config: MoEConfig, features: frozenset[str]) -> str:
    """The native build the converter packs this config's experts for, or '' (then oneDNN or torch
    runs). A build failure is logged once, then the fallback runs."""
    build, _ = native.choose_build(config, features)
    if not build:
        return ""
    error = native.load_error(build)
    if error:
        _warn_once(error)
    return "" if error else build


@functools.cache
def _warn_once(error: str) -> None:
    _log.warning("cpu_grouped runs oneDNN or torch GEMMs instead of its native kernels: %s", error)


def native_silu(config: MoEConfig) -> bool:
    """Whether the native GEMM1 computes ``silu(gate) * up`` in its epilogue: gated silu without a
    limit or a w13 bias (both come before the activation), and no quantization of its output."""
    return (bool(config.is_gated) and config.activation == "silu" and config.swiglu_limit is None
            and not config.has_bias and config.scheme.activation is None)


def packs(config: MoEConfig, features: frozenset[str]) -> bool:
    """Whether the converter packs this config's experts for oneDNN (unquantized bf16/fp32 without a
    native build, bf16 only where oneDNN has bf16 GEMMs)."""
    if config.scheme.weight is not None or config.dtype not in (torch.bfloat16, torch.float32):
        return False
    if config.dtype == torch.bfloat16 and ONEDNN_BF16 not in features:
        return False
    return torch.backends.mkldnn.is_available() and not native_build(config, features)


def fuses_gate_up(config: MoEConfig) -> bool:
    """Whether GEMM1 runs as gate and up products with the activation and ``mul`` as post-ops."""
    return bool(config.is_gated) and config.activation in POST_OPS and config.swiglu_limit is None


def layout_build(weights: KernelWeights) -> str:
    """The native build a ``canonical+native_panels:<build>`` layout was packed for, else ''."""
    layout, _, build = weights.layout.partition(":")
    return build if layout == NATIVE_LAYOUT else ""


def convert(weights: CanonicalWeights, config: MoEConfig) -> KernelWeights:
    """Canonical tensors -> ``KernelWeights(backend="cpu_grouped")``; canonical tensors are shared,
    packed copies are new (the inputs are never modified). ``WeightError`` for tensors off the CPU
    (meta tensors included): the kernels read host memory."""
    if weights.w13.device.type != "cpu":
        raise WeightError("w13", "tensors on the CPU (cpu_grouped's kernels read host memory)",
                          f"device {weights.w13.device}")
    tensors = dict(weights.items())
    features = cpu_features()
    build = native_build(config, features)
    if build:
        return KernelWeights(backend=BACKEND, config=config, tensors=tensors, layout=f"{NATIVE_LAYOUT}:{build}",
                             extras=_panels(weights, config, build))
    if not packs(config, features):
        return KernelWeights(backend=BACKEND, config=config, tensors=tensors, layout="canonical")
    reorder = torch.ops.mkldnn._reorder_linear_weight
    i = config.intermediate_size_per_partition
    e_local = weights.w13.shape[0]
    extras: dict[str, tuple[torch.Tensor, ...]] = {}
    if fuses_gate_up(config):
        extras["gate"] = tuple(reorder(weights.w13[e, :i].contiguous()) for e in range(e_local))   # [I, H] each
        extras["up"] = tuple(reorder(weights.w13[e, i:].contiguous()) for e in range(e_local))     # [I, H] each
    else:
        extras["w13"] = tuple(reorder(weights.w13[e].contiguous()) for e in range(e_local))       # [N, H] each
    extras["w2"] = tuple(reorder(weights.w2[e].contiguous()) for e in range(e_local))             # [H, I] each
    return KernelWeights(backend=BACKEND, config=config, tensors=tensors, layout=PACKED_LAYOUT, extras=extras)


def _panels(weights: CanonicalWeights, config: MoEConfig, build: str) -> dict[str, native.Panels]:
    gate_up = native_silu(config)
    w13_key = "w13_gate_up_panels" if gate_up else "w13_panels"
    if config.scheme.weight is None:
        return {w13_key: native.float_panels(build, weights.w13, gate_up=gate_up),
                "w2_panels": native.float_panels(build, weights.w2)}
    assert weights.w13_scale is not None and weights.w2_scale is not None  # validated canonical tensors
    return {w13_key: pack_quantized(config, build, weights.w13, weights.w13_scale, weights.w13_zero_point,
                                    weights.w13_global_scale, gate_up=gate_up),
            "w2_panels": pack_quantized(config, build, weights.w2, weights.w2_scale, weights.w2_zero_point,
                                        weights.w2_global_scale)}


def to_canonical(weights: KernelWeights) -> CanonicalWeights:
    """The inverse of ``convert``: the canonical tensors, rebuilt from float panels or oneDNN's
    packing where there are some (quantized panels are derived data; their codes are the canonical ones)."""
    tensors = dict(weights.tensors)
    extras = weights.extras
    if "w2_panels" in extras and weights.config.scheme.weight is None:
        gate_up = "w13_gate_up_panels" in extras
        tensors["w13"] = native.unpack(extras["w13_gate_up_panels" if gate_up else "w13_panels"].codes,
                                       gate_up=gate_up)
        tensors["w2"] = native.unpack(extras["w2_panels"].codes)
    elif "w2" in extras:
        if "w13" in extras:
            tensors["w13"] = torch.stack([p.to_dense() for p in extras["w13"]])
        else:
            tensors["w13"] = torch.stack([torch.cat([g.to_dense(), u.to_dense()])
                                          for g, u in zip(extras["gate"], extras["up"], strict=True)])
        tensors["w2"] = torch.stack([p.to_dense() for p in extras["w2"]])
    return CanonicalWeights(**tensors)
