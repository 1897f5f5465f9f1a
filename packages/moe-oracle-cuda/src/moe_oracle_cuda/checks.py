"""Support checks and rule conditions shared by the FlashInfer backends: data, each with a reason.

A check answers "can this backend serve (config, platform)?" with ``Support(ok, reason)``; the
reasons name what is needed and what the config has ("fp8_block needs capability 9.0, have 10.0").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from moe_oracle.support import Check, Support, capability_major, config_where, ep_size_above, scheme_in

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.platform import Platform

UNQUANTIZED = ("bf16", "fp16", "fp32")
FLASHINFER_LIBRARY = {"flashinfer": "flashinfer-python"}

# Capability families, named as the rules name them: 9.0 (Hopper), 10.x (datacenter Blackwell),
# 12.x (consumer / workstation Blackwell). 11.x (Thor) has no FlashInfer fused-MoE cubins here.
CapabilityTest = tuple[str, Callable[[tuple[int, int]], bool]]
SM90: CapabilityTest = ("9.0", lambda cap: tuple(cap) == (9, 0))
SM10X: CapabilityTest = ("10.x", lambda cap: cap[0] == 10)
SM12X: CapabilityTest = ("12.x", lambda cap: cap[0] == 12)


def _cap(platform: Platform) -> str:
    cap = platform.capability
    return "none" if cap is None else f"{cap[0]}.{cap[1]}"


def capability_by_scheme(table: Mapping[str, tuple[CapabilityTest, ...]]) -> Check:
    """The capabilities each scheme runs on: ``{"fp8_block": (SM90,), ...}``."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        allowed = table[config.scheme.base_name]
        cap = platform.capability
        if cap is not None and any(test(cap) for _, test in allowed):
            return Support.yes()
        names = "/".join(name for name, _ in allowed)
        return Support.no(f"{config.scheme.base_name} needs capability {names}, have {_cap(platform)}")

    described = "; ".join(f"{s}: {'/'.join(n for n, _ in caps)}" for s, caps in table.items())
    return Check(f"capability by scheme ({described})", fn)


def activations_by_scheme(table: Mapping[str, frozenset[str]]) -> Check:
    """The activations each scheme's kernels implement."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        allowed = table[config.scheme.base_name]
        if config.activation in allowed:
            return Support.yes()
        return Support.no(f"{config.scheme.base_name} kernels implement activation {'/'.join(sorted(allowed))}, "
                          f"not {config.activation}")

    return Check("activation by scheme", fn)


def bias_schemes(schemes: frozenset[str]) -> Check:
    """Biases only for the schemes whose kernels take them."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        if not config.has_bias or config.scheme.base_name in schemes:
            return Support.yes()
        return Support.no(f"{config.scheme.base_name} kernels take no biases (only {'/'.join(sorted(schemes))} do)")

    return Check(f"biases only with {'/'.join(sorted(schemes))}", fn)


def clamp_schemes(schemes: frozenset[str]) -> Check:
    """A ``swiglu_limit`` needs a kernel that applies the clamp; the others would ignore it."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        if config.swiglu_limit is None or config.scheme.base_name in schemes:
            return Support.yes()
        return Support.no(f"swiglu_limit={config.swiglu_limit:g} is not applied by the {config.scheme.base_name} "
                          f"kernel (only {'/'.join(sorted(schemes))} apply it)")

    return Check(f"swiglu_limit applied for {'/'.join(sorted(schemes))}", fn)


def multiple_of(field: str, value: Callable[[MoEConfig], int], multiple: int, schemes: frozenset[str],
                why: str) -> Check:
    """``value(config) % multiple == 0`` for the given schemes, e.g. 128-row fp8 blocks split at gate/up."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        if config.scheme.base_name not in schemes or value(config) % multiple == 0:
            return Support.yes()
        return Support.no(f"{config.scheme.base_name} needs {field} % {multiple} == 0 ({why}), have {value(config)}")

    return Check(f"{field} multiple of {multiple} for {'/'.join(sorted(schemes))}", fn)


def no_router_weight_on_input() -> Check:
    return Check("router weights on the output", lambda c, p: Support.no(
        "applies router weights to the expert outputs, not the input (apply_router_weight_on_input=True)")
        if c.apply_router_weight_on_input else Support.yes())


# Conditions of the priority rules ----------------------------------------------------------------
HOPPER = capability_major(9)
UNQUANTIZED_SCHEME = scheme_in(*UNQUANTIZED)
FP8_BLOCK = scheme_in("fp8_block")
MXFP4_FAMILY = scheme_in("mxfp4", "mxfp4_a8")


def is_gpt_oss(config: MoEConfig) -> bool:
    """gpt-oss's MoE: the clamped swigluoai activation with biases on both GEMMs."""
    return config.activation == "swigluoai" and config.has_bias


GPT_OSS = config_where("gpt-oss (swigluoai with biases)", is_gpt_oss)
EXPERT_PARALLEL = ep_size_above(1)
