"""Version strings of vendor libraries as comparable tuples, without depending on ``packaging``."""

from __future__ import annotations

import re

_LEADING = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


def release(version: str) -> tuple[int, ...]:
    """``"2.8.10+xpu"`` -> ``(2, 8, 10)``; ``()`` when the string starts with no number."""
    match = _LEADING.match(version)
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def show(parts: tuple[int, ...]) -> str:
    return ".".join(map(str, parts))
