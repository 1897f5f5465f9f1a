"""Quantization schemes: what a weight and an activation operand are quantized to.

A ``QuantScheme`` is a weight ``QuantKey`` times an activation ``QuantKey`` (``None`` means
unquantized). Whether activations are quantized statically or dynamically is part of the
scheme, never inferred from which tensors arrive. Schemes are named; ``QuantScheme.parse``
accepts every name in ``SCHEME_NAMES`` and, for grouped weight-only schemes, a ``_g<size>``
and ``_zp`` suffix (``int4_w4a16_g64_zp``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from moe_oracle.errors import ConfigError

GranularityKind = Literal["tensor", "channel", "token", "group", "block"]
_GRANULARITY_KINDS = ("tensor", "channel", "token", "group", "block")
QUANT_DTYPES = ("fp8_e4m3", "int8", "int4", "fp4_e2m1")
SCALE_DTYPES = ("fp32", "e8m0", "fp8_e4m3")


@dataclass(frozen=True, slots=True)
class Granularity:
    """How many elements share one scale: per tensor, output channel, token, group of ``shape[0]``
    consecutive input elements, or ``shape[0] x shape[1]`` block."""

    kind: GranularityKind
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _GRANULARITY_KINDS:
            raise ConfigError("granularity", f"unknown kind {self.kind!r}", allowed=_GRANULARITY_KINDS)
        want = {"group": 1, "block": 2}.get(self.kind, 0)
        if len(self.shape) != want or any(s <= 0 for s in self.shape):
            raise ConfigError("granularity", f"{self.kind} needs {want} positive sizes, got {self.shape}")

    def __str__(self) -> str:
        return self.kind if not self.shape else f"{self.kind}({','.join(map(str, self.shape))})"


TENSOR = Granularity("tensor")
CHANNEL = Granularity("channel")
TOKEN = Granularity("token")


def group(size: int) -> Granularity:
    return Granularity("group", (size,))


def block(rows: int, cols: int) -> Granularity:
    return Granularity("block", (rows, cols))


@dataclass(frozen=True, slots=True, kw_only=True)
class QuantKey:
    """One operand's quantization: element dtype, scale granularity, static or dynamic scales."""

    dtype: str
    granularity: Granularity
    static: bool
    symmetric: bool = True
    scale_dtype: str = "fp32"
    global_scale: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in QUANT_DTYPES:
            raise ConfigError("QuantKey.dtype", f"unknown {self.dtype!r}", allowed=QUANT_DTYPES)
        if self.scale_dtype not in SCALE_DTYPES:
            raise ConfigError("QuantKey.scale_dtype", f"unknown {self.scale_dtype!r}", allowed=SCALE_DTYPES)

    def __str__(self) -> str:
        parts = [self.dtype, str(self.granularity), "static" if self.static else "dynamic"]
        if not self.symmetric:
            parts.append("asymmetric")
        if self.scale_dtype != "fp32":
            parts.append(f"{self.scale_dtype} scales")
        if self.global_scale:
            parts.append("+ global scale")
        return " ".join(parts)


Family = Literal["unquantized", "fp8", "int8", "wna16", "w4a8_int8", "w4a8_fp8", "mxfp4", "mxfp8", "nvfp4"]
FAMILIES: tuple[str, ...] = (
    "unquantized", "fp8", "int8", "wna16", "w4a8_int8", "w4a8_fp8", "mxfp4", "mxfp8", "nvfp4",
)


@dataclass(frozen=True, slots=True)
class QuantScheme:
    """A named (weight key, activation key) pair; build it with ``QuantScheme.parse(name)``."""

    name: str
    family: str
    weight: QuantKey | None = None
    activation: QuantKey | None = None
    description: str = field(default="", compare=False)

    @property
    def is_quantized(self) -> bool:
        return self.weight is not None

    @property
    def base_name(self) -> str:
        """The name without ``_g<size>``/``_zp`` options: what backends declare support for."""
        return _OPTIONS_RE.sub("", self.name)

    @property
    def group_size(self) -> int | None:
        """Elements per weight scale along the input dimension, for group-scaled weights."""
        if self.weight is None or self.weight.granularity.kind != "group":
            return None
        return self.weight.granularity.shape[0]

    @property
    def weight_bits(self) -> int | None:
        if self.weight is None:
            return None
        return {"fp8_e4m3": 8, "int8": 8, "int4": 4, "fp4_e2m1": 4}[self.weight.dtype]

    def __str__(self) -> str:
        w = str(self.weight) if self.weight else "unquantized"
        a = str(self.activation) if self.activation else "unquantized"
        return f"{self.name} (weights: {w}; activations: {a})"

    def __repr__(self) -> str:
        return f"QuantScheme.parse({self.name!r})"

    @classmethod
    def parse(cls, name: str | QuantScheme) -> QuantScheme:
        """Build a scheme from its name; unknown names raise ``ConfigError`` listing the known ones."""
        if isinstance(name, QuantScheme):
            return name
        if not isinstance(name, str):
            raise ConfigError("quant", f"expected a scheme name (str), got {type(name).__name__}",
                              allowed=SCHEME_NAMES)
        text = name.strip().lower()
        match = _OPTIONS_RE.search(text)
        if match is not None and not match.group(0):
            match = None
        base = _OPTIONS_RE.sub("", text)
        if base not in _SCHEMES:
            raise ConfigError("quant", f"unknown scheme {name!r}", allowed=SCHEME_NAMES)
        scheme = _SCHEMES[base]
        if not match:
            return scheme
        if base not in _GROUPED:
            raise ConfigError("quant", f"{base!r} takes no _g<size>/_zp options; only "
                              f"{', '.join(_GROUPED)} do")
        size = int(match.group("g")) if match.group("g") else scheme.group_size
        zero_point = bool(match.group("zp"))
        if size not in GROUP_SIZES:
            raise ConfigError("quant", f"group size {size} in {name!r}", allowed=GROUP_SIZES)
        if zero_point and base == "w4a8_int8":
            raise ConfigError("quant", "w4a8_int8 weights are symmetric; _zp is not accepted")
        return _grouped(base, size, zero_point)


GROUP_SIZES = (32, 64, 128)
_OPTIONS_RE = re.compile(r"(?:_g(?P<g>\d+))?(?P<zp>_zp)?$")


def _fp8(granularity: Granularity, *, static: bool, scale_dtype: str = "fp32") -> QuantKey:
    return QuantKey(dtype="fp8_e4m3", granularity=granularity, static=static, scale_dtype=scale_dtype)


def _int(bits: int, granularity: Granularity, *, static: bool, symmetric: bool = True) -> QuantKey:
    return QuantKey(dtype=f"int{bits}", granularity=granularity, static=static, symmetric=symmetric)


def _fp4(granularity: Granularity, *, static: bool, scale_dtype: str, global_scale: bool = False) -> QuantKey:
    return QuantKey(dtype="fp4_e2m1", granularity=granularity, static=static,
                    scale_dtype=scale_dtype, global_scale=global_scale)


_GROUPED = ("int4_w4a16", "int8_w8a16_group", "w4a8_int8")


def _grouped(base: str, size: int, zero_point: bool) -> QuantScheme:
    bits = 8 if base == "int8_w8a16_group" else 4
    weight = _int(bits, group(size), static=True, symmetric=not zero_point)
    activation = _int(8, TOKEN, static=False) if base == "w4a8_int8" else None
    suffix = ("" if size == 128 else f"_g{size}") + ("_zp" if zero_point else "")
    family = "w4a8_int8" if base == "w4a8_int8" else "wna16"
    return QuantScheme(base + suffix, family, weight, activation)


_SCHEMES: dict[str, QuantScheme] = {
    s.name: s
    for s in (
        QuantScheme("bf16", "unquantized"),
        QuantScheme("fp16", "unquantized"),
        QuantScheme("fp32", "unquantized"),
        QuantScheme("fp8_tensor", "fp8", _fp8(TENSOR, static=True), _fp8(TENSOR, static=False)),
        QuantScheme("fp8_tensor_static", "fp8", _fp8(TENSOR, static=True), _fp8(TENSOR, static=True)),
        QuantScheme("fp8_channel", "fp8", _fp8(CHANNEL, static=True), _fp8(TOKEN, static=False)),
        QuantScheme("fp8_block", "fp8", _fp8(block(128, 128), static=True), _fp8(group(128), static=False)),
        QuantScheme("int8_w8a8", "int8", _int(8, CHANNEL, static=True), _int(8, TOKEN, static=False)),
        QuantScheme("int8_w8a16", "int8", _int(8, CHANNEL, static=True)),
        _grouped("int4_w4a16", 128, False),
        _grouped("int8_w8a16_group", 128, False),
        _grouped("w4a8_int8", 128, False),
        QuantScheme("w4a8_fp8", "w4a8_fp8", _int(4, group(128), static=True), _fp8(TOKEN, static=False)),
        QuantScheme("mxfp4", "mxfp4", _fp4(group(32), static=True, scale_dtype="e8m0")),
        QuantScheme("mxfp4_a8", "mxfp4", _fp4(group(32), static=True, scale_dtype="e8m0"),
                    _fp8(group(32), static=False, scale_dtype="e8m0")),
        QuantScheme("mxfp8", "mxfp8", _fp8(group(32), static=True, scale_dtype="e8m0"),
                    _fp8(group(32), static=False, scale_dtype="e8m0")),
        QuantScheme("nvfp4", "nvfp4",
                    _fp4(group(16), static=True, scale_dtype="fp8_e4m3", global_scale=True),
                    _fp4(group(16), static=False, scale_dtype="fp8_e4m3", global_scale=True)),
    )
}
SCHEME_NAMES: tuple[str, ...] = tuple(_SCHEMES)
UNQUANTIZED_NAMES = ("bf16", "fp16", "fp32")
