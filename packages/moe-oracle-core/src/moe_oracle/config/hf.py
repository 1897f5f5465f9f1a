"""``MoEConfig`` from a Hugging Face ``config.json``.

Each model family spells the same facts differently (``num_local_experts`` vs ``num_experts``
vs ``n_routed_experts``; ``intermediate_size`` vs ``moe_intermediate_size``) and routes tokens
its own way, so reading is one table, ``FAMILIES``, keyed by ``model_type``. The checkpoint's
``quantization_config`` maps to a scheme name through a second table, ``QUANT_METHODS``, keyed
by ``quant_method``. Only the routed experts are described: shared experts (Qwen2-MoE,
DeepSeek) are a dense MLP outside the fused kernel.

Optional router keys default to what the model's reference code uses when the key is absent
(e.g. Qwen ``norm_topk_prob`` is ``False``); the sizes are required. Anything not understood
raises ``ConfigError`` naming the ``config.json`` key and listing what is supported.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_oracle.config.moe import DTYPES, GPT_OSS_SWIGLU_LIMIT, MoEConfig
from moe_oracle.config.quant import GROUP_SIZES, UNQUANTIZED_NAMES, QuantScheme
from moe_oracle.config.routing import RoutingConfig
from moe_oracle.config.validate import finite_float, positive_int, show
from moe_oracle.errors import ConfigError

Json = Mapping[str, Any]
_MOE_FIELDS = tuple(f.name for f in dataclasses.fields(MoEConfig))
_HF_DTYPES = ("bfloat16", "float16", "float32")


def config_from_hf(source: str | os.PathLike[str] | Json, **overrides: Any) -> MoEConfig:
    """Read a ``config.json`` (dict, file, or directory holding one) into a ``MoEConfig``.

    ``overrides`` are ``MoEConfig`` fields that replace what the file says; an overridden field
    is not read, so ``quant="bf16"`` also works for a checkpoint whose quantization is not
    supported. An unquantized ``quant`` override (``"bf16"``, ``"fp16"``, ``"fp32"``) sets
    ``dtype`` too unless ``dtype`` is given (see ``apply_overrides``).
    """
    unknown = sorted(set(overrides) - set(_MOE_FIELDS))
    if unknown:
        raise ConfigError("overrides", f"unknown MoEConfig field(s) {', '.join(unknown)}", allowed=_MOE_FIELDS)
    outer = _load(source)
    text, family = _text_config(outer)
    fields = family.read(text, skip=set(overrides))
    if "quant" not in overrides:
        fields["quant"] = quant_from_hf(text.get("quantization_config") or outer.get("quantization_config"))
    if "dtype" not in overrides:
        fields["dtype"] = _dtype(text, outer)
    return MoEConfig(**apply_overrides(fields, overrides))


def apply_overrides(fields: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with ``overrides`` on top; an unquantized ``quant`` override also sets ``dtype`` unless given.

    Shared by ``from_hf`` and the presets, so ``quant="fp16"`` means an fp16 layer in both.
    """
    merged = {**fields, **overrides}
    if "quant" in overrides and "dtype" not in overrides:
        quant = QuantScheme.parse(overrides["quant"])
        if quant.name in UNQUANTIZED_NAMES:
            merged["dtype"] = quant.name
    return merged


# Loading -------------------------------------------------------------------------------------
def _load(source: str | os.PathLike[str] | Json) -> Json:
    if isinstance(source, Mapping):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError("source", f"expected a path or a dict, got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError("source", f"no config.json at {path}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError("source", f"cannot read {path}: {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError("source", f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); "
                          "config.json files are UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError("source", f"{path} is not valid JSON: {err}") from err
    except (ValueError, RecursionError) as err:  # e.g. an int longer than sys.get_int_max_str_digits()
        raise ConfigError("source", f"{path} is not usable JSON: {err}") from err
    if not isinstance(data, Mapping):
        raise ConfigError("source", f"{path} holds a JSON {type(data).__name__}, expected an object")
    return data


def _text_config(outer: Json) -> tuple[Json, Family]:
    """The dict holding the MoE fields: the file itself, or its ``text_config`` (multimodal wrappers)."""
    model_type = outer.get("model_type")
    if isinstance(model_type, str) and model_type in FAMILIES:
        return outer, FAMILIES[model_type]
    inner = outer.get("text_config")
    if isinstance(inner, Mapping) and isinstance(inner.get("model_type"), str) and inner["model_type"] in FAMILIES:
        return inner, FAMILIES[inner["model_type"]]
    if model_type is None:
        raise ConfigError("model_type", "missing from config.json", allowed=sorted(FAMILIES))
    raise ConfigError("model_type", f"unsupported model_type {show(model_type)}", allowed=sorted(FAMILIES))


def _dtype(text: Json, outer: Json) -> str:
    """Compute dtype: ``dtype`` (transformers >= 4.56) or ``torch_dtype``; bf16 when absent (gpt-oss)."""
    for where in (text, outer):
        for key in ("dtype", "torch_dtype"):
            value = where.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or value.lower().removeprefix("torch.") not in DTYPES:
                raise ConfigError(key, f"unsupported compute dtype {value!r}", allowed=_HF_DTYPES)
            return value.lower().removeprefix("torch.")
    return "bfloat16"


def _pick(cfg: Json, keys: tuple[str, ...], *, model_type: str, target: str) -> Any:
    """The value under the first present key; two present keys must agree."""
    present = [k for k in keys if cfg.get(k) is not None]
    if not present:
        raise ConfigError(keys[0], f"missing from the {model_type} config.json (it gives MoEConfig.{target})")
    for k in present:
        positive_int(k, cfg[k])
    if any(cfg[k] != cfg[present[0]] for k in present):
        shown = ", ".join(f"{k}={cfg[k]!r}" for k in present)
        raise ConfigError(keys[0], f"contradicting keys {shown}")
    return cfg[present[0]]


# Model families ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """Where one ``model_type`` keeps its MoE sizes, and how its router and activation read."""

    model_type: str
    num_experts: tuple[str, ...]
    top_k: tuple[str, ...]
    intermediate_size: tuple[str, ...]
    routing: Callable[[Json], RoutingConfig]
    activation: Callable[[Json], dict[str, Any]]
    hidden_size: tuple[str, ...] = ("hidden_size",)

    def read(self, cfg: Json, *, skip: set[str]) -> dict[str, Any]:
        """The ``MoEConfig`` fields this family's ``config.json`` gives, except those in ``skip``."""
        fields: dict[str, Any] = {}
        for target in ("num_experts", "top_k", "hidden_size", "intermediate_size"):
            if target not in skip:
                fields[target] = _pick(cfg, getattr(self, target), model_type=self.model_type, target=target)
        if "routing" not in skip:
            fields["routing"] = self.routing(cfg)
        fields.update({k: v for k, v in self.activation(cfg).items() if k not in skip})
        return fields


_HIDDEN_ACTS = {"silu": "silu", "swish": "silu", "gelu": "gelu"}


def _gated_hidden_act(cfg: Json) -> dict[str, Any]:
    """Mixtral, Qwen and DeepSeek experts are act(gate) * up with ``hidden_act`` (default silu)."""
    act = cfg.get("hidden_act", "silu")
    if not isinstance(act, str) or act not in _HIDDEN_ACTS:
        raise ConfigError("hidden_act", f"unsupported expert activation {show(act)}", allowed=sorted(_HIDDEN_ACTS))
    return {"activation": _HIDDEN_ACTS[act]}


def _gpt_oss_activation(cfg: Json) -> dict[str, Any]:
    """gpt-oss experts: clamped SwiGLU (alpha 1.702, fixed in code) with biases; ``hidden_act`` is unused."""
    return {"activation": "swigluoai", "has_bias": True,
            "swiglu_limit": _number(cfg, "swiglu_limit", GPT_OSS_SWIGLU_LIMIT)}


def _softmax_renormalized(cfg: Json) -> RoutingConfig:
    """Mixtral: softmax over all experts, top-k, weights rescaled to sum to one."""
    return RoutingConfig()


def _qwen_routing(cfg: Json) -> RoutingConfig:
    """Qwen2/3-MoE: softmax top-k; ``norm_topk_prob`` (default False) rescales the chosen weights."""
    return RoutingConfig(renormalize=_flag(cfg, "norm_topk_prob", False))


def _gpt_oss_routing(cfg: Json) -> RoutingConfig:
    """gpt-oss: top-k of the logits, then softmax over those k."""
    return RoutingConfig(softmax_after_topk=True)


@dataclass(frozen=True)
class _DeepSeekRouting:
    """DeepSeek router: ``scoring_func``, ``topk_method``, groups, scaling; defaults per model version.

    - ``greedy``: plain top-k (groups unused).
    - ``group_limited_greedy`` (V2): keep the ``topk_group`` best of ``n_group`` groups, then top-k.
    - ``noaux_tc`` (V3): grouped like V2 when ``n_group`` > 1, choosing with a per-expert
      score-correction bias.
    """

    defaults: Mapping[str, Any]

    def __call__(self, cfg: Json) -> RoutingConfig:
        get = lambda key: cfg[key] if cfg.get(key) is not None else self.defaults.get(key)
        scoring, method = get("scoring_func"), get("topk_method")
        if not isinstance(scoring, str) or scoring not in ("softmax", "sigmoid"):
            raise ConfigError("scoring_func", f"unsupported {show(scoring)}", allowed=("softmax", "sigmoid"))
        if not isinstance(method, str) or method not in _TOPK_METHODS:
            raise ConfigError("topk_method", f"unsupported {show(method)}", allowed=_TOPK_METHODS)
        for key in ("n_group", "topk_group"):
            if get(key) is not None:
                positive_int(key, get(key))
        groups = topk_groups = None
        if method != "greedy" and (get("n_group") or 1) > 1:
            groups, topk_groups = get("n_group"), get("topk_group")
            if topk_groups is None:
                raise ConfigError("topk_group", f"missing; topk_method {method!r} with n_group={groups} needs it")
        elif method == "group_limited_greedy":
            raise ConfigError("n_group", f"topk_method 'group_limited_greedy' needs n_group > 1, got {get('n_group')!r}")
        return RoutingConfig(
            scoring=scoring, renormalize=_flag(cfg, "norm_topk_prob", self.defaults["norm_topk_prob"]),
            num_expert_groups=groups, topk_groups=topk_groups,
            score_correction_bias=method == "noaux_tc",
            routed_scaling_factor=_number(cfg, "routed_scaling_factor", self.defaults["routed_scaling_factor"]),
        )


_TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")
# Defaults of DeepSeek's own configuration classes, which the checkpoints' code loads.
_DEEPSEEK_V2 = _DeepSeekRouting({"scoring_func": "softmax", "topk_method": "greedy", "norm_topk_prob": False,
                                 "routed_scaling_factor": 1.0, "n_group": None, "topk_group": None})
_DEEPSEEK_V3 = _DeepSeekRouting({"scoring_func": "sigmoid", "topk_method": "noaux_tc", "norm_topk_prob": True,
                                 "routed_scaling_factor": 2.5, "n_group": 8, "topk_group": 4})


def _number(cfg: Json, key: str, default: float) -> float:
    """A finite, positive number (both keys read with it are scale factors / limits)."""
    value = cfg.get(key)
    if value is None:
        return default
    return finite_float(key, value, positive=True)


def _flag(cfg: Json, key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {show(value)}")
    return value


_EXPERTS_PER_TOK = ("num_experts_per_tok",)
FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("mixtral", ("num_local_experts",), _EXPERTS_PER_TOK, ("intermediate_size",), _softmax_renormalized,
           _gated_hidden_act),
    # transformers >= 5 writes Qwen's expert count as num_local_experts.
    Family("qwen2_moe", ("num_experts", "num_local_experts"), _EXPERTS_PER_TOK, ("moe_intermediate_size",),
           _qwen_routing, _gated_hidden_act),
    Family("qwen3_moe", ("num_experts", "num_local_experts"), _EXPERTS_PER_TOK, ("moe_intermediate_size",),
           _qwen_routing, _gated_hidden_act),
    Family("deepseek_v2", ("n_routed_experts",), _EXPERTS_PER_TOK, ("moe_intermediate_size",), _DEEPSEEK_V2,
           _gated_hidden_act),
    Family("deepseek_v3", ("n_routed_experts",), _EXPERTS_PER_TOK, ("moe_intermediate_size",), _DEEPSEEK_V3,
           _gated_hidden_act),
    # Kimi K2 is the DeepSeek-V3 architecture under its own model_type.
    Family("kimi_k2", ("n_routed_experts",), _EXPERTS_PER_TOK, ("moe_intermediate_size",), _DEEPSEEK_V3,
           _gated_hidden_act),
    Family("gpt_oss", ("num_local_experts",), ("experts_per_token", "num_experts_per_tok"), ("intermediate_size",),
           _gpt_oss_routing, _gpt_oss_activation),
)}


# Quantization --------------------------------------------------------------------------------
def quant_from_hf(qc: Json | None) -> str | None:
    """Scheme name for a ``quantization_config`` (``None`` or ``{}``: unquantized, i.e. ``None``)."""
    if not qc:
        return None
    if not isinstance(qc, Mapping):
        raise ConfigError("quantization_config", f"expected an object, got {type(qc).__name__}")
    method = qc.get("quant_method")
    if not isinstance(method, str) or method not in QUANT_METHODS:
        raise ConfigError("quantization_config.quant_method", f"unsupported {show(method)}",
                          allowed=sorted(QUANT_METHODS))
    return QUANT_METHODS[method](qc)


def _fp8(qc: Json) -> str:
    """``quant_method: fp8`` (DeepSeek-V3, Qwen3-FP8): block-scaled with ``weight_block_size``, else per tensor."""
    fmt = qc.get("fmt", "e4m3")
    if not isinstance(fmt, str) or fmt != "e4m3":
        raise ConfigError("quantization_config.fmt", f"unsupported fp8 format {show(fmt)}", allowed=("e4m3",))
    scheme = qc.get("activation_scheme", "dynamic")
    if not isinstance(scheme, str) or scheme not in ("dynamic", "static"):
        raise ConfigError("quantization_config.activation_scheme", f"unsupported {show(scheme)}",
                          allowed=("dynamic", "static"))
    block = qc.get("weight_block_size")
    if block is None:
        return "fp8_tensor" if scheme == "dynamic" else "fp8_tensor_static"
    if not isinstance(block, (list, tuple)) or list(block) != [128, 128]:
        raise ConfigError("quantization_config.weight_block_size", f"unsupported block {show(block)}",
                          allowed=("[128, 128]",))
    if scheme != "dynamic":
        raise ConfigError("quantization_config.activation_scheme", "block-scaled fp8 needs dynamic activations, got 'static'")
    return "fp8_block"


def _modelopt(qc: Json) -> str:
    """NVIDIA ModelOpt checkpoints: ``quant_algo`` at the top or under ``quantization``."""
    nested = qc.get("quantization")
    algo = qc.get("quant_algo") or (nested.get("quant_algo") if isinstance(nested, Mapping) else None)
    if not isinstance(algo, str) or algo not in _MODELOPT_ALGOS:
        raise ConfigError("quantization_config.quant_algo", f"unsupported {show(algo)}", allowed=sorted(_MODELOPT_ALGOS))
    return _MODELOPT_ALGOS[algo]


# ModelOpt FP8 keeps static per-tensor input scales (input_scale); NVFP4 a static global scale.
_MODELOPT_ALGOS = {"FP8": "fp8_tensor_static", "FP8_PER_CHANNEL_PER_TOKEN": "fp8_channel", "NVFP4": "nvfp4"}


@dataclass(frozen=True)
class _Operand:
    """One compressed-tensors ``weights`` / ``input_activations`` entry, as the scheme table reads it."""

    kind: str
    bits: int | None
    strategy: str | None
    dynamic: bool
    symmetric: bool
    group_size: int | None
    block: tuple[int, ...] | None

    @classmethod
    def read(cls, args: Json, *, nvfp4_format: bool, where: str = "") -> _Operand:
        """fp4 in groups of 16 reads as nvfp4's ``tensor_group`` (a global scale over group scales).
        Each key must have its JSON type (``ConfigError`` naming ``where.key`` otherwise)."""
        _typed(args, where, "type", str)
        _typed(args, where, "strategy", str)
        _typed(args, where, "symmetric", bool)
        for key in ("num_bits", "group_size"):
            if args.get(key) is not None:
                positive_int(f"{where}.{key}" if where else key, args[key])
        block = args.get("block_structure")
        if block is not None and not (isinstance(block, (list, tuple)) and len(block) == 2
                                      and all(isinstance(b, int) and not isinstance(b, bool) for b in block)):
            raise ConfigError(f"{where}.block_structure", f"expected two ints, got {show(block)}")
        kind, bits, strategy, size = args.get("type", "int"), args.get("num_bits"), args.get("strategy"), args.get("group_size")
        if kind == "float" and bits == 4 and (nvfp4_format or (strategy in ("group", "tensor_group") and size == 16)):
            strategy = "tensor_group"
        block = args.get("block_structure")
        # nvfp4 activations say dynamic "local": per-group scales computed at run time.
        return cls(kind, bits, strategy, args.get("dynamic", False) in (True, "local"), bool(args.get("symmetric", True)),
                   size, None if block is None else tuple(block))

    @property
    def key(self) -> tuple[str, int | None, str | None]:
        return self.kind, self.bits, self.strategy

    def __str__(self) -> str:
        return f"{self.kind}{self.bits} {self.strategy} {'dynamic' if self.dynamic else 'static'}"


# compressed-tensors: (weights type, bits, strategy), (activations type, bits, strategy, dynamic) or None.
_CT_SCHEMES: dict[tuple[tuple[Any, ...], tuple[Any, ...] | None], str] = {
    (("int", 4, "group"), None): "int4_w4a16",
    (("int", 8, "group"), None): "int8_w8a16_group",
    (("int", 8, "channel"), None): "int8_w8a16",
    (("int", 8, "channel"), ("int", 8, "token", True)): "int8_w8a8",
    (("int", 4, "group"), ("int", 8, "token", True)): "w4a8_int8",
    (("int", 4, "group"), ("float", 8, "token", True)): "w4a8_fp8",
    (("float", 8, "tensor"), ("float", 8, "tensor", True)): "fp8_tensor",
    (("float", 8, "tensor"), ("float", 8, "tensor", False)): "fp8_tensor_static",
    (("float", 8, "channel"), ("float", 8, "token", True)): "fp8_channel",
    (("float", 8, "block"), ("float", 8, "group", True)): "fp8_block",
    (("float", 4, "tensor_group"), ("float", 4, "tensor_group", True)): "nvfp4",
}
_CT_GROUPED = ("int4_w4a16", "int8_w8a16_group", "w4a8_int8")


def _compressed_tensors(qc: Json) -> str:
    """llm-compressor checkpoints: the scheme of the ``config_groups`` entry that covers the experts.

    With several groups, the one whose ``targets`` name experts wins, else the one targeting
    every ``Linear``; ``ignore`` is not consulted (routed experts are never in it in practice).
    """
    groups = qc.get("config_groups")
    if not isinstance(groups, Mapping) or not groups:
        raise ConfigError("quantization_config.config_groups", "missing or empty in a compressed-tensors config")
    name = _expert_group(groups)
    return _ct_group(f"quantization_config.config_groups.{name}", groups[name], qc.get("format"))


def _expert_group(groups: Json) -> str:
    for name, g in groups.items():
        if not isinstance(g, Mapping):
            raise ConfigError(f"quantization_config.config_groups.{name}", f"expected an object, got {type(g).__name__}")
        targets = g.get("targets")
        if targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
            raise ConfigError(f"quantization_config.config_groups.{name}.targets",
                              f"expected a list of str, got {show(targets)}")
    if len(groups) == 1:
        return next(iter(groups))
    targets = {name: [str(t) for t in (g.get("targets") or ())] for name, g in groups.items()}
    for wanted in (lambda t: "expert" in t and "shared_expert" not in t, lambda t: t == "Linear"):
        hits = [name for name, ts in targets.items() if any(wanted(t) for t in ts)]
        if len(hits) == 1:
            return hits[0]
    raise ConfigError("quantization_config.config_groups",
                      f"cannot tell which of the groups {', '.join(sorted(groups))} quantizes the experts; pass quant=...")


def _ct_group(where: str, group: Json, fmt: str | None) -> str:
    weights, acts = group.get("weights"), group.get("input_activations")
    if not isinstance(weights, Mapping):
        raise ConfigError(f"{where}.weights", "missing" if weights is None else f"expected an object, got {show(weights)}")
    if acts is not None and not isinstance(acts, Mapping):
        raise ConfigError(f"{where}.input_activations", f"expected an object or null, got {show(acts)}")
    nvfp4_format = group.get("format", fmt) == "nvfp4-pack-quantized"
    w = _Operand.read(weights, nvfp4_format=nvfp4_format, where=f"{where}.weights")
    a = None if acts is None else _Operand.read(acts, nvfp4_format=nvfp4_format, where=f"{where}.input_activations")
    scheme = _CT_SCHEMES.get((w.key, None if a is None else (*a.key, a.dynamic)))
    if scheme is None:
        raise ConfigError(where, f"weights {w} with activations {a or 'unquantized'} is not a supported scheme",
                          allowed=sorted(set(_CT_SCHEMES.values())))
    if weights.get("actorder") == "group":
        raise ConfigError(f"{where}.weights.actorder", "'group' act-order needs a g_idx permutation that the canonical "
                          "layout does not carry", allowed=(None, "weight", "static"))
    if a is not None and not a.symmetric:
        raise ConfigError(f"{where}.input_activations.symmetric", "asymmetric activations are not supported")
    return _ct_options(where, scheme, w, a)


def _ct_options(where: str, scheme: str, w: _Operand, a: _Operand | None) -> str:
    """Group size, zero points and block shape, checked against what each scheme allows."""
    if scheme in _CT_GROUPED:
        if w.group_size not in GROUP_SIZES:
            raise ConfigError(f"{where}.weights.group_size", f"unsupported {w.group_size!r}", allowed=GROUP_SIZES)
        if not w.symmetric and scheme == "w4a8_int8":
            raise ConfigError(f"{where}.weights.symmetric", "w4a8_int8 weights must be symmetric, got false")
        return QuantScheme.parse(f"{scheme}_g{w.group_size}{'' if w.symmetric else '_zp'}").name
    if not w.symmetric:
        raise ConfigError(f"{where}.weights.symmetric", f"{scheme} weights must be symmetric, got false")
    wanted = {"w4a8_fp8": ("weights.group_size", w.group_size, 128),
              "nvfp4": ("weights.group_size", w.group_size, 16),
              "fp8_block": ("weights.block_structure", w.block, (128, 128))}.get(scheme)
    if wanted is not None and wanted[1] != wanted[2]:
        raise ConfigError(f"{where}.{wanted[0]}", f"{scheme} needs {wanted[2]}, got {wanted[1]!r}")
    if scheme == "fp8_block" and a is not None and a.group_size != 128:
        raise ConfigError(f"{where}.input_activations.group_size", f"fp8_block needs 128, got {a.group_size!r}")
    return scheme


def _typed(args: Json, where: str, key: str, kind: type) -> None:
    value = args.get(key)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"{where}.{key}" if where else key, f"expected a {kind.__name__}, got {show(value)}")


QUANT_METHODS: dict[str, Callable[[Json], str]] = {
    "fp8": _fp8,
    "fbgemm_fp8": lambda qc: "fp8_channel",  # per-channel weights, dynamic per-token activations
    "mxfp4": lambda qc: "mxfp4",  # gpt-oss: e2m1 weights with e8m0 scales per 32, bf16 activations
    "compressed-tensors": _compressed_tensors,
    "modelopt": _modelopt,
}
