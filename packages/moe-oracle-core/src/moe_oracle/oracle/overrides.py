"""The one user-override layer: ``backend=``/``exclude=``/``prefer=`` arguments, else the
``MOE_ORACLE_BACKEND`` / ``MOE_ORACLE_EXCLUDE`` / ``MOE_ORACLE_PREFER`` environment variables.
Parsed in one place; an unknown name is an error listing the known ones."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from moe_oracle.errors import ConfigError, UnknownBackendError

ENV_BACKEND = "MOE_ORACLE_BACKEND"
ENV_EXCLUDE = "MOE_ORACLE_EXCLUDE"
ENV_PREFER = "MOE_ORACLE_PREFER"


@dataclass(frozen=True)
class Overrides:
    """Resolved overrides; ``origin`` says where each came from (argument or variable name)."""

    backend: str | None = None
    exclude: tuple[str, ...] = ()
    prefer: tuple[str, ...] = ()
    origin: tuple[tuple[str, str], ...] = ()

    def source(self, what: str) -> str:
        return dict(self.origin).get(what, "")


def _names(value: object, what: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """``"a,b"`` or an iterable of names -> lowercase names; anything else is a ``ConfigError``."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray)):
        items = list(value)
    else:
        raise ConfigError(what, f"expected backend names (a comma-separated str or an iterable of str), "
                          f"got {type(value).__name__}", allowed=known)
    names: list[str] = []
    for n in items:
        if not isinstance(n, str):
            raise ConfigError(what, f"expected backend names (str), got {n!r} ({type(n).__name__})", allowed=known)
        names.append(n)
    return tuple(n.strip().lower() for n in names if n.strip())


def resolve_overrides(*, backend: str | None, exclude: str | Iterable[str] | None,
                      prefer: str | Iterable[str] | None, known: Iterable[str]) -> Overrides:
    """Arguments win over the environment; every name must be a registered backend."""
    known = tuple(known)
    origin: list[tuple[str, str]] = []

    def pick(arg: object, env: str, what: str) -> object:
        if arg is not None:
            origin.append((what, f"{what}= argument"))
            return arg
        value = os.environ.get(env, "").strip()
        if value:
            origin.append((what, env))
            return value
        return None

    forced_raw = pick(backend, ENV_BACKEND, "backend")
    forced = None
    if forced_raw is not None:
        if not isinstance(forced_raw, str):
            raise ConfigError("backend", f"expected a backend name, got {type(forced_raw).__name__}", allowed=known)
        forced = forced_raw.strip().lower()
        if forced in ("", "auto"):
            forced = None
    excluded = _names(pick(exclude, ENV_EXCLUDE, "exclude"), dict(origin).get("exclude", "exclude"), known)
    preferred = _names(pick(prefer, ENV_PREFER, "prefer"), dict(origin).get("prefer", "prefer"), known)
    sources = dict(origin)
    for what, names in (("backend", (forced,) if forced else ()), ("exclude", excluded), ("prefer", preferred)):
        for name in names:
            if name not in known:
                raise UnknownBackendError(sources.get(what, what), name, known)
    if forced and forced in excluded:
        raise ConfigError(sources["backend"], f"backend {forced!r} is forced and excluded ({sources['exclude']}) at once")
    return Overrides(forced, excluded, preferred, tuple(origin))
