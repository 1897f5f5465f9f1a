"""A layer's kernels per token bucket, built from its ``Selection.plan`` once per weight load.

The primary backend's weights (``Selection.backend`` in ``Selection.primary_config``'s variant) are
converted once. A bucket on the same backend and variant shares them, with its own launch config
(its own experts object, the same tensors). A bucket on another backend whose measured layout is the
primary's (``KernelWeights.layout`` equal) shares the same tensors, re-tagged for that backend. A
bucket on another layout gets its own conversion, once per layout, only where the plan was made
with ``allow_extra_memory=True``; ``extra_memory_bytes`` counts what those add.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from moe_oracle.kernel.tuning import split
from moe_oracle.kernel.weights import KernelWeights

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.kernel.modular import FusedMoEKernel
    from moe_oracle.kernel.weights import CanonicalWeights
    from moe_oracle.oracle.base import MoEKernelOracle
    from moe_oracle.oracle.report import Selection

logger = logging.getLogger("moe_oracle")


def convert_primary(oracle: MoEKernelOracle, selection: Selection, config: MoEConfig,
                    canonical: CanonicalWeights) -> KernelWeights:
    """The canonical weights converted for the primary backend, in its planned layout variant."""
    if not selection.primary_config:
        return oracle.convert_to_kernel_format(selection, config, canonical)
    tuning = selection.spec.load_tuning()
    return tuning.convert(lambda: oracle.convert_to_kernel_format(selection, config, canonical),
                          selection.primary_config)


class BucketKernels:
    """``kernel_for(num_tokens)``: a bisect over the buckets' upper bounds, no device work."""

    __slots__ = ("extra_memory_bytes", "kernels", "uppers")

    def __init__(self, uppers: list[int], kernels: list[FusedMoEKernel], extra_memory_bytes: int = 0) -> None:
        self.uppers = uppers
        self.kernels = kernels
        self.extra_memory_bytes = extra_memory_bytes

    def kernel_for(self, num_tokens: int) -> FusedMoEKernel:
        if not self.uppers:
            return self.kernels[0]
        return self.kernels[bisect.bisect_left(self.uppers, num_tokens)]


def build_bucket_kernels(oracle: MoEKernelOracle, selection: Selection, config: MoEConfig,
                         canonical: CanonicalWeights, primary: KernelWeights, primary_kernel: FusedMoEKernel,
                         make_kernel: Callable[[str, KernelWeights], FusedMoEKernel]) -> BucketKernels:
    """One kernel per bucket of ``selection.plan`` (see the module docstring). ``make_kernel(backend,
    weights)`` assembles a kernel as the layer does (its prepare/finalize)."""
    plan = selection.plan
    if len(plan) == 1 and not plan[0].kernel_config and plan[0].backend == selection.backend:
        return BucketKernels([], [primary_kernel])
    from moe_oracle.oracle.measure import unique_bytes

    reg = oracle.registry
    info = selection.report.plan_info
    allow_extra = bool(info and info.allow_extra_memory)
    primary_variant = dict(selection.primary_config or {})
    weights: dict[tuple[str, str], KernelWeights] = {(selection.backend, _key(primary_variant)): primary}
    kernels: dict[tuple[str, str], FusedMoEKernel] = {}
    extra = 0
    out = []
    for p in plan:
        spec = reg.get(p.backend)
        tuning = spec.load_tuning()
        variant = tuning.variant_of(p.kernel_config)
        launch = split(p.kernel_config, variant)
        wkey = (p.backend, _key(variant))
        if wkey not in weights:
            layout = next((t.layout for t in p.timings if t.backend == p.backend and t.ms is not None
                           and tuning.variant_of(t.kernel_config) == variant), "")
            if layout and layout == primary.layout:
                weights[wkey] = KernelWeights(backend=p.backend, config=primary.config, tensors=primary.tensors,
                                              layout=primary.layout, source=primary.source, extras=primary.extras)
            elif allow_extra:
                spec_ = spec
                kw = tuning.convert(lambda spec_=spec_: oracle.convert_to_kernel_format(spec_.name, config, canonical),
                                    variant)
                weights[wkey] = KernelWeights(backend=kw.backend, config=kw.config, tensors=kw.tensors,
                                              layout=kw.layout, source=primary.source, extras=kw.extras)
                extra += unique_bytes(kw, canonical)
            else:
                logger.warning("moe-oracle: bucket %s planned %s on layout %r, not the weights' %r; it runs %s "
                               "(allow_extra_memory=True would convert it)", p.label, p.backend, layout or "?",
                               primary.layout, selection.backend)
                out.append(primary_kernel)
                continue
        kkey = (p.backend, _key(p.kernel_config or {}))
        if kkey not in kernels:
            if wkey == (selection.backend, _key(primary_variant)) and not launch:
                kernels[kkey] = primary_kernel
            else:
                kernel = make_kernel(p.backend, weights[wkey])
                tuning.apply(kernel.experts, launch or None)
                kernels[kkey] = kernel
        out.append(kernels[kkey])
    uppers = [p.max_tokens for p in plan[:-1]]
    return BucketKernels([u for u in uppers if u is not None], out, extra)


def _key(d: Any) -> str:
    return json.dumps(d or {}, sort_keys=True, default=str)
