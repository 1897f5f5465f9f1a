"""Benchmark the mixed-input Triton layers of issue 17 on a CUDA GPU (one command, < 8 min on an H200).

    PYTHONPATH=... python bench/gpu_quant_moe.py                 # every cell below
    PYTHONPATH=... python bench/gpu_quant_moe.py --cells gpt-oss-20b:mxfp4 --tokens 1 1024

Cells: gpt-oss-20b / 120b mxfp4 (biases, swigluoai), Qwen3-30B-A3B int4_w4a16 and nvfp4 (served as
nvfp4 weights with bf16 activations), Mixtral-8x7B int8_w8a16, and Qwen3-30B-A3B fp8_block weights
decoded in registers (what an Ampere GPU runs; forced here on a GPU that has fp8 MMA). Each cell
times the whole layer (alignment, both GEMMs, activation, top-k sum) as a CUDA graph of several
forwards on independent inputs (``moe_oracle.triton.tune.time_graph``), M = 1, 4, 16, 64, 1024, 4096.

Columns per M: ms; ``x floor`` = ms / (bytes of the packed weights of the distinct experts hit,
scales, zero points and biases included / the read bandwidth measured in this run); at M = 1024 and
4096 also ``vs bf16`` = (ms of the same layer in bf16 on our Triton kernel) / ms: the prefill speed
relative to bf16 (issue 17's target: >= 0.9; decode target: <= 1.3x the floor).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_moe import measure_read_bandwidth

from moe_oracle import MoEConfig
from moe_oracle.triton.tune import input_sets, random_experts, time_graph

CELLS = ("gpt-oss-20b:mxfp4", "gpt-oss-120b:mxfp4", "qwen3-30b-a3b:int4_w4a16", "qwen3-30b-a3b:nvfp4",
         "mixtral-8x7b:int8_w8a16", "qwen3-30b-a3b:fp8_block_a16")
TOKENS = (1, 4, 16, 64, 1024, 4096)
PREFILL = (1024, 4096)
# Issue 17's H200 numbers before this work (ms), for the table's last line per cell.
BEFORE = {"gpt-oss-20b:mxfp4": "reference: 9.06 ms at M=1", "qwen3-30b-a3b:int4_w4a16": "0.559 / 1.47 / 7.32 ms at 1/64/1024",
          "mixtral-8x7b:int8_w8a16": "0.472 / 0.717 / 3.03 ms at 1/64/1024", "qwen3-30b-a3b:nvfp4": "reference"}


def _config(cell: str) -> tuple[MoEConfig, bool]:
    preset, quant = cell.split(":")
    weight_only_fp8 = quant.endswith("_a16")
    return MoEConfig.preset(preset, quant=quant.removesuffix("_a16")), weight_only_fp8


def _bytes_per_expert(experts) -> float:
    """Packed weights, scales, zero points, global scales and biases of one expert, as stored."""
    e = experts.config.num_local_experts
    return sum(t.numel() * t.element_size() for t in experts.weights.tensors.values()
               if t.dim() >= 1 and t.shape[0] == e) / e


def _sets(tokens: int) -> int:
    return 8 if tokens <= 16 else 4 if tokens <= 64 else 1


def _distinct(sets, e: int) -> float:
    return sum(int(torch.unique(s[2]).numel()) for s in sets) / len(sets)


@contextlib.contextmanager
def _no_fp8_mma(enabled: bool):
    from moe_oracle.triton import experts as experts_module

    saved = experts_module.fp8_mma_supported
    if enabled:
        experts_module.fp8_mma_supported = lambda device: False
    try:
        yield
    finally:
        experts_module.fp8_mma_supported = saved


def run_cell(cell: str, tokens: tuple[int, ...], bandwidth: float, rep_ms: int) -> list[str]:
    config, weight_only_fp8 = _config(cell)
    with _no_fp8_mma(weight_only_fp8):
        experts = random_experts(config, seed=0)
    served = experts.plan.served or config.scheme.name
    per_expert = _bytes_per_expert(experts)
    quant_ms, floors = {}, {}
    for m in tokens:
        sets = input_sets(config, m, _sets(m), seed=m)
        quant_ms[m] = time_graph(experts, sets, rep_ms=rep_ms)
        floors[m] = _distinct(sets, config.num_experts) * per_expert / bandwidth * 1e3
    del experts
    torch.cuda.empty_cache()
    bf16_ms = {}
    prefill = [m for m in tokens if m in PREFILL]
    if prefill:
        dense = random_experts(config.replace(quant="bf16", dtype=torch.bfloat16), seed=0)
        for m in prefill:
            bf16_ms[m] = time_graph(dense, input_sets(config, m, _sets(m), seed=m), rep_ms=rep_ms)
        del dense
        torch.cuda.empty_cache()
    lines = [f"{cell} (runs {served}; {per_expert / 2**20:.2f} MiB per expert)"]
    lines.append("  M      " + "".join(f"{m:>10}" for m in tokens))
    lines.append("  ms     " + "".join(f"{quant_ms[m]:>10.4f}" for m in tokens))
    lines.append("  x floor" + "".join(f"{quant_ms[m] / floors[m]:>10.2f}" for m in tokens))
    lines.append("  vs bf16" + "".join(f"{bf16_ms[m] / quant_ms[m]:>10.2f}" if m in bf16_ms else f"{'':>10}"
                                       for m in tokens))
    if cell in BEFORE:
        lines.append(f"  before issue 17: {BEFORE[cell]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), help=f"preset:scheme (default: {' '.join(CELLS)})")
    parser.add_argument("--tokens", nargs="+", type=int, default=list(TOKENS))
    parser.add_argument("--rep-ms", type=int, default=100, help="timing window per measurement")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 1
    bandwidth = measure_read_bandwidth()
    print(f"{torch.cuda.get_device_name()}: read bandwidth {bandwidth / 1e9:.0f} GB/s; CUDA graphs; "
          "x floor = ms / (packed bytes of the experts hit / bandwidth); vs bf16 = bf16 ms / ms", flush=True)
    for cell in args.cells:
        print("\n".join(run_cell(cell, tuple(args.tokens), bandwidth, args.rep_ms)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
