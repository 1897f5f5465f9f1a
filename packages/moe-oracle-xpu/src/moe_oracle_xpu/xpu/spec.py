"""The ``xpu`` spec: when vllm-xpu-kernels' fused MoE can serve a layer, and why not otherwise.

Checks run in this order after the spec's own (vendor xpu, standard format, scheme, activation,
``vllm_xpu_kernels`` installed): the library version (>= 0.1.12, whose ``XpuFusedMoe`` infers the
scheme from the weights and takes ``gemm1_clamp_limit``), the compute dtype, int4 group size and
symmetry, gated activations (relu2 excepted), swigluoai constants, shapes, and no router weight
on the input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moe_oracle.plugin import (
    GPT_OSS_SWIGLU_ALPHA,
    GPT_OSS_SWIGLU_LIMIT,
    BackendSpec,
    Check,
    Support,
    check,
    dtype_name,
    library_at_least,
)
from moe_oracle_xpu.version import PLUGIN_API

BACKEND = "xpu"

if TYPE_CHECKING:
    from moe_oracle.plugin import MoEConfig, Platform

XPU_RANK = 10
LIBRARY = "vllm_xpu_kernels"
MIN_VERSION = (0, 1, 12)
XPU_SCHEMES = frozenset({"bf16", "fp16", "fp8_tensor", "mxfp8", "mxfp4", "int4_w4a16"})
INT4_GROUP = 128
# Scheme -> the multiple H and I must be (full scale groups along K).
_SHAPE_MULTIPLE = {"mxfp4": 32, "mxfp8": 32, "int4_w4a16": INT4_GROUP}


def _int4(config: MoEConfig, platform: Platform) -> Support:
    scheme = config.scheme
    if scheme.base_name != "int4_w4a16":
        return Support.yes()
    assert scheme.weight is not None
    if scheme.group_size == INT4_GROUP and scheme.weight.symmetric:
        return Support.yes()
    return Support.no(f"int4_w4a16 only with group size {INT4_GROUP} and no zero points (the library's uint4 "
                      f"kernels assume zero point 8), scheme is {scheme.name}")


def _swigluoai(config: MoEConfig, platform: Platform) -> Support:
    if config.activation != "swigluoai":
        return Support.yes()
    if config.swiglu_alpha == GPT_OSS_SWIGLU_ALPHA and config.swiglu_limit == GPT_OSS_SWIGLU_LIMIT:
        return Support.yes()
    return Support.no(f"swigluoai with alpha {GPT_OSS_SWIGLU_ALPHA} and limit {GPT_OSS_SWIGLU_LIMIT} only (the "
                      f"library's constants), config has alpha {config.swiglu_alpha} and limit {config.swiglu_limit}")


def _shapes(config: MoEConfig, platform: Platform) -> Support:
    h, i = config.hidden_size, config.intermediate_size_per_partition
    multiple = _SHAPE_MULTIPLE.get(config.scheme.base_name)
    if multiple is not None and (h % multiple or i % multiple):
        return Support.no(f"{config.scheme.base_name} needs hidden_size and intermediate_size per partition "
                          f"multiples of {multiple} (whole scale groups), have H={h}, I={i}")
    if config.activation == "relu2" and i % 2:
        return Support.no(f"relu2 needs an even intermediate size per partition (the library halves it), have I={i}")
    return Support.yes()


CHECKS = (
    library_at_least(LIBRARY, MIN_VERSION, "XpuFusedMoe that infers the scheme from the weights"),
    check("dtype bf16/fp16", lambda c, p: dtype_name(c.dtype) in ("bf16", "fp16"),
          lambda c, p: f"computes in bf16/fp16, config dtype is {dtype_name(c.dtype)}"),
    Check(f"int4_w4a16: group {INT4_GROUP}, symmetric", _int4),
    check("gated activation (relu2: not gated)", lambda c, p: c.is_gated or c.activation == "relu2",
          lambda c, p: f"runs {c.activation} only gated (act(gate) * up), config is not gated"),
    Check("swigluoai: gpt-oss constants", _swigluoai),
    Check("whole scale groups along H and I", _shapes),
    check("router weight on the output", lambda c, p: not c.apply_router_weight_on_input,
          "applies router weights to the expert output only, config has apply_router_weight_on_input"),
)

XPU_SPEC = BackendSpec(
    name=BACKEND,
    plugin_api=PLUGIN_API,
    experts="moe_oracle_xpu.xpu.experts:XpuExperts",
    converter="moe_oracle_xpu.xpu.converter:convert",
    vendors=frozenset({"xpu"}),
    schemes=XPU_SCHEMES,
    activations=frozenset({"silu", "gelu", "swigluoai", "relu2"}),
    libraries={LIBRARY: "vllm-xpu-kernels"},
    checks=CHECKS,
    rank=XPU_RANK,
    description="vllm-xpu-kernels XpuFusedMoe: bf16/fp16, fp8 per tensor, mxfp8, mxfp4, int4 on Intel GPUs",
)
