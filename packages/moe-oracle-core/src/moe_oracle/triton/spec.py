"""Specs of the ``triton`` (standard format) and ``batched_triton`` (batched format) backends.

Both run wherever Triton compiles: CUDA, ROCm and Intel XPU GPUs, and a CPU when
``TRITON_INTERPRET=1`` is set (the interpreter: for tests only, about 1000x slower, so ranked
behind every native CPU backend).

Weight-only schemes (int4/int8 grouped, int8 per channel, mxfp4, nvfp4 weights) run on the
mixed-input path: packed weights dequantized in registers just before the MMA (``dequant.py``).
Schemes whose activations would be quantized where no such kernel exists are served at a *higher*
activation precision (``Support.served_scheme``; the oracle takes an exact backend first, the
reference aside):

| scheme | served as | why |
|---|---|---|
| ``mxfp4_a8`` | ``mxfp4`` | no mxfp4 x mxfp8 Triton kernel |
| ``nvfp4`` | ``nvfp4_a16`` (nvfp4 weights, compute-dtype activations) | no fp4 x fp4 Triton kernel |
| ``w4a8_int8``, ``w4a8_fp8`` | ``int4_w4a16`` (same group size) | no w4a8 Triton kernel |
| fp8 schemes below CUDA 8.9 / off ROCm gfx9, gfx12 | ``<scheme>_a16`` (e4m3 weights decoded in registers) | no fp8 MMA |

Never the other way round: nothing here runs a lower precision than asked.
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
    "mxfp4", "mxfp4_a8", "nvfp4", "w4a8_int8", "w4a8_fp8",
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


def fp8_hardware(platform: Platform) -> tuple[bool, str]:
    """Whether fp8 activations can feed the MMA on ``platform``, and if not, why."""
    if platform.vendor == "cuda":
        cap = platform.capability
        if cap is None or tuple(cap) < (8, 9):
            return False, f"no fp8 MMA below capability 8.9, have {'none' if cap is None else f'{cap[0]}.{cap[1]}'}"
    elif platform.vendor == "rocm" and not (platform.arch or "").startswith(FP8_ROCM_ARCHS):
        return False, f"no fp8 MMA off arch {'/'.join(FP8_ROCM_ARCHS)}, have {platform.arch or 'none'}"
    return True, ""


_UPCAST = {"mxfp4_a8": "mxfp4", "nvfp4": "nvfp4_a16", "w4a8_int8": "int4_w4a16", "w4a8_fp8": "int4_w4a16"}


def served_scheme(config: MoEConfig, *, fp8_mma: bool) -> str | None:
    """The scheme the Triton experts run for ``config`` when it is not ``config.scheme`` itself
    (a higher activation precision, see the module table), else None."""
    name = config.scheme.base_name
    if name in _UPCAST:
        return _UPCAST[name] + config.scheme.name.removeprefix(name)  # keeps a _g<size> option
    weight = config.scheme.weight
    if weight is not None and weight.dtype == "fp8_e4m3" and config.scheme.activation is not None and not fp8_mma:
        return name.removesuffix("_static") + "_a16"
    return None


def _activation_precision(config: MoEConfig, platform: Platform) -> Support:
    from moe_oracle.config.moe import dtype_name

    fp8_ok, why = fp8_hardware(platform)
    served = served_scheme(config, fp8_mma=fp8_ok)
    if served is None:
        return Support.yes()
    because = why if config.scheme.weight is not None and config.scheme.weight.dtype == "fp8_e4m3" else \
        f"no {config.scheme.base_name} Triton kernel"
    return Support.yes(f"serves {config.scheme.name} at higher activation precision ({dtype_name(config.dtype)}) "
                       f"as {served}: {because}", served_scheme=served)


RUNS_HERE = Check("a GPU, or cpu with TRITON_INTERPRET=1", _runs_here)
ACTIVATION_PRECISION = Check(
    "exact activations, else higher precision (mxfp4_a8, nvfp4, w4a8_*; fp8 without fp8 MMA)", _activation_precision)
# ``BackendSpec.supports`` runs them in order (``support.first_failure``): the first failure, else
# the passing checks' notes (the interpreter, the higher activation precision).
_CHECKS = (RUNS_HERE, ACTIVATION_PRECISION)
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
