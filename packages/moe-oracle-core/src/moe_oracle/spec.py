"""``BackendSpec`` and ``PriorityHint``: what a package declares about one backend.

A spec is data: which vendors, schemes, activations and activation format a backend serves,
which vendor libraries it needs, extra support checks, where its experts class, weight
converter and measured-policy hooks (``tuning``) live (lazy ``"module:attr"`` paths), and priority
hints with reasons.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from moe_oracle.config.moe import ACTIVATIONS
from moe_oracle.config.quant import SCHEME_NAMES
from moe_oracle.errors import RegistryError
from moe_oracle.support import Check, Condition, Support, first_failure

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.platform import Platform

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PATH_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
DEFAULT_RANK = 100


@dataclass(frozen=True, kw_only=True)
class PriorityHint:
    """One ordering rule, merged with every other package's by ``moe_oracle.priority``.

    - ``target``: the backend this orders; ``None`` means the spec that carries the hint.
    - ``rank``: base position (lower first). A conditional rank replaces the spec's own rank;
      when several conditional ranks apply, the largest wins (demotion is the safe side).
    - ``before`` / ``after``: backend names or globs (``"flashinfer_*"``, ``"*"``) the target
      must precede / follow; names not among the candidates are ignored.
    - ``when``: a ``Condition`` on (config, platform); ``None`` applies always.
    - ``reason``: one line shown in ``explain``; required.
    - ``source``: the distribution that declared it, filled in at registration.
    """

    reason: str
    target: str | None = None
    rank: int | None = None
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    when: Condition | None = None
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "before", tuple(self.before))
        object.__setattr__(self, "after", tuple(self.after))
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise RegistryError("PriorityHint needs a non-empty reason= (it is shown in explain)")
        if self.rank is None and not self.before and not self.after:
            raise RegistryError(f"PriorityHint {self.reason!r} sets none of rank, before, after")
        if self.when is not None and not isinstance(self.when, Condition):
            raise RegistryError(f"PriorityHint {self.reason!r}: when= must be a moe_oracle.support.Condition "
                                f"(it describes itself in explain), got {type(self.when).__name__}")

    def applies(self, config: MoEConfig, platform: Platform) -> bool:
        """Whether the hint applies; a ``when`` that raises propagates (``merge_order`` contains it)."""
        return self.when is None or self.when(config, platform)

    def effect(self) -> str:
        parts = []
        if self.rank is not None:
            parts.append(f"rank {self.rank}")
        if self.before:
            parts.append(f"before {','.join(self.before)}")
        if self.after:
            parts.append(f"after {','.join(self.after)}")
        text = "; ".join(parts)
        return f"{text} when {self.when.describe}" if self.when is not None else text


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """One registered backend. ``supports(config, platform)`` runs its checks in a fixed order:
    vendor, activation format, scheme, activation, vendor libraries, then ``checks``.
    ``environment`` names the variables those checks read: their values join the selection cache
    key, so flipping one mid-process is never answered from the cache. ``inverse`` is the
    converter's exact inverse (``KernelWeights -> CanonicalWeights``, used by ``MoELayer.state_dict``,
    ``.to()`` and pickling); ``None`` means ``to_canonical`` in the converter's module, if it has one.
    ``plugin_api`` is the
    ``moe_oracle.PLUGIN_API_VERSION`` the providing package was written against, as a literal;
    the registry refuses a spec whose number differs from this core's (``None``: not declared)."""

    name: str
    experts: str
    vendors: frozenset[str]
    schemes: frozenset[str]
    activations: frozenset[str] = frozenset(ACTIVATIONS)
    activation_format: str = "standard"
    rank: int = DEFAULT_RANK
    hints: tuple[PriorityHint, ...] = ()
    checks: tuple[Check, ...] = ()
    libraries: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    converter: str | None = None
    inverse: str | None = None
    environment: tuple[str, ...] = ()
    distribution: str = ""
    description: str = ""
    plugin_api: int | None = None
    tuning: str | None = None

    def __post_init__(self) -> None:
        for name in ("vendors", "schemes", "activations"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        object.__setattr__(self, "hints", tuple(self.hints))
        object.__setattr__(self, "checks", tuple(self.checks))
        object.__setattr__(self, "environment", tuple(self.environment))
        object.__setattr__(self, "libraries", MappingProxyType(dict(self.libraries)))
        self.validate()

    def validate(self) -> None:
        """Raise ``RegistryError`` naming the field of anything malformed."""
        where = f"backend {self.name!r}"
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise RegistryError(f"{where}: name must be lowercase [a-z0-9_], starting with a letter")
        if not self.vendors:
            raise RegistryError(f"{where}: vendors is empty")
        unknown = sorted(self.schemes - set(SCHEME_NAMES))
        if unknown or not self.schemes:
            raise RegistryError(f"{where}: unknown schemes {unknown or '(none given)'}; known: {', '.join(SCHEME_NAMES)}")
        bad_acts = sorted(self.activations - set(ACTIVATIONS))
        if bad_acts:
            raise RegistryError(f"{where}: unknown activations {bad_acts}; known: {', '.join(ACTIVATIONS)}")
        if self.activation_format not in ("standard", "batched"):
            raise RegistryError(f"{where}: activation_format must be 'standard' or 'batched', got {self.activation_format!r}")
        if self.inverse is not None and self.converter is None:
            raise RegistryError(f"{where}: inverse without a converter (the identity needs no inverse)")
        for label, path in (("experts", self.experts), ("converter", self.converter), ("inverse", self.inverse),
                            ("tuning", self.tuning)):
            if path is not None and not _PATH_RE.match(path):
                raise RegistryError(f"{where}: {label} must be a 'module:attribute' path, got {path!r}")
        if self.plugin_api is not None and (type(self.plugin_api) is not int or self.plugin_api < 1):
            raise RegistryError(f"{where}: plugin_api must be a positive int (the moe_oracle.PLUGIN_API_VERSION "
                                f"the package was written against) or None, got {self.plugin_api!r}")
        for hint in self.hints:
            if not isinstance(hint, PriorityHint):
                raise RegistryError(f"{where}: hints must be PriorityHint, got {type(hint).__name__}")
        for c in self.checks:
            if not isinstance(c, Check):
                raise RegistryError(f"{where}: checks must be moe_oracle.support.Check, got {type(c).__name__}")

    def serves_vendor(self, vendor: str) -> bool:
        """``"*"`` in ``vendors`` serves every vendor, a plugin's own included."""
        return "*" in self.vendors or vendor in self.vendors

    def supports(self, config: MoEConfig, platform: Platform) -> Support:
        if not self.serves_vendor(platform.vendor):
            return Support.no(f"serves {'/'.join(sorted(self.vendors))}, not {platform.vendor}")
        fmt = config.parallel.activation_format
        if fmt != self.activation_format:
            return Support.no(f"takes the {self.activation_format} activation format, "
                              f"all2all={config.parallel.all2all!r} gives {fmt}")
        scheme = config.scheme.base_name
        if scheme not in self.schemes:
            return Support.no(f"does not support scheme {scheme}")
        if config.activation not in self.activations:
            return Support.no(f"does not support activation {config.activation}")
        for library, distribution in self.libraries.items():
            if not platform.has(library):
                return Support.no(f"{library} not installed (pip install {distribution})")
        return first_failure(self.checks, config, platform, source=self.distribution)

    def load_experts(self) -> type:
        """The experts class; ``RegistryError`` naming the path and distribution if it does not
        import or is not a ``moe_oracle.Experts`` subclass (``FusedMoEKernel`` checks that an instance
        is modular or monolithic: a factory class may construct either)."""
        from moe_oracle.kernel.modular import Experts

        cls = _load(self.experts, f"backend {self.name!r} experts{self._from()}")
        if not (isinstance(cls, type) and issubclass(cls, Experts)):
            got = f"the class {cls.__name__}" if isinstance(cls, type) else f"a {type(cls).__name__}"
            raise RegistryError(f"backend {self.name!r} experts{self._from()}: {self.experts!r} is {got}, "
                                "not a moe_oracle.Experts subclass")
        return cls

    def load_converter(self) -> Any:
        if self.converter is None:
            return None
        fn = _load(self.converter, f"backend {self.name!r} converter{self._from()}")
        if not callable(fn):
            raise RegistryError(f"backend {self.name!r} converter{self._from()}: {self.converter!r} is a "
                                f"{type(fn).__name__}, not callable")
        return fn

    def load_inverse(self) -> Any:
        """The converter's inverse, or ``None`` when there is no converter (canonical layout) or the
        converter's module has no ``to_canonical`` and ``inverse`` is not set."""
        if self.converter is None:
            return None
        if self.inverse is not None:
            return _load(self.inverse, f"backend {self.name!r} inverse{self._from()}")
        module = self.converter.partition(":")[0]
        try:
            return getattr(importlib.import_module(module), "to_canonical", None)
        except ImportError as exc:
            raise RegistryError(f"backend {self.name!r} inverse{self._from()}: cannot import {module!r}: {exc}") from exc

    def load_tuning(self) -> Any:
        """The backend's ``moe_oracle.kernel.tuning.Tuning`` (what ``policy="measured"`` may choose
        besides the backend), or the default one that measures it as it comes."""
        from moe_oracle.kernel.tuning import DEFAULT_TUNING, Tuning

        if self.tuning is None:
            return DEFAULT_TUNING
        tuning = _load(self.tuning, f"backend {self.name!r} tuning{self._from()}")
        if not isinstance(tuning, Tuning):
            raise RegistryError(f"backend {self.name!r} tuning{self._from()}: {self.tuning!r} is a "
                                f"{type(tuning).__name__}, not a moe_oracle.kernel.tuning.Tuning")
        return tuning

    def resolve(self) -> Support:
        """Import the experts class and converter now: ``Support.no`` with the error if either
        does not load. The oracle calls it for the backend it is about to choose, so a plugin whose
        code does not import is rejected at selection, not at ``load_weights``."""
        try:
            self.load_experts()
            self.load_converter()
        except RegistryError as exc:
            return Support.no(str(exc))
        return Support.yes()

    def _from(self) -> str:
        return f" (from {self.distribution})" if self.distribution else ""

    def __repr__(self) -> str:
        return f"<BackendSpec name={self.name!r} distribution={self.distribution!r} experts={self.experts!r}>"


def _load(path: str, what: str) -> Any:
    """Import ``"module:attr"``; anything the import raises (a plugin's ``sys.exit`` included) is a
    ``RegistryError`` naming ``what`` and the path."""
    from moe_oracle.errors import contained, describe_fault

    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"{what}: cannot load {path!r}: {exc}") from exc
    except BaseException as exc:
        if not contained(exc):
            raise
        raise RegistryError(f"{what}: cannot load {path!r}: importing it raised {describe_fault(exc)}") from exc
