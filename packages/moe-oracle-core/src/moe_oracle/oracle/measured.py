"""The measured policy end to end: cache or measure, agree across ranks, build the plan.

``measured_plan`` is what ``select_backend(policy="measured")`` and ``moe_oracle.tune`` call. In one
process a plan is computed once per cache key (a model's many layers of one shape measure once);
across processes the selection cache (``oracle.cache``) serves it; across ranks rank 0 decides
(``oracle.agree``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moe_oracle.oracle import cache
from moe_oracle.oracle.agree import agree
from moe_oracle.oracle.measure import Measurement, Progress, Timer, choose_plan, measure
from moe_oracle.oracle.plan import (
    CACHE,
    MEASURED,
    BucketPlan,
    PlanInfo,
    Timing,
    bucket_ranges,
    check_plan,
    rules_plan,
)

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.oracle.base import MoEKernelOracle
    from moe_oracle.oracle.report import SelectionReport
    from moe_oracle.platform import Platform

logger = logging.getLogger("moe_oracle")
_memo: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class MeasuredPlan:
    plan: tuple[BucketPlan, ...]
    info: PlanInfo
    primary: str                                   # backend the weights are converted for
    primary_config: Mapping[str, Any] | None       # its layout variant (None: its default)


def measured_plan(oracle: MoEKernelOracle, config: MoEConfig, platform: Platform, report: SelectionReport, *,
                  buckets: tuple[int, ...], allow_extra_memory: bool = False, timer: Timer | None = None,
                  refresh: bool = False, progress: Progress | None = None, group: Any = None) -> MeasuredPlan:
    """The plan for ``config`` on this device (see the module docstring). ``refresh`` measures even
    when a cached plan exists (``moe_oracle.tune``). Never raises for a candidate that fails: with
    nothing measurable the rules' choice stands, and the notes say why."""
    assert report.chosen is not None
    if platform.simulated:
        return _rules(report, "rules (a simulated platform cannot be measured)")
    key = cache.cache_key(config, platform, report.overrides, oracle.registry, buckets=buckets,
                          allow_extra_memory=allow_extra_memory, config_dict=report.to_dict(plan=False)["config"])
    digest = cache.key_hash(key)

    def decide() -> dict[str, Any]:
        with _lock:
            if not refresh and digest in _memo:
                return {**_memo[digest], "source": CACHE}
        payload = None if refresh else _from_cache(key, report)
        if payload is None:
            payload = _measure(oracle, config, platform, report, buckets, allow_extra_memory, timer, progress)
            if payload.get("primary_backend") is not None:
                path, why_not = cache.write(key, {k: v for k, v in payload.items() if k not in ("source", "origin")})
                payload["cache_path"] = str(path) if path else ""
                payload["date"] = cache.now()
                payload["origin"] = (f"measured now ({payload['date']}), saved to {path}" if path
                                     else f"measured now ({payload['date']}), in memory only")
                if why_not:
                    payload["notes"] = [*payload["notes"], why_not]
                    logger.warning("moe-oracle: %s", why_not)
        if payload.get("primary_backend") is not None:
            with _lock:
                _memo[digest] = payload
        return payload

    payload, received = agree(decide, group=group)
    if payload.get("primary_backend") is None:
        return _rules(report, "rules (" + "; ".join(payload["notes"]) + ")", notes=tuple(payload["notes"]))
    source = payload["source"]
    plan = tuple(BucketPlan.from_dict(p, source=source) for p in payload["plan"])
    check_plan(plan)
    origin = payload["origin"]
    if received:
        origin = f"from rank 0: {origin}"
    info = PlanInfo("measured", origin, payload["primary_layout"], int(payload["extra_memory_bytes"]),
                    allow_extra_memory, payload.get("cache_path", ""), payload.get("date", ""),
                    tuple(payload["notes"]))
    return MeasuredPlan(plan, info, payload["primary_backend"], payload.get("primary_config"))


def _rules(report: SelectionReport, origin: str, notes: tuple[str, ...] = ()) -> MeasuredPlan:
    assert report.chosen is not None
    return MeasuredPlan(rules_plan(report.chosen), PlanInfo("measured", origin, notes=notes), report.chosen, None)


def _from_cache(key: dict[str, Any], report: SelectionReport) -> dict[str, Any] | None:
    entry = cache.read(key)
    if entry is None:
        return None
    from moe_oracle.oracle.report import SELECTED, USABLE

    usable = {c.name for c in report.candidates if c.status in (SELECTED, USABLE)}
    data = entry.payload
    try:
        plan = [BucketPlan.from_dict(p) for p in data["plan"]]
        check_plan(plan)
        unknown = sorted({p.backend for p in plan} - usable)
        if unknown:
            raise ValueError(f"it plans {', '.join(unknown)}, which the rules no longer find usable")
        primary = str(data["primary_backend"])
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("moe-oracle: ignoring the selection cache %s (%s); measuring again", entry.path, exc)
        return None
    return {**data, "primary_backend": primary, "source": CACHE, "cache_path": str(entry.path),
            "origin": f"cache {entry.path} ({entry.date})", "notes": list(data.get("notes", []))}


def _measure(oracle: MoEKernelOracle, config: MoEConfig, platform: Platform, report: SelectionReport,
             buckets: tuple[int, ...], allow_extra_memory: bool, timer: Timer | None,
             progress: Progress | None) -> dict[str, Any]:
    ranges = bucket_ranges(buckets)
    m: Measurement = measure(oracle, config, platform, report, ranges, timer=timer, progress=progress)
    try:
        plan, primary, extra = choose_plan(m, allow_extra_memory=allow_extra_memory)
    except ValueError as exc:
        errors = sorted({f"{t.label}: {t.error}" for row in m.timings for t in row if t.error})
        return {"primary_backend": None, "notes": [*m.notes, f"measured policy fell back to the rules: {exc}",
                                                    *errors]}
    cand = next(c for c in m.candidates if c.label == primary)
    notes = list(m.notes)
    if extra:
        notes.append(f"buckets on other layouts than {m.layouts[primary]!r} add {extra} bytes "
                     "(allow_extra_memory=True)")
    return {"plan": [p.to_dict() for p in plan], "primary": primary, "primary_backend": cand.backend,
            "primary_config": dict(cand.variant) or None, "primary_layout": m.layouts[primary],
            "extra_memory_bytes": extra, "notes": notes, "source": MEASURED, "origin": "measured now",
            "tokens": m.tokens, "rules_backend": report.chosen}


def clear_memo() -> None:
    """Forget the plans this process computed (tests; ``moe_oracle.tune`` refreshes its key itself)."""
    with _lock:
        _memo.clear()


__all__ = ["MeasuredPlan", "Timing", "clear_memo", "measured_plan"]
