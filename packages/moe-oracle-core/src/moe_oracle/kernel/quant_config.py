"""``QuantConfig``: the scales, zero points, global scales and biases of every operand.

Every field is keyword-only: a bias can never land in a scale's slot (a bug vLLM's positional
``FusedMoEQuantDesc`` invites).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from moe_oracle.config.quant import QuantKey, QuantScheme

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True, eq=False)
class QuantDesc:
    """One operand: its quantization key (``None`` = unquantized) and its tensors."""

    key: QuantKey | None = None
    scale: torch.Tensor | None = None
    zero_point: torch.Tensor | None = None
    global_scale: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def __repr__(self) -> str:
        def show(t: torch.Tensor | None) -> str:
            return "None" if t is None else f"{tuple(t.shape)}:{str(t.dtype).removeprefix('torch.')}"

        return (f"QuantDesc(key={str(self.key) if self.key else None}, scale={show(self.scale)}, "
                f"zero_point={show(self.zero_point)}, global_scale={show(self.global_scale)}, bias={show(self.bias)})")


@dataclass(frozen=True, kw_only=True, eq=False)
class QuantConfig:
    """Operands ``w13``, ``w2`` (weights, with their biases) and ``a13``, ``a2`` (activations entering
    the first and second GEMM). ``swiglu_alpha``/``swiglu_limit`` carry the gated-activation
    constants that some kernels take with the quant config."""

    scheme: QuantScheme
    w13: QuantDesc = field(default_factory=QuantDesc)
    w2: QuantDesc = field(default_factory=QuantDesc)
    a13: QuantDesc = field(default_factory=QuantDesc)
    a2: QuantDesc = field(default_factory=QuantDesc)
    swiglu_alpha: float | None = None
    swiglu_limit: float | None = None

    @property
    def weight_block_shape(self) -> tuple[int, ...] | None:
        key = self.scheme.weight
        if key is None or key.granularity.kind not in ("block", "group"):
            return None
        return key.granularity.shape
