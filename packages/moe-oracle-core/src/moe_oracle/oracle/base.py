"""``MoEKernelOracle``: the selection loop, written once; scheme oracles fill small hooks.

Subclass contract. MUST set ``family`` (a ``QuantScheme.family``). MAY override
``make_quant_config`` (scheme-specific scale handling). Everything else (the backend enum built
from the registry, merged priorities, overrides, the report, conversion, kernel assembly) is
here, once.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from moe_oracle.config.quant import SCHEME_NAMES, QuantScheme
from moe_oracle.errors import (
    ConfigError,
    MoEOracleError,
    NoBackendError,
    RegistryError,
    UnknownBackendError,
    UnsupportedBackendError,
    contained,
    describe_fault,
)
from moe_oracle.kernel.modular import FusedMoEKernel, LocalPrepareFinalize, PrepareFinalize
from moe_oracle.kernel.quant_config import QuantConfig, QuantDesc
from moe_oracle.kernel.weights import CanonicalWeights, KernelWeights, canonical_kernel_weights
from moe_oracle.oracle.overrides import Overrides, resolve_overrides
from moe_oracle.oracle.plan import PlanInfo, resolve_buckets, resolve_policy, rules_plan
from moe_oracle.oracle.report import (
    EXCLUDED,
    REFERENCE,
    REJECTED,
    SELECTED,
    USABLE,
    CandidateReport,
    HintRecord,
    Selection,
    SelectionReport,
)
from moe_oracle.platform import Platform
from moe_oracle.priority import merge_order
from moe_oracle.registry import Registry, registry
from moe_oracle.support import Support

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.spec import BackendSpec

logger = logging.getLogger("moe_oracle")
_CACHE_LIMIT = 4096
_T = TypeVar("_T")


class MoEKernelOracle:
    """Chooses, prepares and assembles the fused-MoE kernel for one scheme family."""

    family: ClassVar[str] = ""

    def __init__(self, registry_: Registry | None = None) -> None:
        self._registry = registry_
        self._cache: dict[object, tuple[SelectionReport, BackendSpec | None]] = {}
        self._enum: tuple[int, type[enum.Enum]] | None = None

    @property
    def registry(self) -> Registry:
        return self._registry if self._registry is not None else registry()

    @property
    def family_schemes(self) -> frozenset[str]:
        return frozenset(n for n in SCHEME_NAMES if QuantScheme.parse(n).family == self.family)

    def family_specs(self) -> list[BackendSpec]:
        """Every registered backend serving at least one scheme of this family."""
        schemes = self.family_schemes
        return [s for s in self.registry.specs() if s.schemes & schemes]

    # The vLLM-shaped interface -----------------------------------------------------------
    def backend_enum_cls(self) -> type[enum.Enum]:
        """An Enum of this family's backends, built from the registry (plugins included)."""
        gen = self.registry.generation
        cached = self._enum
        if cached is None or cached[0] != gen:
            members = {s.name.upper(): s.name for s in self.family_specs()}
            name = type(self).__name__.removesuffix("Oracle") + "Backend"
            built: type[enum.Enum] = enum.Enum(name, members)  # type: ignore[assignment,misc]
            cached = self._enum = (gen, built)
        return cached[1]

    def map_backend(self, name: str) -> enum.Enum:
        """The enum member for a user-facing backend name; unknown names list the known ones."""
        members = self.backend_enum_cls()
        key = name.strip().lower() if isinstance(name, str) else name
        for member in members:
            if member.value == key:
                return member
        raise UnknownBackendError("backend", str(name), [m.value for m in members])

    def get_priority_backends(self, config: MoEConfig, platform: Platform | None = None) -> list[enum.Enum]:
        """This platform's candidates in merged priority order (before support checks)."""
        members = self.backend_enum_cls()
        report = self.explain(config, platform)
        return [members(c.name) for c in report.candidates]

    def backend_to_kernel_cls(self, backend: str | enum.Enum) -> type:
        return self.registry.get(_name(backend)).load_experts()

    # Selection ------------------------------------------------------------------------
    def explain(self, config: MoEConfig, platform: Platform | None = None, *, backend: str | None = None,
                exclude: str | Iterable[str] | None = None, prefer: str | Iterable[str] | None = None,
                policy: str | None = None, buckets: Iterable[int] | None = None,
                allow_extra_memory: bool = False) -> SelectionReport:
        """The full report with the plan; never raises for "nothing fits" (``chosen`` is then ``None``).
        Under ``policy="measured"`` the plan is read from the selection cache or measured now."""
        policy = resolve_policy(policy)
        bounds = resolve_buckets(buckets)
        report, spec = self._evaluate(config, platform, backend, exclude, prefer)
        if spec is None:
            return report
        return self._planned(config, report, policy, bounds, allow_extra_memory)[0]

    def _planned(self, config: MoEConfig, report: SelectionReport, policy: str, buckets: tuple[int, ...],
                 allow_extra_memory: bool, *, timer: Any = None, refresh: bool = False, progress: Any = None,
                 group: Any = None) -> tuple[SelectionReport, str, Any]:
        """``(report with its plan, primary backend, primary layout variant)``."""
        assert report.chosen is not None
        if policy == "rules":
            return report, report.chosen, None  # _build gave it the rules plan
        from moe_oracle.oracle.measured import measured_plan

        m = measured_plan(self, config, report.platform, report, buckets=buckets,
                          allow_extra_memory=allow_extra_memory, timer=timer, refresh=refresh, progress=progress,
                          group=group)
        return dataclasses.replace(report, plan=m.plan, plan_info=m.info), m.primary, m.primary_config

    def select_backend(self, config: MoEConfig, platform: Platform | None = None, *, backend: str | None = None,
                       exclude: str | Iterable[str] | None = None,
                       prefer: str | Iterable[str] | None = None, strict: bool | None = None,
                       policy: str | None = None, buckets: Iterable[int] | None = None,
                       allow_extra_memory: bool = False, timer: Any = None, refresh: bool = False,
                       progress: Any = None, group: Any = None) -> Selection:
        """Choose now; raise ``UnsupportedBackendError`` / ``NoBackendError`` with every reason.

        When only the reference experts fit (and were not forced), a WARNING on ``moe_oracle`` says why
        each faster backend was rejected; with ``strict`` (``None``: ``MOE_ORACLE_STRICT``) that is a
        ``NoBackendError`` instead.

        ``policy`` (``None``: ``MOE_ORACLE_POLICY``, default ``"rules"``): ``"measured"`` times the
        usable candidates per token bucket (``buckets``: upper bounds, ``plan.DEFAULT_BUCKETS``) or
        reads that from the selection cache (``refresh``: measure anyway), rank 0 of ``group``
        deciding for all ranks; buckets run other layouts than the primary backend's only with
        ``allow_extra_memory``. ``timer`` and ``progress``: see ``oracle.measure``."""
        strict = strict_mode(strict)
        policy = resolve_policy(policy)
        bounds = resolve_buckets(buckets)
        if not isinstance(allow_extra_memory, bool):
            raise ConfigError("allow_extra_memory", f"must be a bool, got {allow_extra_memory!r}")
        report, spec = self._evaluate(config, platform, backend, exclude, prefer)
        if spec is not None and report.slow_warning:
            if strict:
                reasons = {c.name: c.reason for c in report.candidates if c.name != spec.name}
                raise NoBackendError(reasons or {"(none)": "no other backend serves this vendor"},
                                     context=f"{config.scheme.name} on {report.platform.describe()} other than the "
                                             f"reference experts (strict: {STRICT_ENV} or strict=True)")
            _warn_slow(report.slow_warning)
        if spec is None:
            forced = report.overrides.backend
            if forced is not None:
                usable = [c.name for c in report.candidates if c.status == USABLE]
                raise UnsupportedBackendError(forced, [_forced_reason(report, forced, self.registry)], usable)
            raise NoBackendError({c.name: c.reason for c in report.candidates},
                                 context=f"{config.scheme.name} on {report.platform.describe()}")
        report, primary, variant = self._planned(config, report, policy, bounds, allow_extra_memory, timer=timer,
                                                 refresh=refresh, progress=progress, group=group)
        primary_spec = spec if primary == spec.name else self.registry.get(primary)
        return Selection(primary_spec.name, primary_spec, report, report.plan, variant)

    def _evaluate(self, config: MoEConfig, platform: Platform | None, backend: str | None,
                  exclude: str | Iterable[str] | None,
                  prefer: str | Iterable[str] | None) -> tuple[SelectionReport, BackendSpec | None]:
        reg = self.registry
        _check_config(config)
        if platform is None:
            platform = default_platform(reg)
        elif not isinstance(platform, Platform):
            raise ConfigError("platform", f"expected a moe_oracle.Platform or None (e.g. Platform.simulate"
                              f"({str(platform)!r}) or Platform.parse(...)), got {type(platform).__name__}")
        overrides = resolve_overrides(backend=backend, exclude=_freeze(exclude), prefer=_freeze(prefer),
                                      known=reg.names())
        key = (config, platform, overrides, reg.generation, _environment(reg))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._build(config, platform, overrides, reg)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = hit
            if hit[1] is not None:
                logger.info("moe-oracle: %s chose %s for %s on %s", type(self).__name__, hit[1].name,
                            config.scheme.name, platform.describe())
        return hit

    def _build(self, config: MoEConfig, platform: Platform, overrides: Overrides,
               reg: Registry) -> tuple[SelectionReport, BackendSpec | None]:
        family = self.family_specs()
        here = [s for s in family if s.serves_vendor(platform.vendor)]
        others = tuple((s.name, "/".join(sorted(s.vendors))) for s in family if not s.serves_vendor(platform.vendor))
        ranked = merge_order(here, reg.hints(), config, platform)
        if overrides.prefer:
            first = [r for name in overrides.prefer for r in ranked if r.spec.name == name]
            ranked = first + [r for r in ranked if r not in first]
        # Support of every candidate first, then the choice: the first exact one, else (the reference
        # aside) the first that serves at a higher activation precision, else the reference.
        entries: list[list[Any]] = []  # [spec, rank, hints, support (None: excluded)]
        for r in ranked:
            spec = r.spec
            hints = tuple(HintRecord(h.source, h.effect(), h.reason) for h in r.hints)
            if spec.name in overrides.prefer:
                hints += (HintRecord("user", "moved to front", f"preferred by {overrides.source('prefer')}"),)
            if spec.name in overrides.exclude:
                entries.append([spec, r.rank, hints, None])
                continue
            hints += tuple(HintRecord(h.source, "ignored", why) for h, why in r.ignored)
            entries.append([spec, r.rank, hints, support_of(spec, config, platform)])
        chosen: BackendSpec | None = None
        for upcast_pass in (False, True, None):
            for entry in entries:
                spec, support = entry[0], entry[3]
                if chosen is not None or support is None or not support.ok:
                    continue
                if overrides.backend is not None and overrides.backend != spec.name:
                    continue
                if upcast_pass is not None and overrides.backend is None and (  # the reference waits for pass None
                        spec.name == REFERENCE or bool(support.served_scheme) != upcast_pass):
                    continue
                resolved = spec.resolve()  # imports its experts and converter: a broken plugin is rejected here
                if resolved.ok:
                    chosen = spec
                else:
                    entry[3] = resolved
        rows: list[CandidateReport] = []
        for spec, rank, hints, support in entries:
            if support is None:
                rows.append(CandidateReport(spec.name, spec.distribution, rank, EXCLUDED,
                                            f"excluded by {overrides.source('exclude')}", hints))
                continue
            status = SELECTED if spec is chosen else USABLE if support.ok else REJECTED
            reason = support.reason
            if support.ok and overrides.backend is not None and overrides.backend == spec.name:
                reason = f"forced by {overrides.source('backend')}" + (f"; {reason}" if support.served_scheme else "")
            rows.append(CandidateReport(spec.name, spec.distribution, rank, status, reason, hints,
                                        served_scheme=support.served_scheme if support.ok else None))
        report = SelectionReport(type(self).__name__, config, platform, tuple(rows),
                                 chosen.name if chosen else None, overrides, tuple(reg.failures), others)
        if chosen is None:
            report = dataclasses.replace(report, none_reason=_none_reason(report, reg))
        else:
            report = dataclasses.replace(report, plan=rules_plan(chosen.name), plan_info=RULES_INFO)
        return report, chosen

    # Weights, quant config, kernel ------------------------------------------------------
    def convert_to_kernel_format(self, backend: str | enum.Enum | Selection, config: MoEConfig,
                                 weights: CanonicalWeights) -> KernelWeights:
        """Run the backend's pure converter on canonical tensors (identity when it has none)."""
        spec = self.registry.get(_name(backend))
        converter = spec.load_converter()
        if converter is None:
            return canonical_kernel_weights(weights, config, backend=spec.name)
        converted = _call_plugin(spec, f"converter {spec.converter}", converter, weights, config)
        if not isinstance(converted, KernelWeights) or converted.backend != spec.name:
            raise RegistryError(f"converter {spec.converter} (from {spec.distribution or '?'}) must return "
                                f"KernelWeights(backend={spec.name!r}), got {type(converted).__name__}"
                                + (f" for backend {converted.backend!r}" if isinstance(converted, KernelWeights) else ""))
        return converted

    def make_quant_config(self, config: MoEConfig, weights: KernelWeights | CanonicalWeights) -> QuantConfig:
        """Operand descriptors from the (converted) tensors, by keyword only."""
        get = weights.get if isinstance(weights, KernelWeights) else (lambda n: getattr(weights, n))
        scheme = config.scheme
        return QuantConfig(
            scheme=scheme,
            w13=QuantDesc(key=scheme.weight, scale=get("w13_scale"), zero_point=get("w13_zero_point"),
                          global_scale=get("w13_global_scale"), bias=get("w13_bias")),
            w2=QuantDesc(key=scheme.weight, scale=get("w2_scale"), zero_point=get("w2_zero_point"),
                         global_scale=get("w2_global_scale"), bias=get("w2_bias")),
            a13=QuantDesc(key=scheme.activation, scale=get("a13_scale")),
            a2=QuantDesc(key=scheme.activation, scale=get("a2_scale")),
            swiglu_alpha=config.swiglu_alpha, swiglu_limit=config.swiglu_limit,
        )

    def make_kernel(self, backend: str | enum.Enum | Selection, config: MoEConfig, quant_config: QuantConfig,
                    weights: KernelWeights, prepare_finalize: PrepareFinalize | None = None) -> FusedMoEKernel:
        """Experts of ``backend`` on ``weights``, behind ``prepare_finalize`` (local by default)."""
        spec = self.registry.get(_name(backend))
        if weights.backend != spec.name:
            raise ValueError(f"weights were converted for {weights.backend!r}, not {spec.name!r}; "
                             "convert the canonical weights for this backend")
        if prepare_finalize is None:
            if config.parallel.use_all2all_kernels:
                raise NotImplementedError(
                    f"all2all={config.parallel.all2all!r}: pass the expert-parallel prepare_finalize to make_kernel "
                    "(moe_oracle.distributed.make_prepare_finalize(config, group))")
            prepare_finalize = LocalPrepareFinalize()
        experts = _call_plugin(spec, f"experts {spec.experts}", spec.load_experts(), weights.config, quant_config,
                               weights)
        return FusedMoEKernel(prepare_finalize, experts)


RULES_INFO = PlanInfo("rules", "rules (merged priorities; policy='measured' times the candidates)")
STRICT_ENV = "MOE_ORACLE_STRICT"
_STRICT_VALUES = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                  "off": False, "": False}


def strict_mode(strict: bool | None) -> bool:
    """``strict`` itself, or ``MOE_ORACLE_STRICT`` when it is None; anything else is a ``ConfigError``."""
    if strict is None:
        value = os.environ.get(STRICT_ENV, "0")
        if value.strip().lower() not in _STRICT_VALUES:
            raise ConfigError(STRICT_ENV, f"unknown value {value!r}", allowed=("1", "0", "true", "false"))
        return _STRICT_VALUES[value.strip().lower()]
    if not isinstance(strict, bool):
        raise ConfigError("strict", f"must be a bool or None, got {strict!r}")
    return strict


@functools.lru_cache(maxsize=256)
def _warn_slow(message: str) -> None:
    """Once per distinct message (config and platform), not once per layer of a model."""
    logger.warning("moe-oracle: %s", message)


def support_of(spec: BackendSpec, config: MoEConfig, platform: Platform) -> Support:
    """``spec.supports(config, platform)``, contained: a spec whose ``supports`` raises or answers
    something that is not a ``Support`` is rejected with that as its reason, naming its distribution."""
    try:
        support = spec.supports(config, platform)
    except BaseException as exc:
        if not contained(exc):
            raise
        return Support.no(f"support check (from {spec.distribution or '?'}) raised {describe_fault(exc)}")
    if not isinstance(support, Support):
        return Support.no(f"supports() (from {spec.distribution or '?'}) returned {type(support).__name__}, "
                          "not a Support")
    return support


def _call_plugin(spec: BackendSpec, what: str, fn: Callable[..., _T], *args: object) -> _T:
    """Call a plugin's converter or experts constructor; moe-oracle's own errors and ``ImportError``
    (a vendor library missing: the plugin's own, named error) pass through, anything else it raises
    (``SystemExit`` included) becomes a ``RegistryError`` naming the distribution."""
    try:
        return fn(*args)
    except (MoEOracleError, ImportError):
        raise
    except BaseException as exc:
        if not contained(exc):
            raise
        raise RegistryError(f"backend {spec.name!r} {what} (from {spec.distribution or '?'}) raised "
                            f"{describe_fault(exc)}") from exc


def _check_config(config: object) -> None:
    from moe_oracle.config.moe import MoEConfig

    if not isinstance(config, MoEConfig):
        raise ConfigError("config", f"expected a MoEConfig (e.g. MoEConfig.preset('tiny')), got {type(config).__name__}")


def _environment(reg: Registry) -> tuple[str | None, ...]:
    """Values of the environment variables that specs' checks read (``BackendSpec.environment``),
    so that changing one between two selections is never answered from the cache."""
    return tuple(os.environ.get(name) for name in reg.environment_variables())


def default_platform(reg: Registry) -> Platform:
    return Platform.detect(reg.libraries())


def _freeze(value: str | Iterable[str] | None) -> Any:
    """Iterables become tuples (hashable for the cache); anything else is left for
    ``resolve_overrides`` to reject by name."""
    if value is None or isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Iterable):
        return value
    return tuple(value)


def _name(backend: str | enum.Enum | Selection) -> str:
    if isinstance(backend, Selection):
        return backend.backend
    if isinstance(backend, enum.Enum):
        return str(backend.value)
    return backend


def _none_reason(report: SelectionReport, reg: Registry) -> str:
    """Why nothing was chosen, in one line: what ``select_backend`` would raise, said briefly."""
    forced = report.overrides.backend
    if forced is not None:
        usable = [c.name for c in report.candidates if c.status == USABLE]
        return str(UnsupportedBackendError(forced, [_forced_reason(report, forced, reg)], usable))
    if not report.candidates:
        return (f"no registered backend serves {report.config.scheme.name} on {report.platform.vendor}"
                + (f"; other vendors' backends: {', '.join(n for n, _ in report.other_vendors)}"
                   if report.other_vendors else ""))
    parts = []
    rejected = [c.name for c in report.candidates if c.status == REJECTED]
    excluded = [c.name for c in report.candidates if c.status == EXCLUDED]
    if rejected:
        parts.append(f"{len(rejected)} rejected ({', '.join(rejected)})")
    if excluded:
        parts.append(f"{len(excluded)} excluded by {report.overrides.source('exclude')} ({', '.join(excluded)})")
    return "no candidate fits: " + ", ".join(parts) + "; each one's reason is in its row"


def _forced_reason(report: SelectionReport, forced: str, reg: Registry) -> str:
    for c in report.candidates:
        if c.name == forced:
            return c.reason
    spec = reg.get(forced)
    if not spec.serves_vendor(report.platform.vendor):
        return f"serves {'/'.join(sorted(spec.vendors))}, not {report.platform.vendor}"
    return f"does not serve the {report.oracle.removesuffix('Oracle')} schemes ({report.config.scheme.name})"
