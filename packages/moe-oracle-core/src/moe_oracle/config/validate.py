"""Small validators shared by the config dataclasses; each raises ``ConfigError`` naming the field."""

from __future__ import annotations

import math
from collections.abc import Iterable

from moe_oracle.errors import ConfigError


def show(value: object) -> str:
    """``repr(value)`` for a message, cut to 80 characters; an int too long to print is described."""
    try:
        text = repr(value)
    except ValueError:  # an int over sys.get_int_max_str_digits()
        return f"an int of {value.bit_length()} bits" if isinstance(value, int) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(field, f"must be a positive int, got {show(value)}")
    return value


def non_negative_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(field, f"must be a non-negative int, got {show(value)}")
    return value


def boolean(field: str, value: object) -> bool:
    """A real ``bool``: ``"yes"``, ``"no"``, ``0`` and ``1`` are refused, not read as truthy."""
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be a bool (True or False), got {show(value)}")
    return value


def finite_float(field: str, value: object, *, positive: bool = False) -> float:
    """A finite int or float (not a bool, not a string), positive when asked."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"must be a number, got {show(value)}")
    try:
        number = float(value)
    except OverflowError:  # only an int too large for a float gets here
        raise ConfigError(field, f"must be a finite number, got an int of {int(value).bit_length()} bits") from None
    if not math.isfinite(number):
        raise ConfigError(field, f"must be a finite number, got {show(value)}")
    if positive and number <= 0:
        raise ConfigError(field, f"must be a positive number, got {show(value)}")
    return number


def one_of(field: str, value: object, allowed: Iterable[object]) -> None:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(field, f"invalid value {show(value)}", allowed=allowed)


def rank_below(field: str, rank: int, size: int, size_field: str) -> None:
    non_negative_int(field, rank)
    if rank >= size:
        raise ConfigError(field, f"{rank} is out of range for {size_field}={size}")
