"""``SelectionReport`` (every candidate, accepted or rejected, and why) and ``Selection``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moe_oracle._table import WIDTH, format_table, wrap
from moe_oracle.config.moe import dtype_name
from moe_oracle.oracle.plan import BucketIndex, BucketPlan, PlanInfo, rules_plan

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.oracle.overrides import Overrides
    from moe_oracle.platform import Platform
    from moe_oracle.registry import PluginFailure
    from moe_oracle.spec import BackendSpec

SELECTED, USABLE, REJECTED, EXCLUDED = "selected", "usable", "rejected", "excluded"


@dataclass(frozen=True)
class HintRecord:
    """A priority hint that applied to a candidate: which package said what, and why."""

    source: str
    effect: str
    reason: str

    def __str__(self) -> str:
        return f"{self.effect} ({self.source}: {self.reason})"


@dataclass(frozen=True)
class CandidateReport:
    name: str
    distribution: str
    rank: int
    status: str
    reason: str
    hints: tuple[HintRecord, ...] = ()
    served_scheme: str | None = None  # set when it serves at a higher activation precision (see Support)


REFERENCE = "reference"


@dataclass(frozen=True)
class SelectionReport:
    """What ``explain`` returns: candidates in merged order, the winner, overrides, plugin failures.

    ``none_reason`` says, when ``chosen`` is None, why: the forced backend's reason and who could
    serve instead (as ``UnsupportedBackendError`` says it), or which candidates were rejected and
    which excluded. ``str()`` is ``render()``: a table that fits 100 columns.
    """

    oracle: str
    config: MoEConfig
    platform: Platform
    candidates: tuple[CandidateReport, ...]
    chosen: str | None
    overrides: Overrides
    plugin_failures: tuple[PluginFailure, ...] = ()
    other_vendors: tuple[tuple[str, str], ...] = field(default=())
    none_reason: str = ""
    plan: tuple[BucketPlan, ...] = ()
    plan_info: PlanInfo | None = None

    @property
    def slow_warning(self) -> str:
        """Non-empty when the reference experts (for correctness, orders of magnitude slower) were
        chosen without being forced: why every faster candidate was rejected or excluded."""
        if self.chosen != REFERENCE or self.overrides.backend == REFERENCE:
            return ""
        others = [f"{c.name}: {c.reason}" for c in self.candidates if c.name != REFERENCE]
        return ("only the reference experts (for correctness, orders of magnitude slower) fit "
                f"{self.config.scheme.name} on {self.platform.vendor}; "
                + ("; ".join(others) if others else "no other backend serves this vendor"))

    @property
    def served_scheme(self) -> str | None:
        """The scheme the chosen backend runs: the config's own, or a higher activation precision's
        name (``mxfp4`` for ``mxfp4_a8`` on a w4a16 kernel); None when nothing was chosen."""
        if self.chosen is None:
            return None
        return self.candidate(self.chosen).served_scheme or self.config.scheme.name

    @property
    def precision_note(self) -> str:
        """Non-empty when the chosen backend serves a higher activation precision than the scheme's."""
        if self.chosen is None or not self.candidate(self.chosen).served_scheme:
            return ""
        return self.candidate(self.chosen).reason

    def candidate(self, name: str) -> CandidateReport:
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(f"{name!r} is not a candidate here; candidates: {[c.name for c in self.candidates]}")

    @property
    def order(self) -> list[str]:
        return [c.name for c in self.candidates]

    def to_dict(self, *, plan: bool = True) -> dict[str, Any]:
        """Everything as JSON data; ``"plan"`` lists the buckets (each with every candidate's time)
        and ``"plan_info"`` where they came from."""
        cfg = self.config
        out = {
            "oracle": self.oracle,
            "config": {
                "num_experts": cfg.num_experts, "top_k": cfg.top_k, "hidden_size": cfg.hidden_size,
                "intermediate_size": cfg.intermediate_size, "activation": cfg.activation,
                "is_gated": cfg.is_gated, "dtype": dtype_name(cfg.dtype), "has_bias": cfg.has_bias,
                "quant": cfg.scheme.name, "parallel": dataclasses.asdict(cfg.parallel),
                "routing": dataclasses.asdict(cfg.routing),
            },
            "platform": {
                "vendor": self.platform.vendor, "device_name": self.platform.device_name,
                "capability": list(self.platform.capability) if self.platform.capability else None,
                "arch": self.platform.arch, "features": sorted(self.platform.features),
                "libraries": dict(self.platform.libraries), "simulated": self.platform.simulated,
                "triton_interpreter": self.platform.triton_interpreter,
            },
            "chosen": self.chosen,
            "served_scheme": self.served_scheme,
            "none_reason": self.none_reason,
            "warning": self.slow_warning,
            "overrides": {"backend": self.overrides.backend, "exclude": list(self.overrides.exclude),
                          "prefer": list(self.overrides.prefer), "origin": dict(self.overrides.origin)},
            "candidates": [
                {"name": c.name, "distribution": c.distribution, "rank": c.rank, "status": c.status,
                 "reason": c.reason, "served_scheme": c.served_scheme,
                 "hints": [{"source": h.source, "effect": h.effect, "reason": h.reason} for h in c.hints]}
                for c in self.candidates
            ],
            "other_vendors": [{"name": n, "vendors": v} for n, v in self.other_vendors],
            "plugin_failures": [{"distribution": f.distribution, "entry_point": f.entry_point, "error": f.error}
                                for f in self.plugin_failures],
        }
        if plan:
            out["plan"] = [p.to_dict() for p in self.plan]
            out["plan_info"] = self.plan_info.to_dict() if self.plan_info else None
        return out

    def __str__(self) -> str:
        return self.render()

    def render(self, width: int | None = WIDTH) -> str:
        """The report as text; lines of the table wrap to ``width`` (None: one line per row and hint)."""
        cfg = self.config
        lines = [
            f"{self.oracle} for E={cfg.num_experts} top_k={cfg.top_k} H={cfg.hidden_size} "
            f"I={cfg.intermediate_size} {cfg.activation} {dtype_name(cfg.dtype)} quant={cfg.scheme.name}"
            f"{' bias' if cfg.has_bias else ''} tp={cfg.parallel.tp_size} dp={cfg.parallel.dp_size} "
            f"ep={cfg.parallel.ep_size} all2all={cfg.parallel.all2all}",
            *wrap(f"platform: {self.platform.describe()}", width, subsequent="  "),
        ]
        for what in ("backend", "exclude", "prefer"):
            if self.overrides.source(what):
                value = getattr(self.overrides, what)
                lines.append(f"override {what}: {value if isinstance(value, str) else ','.join(value)}"
                             f" (from {self.overrides.source(what)})")
        rows = [("#", "backend", "package", "rank", "status", "reason / priority hints")]
        notes: list[list[str]] = [[]]
        for i, c in enumerate(self.candidates, 1):
            rows.append((str(i), c.name, c.distribution, str(c.rank), c.status, c.reason or "-"))
            notes.append([f"hint: {h}" for h in c.hints])
        # Wide: hints under the reason column, as rows; narrow: under the backend name, full width.
        lines += format_table(rows, width=width, notes=notes, note_indent=None if width is None else 3,
                              note_hang=len("hint: "))
        chosen = self.chosen or (f"none ({self.none_reason})" if self.none_reason else "none")
        if self.precision_note:
            chosen += f" ({self.precision_note})"
        lines += wrap(f"chosen: {chosen}", width, subsequent="  ")
        if self.slow_warning:
            lines += wrap(f"WARNING: {self.slow_warning}", width, subsequent="  ")
        if self.other_vendors:
            lines += wrap("other vendors' backends: " + ", ".join(f"{n} ({v})" for n, v in self.other_vendors),
                          width, subsequent="  ")
        for f in self.plugin_failures:
            lines.append(f"plugin failed to load: {f}")
        if self.plan and self.plan_info is not None and self.plan_info.policy != "rules":
            # Under the rules the plan is "chosen" for every token count: nothing more to show.
            lines += render_plan(self.plan, self.plan_info, width)
        return "\n".join(lines)


def render_plan(plan: tuple[BucketPlan, ...], info: PlanInfo | None, width: int | None = WIDTH) -> list[str]:
    """The plan as lines: where it came from, then per bucket the backend, its ms and every
    candidate's ms and multiple of the bucket's fastest (or why it was rejected)."""
    lines = []
    if info is not None:
        lines += wrap(f"plan ({info.policy}): {info.origin}", width, subsequent="  ")
        if info.primary_layout:
            extra = (f"; other layouts add {info.extra_memory_bytes / 2**20:.1f} MiB" if info.extra_memory_bytes else "")
            lines += wrap(f"weights layout: {info.primary_layout}{extra}", width, subsequent="  ")
        for note in info.notes:
            lines += wrap(f"note: {note}", width, subsequent="  ")
    rows = [("tokens", "backend", "kernel config", "ms", "source", "candidates: ms (x fastest)")]
    for p in plan:
        floor = p.floor_ms
        cands = []
        for t in p.timings:
            if t.ms is None:
                cands.append(f"{t.label} rejected: {t.error}")
            else:
                cands.append(f"{t.label} {t.ms:.4g} ({t.ms / floor:.2f}x)" if floor else f"{t.label} {t.ms:.4g}")
        measured_at = f" @{p.tokens}" if p.tokens is not None else ""
        rows.append((p.label + measured_at, p.backend, _short(p.kernel_config),
                     "-" if p.measured_ms is None else f"{p.measured_ms:.4g}", p.source, "; ".join(cands) or "-"))
    return lines + format_table(rows, width=width)


def _short(kc: Any) -> str:
    if not kc:
        return "default"
    import json

    return json.dumps(kc, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Selection:
    """The chosen backend (``.backend`` a str: the primary one, whose layout the weights are
    converted to, in ``primary_config``'s variant), its spec and experts class, the report, and the
    plan: one ``BucketPlan`` per token bucket (``backend_for(num_tokens)``)."""

    backend: str
    spec: BackendSpec
    report: SelectionReport
    plan: tuple[BucketPlan, ...] = ()
    primary_config: Any = None

    def __post_init__(self) -> None:
        if not self.plan:
            object.__setattr__(self, "plan", rules_plan(self.backend))
        object.__setattr__(self, "_index", BucketIndex(self.plan))

    @property
    def experts_cls(self) -> type:
        return self.spec.load_experts()

    # Immutable: copies are itself. A pickle names the backend; unpickling finds its spec in the
    # registry of the process that loads it (where the backend must be registered too).
    def __copy__(self) -> Selection:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Selection:
        return self

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return _unpickle_selection, (self.backend, self.report)

    def bucket_for(self, num_tokens: int) -> BucketPlan:
        """The bucket a forward of ``num_tokens`` tokens runs (0 tokens: the first)."""
        return self.plan[self._index.index(num_tokens)]  # type: ignore[attr-defined]

    def backend_for(self, num_tokens: int) -> str:
        """The backend a forward of ``num_tokens`` tokens runs."""
        return self.plan[self._index.index(num_tokens)].backend  # type: ignore[attr-defined]

    @property
    def served_scheme(self) -> str:
        """The scheme that actually runs: ``report.config.scheme.name``, or the higher activation
        precision the backend serves it at (``"mxfp4"`` for ``mxfp4_a8`` on a w4a16 kernel)."""
        return self.report.served_scheme or self.report.config.scheme.name

    def __repr__(self) -> str:
        return f"Selection(backend={self.backend!r}, experts_cls={self.spec.experts!r})"


def _unpickle_selection(backend: str, report: SelectionReport) -> Selection:
    from moe_oracle.registry import registry

    return Selection(backend, registry().get(backend), report)
