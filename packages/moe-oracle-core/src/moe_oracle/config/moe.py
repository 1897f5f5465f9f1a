"""``MoEConfig``: everything about one MoE layer that decides which kernel can run it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from moe_oracle.config.parallel import ParallelConfig
from moe_oracle.config.quant import UNQUANTIZED_NAMES, QuantScheme
from moe_oracle.config.routing import RoutingConfig
from moe_oracle.config.validate import boolean, finite_float, one_of, positive_int, show
from moe_oracle.errors import ConfigError

if TYPE_CHECKING:
    import torch

ACTIVATIONS = ("silu", "gelu", "swigluoai", "relu2")
_GATED_ONLY = ("swigluoai",)
_UNGATED_ONLY = ("relu2",)
# Accepted spellings of a compute dtype -> the torch attribute. Strings, so that importing
# moe_oracle does not import torch (configs convert to torch dtypes when built).
DTYPES: dict[str, str] = {
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "fp32": "float32", "float32": "float32", "float": "float32",
}
_DTYPE_NAMES = {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}
GPT_OSS_SWIGLU_ALPHA = 1.702
GPT_OSS_SWIGLU_LIMIT = 7.0


def dtype_name(dtype: torch.dtype) -> str:
    """Short name of a compute dtype: ``bf16``, ``fp16`` or ``fp32``."""
    return _DTYPE_NAMES[str(dtype)]


@dataclass(frozen=True, kw_only=True)
class MoEConfig:
    """One MoE layer.

    Sizes are the full (unsharded) model sizes: ``intermediate_size`` is divided by
    ``parallel.tp_size`` and ``num_experts`` by ``parallel.ep_size`` for the local shard.
    ``quant`` defaults to the unquantized scheme of ``dtype``; ``is_gated`` follows from the
    activation unless given. ``swigluoai`` defaults to gpt-oss's alpha 1.702 and limit 7.0.
    Every invalid value raises ``ConfigError`` naming the field.

    Only the routed experts are described. A model's shared experts (DeepSeek, Qwen2-MoE,
    Qwen3-Next, GLM-4.5, Llama 4, ERNIE 4.5, Hunyuan, dots.llm1) are a dense MLP whose output is
    added beside this layer's, and its dense layers (``first_k_dense_replace``, Llama 4's
    interleaving) hold no experts: both run outside the fused kernel, so neither is a field here.
    """

    num_experts: int
    top_k: int
    hidden_size: int
    intermediate_size: int
    activation: str = "silu"
    is_gated: bool | None = None
    dtype: torch.dtype = "bf16"  # type: ignore[assignment]  # a torch.dtype once built
    has_bias: bool = False
    quant: QuantScheme | None = None
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    swiglu_alpha: float | None = None
    swiglu_limit: float | None = None
    apply_router_weight_on_input: bool = False

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)
        for name in ("num_experts", "top_k", "hidden_size", "intermediate_size"):
            positive_int(name, getattr(self, name))
        if self.top_k > self.num_experts:
            raise ConfigError("top_k", f"{self.top_k} exceeds num_experts={self.num_experts}")
        one_of("activation", self.activation, ACTIVATIONS)
        boolean("has_bias", self.has_bias)
        boolean("apply_router_weight_on_input", self.apply_router_weight_on_input)
        if self.apply_router_weight_on_input and self.top_k != 1:
            raise ConfigError(
                "apply_router_weight_on_input",
                f"needs top_k == 1, got top_k={self.top_k}: scaling a token's input by its router weight "
                "equals scaling the expert's output only when the token has one expert (activations are "
                "not linear); with several experts the token's single input row cannot carry K weights")
        set_("dtype", _as_dtype(self.dtype))
        gated = self.activation not in _UNGATED_ONLY if self.is_gated is None else self.is_gated
        if not isinstance(gated, bool):
            raise ConfigError("is_gated", f"must be a bool (True or False) or None, got {show(gated)}")
        if gated and self.activation in _UNGATED_ONLY:
            raise ConfigError("is_gated", f"activation {self.activation!r} is not gated")
        if not gated and self.activation in _GATED_ONLY:
            raise ConfigError("is_gated", f"activation {self.activation!r} is always gated")
        set_("is_gated", gated)
        set_("quant", self._resolve_quant())
        if not isinstance(self.parallel, ParallelConfig):
            raise ConfigError("parallel", f"expected ParallelConfig, got {type(self.parallel).__name__}")
        if not isinstance(self.routing, RoutingConfig):
            raise ConfigError("routing", f"expected RoutingConfig, got {type(self.routing).__name__}")
        self._check_swiglu(set_)
        self._check_sharding()
        self._check_routing()

    def _resolve_quant(self) -> QuantScheme:
        own = dtype_name(self.dtype)
        if self.quant is None:
            return QuantScheme.parse(own)
        scheme = QuantScheme.parse(self.quant)
        if scheme.name in UNQUANTIZED_NAMES and scheme.name != own:
            raise ConfigError("quant", f"unquantized scheme {scheme.name!r} contradicts dtype={own}")
        return scheme

    def _check_swiglu(self, set_: Any) -> None:
        for name in ("swiglu_alpha", "swiglu_limit"):
            if getattr(self, name) is not None:
                finite_float(name, getattr(self, name), positive=name == "swiglu_limit")
        if self.activation == "swigluoai":
            if self.swiglu_alpha is None:
                set_("swiglu_alpha", GPT_OSS_SWIGLU_ALPHA)
            if self.swiglu_limit is None:
                set_("swiglu_limit", GPT_OSS_SWIGLU_LIMIT)
        elif self.swiglu_alpha is not None:
            raise ConfigError("swiglu_alpha", f"only applies to activation 'swigluoai', not {self.activation!r}")
        if self.swiglu_limit is not None and not self.is_gated:
            raise ConfigError("swiglu_limit", f"needs a gated activation and a positive limit, got {self.swiglu_limit!r}")

    def _check_sharding(self) -> None:
        tp, ep = self.parallel.tp_size, self.parallel.ep_size
        if self.intermediate_size % tp:
            raise ConfigError("intermediate_size", f"{self.intermediate_size} is not divisible by tp_size={tp}")
        if self.num_experts % ep:
            raise ConfigError("num_experts", f"{self.num_experts} is not divisible by ep_size={ep}")
        group = self.quant.group_size if self.quant is not None else None
        if group and self.hidden_size % group:
            raise ConfigError("hidden_size", f"{self.hidden_size} is not a multiple of the quant group size {group}")
        if self.quant is not None and self.quant.weight_bits == 4:
            # Packed 4-bit weights hold two values per byte along the input dimension: H for w13, I for w2.
            for name, size in (("hidden_size", self.hidden_size),
                               ("intermediate_size", self.intermediate_size_per_partition)):
                if size % 2:
                    per = " per tensor-parallel rank" if name == "intermediate_size" and tp > 1 else ""
                    raise ConfigError(name, f"{size}{per} is odd; {self.quant.name} packs two 4-bit weights per "
                                      "byte along it, so it must be even")

    def _check_routing(self) -> None:
        groups = self.routing.num_expert_groups
        if groups is None or self.routing.topk_groups is None:
            return
        if self.num_experts % groups:
            raise ConfigError("routing.num_expert_groups",
                              f"num_experts={self.num_experts} is not divisible into {groups} groups")
        if self.routing.topk_groups * (self.num_experts // groups) < self.top_k:
            raise ConfigError("routing.topk_groups",
                              f"{self.routing.topk_groups} groups of {self.num_experts // groups} experts "
                              f"cannot hold top_k={self.top_k}")

    # Derived sizes -------------------------------------------------------------------
    @property
    def scheme(self) -> QuantScheme:
        assert self.quant is not None  # resolved in __post_init__
        return self.quant

    @property
    def intermediate_size_per_partition(self) -> int:
        return self.intermediate_size // self.parallel.tp_size

    @property
    def num_local_experts(self) -> int:
        return self.num_experts // self.parallel.ep_size

    @property
    def w13_rows(self) -> int:
        """Rows of w13: gate and up (2*I) when gated, else I."""
        return (2 if self.is_gated else 1) * self.intermediate_size_per_partition

    def replace(self, **changes: Any) -> MoEConfig:
        """A copy with ``changes``; fields derived from a changed field are derived again
        (``is_gated`` and the swiglu constants from ``activation``, the unquantized scheme from
        ``dtype``) unless also given."""
        if "activation" in changes:
            for derived in ("is_gated", "swiglu_alpha", "swiglu_limit"):
                changes.setdefault(derived, None)
        if "dtype" in changes and not self.scheme.is_quantized:
            changes.setdefault("quant", None)
        return replace(self, **changes)

    # Constructors ----------------------------------------------------------------------
    @classmethod
    def from_hf(cls, source: str | os.PathLike[str] | dict[str, Any], **overrides: Any) -> MoEConfig:
        """Read a Hugging Face ``config.json`` (a path, a directory holding one, or its dict)."""
        from moe_oracle.config.hf import config_from_hf

        return config_from_hf(source, **overrides)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MoEConfig:
        """A named model's layer, e.g. ``MoEConfig.preset("mixtral-8x7b", quant="fp8_block")``."""
        from moe_oracle.config.presets import preset

        return preset(name, **overrides)


def _as_dtype(value: object) -> torch.dtype:
    import torch

    if isinstance(value, torch.dtype):
        if str(value) not in _DTYPE_NAMES:
            raise ConfigError("dtype", f"unsupported compute dtype {value}", allowed=("bf16", "fp16", "fp32"))
        return value
    if isinstance(value, str) and value.lower().removeprefix("torch.") in DTYPES:
        return getattr(torch, DTYPES[value.lower().removeprefix("torch.")])  # type: ignore[no-any-return]
    raise ConfigError("dtype", f"unsupported compute dtype {value!r}", allowed=("bf16", "fp16", "fp32"))
