"""Specs of the ``triton`` (standard format) and ``batched_triton`` (batched format) backends.

Both run wherever Triton compiles: CUDA, ROCm and Intel XPU GPUs, and a CPU when
``TRITON_INTERPRET=1`` is set (the interpreter: for tests only, about 1000x slower, so ranked
behind every native CPU backend). fp8 schemes need hardware fp8 conversions: CUDA capability
>= 8.9 or a ROCm gfx9/gfx12 GPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moe_oracle.spec import BackendSpec, PriorityHint
from moe_oracle.support import Check, Support, on_vendor

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.platform import Platform

TRITON_RANK = 50
BATCHED_TRITON_RANK = 60
# On a CPU the interpreter serves tests; any native CPU backend is faster, the reference slower.
CPU_INTERPRETER_RANK = 900_000

TRITON_SCHEMES = frozenset({
    "bf16", "fp16", "fp32",
    "fp8_tensor", "fp8_tensor_static", "fp8_channel", "fp8_block",
    "int8_w8a8", "int8_w8a16",
    "int4_w4a16", "int8_w8a16_group",
})
FP8_ROCM_ARCHS = ("gfx9", "gfx12")


def _runs_here(config: MoEConfig, platform: Platform) -> Support:
    if platform.vendor == "cpu":
        if not platform.triton_interpreter:
            return Support.no("needs TRITON_INTERPRET=1 on cpu")
        return Support.yes("runs in the Triton interpreter (TRITON_INTERPRET=1): for tests, not for speed")
    if platform.vendor == "cuda" and platform.device_name:
        from moe_oracle.triton.configs import describe_configs  # no torch, no triton

        return Support.yes(describe_configs(config, platform.device_name))
    return Support.yes()


def _fp8_hardware(config: MoEConfig, platform: Platform) -> Support:
    weight = config.scheme.weight
    if weight is None or weight.dtype != "fp8_e4m3":
        return Support.yes()
    if platform.vendor == "cuda":
        cap = platform.capability
        if cap is None or tuple(cap) < (8, 9):
            have = "none" if cap is None else f"{cap[0]}.{cap[1]}"
            return Support.no(f"needs capability >= 8.9, have {have}")
    elif platform.vendor == "rocm" and not (platform.arch or "").startswith(FP8_ROCM_ARCHS):
        return Support.no(f"needs arch {'/'.join(FP8_ROCM_ARCHS)} for fp8, have {platform.arch or 'none'}")
    return Support.yes()


RUNS_HERE = Check("a GPU, or cpu with TRITON_INTERPRET=1", _runs_here)
FP8_HARDWARE = Check("fp8: capability >= 8.9 on cuda, gfx9/gfx12 on rocm", _fp8_hardware)
# ``BackendSpec.supports`` runs them in order (``support.first_failure``): the first failure, else
# RUNS_HERE's note (the interpreter) when both pass.
_CHECKS = (RUNS_HERE, FP8_HARDWARE)
_INTERPRETER_LAST = PriorityHint(
    rank=CPU_INTERPRETER_RANK, when=on_vendor("cpu"),
    reason="the Triton interpreter is for tests; native CPU experts are far faster",
)


def triton_backends() -> list[BackendSpec | PriorityHint]:
    """The two Triton backends, read by ``moe_oracle.backends.core_backends``."""
    common = dict(
        vendors=frozenset({"cuda", "rocm", "xpu", "cpu"}),
        schemes=TRITON_SCHEMES,
        libraries={"triton": "triton"},
        checks=_CHECKS,
        hints=(_INTERPRETER_LAST,),
    )
    return [
        BackendSpec(
            name="triton",
            experts="moe_oracle.triton.experts:TritonExperts",
            tuning="moe_oracle.triton.tuning:TUNING",
            rank=TRITON_RANK,
            description="Triton fused MoE: aligned grouped GEMMs, fused activation and quantization",
            **common,  # type: ignore[arg-type]
        ),
        BackendSpec(
            name="batched_triton",
            experts="moe_oracle.triton.experts:BatchedTritonExperts",
            activation_format="batched",
            rank=BATCHED_TRITON_RANK,
            description="Triton fused MoE over the batched [E_l, max_tokens, H] format (expert parallel)",
            **common,  # type: ignore[arg-type]
        ),
    ]
