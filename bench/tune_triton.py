"""Tune the Triton experts' launch configs for one device and write the JSON files that
``moe_oracle.triton.configs`` looks up (ship them in a vendor package, e.g.
``packages/moe-oracle-cuda/src/moe_oracle_cuda/triton_configs/``).

    python bench/tune_triton.py --presets qwen3-30b-a3b --quant bf16 --out /tmp/configs

The search is ``moe_oracle.triton.tune`` (what ``moe-oracle tune`` runs: pruned candidates per token
count, GEMM1 then GEMM2, each timed as the whole layer in a CUDA graph). This script adds the sweep
over the benchmark's presets and compiles every candidate first in parallel worker processes
(small weights with the same strides, so they fill Triton's on-disk cache for the main process).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import gpu_moe  # bench/ is not a package: found through sys.path above
import torch

from moe_oracle.triton.tune import candidates, random_experts, write_configs
from moe_oracle.triton.tune import tune as search


def _compile_worker(preset: str, quant: str, pairs: list[tuple[dict, dict]]) -> list[str]:
    """Compile every (w13, w2) config pair on a small layer with the real strides; return failures."""
    import torch

    from moe_oracle.triton.configs import LayerConfigs, TritonConfig

    config = gpu_moe.make_config(preset, quant)
    small = config.replace(num_experts=max(config.top_k, 2))
    experts = random_experts(small)
    x = gpu_moe.input_sets(small, 1, 1)[0]
    failed = []
    for c13, c2 in pairs:
        experts.configs_override = LayerConfigs(TritonConfig(**c13), TritonConfig(**c2))
        try:
            experts.apply(*x)
            torch.cuda.synchronize()
        except Exception as exc:  # out of shared memory or registers: the candidate is dropped
            failed.append(f"{c13} {c2}: {type(exc).__name__}: {str(exc)[:120]}")
    return failed


def precompile(preset: str, quant: str, configs13: list, configs2: list, jobs: int) -> set[str]:
    pairs = [(a.to_dict(), b.to_dict()) for a, b in itertools.zip_longest(configs13, configs2,
                                                                       fillvalue=(configs13 or configs2)[0])]
    chunks = [pairs[i::jobs] for i in range(jobs) if pairs[i::jobs]]
    failed: set[str] = set()
    with cf.ProcessPoolExecutor(len(chunks), mp_context=mp.get_context("spawn")) as pool:
        for result in pool.map(_compile_worker, [preset] * len(chunks), [quant] * len(chunks), chunks):
            failed.update(result)
    return failed


def tune(preset: str, quant: str, tokens: list[int], jobs: int, out: Path, rep_ms: int) -> Path:
    """Precompile every candidate in ``jobs`` processes, then ``moe_oracle.triton.tune`` (the search
    ``moe-oracle tune`` runs) and write the file."""
    config = gpu_moe.make_config(preset, quant)
    t0 = time.time()
    all13 = list(dict.fromkeys(c for m in tokens for c in candidates(config, m, "w13")))
    all2 = list(dict.fromkeys(c for m in tokens for c in candidates(config, m, "w2")))
    failed = precompile(preset, quant, all13, all2, jobs)
    print(f"[{preset} {quant}] compiled {len(all13)} + {len(all2)} candidates in {time.time() - t0:.0f}s, "
          f"{len(failed)} failed", flush=True)
    points = search(config, tokens, rep_ms=rep_ms, progress=lambda line: print(f"[{preset} {quant}] {line}", flush=True))
    path = write_configs(config, points, out, torch.cuda.get_device_name())
    print(f"[{preset} {quant}] wrote {path} in {time.time() - t0:.0f}s", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="*", default=None)
    parser.add_argument("--quant", nargs="*", default=None)
    parser.add_argument("--tokens", nargs="*", type=int, default=list(gpu_moe.TOKENS))
    parser.add_argument("--out", required=True, help="directory; an existing file there keeps untuned token counts")
    parser.add_argument("--jobs", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    parser.add_argument("--rep-ms", type=int, default=60)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for preset, quant in gpu_moe.CELLS:
        if (args.presets and preset not in args.presets) or (args.quant and quant not in args.quant):
            continue
        tune(preset, quant, args.tokens, args.jobs, out, args.rep_ms)
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
