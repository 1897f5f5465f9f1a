"""The one module a vendor package imports to add backends (tests add ``moe_oracle.testing``).

A backend is one folder named as the backend, ``<package>/<backend>/`` with ``spec.py`` (its
``BackendSpec``: name defined there once, checks, library needs), ``converter.py`` (a pure function
``convert(weights, config, *, platform)`` from canonical tensors to ``KernelWeights``, with its exact
inverse ``to_canonical``) and ``experts.py`` (an ``ExpertsModular`` or ``ExpertsMonolithic``); each
package's priority hints live in ``priority.py`` as ``priority_hints()``; one entry point returns them all.

Everything here that needs torch (weights, experts, quantization helpers) loads on first use, so a
spec module importing this module stays as cheap as ``import moe_oracle``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from moe_oracle.config.moe import ACTIVATIONS, GPT_OSS_SWIGLU_ALPHA, GPT_OSS_SWIGLU_LIMIT, MoEConfig, dtype_name
from moe_oracle.config.quant import SCHEME_NAMES, QuantKey, QuantScheme
from moe_oracle.errors import (
    ConfigError,
    InputError,
    MoEOracleError,
    NoBackendError,
    RegistryError,
    VendorLibraryError,
    WeightError,
)
from moe_oracle.platform import Platform
from moe_oracle.spec import BackendSpec, PriorityHint
from moe_oracle.support import (
    SM10X,
    SM12X,
    SM90,
    CapabilityTest,
    Check,
    Condition,
    Support,
    activation_in,
    activations_by_scheme,
    arch_in,
    bias_schemes,
    capability_at_least,
    capability_by_scheme,
    capability_family,
    capability_major,
    check,
    clamp_schemes,
    config_where,
    cpu_feature,
    dp_size_above,
    dtypes,
    ep_size_above,
    library_at_least,
    matches_torch,
    max_experts,
    multiple_of,
    no_bias,
    no_router_weight_on_input,
    on_vendor,
    release,
    scheme_in,
    show_release,
)
from moe_oracle.version import PLUGIN_API_VERSION

if TYPE_CHECKING:  # the names loaded on first use (``_LAZY``), for type checkers
    pass


def load_library(module: str, *, backend: str, install: str,
                 catch: tuple[type[BaseException], ...] = (ImportError,)) -> ModuleType:
    """``import module`` for ``backend``; a ``VendorLibraryError`` (an ``ImportError``) naming the
    backend, what to install and the import's own error when it fails. ``catch`` adds the errors a
    library raises at import next to the wrong torch (IPEX: ``AttributeError``)."""
    try:
        return importlib.import_module(module)
    except catch as exc:
        raise VendorLibraryError(f"the {backend} backend needs {install}: {type(exc).__name__}: {exc}") from exc


# name -> module, for the names that need torch (loaded on first use).
_LAZY = {
    "CanonicalWeights": "moe_oracle.kernel.weights", "KernelWeights": "moe_oracle.kernel.weights",
    "QuantConfig": "moe_oracle.kernel.quant_config", "QuantDesc": "moe_oracle.kernel.quant_config",
    "Experts": "moe_oracle.kernel.modular", "ExpertsModular": "moe_oracle.kernel.modular",
    "ExpertsMonolithic": "moe_oracle.kernel.modular",
    "FLOAT_DTYPES": "moe_oracle.kernel.inputs", "INDEX_DTYPES": "moe_oracle.kernel.inputs",
    "check_tensor": "moe_oracle.kernel.inputs", "check_routed_inputs": "moe_oracle.kernel.inputs",
    "quantize_activation": "moe_oracle.quant", "fake_quantize_activation": "moe_oracle.quant",
    "dequantize_weights": "moe_oracle.quant", "pack_nibbles": "moe_oracle.quant", "unpack_nibbles": "moe_oracle.quant",
    "decode_e8m0": "moe_oracle.quant.mx",
    "Tuning": "moe_oracle.kernel.tuning", "KernelConfig": "moe_oracle.kernel.tuning",
    "interleave_gate_up": "moe_oracle.kernel.layouts", "deinterleave_gate_up": "moe_oracle.kernel.layouts",
    "pad_to": "moe_oracle.kernel.layouts", "pad_halves": "moe_oracle.kernel.layouts",
    "unpad_halves": "moe_oracle.kernel.layouts", "round_up": "moe_oracle.kernel.layouts",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'moe_oracle.plugin' has no attribute {name!r}")


__all__ = [
    "ACTIVATIONS", "GPT_OSS_SWIGLU_ALPHA", "GPT_OSS_SWIGLU_LIMIT", "PLUGIN_API_VERSION", "SCHEME_NAMES", "SM10X",
    "SM12X", "SM90", "BackendSpec", "CapabilityTest", "Check", "Condition", "ConfigError", "InputError", "MoEConfig",
    "MoEOracleError", "NoBackendError", "Platform", "PriorityHint", "QuantKey", "QuantScheme", "RegistryError",
    "Support", "VendorLibraryError", "WeightError", "activation_in", "activations_by_scheme", "arch_in",
    "bias_schemes", "capability_at_least", "capability_by_scheme", "capability_family", "capability_major", "check",
    "clamp_schemes", "config_where", "cpu_feature", "dp_size_above", "dtype_name", "dtypes", "ep_size_above",
    "library_at_least", "load_library", "matches_torch", "max_experts", "multiple_of", "no_bias",
    "no_router_weight_on_input", "on_vendor", "release", "scheme_in", "show_release", *_LAZY,
]
