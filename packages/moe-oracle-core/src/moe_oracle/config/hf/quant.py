"""``quantization_config`` -> a ``QuantScheme`` name, through ``QUANT_METHODS`` keyed by ``quant_method``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from moe_oracle.config.hf.keys import Json
from moe_oracle.config.quant import GROUP_SIZES, QuantScheme
from moe_oracle.config.validate import positive_int, show
from moe_oracle.errors import ConfigError


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
