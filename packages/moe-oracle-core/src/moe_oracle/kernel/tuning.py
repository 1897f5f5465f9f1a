"""``Tuning``: what a backend lets the measured policy choose besides the backend itself.

A backend's spec names one with ``BackendSpec(tuning="module:attr")``; without one the backend is
measured as it comes (``Tuning()``). Two kinds of options, both plain JSON data in
``BucketPlan.kernel_config``:

- **variants** change the weight layout (``cpu_grouped``: native panels or oneDNN packing); each is
  converted once and is a separate candidate; buckets on different layouts cost extra memory.
- **launch configs** (``search``) change only how a kernel is launched (Triton's tiles); they share
  the variant's weights, so every bucket may have its own.

Subclass contract: override what the backend has; every method has a default that does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.kernel.modular import Experts
    from moe_oracle.kernel.weights import KernelWeights
    from moe_oracle.platform import Platform

KernelConfig = Mapping[str, Any]
Run = Callable[[KernelConfig], float]
"""ms per forward with this launch config (``inf`` when it fails); the measurement owns the timing."""


class Tuning:
    """Hooks of one backend for ``policy="measured"``."""

    def variants(self, config: MoEConfig, platform: Platform) -> list[dict[str, Any]]:
        """Layout variants worth measuring here, the default (``{}``) first."""
        return [{}]

    def variant_of(self, kernel_config: KernelConfig | None) -> dict[str, Any]:
        """The layout part of a chosen ``kernel_config`` (what ``convert`` needs)."""
        return {}

    def convert(self, convert: Callable[[], KernelWeights], variant: KernelConfig) -> KernelWeights:
        """Run the backend's converter (``convert``) for ``variant``."""
        return convert()

    def search(self, config: MoEConfig, num_tokens: int, run: Run) -> tuple[dict[str, Any], float]:
        """The best launch config at ``num_tokens`` and its ms; default: the backend's own choice."""
        return {}, run({})

    def apply(self, experts: Experts, kernel_config: KernelConfig | None) -> None:
        """Make ``experts`` launch with ``kernel_config`` (its launch part; ``None``: defaults)."""


DEFAULT_TUNING = Tuning()


def split(kernel_config: KernelConfig | None, variant: KernelConfig) -> dict[str, Any]:
    """``kernel_config`` without the variant's keys: its launch part."""
    return {k: v for k, v in (kernel_config or {}).items() if k not in variant}
