"""Spec of ``torch_grouped``: torch's own grouped GEMMs on CUDA capability >= 9.0.

bf16 runs ``torch._grouped_mm`` (CUTLASS grouped GEMMs in torch since 2.8); ``fp8_channel``
(e4m3 weights with per-channel scales, per-token dynamic activations) runs
``torch._scaled_grouped_mm`` with row-wise scales, where the installed torch has it. Ranked after
``triton`` so that the rules' choice is unchanged; ``policy="measured"`` decides between them per
bucket, on the same (canonical) weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moe_oracle.spec import BackendSpec
from moe_oracle.support import Check, Support

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.platform import Platform

BACKEND = "torch_grouped"
TORCH_GROUPED_RANK = 55
SCHEMES = frozenset({"bf16", "fp8_channel"})
_OPS = {"bf16": "_grouped_mm", "fp8_channel": "_scaled_grouped_mm"}
MIN_TORCH = (2, 8)


def _capability(config: MoEConfig, platform: Platform) -> Support:
    cap = platform.capability
    if cap is None or tuple(cap) < (9, 0):
        have = "none" if cap is None else f"{cap[0]}.{cap[1]}"
        return Support.no(f"needs capability >= 9.0 (torch's grouped GEMMs), have {have}")
    return Support.yes()


def _torch_op(config: MoEConfig, platform: Platform) -> Support:
    """The op must exist in this torch: on a real platform it is looked up; a simulated one must
    list torch >= 2.8 among its libraries."""
    op = _OPS[config.scheme.base_name]
    if platform.simulated:
        version = platform.libraries.get("torch")
        if version is None:
            return Support.no("needs torch >= 2.8 (the simulated platform lists no torch)")
        if _version(version) < MIN_TORCH:
            return Support.no(f"needs torch >= 2.8, have {version}")
        return Support.yes(f"torch.{op}")
    import torch

    if not hasattr(torch, op):
        return Support.no(f"this torch ({torch.__version__}) has no torch.{op}")
    return Support.yes(f"torch.{op}")


def _shapes(config: MoEConfig, platform: Platform) -> Support:
    """Grouped GEMM operands need 16-byte aligned rows: H and I multiples of 16."""
    h, i = config.hidden_size, config.intermediate_size_per_partition
    if h % 16 or i % 16:
        return Support.no(f"needs the hidden and intermediate sizes to be multiples of 16, have {h} and {i}")
    return Support.yes()


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


TORCH_GROUPED_SPEC = BackendSpec(
    name=BACKEND,
    experts="moe_oracle.backends.torch_grouped.experts:TorchGroupedExperts",
    vendors=frozenset({"cuda"}),
    schemes=SCHEMES,
    rank=TORCH_GROUPED_RANK,
    checks=(Check("capability >= 9.0", _capability), Check("torch's grouped GEMM op", _torch_op),
            Check("16-byte aligned rows", _shapes)),
    description=("tokens sorted by expert; torch._grouped_mm (bf16) or torch._scaled_grouped_mm (fp8 row-wise) "
                 "for both GEMMs, the activation in between, router weights and the top-k sum after GEMM2"),
)
