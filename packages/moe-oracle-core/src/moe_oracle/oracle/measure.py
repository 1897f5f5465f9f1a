"""``policy="measured"``: time every usable candidate per token bucket on this device, and plan.

Candidates are the backends the rules found usable (the reference experts and the Triton
interpreter only when nothing else is), each in every layout variant its ``Tuning`` offers. Each
is built once on random weights of the layer's real shapes, then timed at one representative token
count per bucket (``plan.representative_tokens``), searching its launch configs where it has some
(Triton). A candidate that raises, or returns a wrong-shaped or non-finite output, is rejected in
that bucket with the error; the others still plan.

Timing (``Timer``): on GPUs each forward (routing included) is captured in a CUDA graph and replayed
(``cuda_graph_timer``), on CPUs it is warmed up and the median of repeated calls within a small
time budget is taken (``cpu_timer``). Tests inject a deterministic ``timer``.

Choosing (``choose_plan``): the weights' layout is the one whose candidates alone come closest to the
fastest time in every bucket (the sum over buckets of their best multiple of the fastest; ties: the
rules' order); the primary backend is the candidate on that layout fastest in the most buckets. Each
bucket runs its fastest candidate among those on the primary's layout (any backend with an equal
``KernelWeights.layout``), or, with ``allow_extra_memory=True``, its fastest candidate of all, each
further layout converted once more.
"""

from __future__ import annotations

import gc
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moe_oracle.errors import contained, describe_fault
from moe_oracle.oracle.plan import MEASURED, BucketPlan, Timing, representative_tokens

if TYPE_CHECKING:
    import torch

    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.kernel.weights import CanonicalWeights, KernelWeights
    from moe_oracle.oracle.base import MoEKernelOracle
    from moe_oracle.oracle.report import SelectionReport
    from moe_oracle.platform import Platform

logger = logging.getLogger("moe_oracle")
NOT_MEASURED = ("reference",)  # for correctness; measured only when nothing else is usable
CPU_MAX_TOKENS = 1024          # CPU buckets above this are measured at it (a 4k-token CPU forward takes seconds)


@dataclass(frozen=True)
class Candidate:
    """One thing to time: a backend in one layout variant (``{}``: its default layout)."""

    backend: str
    variant: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.variant:
            return self.backend
        return self.backend + "[" + ",".join(f"{k}={v}" for k, v in sorted(self.variant.items())) + "]"


Timer = Callable[[Candidate, int, Callable[[], Any]], float]
"""``timer(candidate, num_tokens, call) -> ms`` per ``call()`` (one layer forward)."""
Progress = Callable[[int, int, str], None]
"""``progress(done, total, what)`` after every candidate and bucket."""


@dataclass
class Measurement:
    """Every candidate's timing per bucket, in candidate order, plus each candidate's layout and the
    bytes its converted weights add to the canonical ones."""

    ranges: list[tuple[int, int | None]]
    tokens: list[int]
    candidates: list[Candidate]
    timings: list[list[Timing]]  # [bucket][candidate]
    layouts: dict[str, str]
    extra_bytes: dict[str, int]
    notes: list[str]


def measured_candidates(report: SelectionReport, platform: Platform) -> tuple[list[str], list[str]]:
    """Backend names to time, in the rules' order, and notes on those left out."""
    from moe_oracle.oracle.report import SELECTED, USABLE

    usable = [c.name for c in report.candidates if c.status in (SELECTED, USABLE)]
    if report.overrides.backend is not None:
        usable = [n for n in usable if n == report.overrides.backend]
    notes = []
    left = [n for n in usable if n in NOT_MEASURED or (platform.vendor == "cpu" and n in ("triton", "batched_triton"))]
    fast = [n for n in usable if n not in left]
    if fast and left:
        notes.append(f"not measured: {', '.join(left)} (for correctness and tests, not speed)")
        return fast, notes
    return usable, notes


def measure(oracle: MoEKernelOracle, config: MoEConfig, platform: Platform, report: SelectionReport,
            ranges: Sequence[tuple[int, int | None]], *, timer: Timer | None = None, progress: Progress | None = None,
            seed: int = 0, max_tokens: int | None = None, device: torch.device | str | None = None) -> Measurement:
    """Time every candidate in every bucket (see the module docstring)."""
    import torch

    from moe_oracle.router import route

    device = torch.device(device) if device is not None else measurement_device(platform)
    cap = max_tokens if max_tokens is not None else (CPU_MAX_TOKENS if device.type == "cpu" else None)
    tokens = [representative_tokens(lo, hi, cap) for lo, hi in ranges]
    names, notes = measured_candidates(report, platform)
    reg = oracle.registry
    candidates: list[Candidate] = []
    for name in names:
        try:
            variants = reg.get(name).load_tuning().variants(config, platform)
        except Exception as exc:  # a broken tuning hook: measure the default layout only
            notes.append(f"{name}: tuning hooks failed ({describe_fault(exc)}); measured as it comes")
            variants = [{}]
        candidates += [Candidate(name, dict(v)) for v in variants]
    timer = timer or default_timer(device)
    canonical = random_canonical(config, device=device, seed=seed)
    bias = canonical.score_correction_bias
    inputs = {}
    for m in sorted(set(tokens)):
        from moe_oracle.testing import random_inputs

        hidden, logits = random_inputs(config, m, seed=seed + m, device=device)
        inputs[m] = (hidden, logits)
    timings: list[list[Timing]] = [[] for _ in ranges]
    layouts: dict[str, str] = {}
    extra: dict[str, int] = {}
    total, done = len(candidates) * len(ranges), 0
    for cand in candidates:
        spec = reg.get(cand.backend)
        tuning = spec.load_tuning()
        try:
            kw = tuning.convert(lambda spec=spec: oracle.convert_to_kernel_format(spec.name, config, canonical),
                                cand.variant)
            kernel = oracle.make_kernel(spec.name, config, oracle.make_quant_config(kw.config, kw), kw)
        except BaseException as exc:
            if not contained(exc):
                raise
            error = f"could not be built: {describe_fault(exc)}"
            for b in range(len(ranges)):
                timings[b].append(Timing(cand.label, cand.backend, _kc(cand.variant), None, error))
            done += len(ranges)
            if progress:
                progress(done, total, f"{cand.label}: {error}")
            continue
        layouts[cand.label] = kw.layout
        extra[cand.label] = unique_bytes(kw, canonical)
        per_tokens: dict[int, Timing] = {}
        for b, m in enumerate(tokens):
            if m not in per_tokens:
                hidden, logits = inputs[m]
                if kernel.monolithic:
                    def call(kernel: Any = kernel, hidden: Any = hidden, logits: Any = logits) -> Any:
                        return kernel.forward_logits(hidden, logits, score_correction_bias=bias)
                else:
                    def call(kernel: Any = kernel, hidden: Any = hidden, logits: Any = logits) -> Any:
                        tw, ti = route(logits, config, score_correction_bias=bias)
                        return kernel.forward_routed(hidden, tw, ti)
                per_tokens[m] = _time_one(cand, tuning, kernel, config, m, call, hidden, timer, kw.layout)
            timings[b].append(per_tokens[m])
            done += 1
            if progress:
                t = per_tokens[m]
                progress(done, total, f"{cand.label} at {m} tokens: " + (f"{t.ms:.4g} ms" if t.ms is not None
                                                                         else f"rejected ({t.error})"))
        del kernel, kw
        _free(device)
    return Measurement(list(ranges), tokens, candidates, timings, layouts, extra, notes)


def _time_one(cand: Candidate, tuning: Any, kernel: Any, config: MoEConfig, m: int, call: Callable[[], Any],
              hidden: Any, timer: Timer, layout: str) -> Timing:
    import torch

    errors: list[str] = []

    def run(kernel_config: Mapping[str, Any]) -> float:
        try:
            tuning.apply(kernel.experts, kernel_config or None)
            out = call()
            if not isinstance(out, torch.Tensor) or out.shape != hidden.shape or out.dtype != hidden.dtype:
                got = f"{list(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"output {got}, expected {list(hidden.shape)} {hidden.dtype}")
            if out.numel() and not bool(torch.isfinite(out).all()):
                raise ValueError("non-finite output (NaN or inf) on random weights")
            return float(timer(cand, m, call))
        except BaseException as exc:
            if not contained(exc):
                raise
            errors.append(describe_fault(exc))
            return math.inf
        finally:
            tuning.apply(kernel.experts, None)

    try:
        launch, ms = tuning.search(config, m, run)
    except BaseException as exc:
        if not contained(exc):
            raise
        launch, ms = {}, math.inf
        errors.append(f"launch-config search raised {describe_fault(exc)}")
    kc = _kc({**cand.variant, **launch})
    if not math.isfinite(ms):
        return Timing(cand.label, cand.backend, kc, None, errors[-1] if errors else "no launch config ran", layout)
    return Timing(cand.label, cand.backend, kc, ms, "", layout)


def _kc(d: Mapping[str, Any]) -> dict[str, Any] | None:
    return dict(d) if d else None


def choose_plan(measurement: Measurement, *, allow_extra_memory: bool,
                source: str = MEASURED) -> tuple[tuple[BucketPlan, ...], str, int]:
    """The plan, the primary candidate's label and the bytes that buckets on other layouts add
    (``ValueError`` when no candidate ran in any bucket)."""
    m = measurement
    labels = [c.label for c in m.candidates]
    ms = [{t.label: t.ms for t in row} for row in m.timings]
    ran = [lab for lab in labels if any(row.get(lab) is not None for row in ms)]
    if not ran:
        raise ValueError("no candidate ran in any bucket")

    floors = [min((v for v in row.values() if v is not None), default=None) for row in ms]

    def cost(layout: str) -> tuple[float, int]:
        """How far the best plan on ``layout`` alone is from the floor: the sum over buckets of its
        fastest candidate's multiple of the fastest of all (a bucket it cannot run costs 1000)."""
        total = 0.0
        for row, floor in zip(ms, floors, strict=True):
            if floor is None:
                continue
            best = min((v for lab, v in row.items() if v is not None and m.layouts.get(lab) == layout), default=None)
            total += 1000.0 if best is None else best / floor
        first = min(labels.index(lab) for lab in ran if m.layouts.get(lab) == layout)
        return total, first

    layout = min({m.layouts[lab] for lab in ran}, key=cost)
    on_layout = [lab for lab in ran if m.layouts[lab] == layout]

    def wins(label: str) -> tuple[int, int]:
        n = 0
        for row in ms:
            times = {lab: v for lab, v in row.items() if v is not None and lab in on_layout}
            if times and min(times, key=lambda lab: (times[lab], labels.index(lab))) == label:
                n += 1
        return -n, labels.index(label)

    primary = min(on_layout, key=wins)
    plan = []
    used: set[str] = set()
    for b, (lo, hi) in enumerate(m.ranges):
        row = m.timings[b]
        ok = [t for t in row if t.ms is not None and (allow_extra_memory or m.layouts.get(t.label) == layout)]
        if ok:
            best = min(ok, key=lambda t: (t.ms, labels.index(t.label)))
            used.add(best.label)
            plan.append(BucketPlan(lo, hi, best.backend, best.kernel_config, best.ms, source, m.tokens[b], tuple(row)))
        else:  # nothing on the primary's layout ran here: the primary stands, its error in its timing
            p = next(t for t in row if t.label == primary)
            plan.append(BucketPlan(lo, hi, p.backend, p.kernel_config, None, source, m.tokens[b], tuple(row)))
    extra = sum(m.extra_bytes.get(lab, 0) for lab in {lab for lab in used if m.layouts.get(lab) != layout})
    return tuple(plan), primary, extra


# Timers --------------------------------------------------------------------------------------------
def measurement_device(platform: Platform) -> torch.device:
    import torch

    if platform.vendor in ("cuda", "rocm"):
        return torch.device("cuda", torch.cuda.current_device())
    if platform.vendor == "xpu":
        return torch.device("xpu", torch.xpu.current_device())
    return torch.device("cpu")


def default_timer(device: torch.device) -> Timer:
    if device.type == "cuda":
        return cuda_graph_timer()
    return cpu_timer()


def cpu_timer(*, budget_s: float = 0.15, max_reps: int = 15) -> Timer:
    """Warm up (two calls), then the median of as many calls as fit ``budget_s`` (1 to ``max_reps``)."""
    def timer(candidate: Candidate, num_tokens: int, call: Callable[[], Any]) -> float:
        call()
        start = time.perf_counter()
        call()
        once = time.perf_counter() - start
        reps = max(1, min(max_reps, int(budget_s / max(once, 1e-7))))
        samples = []
        for _ in range(reps):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples) * 1e3

    return timer


def cuda_graph_timer(*, replays: int = 20, warmup: int = 3) -> Timer:
    """The call captured in a CUDA graph, replayed ``warmup`` times, then the median of ``replays``
    replays timed by CUDA events. A call that cannot be captured is timed eagerly (same median)."""
    def timer(candidate: Candidate, num_tokens: int, call: Callable[[], Any]) -> float:
        import torch

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # first use (compilation, allocations) outside the capture
            call()
            call()
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph: Any = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                call()
            step = graph.replay
        except Exception as exc:
            logger.info("moe-oracle: %s at %d tokens is timed without a CUDA graph: %s", candidate.label, num_tokens,
                        describe_fault(exc))
            torch.cuda.synchronize()
            graph, step = None, call
        for _ in range(warmup):
            step()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(replays)]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize()
        del graph
        return statistics.median(s.elapsed_time(e) for s, e in events)

    return timer


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


# Random weights of the real shapes -----------------------------------------------------------------
def random_canonical(config: MoEConfig, *, device: torch.device | str, seed: int = 0) -> CanonicalWeights:
    """Random canonical weights for ``config``'s local shard on ``device``: on a CPU
    ``moe_oracle.testing.random_weights``; on an accelerator made there, eight experts at a time
    (a DeepSeek-V3 layer made on the host would take minutes)."""
    import torch

    from moe_oracle.testing import random_weights

    device = torch.device(device)
    if device.type == "cpu":
        return random_weights(config, seed=seed)
    from moe_oracle.kernel.weights import CanonicalWeights
    from moe_oracle.quant import quantize_weights, static_activation_scale

    torch.manual_seed(seed)
    scheme = config.scheme
    e, n, i, h = config.num_local_experts, config.w13_rows, config.intermediate_size_per_partition, config.hidden_size
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in (("w13", (n, h)), ("w2", (h, i))):
        parts: dict[str, list[torch.Tensor]] = {}
        for e0 in range(0, e, 8):
            w = torch.randn(min(8, e - e0), *shape, device=device) / math.sqrt(shape[1])
            if scheme.weight is None:
                parts.setdefault("", []).append(w.to(config.dtype))
                continue
            q = quantize_weights(scheme, w)
            for suffix, t in (("", q.data), ("_scale", q.scale), ("_zero_point", q.zero_point),
                              ("_global_scale", q.global_scale)):
                if t is not None:
                    parts.setdefault(suffix, []).append(t)
        for suffix, ts in parts.items():
            tensors[name + suffix] = torch.cat(ts)
    if config.has_bias:
        tensors["w13_bias"] = (torch.randn(e, n, device=device) * 0.5).to(config.dtype)
        tensors["w2_bias"] = (torch.randn(e, h, device=device) * 0.5).to(config.dtype)
    if config.routing.score_correction_bias:
        tensors["score_correction_bias"] = torch.randn(config.num_experts, device=device) * 0.1
    key = scheme.activation
    if key is not None and (key.static or key.global_scale):
        tensors["a13_scale"] = static_activation_scale(scheme, torch.randn(64, h, device=device))
        tensors["a2_scale"] = static_activation_scale(scheme, torch.randn(64, i, device=device))
    return CanonicalWeights(**tensors)


def unique_bytes(weights: KernelWeights, canonical: CanonicalWeights) -> int:
    """Bytes of ``weights``' tensors (and tensors inside its extras) that do not share storage with
    the canonical ones: what keeping this layout beside another costs."""
    import torch

    shared = {_storage(t) for _, t in canonical.items()}
    seen: set[object] = set()
    total = 0

    def visit(x: object) -> None:
        nonlocal total
        if isinstance(x, torch.Tensor):
            key = _storage(x)
            if key in shared or key in seen:
                return
            seen.add(key)
            total += _nbytes(x)
        elif isinstance(x, (tuple, list)):
            for y in x:
                visit(y)
        elif isinstance(x, Mapping):
            for y in x.values():
                visit(y)

    visit(dict(weights.tensors))
    visit(dict(weights.extras))
    return total


def _storage(t: torch.Tensor) -> object:
    try:
        return (t.device, t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # opaque (oneDNN-blocked) tensors have no storage to share
        return id(t)


def _nbytes(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):
        return int(t.numel() * t.element_size())
