"""Support checks and conditions: small predicates over (config, platform) with readable reasons.

A ``Check`` answers "can this backend serve?" with ``Support(ok, reason)``; the reason prints as
it stands ("needs capability >= 10.0, have 9.0"). A ``Condition`` answers "does this priority
rule apply?" and describes itself; conditions combine with ``&``, ``|`` and ``~``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.platform import Platform


@dataclass(frozen=True, slots=True)
class Support:
    """Whether a backend can serve a config; ``reason`` says why not (or a note when it can).

    ``served_scheme`` is set when the backend serves the config's scheme only at a *higher*
    activation precision (``mxfp4_a8`` with bf16 activations): the name of the scheme that runs.
    The oracle then prefers any exact backend but the reference (DESIGN: "Never silently slow")."""

    ok: bool
    reason: str = ""
    served_scheme: str | None = None

    def __bool__(self) -> bool:
        return self.ok

    @classmethod
    def yes(cls, note: str = "", *, served_scheme: str | None = None) -> Support:
        return cls(True, note, served_scheme)

    @classmethod
    def no(cls, reason: str) -> Support:
        return cls(False, reason)


CheckFn = Callable[["MoEConfig", "Platform"], Support]


@dataclass(frozen=True, slots=True)
class Check:
    """A named support predicate; ``describe`` is what the requirement is, for ``list``."""

    describe: str
    fn: CheckFn

    def __call__(self, config: MoEConfig, platform: Platform) -> Support:
        return self.fn(config, platform)


@dataclass(frozen=True, slots=True)
class Condition:
    """A predicate that decides whether a priority hint applies; ``describe`` reads as a clause."""

    describe: str
    fn: Callable[[MoEConfig, Platform], bool]

    def __call__(self, config: MoEConfig, platform: Platform) -> bool:
        return bool(self.fn(config, platform))

    def __and__(self, other: Condition) -> Condition:
        return Condition(f"{self.describe} and {other.describe}", lambda c, p: self(c, p) and other(c, p))

    def __or__(self, other: Condition) -> Condition:
        return Condition(f"({self.describe} or {other.describe})", lambda c, p: self(c, p) or other(c, p))

    def __invert__(self) -> Condition:
        return Condition(f"not {self.describe}", lambda c, p: not self(c, p))

    def __str__(self) -> str:
        return self.describe


def _cap(platform: Platform) -> str:
    return "none" if platform.capability is None else f"{platform.capability[0]}.{platform.capability[1]}"


# Conditions ------------------------------------------------------------------------------
def on_vendor(*vendors: str) -> Condition:
    return Condition(f"vendor is {'/'.join(vendors)}", lambda c, p: p.vendor in vendors)


def capability_major(*majors: int) -> Condition:
    text = "/".join(f"{m}.x" for m in majors)
    return Condition(f"capability {text}", lambda c, p: p.capability is not None and p.capability[0] in majors)


def scheme_in(*names: str) -> Condition:
    return Condition(f"scheme {'/'.join(names)}", lambda c, p: c.scheme.base_name in names)


def activation_in(*names: str) -> Condition:
    return Condition(f"activation {'/'.join(names)}", lambda c, p: c.activation in names)


def dp_size_above(n: int) -> Condition:
    return Condition(f"dp_size > {n}", lambda c, p: c.parallel.dp_size > n)


def ep_size_above(n: int) -> Condition:
    return Condition(f"ep_size > {n}", lambda c, p: c.parallel.ep_size > n)


def config_where(describe: str, fn: Callable[[MoEConfig], bool]) -> Condition:
    """A condition on the config alone, e.g. ``config_where("gpt-oss", lambda c: c.activation == ...)``."""
    return Condition(describe, lambda c, p: fn(c))


ALWAYS = Condition("always", lambda c, p: True)


# Checks ----------------------------------------------------------------------------------
def check(describe: str, predicate: Callable[[MoEConfig, Platform], bool],
          reason: Callable[[MoEConfig, Platform], str] | str) -> Check:
    """Build a check from a predicate and the reason to give when it fails."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        if predicate(config, platform):
            return Support.yes()
        return Support.no(reason(config, platform) if callable(reason) else reason)

    return Check(describe, fn)


def capability_at_least(major: int, minor: int = 0) -> Check:
    want = (major, minor)
    return check(
        f"capability >= {major}.{minor}",
        lambda c, p: p.capability is not None and tuple(p.capability) >= want,
        lambda c, p: f"needs capability >= {major}.{minor}, have {_cap(p)}",
    )


def capability_family(*majors: int) -> Check:
    text = "/".join(f"{m}.x" for m in majors)
    return check(
        f"capability {text}",
        lambda c, p: p.capability is not None and p.capability[0] in majors,
        lambda c, p: f"needs capability {text}, have {_cap(p)}",
    )


def arch_in(*prefixes: str) -> Check:
    return check(
        f"arch {'/'.join(prefixes)}",
        lambda c, p: p.arch is not None and p.arch.startswith(prefixes),
        lambda c, p: f"needs arch {'/'.join(prefixes)}, have {p.arch or 'none'}",
    )


def cpu_feature(name: str) -> Check:
    return check(f"CPU feature {name}", lambda c, p: name in p.features,
                 lambda c, p: f"needs CPU feature {name}, this CPU lacks it")


def max_experts(limit: int) -> Check:
    return check(f"at most {limit} experts", lambda c, p: c.num_experts <= limit,
                 lambda c, p: f"supports at most {limit} experts, config has {c.num_experts}")


def no_bias() -> Check:
    return check("no biases", lambda c, p: not c.has_bias, "does not support biases")


def dtypes(*names: str) -> Check:
    from moe_oracle.config.moe import dtype_name

    return check(f"dtype {'/'.join(names)}", lambda c, p: dtype_name(c.dtype) in names,
                 lambda c, p: f"supports dtype {'/'.join(names)}, config has {dtype_name(c.dtype)}")


def run_check(c: Check, config: MoEConfig, platform: Platform, *, source: str = "") -> Support:
    """``c(config, platform)``, contained: a check that raises (``SystemExit`` included) or returns
    something that is not a ``Support`` fails with that as its reason, naming ``source`` (the
    distribution that declared it), so one broken plugin never stops a selection."""
    from moe_oracle.errors import contained, describe_fault

    who = f" (from {source})" if source else ""
    try:
        result = c(config, platform)
    except BaseException as exc:
        if not contained(exc):
            raise
        return Support.no(f"support check {c.describe!r}{who} raised {describe_fault(exc)}")
    if not isinstance(result, Support):
        return Support.no(f"support check {c.describe!r}{who} returned {type(result).__name__}, not a Support")
    if not isinstance(result.reason, str):
        return Support.no(f"support check {c.describe!r}{who} returned a Support whose reason is "
                          f"{type(result.reason).__name__}, not a str")
    return result


def first_failure(checks: Iterable[Check], config: MoEConfig, platform: Platform, *, source: str = "") -> Support:
    """Run checks in order; the first failure, or ``Support.yes()`` carrying the passing checks' notes.
    Each runs through ``run_check``: a faulty check is a failure naming ``source``."""
    notes = []
    served = None
    for c in checks:
        result = run_check(c, config, platform, source=source)
        if not result.ok:
            return result
        if result.reason:
            notes.append(result.reason)
        served = served or result.served_scheme
    return Support.yes("; ".join(notes), served_scheme=served)


# Per-scheme requirements (what a backend's kernels implement, scheme by scheme) -----------------
CapabilityTest = tuple[str, Callable[[tuple[int, int]], bool]]
"""A named capability test: ``("9.0", lambda cap: cap == (9, 0))``."""
SM90: CapabilityTest = ("9.0", lambda cap: tuple(cap) == (9, 0))
SM10X: CapabilityTest = ("10.x", lambda cap: cap[0] == 10)
SM12X: CapabilityTest = ("12.x", lambda cap: cap[0] == 12)


def capability_by_scheme(table: Mapping[str, tuple[CapabilityTest, ...]]) -> Check:
    """The capabilities each scheme runs on: ``{"fp8_block": (SM90,), ...}``."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        allowed = table[config.scheme.base_name]
        cap = platform.capability
        if cap is not None and any(test(cap) for _, test in allowed):
            return Support.yes()
        names = "/".join(name for name, _ in allowed)
        return Support.no(f"{config.scheme.base_name} needs capability {names}, have {_cap(platform)}")

    described = "; ".join(f"{s}: {'/'.join(n for n, _ in caps)}" for s, caps in table.items())
    return Check(f"capability by scheme ({described})", fn)


def activations_by_scheme(table: Mapping[str, frozenset[str]]) -> Check:
    """The activations each scheme's kernels implement."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        allowed = table[config.scheme.base_name]
        if config.activation in allowed:
            return Support.yes()
        return Support.no(f"{config.scheme.base_name} kernels implement activation {'/'.join(sorted(allowed))}, "
                          f"not {config.activation}")

    return Check("activation by scheme", fn)


def bias_schemes(schemes: frozenset[str]) -> Check:
    """Biases only for the schemes whose kernels take them."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        if not config.has_bias or config.scheme.base_name in schemes:
            return Support.yes()
        return Support.no(f"{config.scheme.base_name} kernels take no biases (only {'/'.join(sorted(schemes))} do)")

    return Check(f"biases only with {'/'.join(sorted(schemes))}", fn)


def clamp_schemes(schemes: frozenset[str]) -> Check:
    """A ``swiglu_limit`` needs a kernel that applies the clamp; the others would ignore it."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        if config.swiglu_limit is None or config.scheme.base_name in schemes:
            return Support.yes()
        return Support.no(f"swiglu_limit={config.swiglu_limit:g} is not applied by the {config.scheme.base_name} "
                          f"kernel (only {'/'.join(sorted(schemes))} apply it)")

    return Check(f"swiglu_limit applied for {'/'.join(sorted(schemes))}", fn)


def multiple_of(field: str, value: Callable[[MoEConfig], int], multiple: int, schemes: frozenset[str],
                why: str) -> Check:
    """``value(config) % multiple == 0`` for the given schemes, e.g. 128-row fp8 blocks split at gate/up."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        if config.scheme.base_name not in schemes or value(config) % multiple == 0:
            return Support.yes()
        return Support.no(f"{config.scheme.base_name} needs {field} % {multiple} == 0 ({why}), have {value(config)}")

    return Check(f"{field} multiple of {multiple} for {'/'.join(sorted(schemes))}", fn)


def no_router_weight_on_input() -> Check:
    return Check("router weights on the output", lambda c, p: Support.no(
        "applies router weights to the expert outputs, not the input (apply_router_weight_on_input=True)")
        if c.apply_router_weight_on_input else Support.yes())


# Vendor-library versions ------------------------------------------------------------------------
_LEADING = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


def release(version: str) -> tuple[int, ...]:
    """``"2.8.10+xpu"`` -> ``(2, 8, 10)``; ``()`` when the string starts with no number."""
    match = _LEADING.match(version)
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def show_release(parts: tuple[int, ...]) -> str:
    return ".".join(map(str, parts))


def library_at_least(library: str, minimum: tuple[int, ...], why: str = "") -> Check:
    """The installed ``library`` (an import name in ``Platform.libraries``) is at least ``minimum``."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        version = platform.libraries.get(library, "")
        if release(version) >= minimum:
            return Support.yes()
        return Support.no(f"needs {library} >= {show_release(minimum)}{f' ({why})' if why else ''}, "
                          f"have {version or 'none'}")

    return Check(f"{library} >= {show_release(minimum)}", fn)


def matches_torch(library: str) -> Check:
    """``library`` X.Y.* is built against torch X.Y (zentorch, IPEX): another pair fails to load or misbehaves.
    The platform's torch (a simulated one may name it) else this process's."""

    def fn(config: MoEConfig, platform: Platform) -> Support:
        from importlib import metadata

        version = platform.libraries.get(library, "")
        torch_version = (platform.libraries.get("torch") or metadata.version("torch")).split("+")[0]
        if release(version)[:2] != release(torch_version)[:2]:
            return Support.no(f"{library} {version} is built for torch {show_release(release(version)[:2])}, "
                              f"this is torch {torch_version}")
        return Support.yes()

    return Check(f"{library} built for this torch", fn)
