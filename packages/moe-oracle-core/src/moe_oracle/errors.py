"""Every error moe-oracle raises, each carrying the offending object as fields."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class MoEOracleError(Exception):
    """Base class of moe-oracle's errors."""


class ConfigError(MoEOracleError, ValueError):
    """A configuration value is invalid; ``field`` names it, ``allowed`` lists valid values."""

    def __init__(self, field: str, message: str, *, allowed: Iterable[object] | None = None) -> None:
        self.field = field
        self.allowed = tuple(allowed) if allowed is not None else None
        text = f"{field}: {message}"
        if self.allowed is not None:
            text += f" (allowed: {', '.join(map(str, self.allowed))})"
        super().__init__(text)


class UnknownBackendError(ConfigError):
    """A backend name that no registered spec carries."""

    def __init__(self, field: str, name: str, known: Iterable[str]) -> None:
        self.backend = name
        self.known = tuple(sorted(known))
        super().__init__(field, f"unknown backend {name!r}", allowed=self.known)


class UnsupportedBackendError(MoEOracleError):
    """A forced backend cannot serve this config; ``reasons`` says why, ``alternatives`` who can."""

    def __init__(self, backend: str, reasons: list[str], alternatives: list[str]) -> None:
        self.backend = backend
        self.reasons = reasons
        self.alternatives = alternatives
        can = ", ".join(alternatives) if alternatives else "none"
        super().__init__(
            f"backend {backend!r} cannot serve this config: {'; '.join(reasons)}. Backends that can: {can}"
        )


class NoBackendError(MoEOracleError):
    """No candidate fits; ``reasons`` maps every candidate to its rejection."""

    def __init__(self, reasons: Mapping[str, str], context: str = "") -> None:
        self.reasons = dict(reasons)
        lines = "\n".join(f"  {name}: {why}" for name, why in self.reasons.items()) or "  (no candidates)"
        where = f" for {context}" if context else ""
        super().__init__(f"no MoE backend fits{where}; every candidate's reason:\n{lines}")


class VendorLibraryError(MoEOracleError, ImportError):
    """A backend's vendor library does not import here; says which backend, what to install, and the
    import's own error. An ``ImportError``, so code catching that keeps working."""


class RegistryError(MoEOracleError):
    """A backend spec or plugin is invalid (duplicate name, bad field, bad import path)."""


class PluginAPIError(RegistryError):
    """A plugin's spec was written for another plugin API than this core provides."""

    def __init__(self, backend: str, distribution: str, declared: int, supported: int, core_version: str) -> None:
        self.backend = backend
        self.distribution = distribution
        self.declared = declared
        self.supported = supported
        super().__init__(
            f"{distribution}: backend {backend!r} declares plugin API {declared}, but moe-oracle-core "
            f"{core_version} provides plugin API {supported}; install a release of {distribution} "
            f"built for plugin API {supported}, or a moe-oracle-core that provides plugin API {declared}")


class KernelOutputError(MoEOracleError, RuntimeError):
    """A backend's experts returned an output of the wrong shape, dtype or device; names the
    backend, its distribution, what was expected and what came."""

    def __init__(self, backend: str, distribution: str, expected: object, got: object) -> None:
        self.backend = backend
        self.distribution = distribution
        self.expected = expected
        self.got = got
        super().__init__(f"backend {backend!r} (from {distribution or '?'}) returned {got}, expected {expected}")


def contained(exc: BaseException) -> bool:
    """Whether an exception raised by plugin code is recorded and skipped rather than propagated:
    every ``Exception`` and every other ``BaseException`` (``SystemExit`` included) except
    ``KeyboardInterrupt`` and ``GeneratorExit``, which must keep their meaning for the host."""
    return not isinstance(exc, (KeyboardInterrupt, GeneratorExit))


def describe_fault(exc: BaseException) -> str:
    """``"RuntimeError: check exploded"``; a ``SystemExit`` reads ``"SystemExit: 3"``."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class PriorityCycleError(MoEOracleError):
    """Priority hints contradict each other; ``edges`` lists each (before, after, source, reason)."""

    def __init__(self, edges: list[tuple[str, str, str, str]]) -> None:
        self.edges = edges
        self.packages = sorted({source for _, _, source, _ in edges})
        lines = "\n".join(f"  {a} before {b} (from {src}: {why})" for a, b, src, why in edges)
        super().__init__(
            f"priority hints form a cycle involving packages {', '.join(self.packages)}:\n{lines}"
        )


class WeightError(MoEOracleError, ValueError):
    """A weight or scale tensor does not match the config; names the tensor, expected and got."""

    def __init__(self, name: str, expected: object, got: object) -> None:
        self.name = name
        self.expected = expected
        self.got = got
        super().__init__(f"{name}: expected {expected}, got {got}")


class InputError(MoEOracleError, ValueError):
    """A forward input is invalid; names the argument, expected and got."""

    def __init__(self, name: str, expected: object, got: object) -> None:
        self.name = name
        self.expected = expected
        self.got = got
        super().__init__(f"{name}: expected {expected}, got {got}")
