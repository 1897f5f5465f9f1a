"""Token buckets, the per-bucket plan, and the selection policy.

A ``Selection`` holds a plan: one ``BucketPlan`` per token bucket, together covering every token
count. Buckets are given by their upper bounds (``DEFAULT_BUCKETS``: 1, 2-4, 5-16, 17-64, 65-256,
257-1024, 1025-4096, > 4096); a forward of ``T`` tokens runs the bucket with
``min_tokens <= T <= max_tokens`` (``max_tokens=None``: no upper bound; ``T = 0`` runs the first
bucket). Under ``policy="rules"`` the plan is one bucket from 1 to ``None`` on the rules' choice.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moe_oracle.errors import ConfigError

POLICY_ENV = "MOE_ORACLE_POLICY"
POLICIES = ("rules", "measured")
DEFAULT_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096)
RULES, MEASURED, CACHE = "rules", "measured", "cache"
SOURCES = (RULES, MEASURED, CACHE)


def resolve_policy(policy: str | None) -> str:
    """``policy``, or ``MOE_ORACLE_POLICY`` when it is None (default ``"rules"``); ``ConfigError`` for
    anything but ``"rules"`` and ``"measured"``."""
    if policy is None:
        value = os.environ.get(POLICY_ENV, "").strip().lower() or RULES
        if value not in POLICIES:
            raise ConfigError(POLICY_ENV, f"unknown value {os.environ[POLICY_ENV]!r}", allowed=POLICIES)
        return value
    if not isinstance(policy, str) or policy.strip().lower() not in POLICIES:
        raise ConfigError("policy", f"unknown policy {policy!r}", allowed=POLICIES)
    return policy.strip().lower()


def resolve_buckets(buckets: Iterable[int] | None) -> tuple[int, ...]:
    """Upper bounds of every bucket but the last (which is unbounded): strictly increasing positive
    ints. ``None``: ``DEFAULT_BUCKETS``; ``()``: one bucket for every token count."""
    if buckets is None:
        return DEFAULT_BUCKETS
    if isinstance(buckets, (str, bytes)) or not isinstance(buckets, Iterable):
        raise ConfigError("buckets", f"expected upper bounds such as (1, 4, 16, 64), got {buckets!r}")
    bounds = tuple(buckets)
    if any(type(b) is not int or b < 1 for b in bounds):
        raise ConfigError("buckets", f"upper bounds must be positive ints, got {list(bounds)}")
    if any(b <= a for a, b in itertools.pairwise(bounds)):
        raise ConfigError("buckets", f"upper bounds must increase strictly, got {list(bounds)}")
    return bounds


def bucket_ranges(bounds: Sequence[int]) -> list[tuple[int, int | None]]:
    """``(min_tokens, max_tokens)`` of every bucket: ``(1, 1), (2, 4), ..., (4097, None)``."""
    lows = [1, *(b + 1 for b in bounds)]
    highs: list[int | None] = [*bounds, None]
    return list(zip(lows, highs, strict=True))


def representative_tokens(min_tokens: int, max_tokens: int | None, cap: int | None = None) -> int:
    """The token count a bucket is measured at: the geometric middle of its range (an unbounded one:
    twice its minimum, less one), at most ``cap``."""
    if max_tokens is None:
        tokens = max(1, 2 * min_tokens - 2) if min_tokens > 1 else 1
    else:
        tokens = round(math.sqrt(min_tokens * max_tokens))
        tokens = min(max(tokens, min_tokens), max_tokens)
    return tokens if cap is None else max(1, min(tokens, cap))


@dataclass(frozen=True)
class Timing:
    """One candidate measured in one bucket: ``ms`` per forward (None when it was rejected, with
    ``error`` saying why). ``label`` names the candidate (backend, and variant when it has one)."""

    label: str
    backend: str
    kernel_config: Mapping[str, Any] | None
    ms: float | None
    error: str = ""
    layout: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "backend": self.backend, "kernel_config": _plain(self.kernel_config),
                "ms": self.ms, "error": self.error, "layout": self.layout}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Timing:
        return cls(str(d["label"]), str(d["backend"]), d.get("kernel_config"),
                   None if d.get("ms") is None else float(d["ms"]), str(d.get("error", "")), str(d.get("layout", "")))


@dataclass(frozen=True)
class BucketPlan:
    """What forwards of ``min_tokens`` to ``max_tokens`` tokens run (``max_tokens=None``: no bound).

    ``backend`` and ``kernel_config`` (the backend's launch or layout options as plain JSON data;
    ``None``: its defaults) were chosen by ``source``: ``"rules"`` (merged priorities),
    ``"measured"`` (timed now) or ``"cache"`` (timed earlier, read from the selection cache);
    ``measured_ms`` is the chosen candidate's time at ``tokens`` tokens (None under the rules), and
    ``timings`` every candidate's time (or rejection) in this bucket."""

    min_tokens: int
    max_tokens: int | None
    backend: str
    kernel_config: Mapping[str, Any] | None
    measured_ms: float | None
    source: str
    tokens: int | None = None
    timings: tuple[Timing, ...] = field(default=(), compare=False)

    def covers(self, num_tokens: int) -> bool:
        return num_tokens <= (self.max_tokens if self.max_tokens is not None else num_tokens) and (
            num_tokens >= self.min_tokens or self.min_tokens == 1)

    @property
    def label(self) -> str:
        if self.max_tokens is None:
            return f">{self.min_tokens - 1}" if self.min_tokens > 1 else "all"
        return str(self.min_tokens) if self.min_tokens == self.max_tokens else f"{self.min_tokens}-{self.max_tokens}"

    @property
    def floor_ms(self) -> float | None:
        """The fastest candidate's time in this bucket."""
        times = [t.ms for t in self.timings if t.ms is not None]
        return min(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        return {"min_tokens": self.min_tokens, "max_tokens": self.max_tokens, "backend": self.backend,
                "kernel_config": _plain(self.kernel_config), "measured_ms": self.measured_ms, "source": self.source,
                "tokens": self.tokens, "timings": [t.to_dict() for t in self.timings]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str | None = None) -> BucketPlan:
        return cls(int(d["min_tokens"]), None if d["max_tokens"] is None else int(d["max_tokens"]), str(d["backend"]),
                   d.get("kernel_config"), None if d.get("measured_ms") is None else float(d["measured_ms"]),
                   source or str(d["source"]), None if d.get("tokens") is None else int(d["tokens"]),
                   tuple(Timing.from_dict(t) for t in d.get("timings", ())))


@dataclass(frozen=True)
class PlanInfo:
    """Where a plan came from, for ``explain``: the policy, its origin in words (``"rules"``, the
    cache file and its date, "measured now"), the primary layout, the extra bytes other layouts
    cost, and notes (a cache that could not be read or written, candidates left out)."""

    policy: str
    origin: str
    primary_layout: str = ""
    extra_memory_bytes: int = 0
    allow_extra_memory: bool = False
    cache_path: str = ""
    date: str = ""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "origin": self.origin, "primary_layout": self.primary_layout,
                "extra_memory_bytes": self.extra_memory_bytes, "allow_extra_memory": self.allow_extra_memory,
                "cache_path": self.cache_path, "date": self.date, "notes": list(self.notes)}


def rules_plan(backend: str) -> tuple[BucketPlan, ...]:
    return (BucketPlan(1, None, backend, None, None, RULES),)


class BucketIndex:
    """``plan`` as sorted upper bounds, for a lookup of a few hundred nanoseconds per forward."""

    __slots__ = ("uppers",)

    def __init__(self, plan: Sequence[BucketPlan]) -> None:
        uppers = [p.max_tokens for p in plan[:-1]]
        assert all(u is not None for u in uppers), "only the last bucket may be unbounded"
        self.uppers: list[int] = [u for u in uppers if u is not None]

    def index(self, num_tokens: int) -> int:
        return bisect.bisect_left(self.uppers, num_tokens)


def check_plan(plan: Sequence[BucketPlan]) -> None:
    """A plan must cover 1.. without gaps and end unbounded (``ValueError`` otherwise)."""
    if not plan or plan[0].min_tokens != 1 or plan[-1].max_tokens is not None:
        raise ValueError(f"a plan must start at 1 token and end unbounded, got {[p.label for p in plan]}")
    for a, b in itertools.pairwise(plan):
        if a.max_tokens is None or b.min_tokens != a.max_tokens + 1:
            raise ValueError(f"plan buckets must be contiguous, got {[p.label for p in plan]}")


def _plain(kc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if kc is None else {k: (_plain(v) if isinstance(v, Mapping) else v) for k, v in kc.items()}
