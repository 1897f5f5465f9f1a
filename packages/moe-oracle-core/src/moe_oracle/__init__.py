"""moe-oracle: choose, prepare and run the best fused Mixture-of-Experts kernel on this hardware.

    config = moe_oracle.MoEConfig.preset("qwen3-30b-a3b", quant="fp8_block")
    print(moe_oracle.explain(config))          # every candidate, accepted or rejected, and why
    layer = moe_oracle.MoELayer(config)         # selects now; fails now
    layer.load_weights(w13=..., w2=..., w13_scale=..., w2_scale=...)
    out = layer(hidden_states, router_logits)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from moe_oracle.config import (
    ACTIVATIONS,
    SCHEME_NAMES,
    Granularity,
    MoEConfig,
    ParallelConfig,
    QuantKey,
    QuantScheme,
    RoutingConfig,
)
from moe_oracle.errors import (
    ConfigError,
    InputError,
    KernelOutputError,
    MoEOracleError,
    NoBackendError,
    PluginAPIError,
    PriorityCycleError,
    RegistryError,
    UnknownBackendError,
    UnsupportedBackendError,
    WeightError,
)
from moe_oracle.kernel.modular import (
    Experts,
    ExpertsModular,
    ExpertsMonolithic,
    FusedMoEKernel,
    KernelAssemblyError,
    LocalPrepareFinalize,
    PrepareFinalize,
    PrepareResult,
)
from moe_oracle.kernel.quant_config import QuantConfig, QuantDesc
from moe_oracle.kernel.weights import CanonicalWeights, KernelWeights
from moe_oracle.oracle import (
    Fp8Oracle,
    Int8Oracle,
    MoEKernelOracle,
    Mxfp4Oracle,
    Mxfp8Oracle,
    Nvfp4Oracle,
    Selection,
    SelectionReport,
    UnquantizedOracle,
    W4A8Fp8Oracle,
    W4A8Int8Oracle,
    WNA16Oracle,
    oracle_for,
)
from moe_oracle.oracle.plan import BucketPlan
from moe_oracle.platform import Platform
from moe_oracle.registry import Registry, registry
from moe_oracle.spec import BackendSpec, PriorityHint
from moe_oracle.support import Support
from moe_oracle.version import PLUGIN_API_VERSION, __version__

if TYPE_CHECKING:
    from moe_oracle.layer import MoELayer


def select(config: MoEConfig, platform: Platform | None = None, backend: str | None = None, *,
           exclude: str | Iterable[str] | None = None, prefer: str | Iterable[str] | None = None,
           strict: bool | None = None, policy: str | None = None, buckets: Iterable[int] | None = None,
           allow_extra_memory: bool = False) -> Selection:
    """Choose the backend for ``config`` on ``platform`` (the real machine by default). The reference
    experts chosen for want of anything faster log a WARNING, or raise ``NoBackendError`` with
    ``strict=True`` / ``MOE_ORACLE_STRICT=1``. ``policy="measured"`` (or ``MOE_ORACLE_POLICY``) plans
    per token bucket from timings on this device, cached in ``$MOE_ORACLE_CACHE_DIR/selection/``."""
    return oracle_for(config).select_backend(config, platform, backend=backend, exclude=exclude, prefer=prefer,
                                             strict=strict, policy=policy, buckets=buckets,
                                             allow_extra_memory=allow_extra_memory)


def explain(config: MoEConfig, platform: Platform | None = None, backend: str | None = None, *,
            exclude: str | Iterable[str] | None = None, prefer: str | Iterable[str] | None = None,
            policy: str | None = None, buckets: Iterable[int] | None = None,
            allow_extra_memory: bool = False) -> SelectionReport:
    """Every candidate in merged order with its verdict and the hints that placed it, and the plan
    (per token bucket: the backend, each candidate's time, where the numbers came from)."""
    return oracle_for(config).explain(config, platform, backend=backend, exclude=exclude, prefer=prefer,
                                      policy=policy, buckets=buckets, allow_extra_memory=allow_extra_memory)


def tune(config: MoEConfig, platform: Platform | None = None, *, buckets: Iterable[int] | None = None,
         backend: str | None = None, exclude: str | Iterable[str] | None = None,
         prefer: str | Iterable[str] | None = None, allow_extra_memory: bool = False,
         timer: Any = None, progress: Any = None) -> Selection:
    """Measure now (ignoring a cached plan) every usable candidate per bucket, write the selection
    cache, and return the measured ``Selection``. ``timer(candidate, num_tokens, call) -> ms`` and
    ``progress(done, total, what)``: see ``moe_oracle.oracle.measure``."""
    return oracle_for(config).select_backend(config, platform, backend=backend, exclude=exclude, prefer=prefer,
                                             policy="measured", buckets=buckets,
                                             allow_extra_memory=allow_extra_memory, timer=timer, refresh=True,
                                             progress=progress)


def __getattr__(name: str) -> Any:
    if name == "MoELayer":  # torch.nn import cost only when a layer is wanted
        from moe_oracle.layer import MoELayer

        return MoELayer
    raise AttributeError(f"module 'moe_oracle' has no attribute {name!r}")


__all__ = [
    "ACTIVATIONS", "SCHEME_NAMES", "BackendSpec", "CanonicalWeights", "ConfigError", "Experts",
    "ExpertsModular", "ExpertsMonolithic", "Fp8Oracle", "FusedMoEKernel", "Granularity", "InputError",
    "Int8Oracle", "KernelAssemblyError", "KernelOutputError", "KernelWeights", "LocalPrepareFinalize", "MoEConfig",
    "MoEKernelOracle", "MoELayer", "MoEOracleError", "Mxfp4Oracle", "Mxfp8Oracle", "NoBackendError",
    "Nvfp4Oracle", "PLUGIN_API_VERSION", "ParallelConfig", "Platform", "PluginAPIError", "PrepareFinalize",
    "PrepareResult", "PriorityCycleError",
    "PriorityHint", "QuantConfig", "QuantDesc", "QuantKey", "QuantScheme", "Registry", "RegistryError",
    "RoutingConfig", "Selection", "SelectionReport", "Support", "UnknownBackendError", "UnquantizedOracle",
    "UnsupportedBackendError", "W4A8Fp8Oracle", "W4A8Int8Oracle", "WNA16Oracle", "WeightError",
    "BucketPlan", "__version__", "explain", "oracle_for", "registry", "select", "tune",
]
