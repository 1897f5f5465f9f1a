"""Small validators shared by the config dataclasses; each raises ``ConfigError`` naming the field."""

from __future__ import annotations

from collections.abc import Iterable

from moe_oracle.errors import ConfigError


def positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(field, f"must be a positive int, got {value!r}")
    return value


def non_negative_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(field, f"must be a non-negative int, got {value!r}")
    return value


def one_of(field: str, value: object, allowed: Iterable[object]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(field, f"invalid value {value!r}", allowed=allowed)


def rank_below(field: str, rank: int, size: int, size_field: str) -> None:
    non_negative_int(field, rank)
    if rank >= size:
        raise ConfigError(field, f"{rank} is out of range for {size_field}={size}")
