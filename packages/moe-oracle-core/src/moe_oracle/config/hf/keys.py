"""Type-checked readers of ``config.json`` keys, and ``Family``: how one ``model_type`` is read.

Every reader raises ``ConfigError`` naming the ``config.json`` key when a value is missing,
of the wrong type, or not something a ``MoEConfig`` can describe. A family module builds its
``Family`` entries from these readers; ``moe_oracle.config.hf`` gathers them into ``FAMILIES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from moe_oracle.config.routing import RoutingConfig
from moe_oracle.config.validate import finite_float, positive_int, show
from moe_oracle.errors import ConfigError

Json = Mapping[str, Any]
EXPERTS_PER_TOK = ("num_experts_per_tok",)


@dataclass(frozen=True)
class Family:
    """Where one ``model_type`` keeps its MoE sizes, and how its router and activation read.

    - ``num_experts`` / ``top_k`` / ``intermediate_size`` / ``hidden_size``: the keys that may hold
      the size, in order; two present keys must agree (``pick``).
    - ``routing``: ``config.json`` -> ``RoutingConfig``.
    - ``activation``: ``config.json`` -> the activation fields (``activation``, ``has_bias``,
      ``swiglu_limit``, ``apply_router_weight_on_input``).
    - ``per_layer``: keys that may hold one value per layer (Hunyuan's ``moe_topk``); the
      values must all be equal, since a ``MoEConfig`` is one layer.
    - ``check``: a last check of the keys against the fields read (those not overridden), for
      what the family's code needs and a ``MoEConfig`` cannot express.
    """

    model_type: str
    num_experts: tuple[str, ...]
    top_k: tuple[str, ...]
    intermediate_size: tuple[str, ...]
    routing: Callable[[Json], RoutingConfig]
    activation: Callable[[Json], dict[str, Any]]
    hidden_size: tuple[str, ...] = ("hidden_size",)
    per_layer: frozenset[str] = frozenset()
    check: Callable[[Json, Mapping[str, Any]], None] | None = None

    def read(self, cfg: Json, *, skip: set[str]) -> dict[str, Any]:
        """The ``MoEConfig`` fields this family's ``config.json`` gives, except those in ``skip``."""
        fields: dict[str, Any] = {}
        for target in ("num_experts", "top_k", "hidden_size", "intermediate_size"):
            if target not in skip:
                fields[target] = pick(cfg, getattr(self, target), model_type=self.model_type, target=target,
                                      per_layer=self.per_layer)
        if "routing" not in skip:
            fields["routing"] = self.routing(cfg)
        fields.update({k: v for k, v in self.activation(cfg).items() if k not in skip})
        if self.check is not None:
            self.check(cfg, fields)
        return fields


def pick(cfg: Json, keys: tuple[str, ...], *, model_type: str, target: str,
         per_layer: frozenset[str] = frozenset()) -> Any:
    """The value under the first present key; two present keys must agree."""
    present = [k for k in keys if cfg.get(k) is not None]
    if not present:
        raise ConfigError(keys[0], f"missing from the {model_type} config.json (it gives MoEConfig.{target})")
    values = {k: uniform(k, cfg[k], target=target) if k in per_layer else positive_int(k, cfg[k]) for k in present}
    if any(v != values[present[0]] for v in values.values()):
        shown = ", ".join(f"{k}={cfg[k]!r}" for k in present)
        raise ConfigError(keys[0], f"contradicting keys {shown}")
    return values[present[0]]


def uniform(key: str, value: Any, *, target: str) -> int:
    """A positive int, or a non-empty list of equal positive ints (one per layer)."""
    if not isinstance(value, list):
        return positive_int(key, value)
    if not value:
        raise ConfigError(key, "is an empty list; expected a positive int or one per layer")
    for item in value:
        positive_int(key, item)
    if any(item != value[0] for item in value):
        raise ConfigError(key, f"differs across layers ({', '.join(str(v) for v in sorted(set(value)))}); a "
                          f"MoEConfig is one layer: pass {target}=... for the layer you want")
    return int(value[0])


def number(cfg: Json, key: str, default: float) -> float:
    """A finite, positive number (every key read with it is a scale factor or a limit)."""
    value = cfg.get(key)
    if value is None:
        return default
    return finite_float(key, value, positive=True)


def flag(cfg: Json, key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {show(value)}")
    return value


def optional_int(cfg: Json, key: str, default: int | None) -> int | None:
    """A positive int, or ``default`` when the key is absent or null."""
    value = cfg.get(key)
    return default if value is None else positive_int(key, value)


_HIDDEN_ACTS = {"silu": "silu", "swish": "silu", "gelu": "gelu"}


def gated_hidden_act(cfg: Json) -> dict[str, Any]:
    """Experts are act(gate) * up with ``hidden_act`` (default silu), no biases: Mixtral, Qwen,
    DeepSeek and most families since."""
    act = cfg.get("hidden_act", "silu")
    if not isinstance(act, str) or act not in _HIDDEN_ACTS:
        raise ConfigError("hidden_act", f"unsupported expert activation {show(act)}", allowed=sorted(_HIDDEN_ACTS))
    return {"activation": _HIDDEN_ACTS[act]}


def softmax_renormalized(cfg: Json) -> RoutingConfig:
    """Softmax over all experts, top-k, the chosen weights rescaled to sum to one (Mixtral)."""
    return RoutingConfig()


@dataclass(frozen=True)
class NormTopkProb:
    """Softmax top-k; ``norm_topk_prob`` (default per family) rescales the chosen weights."""

    default: bool

    def __call__(self, cfg: Json) -> RoutingConfig:
        return RoutingConfig(renormalize=flag(cfg, "norm_topk_prob", self.default))
