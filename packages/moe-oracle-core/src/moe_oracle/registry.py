"""The backend registry: core's specs plus every ``moe_oracle.backends`` entry point.

An entry point names a function returning an iterable of ``BackendSpec`` and ``PriorityHint``
(hints with ``target=`` order backends of other packages). Each item is validated at load.
A plugin that fails to import or returns something invalid is recorded in ``failures`` with its
distribution and error, logged, and skipped whole; the other plugins still load. "Fails" includes
``sys.exit()`` and any ``BaseException`` but ``KeyboardInterrupt`` and ``GeneratorExit``. A missing
vendor library inside a plugin is the plugin's own business: it must import without it.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from importlib import metadata
from types import MappingProxyType

from moe_oracle.errors import PluginAPIError, RegistryError, contained, describe_fault
from moe_oracle.spec import BackendSpec, PriorityHint
from moe_oracle.version import PLUGIN_API_VERSION, __version__

ENTRY_POINT_GROUP = "moe_oracle.backends"
CORE_DISTRIBUTION = "moe-oracle-core"
logger = logging.getLogger("moe_oracle")
# Process-wide, so that caches keyed by generation never confuse two registries.
_generations = itertools.count(1)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that did not load: which distribution, which entry point, what went wrong."""

    distribution: str
    entry_point: str
    error: str

    def __str__(self) -> str:
        return f"{self.distribution} ({self.entry_point}): {self.error}"


class Registry:
    """Every known ``BackendSpec`` (by unique name) and every cross-package ``PriorityHint``."""

    def __init__(self) -> None:
        self._specs: dict[str, BackendSpec] = {}
        self._hints: list[PriorityHint] = []
        self.failures: list[PluginFailure] = []
        self.generation = next(_generations)
        # Computed from the specs on first use, dropped on every registration.
        self._environment: tuple[str, ...] | None = None
        self._libraries: Mapping[str, str] | None = None

    def __repr__(self) -> str:
        return f"<Registry backends={list(self._specs)} failures={len(self.failures)}>"

    # Registration ----------------------------------------------------------------------
    def register(self, item: BackendSpec | PriorityHint, *, source: str) -> None:
        self.register_all([item], source=source)

    def register_all(self, items: Iterable[object], *, source: str) -> None:
        """Validate every item first, then add all of them, so a bad plugin adds nothing."""
        specs: list[BackendSpec] = []
        hints: list[PriorityHint] = []
        for item in items:
            if isinstance(item, BackendSpec):
                check_plugin_api(item, source)
                if item.name in self._specs or any(s.name == item.name for s in specs):
                    owner = self._specs[item.name].distribution if item.name in self._specs else source
                    raise RegistryError(f"backend name {item.name!r} registered twice: by {owner} and by {source}")
                spec = replace(item, distribution=item.distribution or source)
                specs.append(spec)
                hints.extend(replace(h, target=h.target or spec.name, source=h.source or source)
                             for h in spec.hints)
            elif isinstance(item, PriorityHint):
                if item.target is None:
                    raise RegistryError(f"{source}: a standalone PriorityHint needs target= ({item.reason!r})")
                hints.append(replace(item, source=item.source or source))
            else:
                raise RegistryError(f"{source}: expected BackendSpec or PriorityHint, got {type(item).__name__}")
        for spec in specs:
            self._specs[spec.name] = spec
        self._hints.extend(hints)
        self.generation = next(_generations)
        self._environment = self._libraries = None

    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points is None else entry_points
        for ep in sorted(eps, key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "?"
            if dist == CORE_DISTRIBUTION:
                continue
            try:
                items = ep.load()()
                if not isinstance(items, Iterable) or isinstance(items, (str, bytes)):
                    raise RegistryError(f"{dist}: the entry point must return an iterable of BackendSpec and "
                                        f"PriorityHint, got {type(items).__name__}")
                self.register_all(items, source=dist)
            except BaseException as exc:  # a broken plugin is recorded, never fatal; sys.exit() included
                if not contained(exc):
                    raise
                failure = PluginFailure(dist, f"{ep.name} = {ep.value}", describe_fault(exc))
                self.failures.append(failure)
                logger.error("moe-oracle plugin %s failed to load and is skipped: %s", dist, failure.error)

    # Queries ---------------------------------------------------------------------------
    def specs(self) -> list[BackendSpec]:
        return list(self._specs.values())

    def names(self) -> list[str]:
        return list(self._specs)

    def get(self, name: str) -> BackendSpec:
        from moe_oracle.errors import UnknownBackendError

        try:
            return self._specs[name]
        except KeyError:
            raise UnknownBackendError("backend", name, self._specs) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def hints(self) -> list[PriorityHint]:
        return list(self._hints)

    def environment_variables(self) -> tuple[str, ...]:
        """Every variable some spec's checks read, sorted."""
        if self._environment is None:
            self._environment = tuple(sorted({v for s in self._specs.values() for v in s.environment}))
        return self._environment

    def libraries(self) -> Mapping[str, str]:
        """Every vendor library some spec needs (import name -> distribution), for detection."""
        if self._libraries is None:
            self._libraries = MappingProxyType(
                {lib: dist for s in self._specs.values() for lib, dist in s.libraries.items()})
        return self._libraries


def check_plugin_api(spec: BackendSpec, source: str) -> None:
    """Refuse a spec that declares a plugin API other than this core's ``PLUGIN_API_VERSION``.

    Raised inside ``register_all``, so for an entry point the whole plugin is recorded in
    ``failures`` with both numbers and skipped. A spec that declares none (``None``) is accepted.
    """
    if spec.plugin_api is not None and spec.plugin_api != PLUGIN_API_VERSION:
        raise PluginAPIError(spec.name, spec.distribution or source, spec.plugin_api, PLUGIN_API_VERSION, __version__)


_lock = threading.Lock()
_registry: Registry | None = None


def registry(*, refresh: bool = False) -> Registry:
    """The process-wide registry, built on first use; ``refresh=True`` rediscovers plugins."""
    global _registry
    with _lock:
        if _registry is None or refresh:
            from moe_oracle.backends import core_backends

            reg = Registry()
            reg.register_all(core_backends(), source=CORE_DISTRIBUTION)
            reg.load_entry_points()
            _registry = reg
        return _registry
