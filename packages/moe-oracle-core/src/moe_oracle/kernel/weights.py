"""Canonical weights (what a checkpoint holds) and kernel weights (what one backend consumes).

Canonical layout (E = local experts, I = intermediate size per partition, H = hidden size):
``w13`` ``[E, 2*I, H]`` gate rows then up rows (``[E, I, H]`` when not gated), ``w2`` ``[E, H, I]``;
scales as in DESIGN.md's table. A converter is a pure function
``convert(weights: CanonicalWeights, config: MoEConfig) -> KernelWeights``; it never mutates its
inputs and returns the config its layout implies (e.g. with I padded).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from moe_oracle.config.moe import MoEConfig

TENSOR_NAMES = (
    "w13", "w2", "w13_bias", "w2_bias", "w13_scale", "w2_scale", "a13_scale", "a2_scale",
    "w13_zero_point", "w2_zero_point", "w13_global_scale", "w2_global_scale", "score_correction_bias",
)


@dataclass(frozen=True, kw_only=True, eq=False)
class CanonicalWeights:
    """The tensors ``MoELayer.load_weights`` takes, keyword-only so a bias never lands in a scale slot."""

    w13: torch.Tensor
    w2: torch.Tensor
    w13_bias: torch.Tensor | None = None
    w2_bias: torch.Tensor | None = None
    w13_scale: torch.Tensor | None = None
    w2_scale: torch.Tensor | None = None
    a13_scale: torch.Tensor | None = None
    a2_scale: torch.Tensor | None = None
    w13_zero_point: torch.Tensor | None = None
    w2_zero_point: torch.Tensor | None = None
    w13_global_scale: torch.Tensor | None = None
    w2_global_scale: torch.Tensor | None = None
    score_correction_bias: torch.Tensor | None = None

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) for every tensor that is present."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                yield f.name, value

    def to(self, device: torch.device | str) -> CanonicalWeights:
        return CanonicalWeights(**{name: t.to(device) for name, t in self.items()})


@dataclass(frozen=True, kw_only=True, eq=False)
class KernelWeights:
    """Weights in one backend's layout, tagged with the backend and the config the layout implies.

    ``tensors`` holds every tensor by the canonical name it was derived from (``w13``, ``w2``,
    ``w13_scale``, ...) plus backend-specific extras; ``layout`` names the layout for logs and
    errors; ``source`` identifies the canonical load it was converted from.
    """

    backend: str
    config: MoEConfig
    tensors: Mapping[str, torch.Tensor]
    layout: str = "canonical"
    source: int = 0
    extras: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))
        for name in ("w13", "w2"):
            if name not in self.tensors:
                raise ValueError(f"KernelWeights for {self.backend!r} lacks {name!r}")

    @property
    def w13(self) -> torch.Tensor:
        return self.tensors["w13"]

    @property
    def w2(self) -> torch.Tensor:
        return self.tensors["w2"]

    def get(self, name: str) -> torch.Tensor | None:
        return self.tensors.get(name)

    def require(self, backend: str, layout: str | None = None) -> None:
        """Raise ``WeightError`` unless these were converted for ``backend`` (in ``layout``): experts
        call it first, so weights in another backend's layout never reach a kernel."""
        if self.backend != backend or (layout is not None and self.layout != layout):
            from moe_oracle.errors import WeightError

            want = f"weights converted for {backend!r}" + (f" in layout {layout!r}" if layout else "")
            raise WeightError("weights", want, f"backend {self.backend!r} layout {self.layout!r}")

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.tensors.items())
        return f"<KernelWeights backend={self.backend!r} layout={self.layout!r} {shapes}>"


def canonical_kernel_weights(weights: CanonicalWeights, config: MoEConfig, *, backend: str) -> KernelWeights:
    """The identity conversion, for backends that consume canonical tensors as they are."""
    return KernelWeights(backend=backend, config=config, tensors=dict(weights.items()), layout="canonical")
