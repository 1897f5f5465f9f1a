"""Benchmark the Triton fused-MoE layer on a CUDA GPU against the device's own limits.

    python bench/gpu_moe.py                       # every preset and token count, writes bench/results/
    python bench/gpu_moe.py --presets qwen3-30b-a3b --tokens 1 64 --out /tmp/r

Cells: Mixtral-8x7B, Qwen3-30B-A3B and DeepSeek-V3 in bf16, DeepSeek-V3 in fp8 128x128 blocks;
M = 1 ... 4096 tokens; random router logits, softmax top-k, renormalized (the same for every
preset, so cells compare with vLLM's table). One cell times the whole layer (alignment, both
GEMMs, activation, top-k sum) as a CUDA graph of several forwards on independent input sets
(different activations and routing), so no forward finds the previous one's experts in L2.

Per cell: ms per forward; TFLOP/s = 2*M*topk*3*H*I / t; weight GB/s = distinct experts hit x bytes
per expert / t; each as a fraction of the measured limits (read-only memory bandwidth, 8192^3 bf16
and fp8 matmul rates, measured in the same run); the floor = max(weight bytes / bandwidth,
FLOPs / matmul rate of the operand dtype) and the time as a multiple of it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform as pyplatform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import triton
import triton.language as tl

from moe_oracle.triton.tune import input_sets, random_experts, time_graph  # shared with moe-oracle tune

PRESETS = {  # name: (E, top_k, H, I)
    "mixtral-8x7b": (8, 2, 4096, 14336),
    "qwen3-30b-a3b": (128, 8, 2048, 768),
    "deepseek-v3": (256, 8, 7168, 2048),
}
CELLS = (("mixtral-8x7b", "bf16"), ("qwen3-30b-a3b", "bf16"), ("deepseek-v3", "bf16"), ("deepseek-v3", "fp8_block"))
TOKENS = (1, 4, 16, 64, 256, 1024, 4096)
# vLLM 0.33's Triton path on an H100 (ms per layer), measured at 3177 GB/s, 789 / 1437 TFLOP/s.
VLLM_H100_MS = {
    ("mixtral-8x7b", "bf16"): (0.249, 0.636, 0.954, 0.961, 1.335, 2.285, 6.24),
    ("qwen3-30b-a3b", "bf16"): (0.038, 0.112, 0.273, 0.412, 0.446, 0.514, 0.900),
    ("deepseek-v3", "bf16"): (0.255, 0.933, 2.90, 6.28, 7.73, 8.11, 10.7),
    ("deepseek-v3", "fp8_block"): (0.140, 0.495, 1.51, 3.26, 3.99, 4.40, 7.28),
}
# Targets as multiples of the floor, by M.
TARGET = {1: 1.15, 4: 1.15, 16: 1.15, 64: 1.15, 256: 1.30, 1024: 1.30, 4096: 1.35}


# Device limits -----------------------------------------------------------------------------------
@triton.jit
def _read_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """Read-only sweep: each program sums a grid-strided share of ``x``; one float out per program."""
    pid = tl.program_id(0)
    step = tl.num_programs(0) * BLOCK
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(pid * BLOCK, n, step):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.store(out_ptr + pid, tl.sum(acc, axis=0))


def measure_read_bandwidth(gib: float = 4.0) -> float:
    """Bytes read per second by a streaming read of a ``gib`` GiB random buffer."""
    n = int(gib * 2**30) // 2
    x = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    best = 0.0
    for programs, block in ((sms * 4, 4096), (sms * 8, 2048), (sms * 16, 2048)):
        out = torch.empty(programs, dtype=torch.float32, device="cuda")
        ms = triton.testing.do_bench(lambda p=programs, b=block, o=out, x=x: _read_kernel[(p,)](x, o, n, BLOCK=b),
                                     warmup=50, rep=300, return_mode="median")
        best = max(best, n * 2 / (ms * 1e-3))
    return best


def measure_matmul(dtype: str, size: int = 8192) -> float:
    """FLOP/s of a size^3 matmul on random operands: torch.matmul (bf16) or torch._scaled_mm (fp8)."""
    a = torch.randn(size, size, device="cuda")
    b = torch.randn(size, size, device="cuda")
    if dtype == "bf16":
        a, b = a.bfloat16(), b.bfloat16()
        fn = lambda: torch.matmul(a, b)
    else:
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t()  # B column-major
        one = torch.ones((), device="cuda")
        fn = lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    ms = triton.testing.do_bench(fn, warmup=500, rep=1000, return_mode="median")
    return 2 * size**3 / (ms * 1e-3)


# Layers --------------------------------------------------------------------------------------------
def make_config(preset: str, quant: str):
    from moe_oracle import MoEConfig

    e, k, h, i = PRESETS[preset]
    return MoEConfig(num_experts=e, top_k=k, hidden_size=h, intermediate_size=i, quant=quant)


def expert_bytes(config) -> float:
    h, i = config.hidden_size, config.intermediate_size
    if config.scheme.weight is None:
        return 3 * h * i * 2
    return 3 * h * i + 3 * math.ceil(h / 128) * math.ceil(i / 128) * 4  # fp8 values + block scales


def sets_for(tokens: int) -> int:
    return 8 if tokens <= 256 else 4 if tokens <= 1024 else 2


def profile_cell(experts, config, tokens: int, forwards: int = 8) -> list[tuple[str, float]]:
    """Per-kernel device time (us, mean over ``forwards`` eager forwards on independent inputs), in
    launch order: where a cell's time goes."""
    from torch.profiler import ProfilerActivity, profile

    sets = input_sets(config, tokens, forwards, seed=7)
    for s in sets:
        experts.apply(*s)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for s in sets:
            experts.apply(*s)
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.events() if e.device_type.name == "CUDA" and e.device_time > 0),
                     key=lambda e: e.time_range.start)
    per = len(kernels) // forwards
    return [(kernels[j].name[:40], sum(kernels[f * per + j].device_time for f in range(forwards)) / forwards)
            for j in range(per)]


@dataclass
class Cell:
    preset: str
    quant: str
    tokens: int
    ms: float
    tflops: float
    weight_gbps: float
    flop_fraction: float
    bw_fraction: float
    floor_ms: float
    x_floor: float
    vllm_ms: float | None
    target_x: float
    configs: dict


def run_cell(experts, config, preset: str, quant: str, tokens: int, limits: dict) -> Cell:
    sets = input_sets(config, tokens, sets_for(tokens))
    ms = time_graph(experts, sets)
    hit = sum(int(torch.unique(ids).numel()) for _, _, ids in sets) / len(sets)
    h, i, k = config.hidden_size, config.intermediate_size, config.top_k
    flops = 2 * tokens * k * 3 * h * i
    wbytes = hit * expert_bytes(config)
    rate = limits["fp8_flops"] if quant.startswith("fp8") else limits["bf16_flops"]
    floor_s = max(wbytes / limits["read_bytes_per_s"], flops / rate)
    t = ms * 1e-3
    vllm = VLLM_H100_MS.get((preset, quant))
    cfg = experts.configs_for(tokens, torch.device("cuda"))
    return Cell(preset, quant, tokens, ms, flops / t / 1e12, wbytes / t / 1e9, flops / t / rate,
                wbytes / t / limits["read_bytes_per_s"], floor_s * 1e3, t / floor_s,
                vllm[TOKENS.index(tokens)] if vllm and tokens in TOKENS else None, TARGET.get(tokens, 1.35),
                {"w13": cfg.w13.to_dict(), "w2": cfg.w2.to_dict()})


def environment() -> dict:
    import moe_oracle

    return {
        "device": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
        "sms": torch.cuda.get_device_properties(0).multi_processor_count,
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
        "python": pyplatform.python_version(), "moe_oracle": moe_oracle.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def render(cells: list[Cell], limits: dict, env: dict) -> str:
    lines = [f"# Triton fused MoE on {env['device']} ({env['date']})", "",
             f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, moe-oracle {env['moe_oracle']}. "
             f"Measured limits: read bandwidth {limits['read_bytes_per_s'] / 1e9:.0f} GB/s, "
             f"bf16 matmul {limits['bf16_flops'] / 1e12:.0f} TFLOP/s, fp8 matmul {limits['fp8_flops'] / 1e12:.0f} TFLOP/s.",
             "", "| preset | quant | M | ms | x floor | target | vLLM ms | vs vLLM | TFLOP/s (frac) | weight GB/s (frac) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        vs = f"{c.vllm_ms / c.ms:.2f}x" if c.vllm_ms else "-"
        ok = "" if c.x_floor <= c.target_x else " (miss)"
        lines.append(f"| {c.preset} | {c.quant} | {c.tokens} | {c.ms:.4f} | {c.x_floor:.2f}{ok} | {c.target_x:.2f} | "
                     f"{c.vllm_ms or '-'} | {vs} | {c.tflops:.0f} ({c.flop_fraction:.2f}) | "
                     f"{c.weight_gbps:.0f} ({c.bw_fraction:.2f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="*", default=None, help="preset names (default: all cells)")
    parser.add_argument("--quant", nargs="*", default=None, help="restrict to these schemes")
    parser.add_argument("--tokens", nargs="*", type=int, default=list(TOKENS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    parser.add_argument("--profile", nargs="*", type=int, default=[],
                        help="token counts whose per-kernel times are printed for each preset")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    env = environment()
    limits = {"read_bytes_per_s": measure_read_bandwidth(), "bf16_flops": measure_matmul("bf16"),
              "fp8_flops": measure_matmul("fp8")}
    print(f"limits: {limits['read_bytes_per_s'] / 1e9:.0f} GB/s read, {limits['bf16_flops'] / 1e12:.0f} TFLOP/s bf16, "
          f"{limits['fp8_flops'] / 1e12:.0f} TFLOP/s fp8", flush=True)
    cells: list[Cell] = []
    profiles: dict[str, list[tuple[str, float]]] = {}
    for preset, quant in CELLS:
        if (args.presets and preset not in args.presets) or (args.quant and quant not in args.quant):
            continue
        config = make_config(preset, quant)
        experts = random_experts(config)
        for tokens in args.tokens:
            cell = run_cell(experts, config, preset, quant, tokens, limits)
            cells.append(cell)
            print(f"{preset:14s} {quant:9s} M={tokens:5d} {cell.ms:8.4f} ms  {cell.x_floor:5.2f}x floor "
                  f"(target {cell.target_x})  vLLM {cell.vllm_ms}  {cell.tflops:6.0f} TFLOP/s  "
                  f"{cell.weight_gbps:6.0f} GB/s  {cell.configs}", flush=True)
            if tokens in args.profile:
                parts = profile_cell(experts, config, tokens)
                profiles[f"{preset}/{quant}/{tokens}"] = parts
                print("    profile (us): " + ", ".join(f"{n} {t:.1f}" for n, t in parts), flush=True)
        del experts
        torch.cuda.empty_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_{env['device'].replace(' ', '_')}_{env['date'][:10]}{args.tag}"
    (out / f"{stem}.json").write_text(json.dumps({"environment": env, "limits": limits,
                                                  "cells": [asdict(c) for c in cells], "profiles": profiles},
                                                 indent=1))
    table = render(cells, limits, env)
    (out / f"{stem}.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
