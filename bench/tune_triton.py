"""Tune the Triton experts' launch configs for one device and write the JSON files that
``moe_oracle.triton.configs`` looks up (ship them in a vendor package, e.g.
``packages/moe-oracle-cuda/src/moe_oracle_cuda/triton_configs/``).

    python bench/tune_triton.py --presets qwen3-30b-a3b --quant bf16 --out /tmp/configs

Pruned search, per token count M: candidates come from the expected rows per expert
(M * top_k / E) and the scheme; all candidates compile first in parallel worker processes (small
weights with the same strides, so they fill Triton's on-disk cache for the main process); then the
first GEMM is tuned with the second at its default, and the second with the first at its best.
Each measurement is the whole layer as a CUDA graph over several routings (``gpu_moe.time_graph``),
so the per-call launch overhead that matters at decode is in it.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import itertools
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import gpu_moe  # bench/ is not a package: found through sys.path above
import torch


def _cfg(**kw):
    from moe_oracle.triton.configs import TritonConfig

    return TritonConfig(**kw)


def candidates(config, tokens: int, gemm: str) -> list:
    """Pruned candidate configs of one GEMM at M = ``tokens``."""
    per_expert = tokens * config.top_k / config.num_experts
    weight = config.scheme.weight
    fp8_block = weight is not None and weight.granularity.kind == "block"
    gated = gemm == "w13" and config.is_gated
    out: list = []
    if per_expert <= 8:  # weight streaming: one block row, narrow tiles, deep pipelines
        bms, bns, bks, warps, stages, groups = [16], [32, 64, 128], [128, 256], [4], [3, 4, 5], [1]
    elif per_expert <= 48:
        bms, bns, bks, warps, stages, groups = [16, 32, 64], [64, 128], [64, 128], [4], [3, 4], [1]
    elif per_expert <= 160:
        bms, bns, bks, warps, stages, groups = [32, 64, 128], [64, 128], [64, 128], [4, 8], [3, 4], [8]
    else:
        bms, bns, bks, warps, stages, groups = [64, 128], [64, 128, 256], [64, 128], [4, 8], [3, 4], [8]
        if fp8_block:  # two CTAs per SM hide the per-step scale multiply
            stages = [2, 3, 4]
    splits = [1, 2, 4, 8] if gemm == "w2" and per_expert <= 8 else [1]
    if gemm == "w2" and per_expert <= 8:
        stages = [4]
    for bm, bn, bk, w, s, g, sk in itertools.product(bms, bns, bks, warps, stages, groups, splits):
        if fp8_block and bk > 128:  # one weight block along K per step
            continue
        if bm * bn * (2 if gated else 1) > 128 * 256:  # accumulators past the register file
            continue
        if bm >= 128 and w < 8 and bn >= 128:
            continue
        smem = s * (bm * bk + bk * bn * (2 if gated else 1)) * (1 if weight is not None else 2)
        if smem > 200 * 1024:
            continue
        n = config.intermediate_size if gemm == "w13" else config.hidden_size
        if bn > 2 * max(64, n):
            continue
        if sk > 1 and config.intermediate_size // (bk * sk) < 2:
            continue
        out.append(_cfg(block_m=bm, block_n=bn, block_k=bk, group_m=g, num_warps=w, num_stages=s, split_k=sk))
    return out


def _compile_worker(preset: str, quant: str, pairs: list[tuple[dict, dict]]) -> list[str]:
    """Compile every (w13, w2) config pair on a small layer with the real strides; return failures."""
    import torch

    from moe_oracle.triton.configs import LayerConfigs, TritonConfig

    config = gpu_moe.make_config(preset, quant)
    small = config.replace(num_experts=max(config.top_k, 2))
    experts = gpu_moe.make_experts(small)
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
    from moe_oracle.triton.configs import LayerConfigs, default_configs, file_name_for

    config = gpu_moe.make_config(preset, quant)
    t0 = time.time()
    c13 = {m: candidates(config, m, "w13") for m in tokens}
    c2 = {m: candidates(config, m, "w2") for m in tokens}
    all13 = list(dict.fromkeys(c for m in tokens for c in c13[m]))
    all2 = list(dict.fromkeys(c for m in tokens for c in c2[m]))
    failed = precompile(preset, quant, all13, all2, jobs)
    print(f"[{preset} {quant}] compiled {len(all13)} + {len(all2)} candidates in {time.time() - t0:.0f}s, "
          f"{len(failed)} failed", flush=True)
    experts = gpu_moe.make_experts(config)
    table: dict[str, dict] = {}
    for m in tokens:
        sets = gpu_moe.input_sets(config, m, gpu_moe.sets_for(m))
        default = default_configs(config, m)

        def measure(layer: LayerConfigs, sets: list = sets) -> float:
            experts.configs_override = layer
            try:
                return gpu_moe.time_graph(experts, sets, rep_ms=rep_ms, warmup_ms=15)
            except Exception:  # a candidate that does not launch
                return float("inf")

        base = measure(default)
        best13, t13 = default.w13, base
        for cand in c13[m]:
            t = measure(LayerConfigs(cand, default.w2))
            if t < t13:
                best13, t13 = cand, t
        best2, t2 = default.w2, t13
        for cand in c2[m]:
            t = measure(LayerConfigs(best13, cand))
            if t < t2:
                best2, t2 = cand, t
        table[str(m)] = {"w13": best13.to_dict(), "w2": best2.to_dict(), "ms": round(t2, 5),
                         "default_ms": round(base, 5)}
        print(f"[{preset} {quant}] M={m}: {t2:.4f} ms (default {base:.4f}) w13={best13} w2={best2}", flush=True)
    experts.configs_override = None
    name = torch.cuda.get_device_name()
    path = out / file_name_for(config, name)
    if path.is_file():  # re-tuning some token counts keeps the others
        table = {**json.loads(path.read_text())["configs"], **table}
        table = dict(sorted(table.items(), key=lambda kv: int(kv[0])))
    path.write_text(json.dumps({
        "device": name, "E": config.num_experts, "N": config.intermediate_size, "H": config.hidden_size,
        "top_k": config.top_k, "dtype": quant, "triton": __import__("triton").__version__,
        "date": datetime.date.today().isoformat(), "tuned_in_s": round(time.time() - t0),
        "configs": table}, indent=1) + "\n")
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
