"""The ``aiter`` spec: when AMD AITER's fused MoE can serve a layer, and why not otherwise.

Checks run in this order after the spec's own (vendor rocm, standard format, scheme, activation,
``aiter`` installed): its version (>= 0.1.7), the ``MOE_ORACLE_ROCM_AITER`` switch, the arch (gfx942 / gfx950), the
compute dtype, per-scheme archs (mxfp4 on gfx950 only, w4a8_fp8 on gfx942 only), a gated
activation, mxfp4 and swigluoai only together (with gpt-oss constants), biases only on the mxfp4
path, shapes the weight shuffles can tile, and no router weight on the input for fp8_block.

On the mxfp4 path AITER chooses the activation precision itself (bf16 below a token-count bound,
fp8 or fp4 above it, depending on its version and the arch); neither mxfp4 nor mxfp4_a8 can be
forced through ``aiter.fused_moe``, so its numerics match those schemes only within the fp4
activation tolerance. With silu/gelu it would quantize activations to MXFP4 (w4a4) outright, so
those are refused.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from moe_oracle.plugin import (
    GPT_OSS_SWIGLU_ALPHA,
    GPT_OSS_SWIGLU_LIMIT,
    BackendSpec,
    Check,
    ConfigError,
    Support,
    check,
    dtype_name,
    library_at_least,
)
from moe_oracle_rocm.version import PLUGIN_API

BACKEND = "aiter"

if TYPE_CHECKING:
    from moe_oracle.plugin import MoEConfig, Platform

AITER_RANK = 10
MIN_VERSION = (0, 1, 7)  # the first aiter.fused_moe taking hidden_pad, intermediate_pad, bias1, bias2
ENV_SWITCH = "MOE_ORACLE_ROCM_AITER"
_OFF = ("0", "false", "off", "no")
_ON = ("", "1", "true", "on", "yes")
AITER_ARCHS = ("gfx942", "gfx950")
MXFP4_SCHEMES = ("mxfp4", "mxfp4_a8")
AITER_SCHEMES = frozenset({
    "bf16", "fp16", "fp8_tensor", "fp8_tensor_static", "fp8_channel", "fp8_block", "w4a8_fp8", *MXFP4_SCHEMES,
})
# Schemes whose kernels exist on one arch only, and why.
_SCHEME_ARCH = {
    "mxfp4": ("gfx950", "AITER's MXFP4 MoE kernels are built for gfx950 (CDNA4) only"),
    "mxfp4_a8": ("gfx950", "AITER's MXFP4 MoE kernels are built for gfx950 (CDNA4) only"),
    "w4a8_fp8": ("gfx942", "AITER ships its int4 x fp8 MoE kernels (fmoe_int4fp8) for gfx942 only"),
}


def aiter_enabled() -> bool:
    """False when ``MOE_ORACLE_ROCM_AITER`` is 0/false/off/no, True when unset or 1/true/on/yes (read at
    every check); any other value is a ``ConfigError`` listing the allowed ones."""
    value = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ConfigError(ENV_SWITCH, f"unknown value {os.environ[ENV_SWITCH]!r}", allowed=(*_ON, *_OFF))


def _scheme_arch(config: MoEConfig, platform: Platform) -> Support:
    need = _SCHEME_ARCH.get(config.scheme.base_name)
    if need is None or platform.arch == need[0]:
        return Support.yes()
    return Support.no(f"{config.scheme.base_name} needs arch {need[0]} ({need[1]}), have {platform.arch}")


def _activation_path(config: MoEConfig, platform: Platform) -> Support:
    mxfp4 = config.scheme.base_name in MXFP4_SCHEMES
    if config.activation != "swigluoai":
        if mxfp4:
            return Support.no(f"runs {config.scheme.base_name} only with swigluoai: on its per_1x32 path AITER "
                              f"quantizes {config.activation} activations to MXFP4 (w4a4, another scheme)")
        if config.swiglu_limit is not None:
            return Support.no(f"does not clamp {config.activation} (swiglu_limit={config.swiglu_limit}); "
                              "AITER clamps only inside its swigluoai kernel")
        return Support.yes()
    if not mxfp4:
        return Support.no(f"runs swigluoai only on the mxfp4 path (AITER's Swiglu kernels are its a16w4 ones), "
                          f"scheme is {config.scheme.base_name}")
    if config.swiglu_alpha != GPT_OSS_SWIGLU_ALPHA or config.swiglu_limit != GPT_OSS_SWIGLU_LIMIT:
        return Support.no(f"swigluoai with alpha {GPT_OSS_SWIGLU_ALPHA} and limit {GPT_OSS_SWIGLU_LIMIT} only "
                          f"(AITER's constants), config has alpha {config.swiglu_alpha} and limit {config.swiglu_limit}")
    return Support.yes()


def _shapes(config: MoEConfig, platform: Platform) -> Support:
    if config.scheme.base_name in MXFP4_SCHEMES:
        return Support.yes()  # the converter zero-pads H and I to multiples of 256
    multiple = 128 if config.scheme.base_name == "fp8_block" else 32
    h, i = config.hidden_size, config.intermediate_size_per_partition
    if h % multiple or i % multiple:
        why = "128x128 weight blocks" if multiple == 128 else "the (16, 16) weight shuffle's 32-wide K tiles"
        return Support.no(f"needs hidden_size and intermediate_size per partition multiples of {multiple} "
                          f"({why}), have H={h}, I={i}")
    return Support.yes()


CHECKS = (
    library_at_least("aiter", MIN_VERSION, "fused_moe with hidden_pad, intermediate_pad, bias1, bias2"),
    check(f"{ENV_SWITCH} not 0", lambda c, p: aiter_enabled(),
          lambda c, p: f"disabled by {ENV_SWITCH}={os.environ.get(ENV_SWITCH)} (unset it or set 1 to enable)"),
    check(f"arch {'/'.join(AITER_ARCHS)}", lambda c, p: p.arch in AITER_ARCHS,
          lambda c, p: f"needs arch {'/'.join(AITER_ARCHS)} (AITER's fused-MoE kernels target CDNA3/CDNA4), "
                       f"have {p.arch or 'none'}"),
    check("dtype bf16/fp16", lambda c, p: dtype_name(c.dtype) in ("bf16", "fp16"),
          lambda c, p: f"computes in bf16/fp16, config dtype is {dtype_name(c.dtype)}"),
    Check("mxfp4 on gfx950, w4a8_fp8 on gfx942", _scheme_arch),
    check("a gated activation", lambda c, p: bool(c.is_gated),
          lambda c, p: f"needs a gated activation (AITER fuses act(gate) * up), {c.activation} is not gated here"),
    Check("mxfp4 with swigluoai (gpt-oss constants) only, swigluoai with mxfp4 only", _activation_path),
    check("biases only with mxfp4", lambda c, p: not c.has_bias or c.scheme.base_name in MXFP4_SCHEMES,
          lambda c, p: f"takes biases only on the mxfp4 path (bias1/bias2 of AITER's a16w4 kernels), "
                       f"scheme is {c.scheme.base_name}"),
    Check("H, I multiples of 32 (128 for fp8_block)", _shapes),
    check("router weight on the output for fp8_block",
          lambda c, p: not (c.apply_router_weight_on_input and c.scheme.base_name == "fp8_block"),
          "applies the router weight on the input (doweight_stage1) for every scheme but fp8_block"),
)

AITER_SPEC = BackendSpec(
    name=BACKEND,
    plugin_api=PLUGIN_API,
    experts="moe_oracle_rocm.aiter.experts:AiterExperts",
    converter="moe_oracle_rocm.aiter.converter:convert",
    vendors=frozenset({"rocm"}),
    schemes=AITER_SCHEMES,
    activations=frozenset({"silu", "gelu", "swigluoai"}),
    libraries={"aiter": "amd-aiter"},
    checks=CHECKS,
    environment=(ENV_SWITCH,),
    rank=AITER_RANK,
    description="AMD AITER fused MoE (aiter.fused_moe): bf16, fp8, w4a8, mxfp4 on gfx942/gfx950",
)
