"""Expert-parallel MoE: bytes moved per layer against token count, and time split into dispatch,
experts and combine, for every dispatcher of ``moe_oracle.distributed``.

    python bench/ep_moe.py                                # gloo on this CPU, 2 ranks
    python bench/ep_moe.py --world 4 --tokens 1 64 512
    python bench/ep_moe.py --backend nccl --world 2       # GPUs, one per rank

Each rank runs its own ``T`` tokens (the same count on every rank) through
``prepare`` -> ``experts.apply`` -> ``finalize`` of the layer's kernel; the three are timed apart
(a ``dist.barrier`` before each forward, device synchronization before every clock read, the
median over rounds, the slowest rank per phase). Bytes are what rank 0 sent to other ranks per
forward, from the dispatcher's counters: dispatch (activations, + scales for fp8, + 8*K bytes of
ids and weights per row), combine, and the counts exchange. "bytes/token" is dispatch bytes over
T, against the bound K * H * element size (+ scales) for "torch"; allgather_reducescatter pads
to the largest rank and sends every token to every rank by design.

Experts: the oracle's choice for the standard format (agreed across ranks), the batched
reference for ``torch_batched`` on a CPU (core ships no batched CPU experts), ``batched_triton``
on GPUs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform as pyplatform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DISPATCHERS = ("torch", "torch_batched", "allgather_reducescatter")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return pyplatform.processor() or "unknown"


def worker(rank: int, world: int, init: str, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group(args.backend, init_method=f"file://{init}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    device = torch.device(f"cuda:{rank}") if args.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    from moe_oracle import MoEConfig, ParallelConfig, registry
    from moe_oracle.backends.reference.spec import BATCHED_REFERENCE_SPEC
    from moe_oracle.distributed import local_experts
    from moe_oracle.kernel.modular import ExpertsModular
    from moe_oracle.layer import MoELayer
    from moe_oracle.testing import random_weights

    if device.type == "cpu":
        registry().register(BATCHED_REFERENCE_SPEC, source="bench")
    rows: list[dict[str, Any]] = []
    for all2all in args.dispatchers:
        p = ParallelConfig(ep_size=world, ep_rank=rank, all2all=all2all)
        config = MoEConfig(num_experts=args.experts, top_k=args.top_k, hidden_size=args.hidden,
                           intermediate_size=args.inter, dtype=args.dtype, quant=args.quant, parallel=p)
        backend = ("batched_reference" if device.type == "cpu" else "batched_triton") if all2all == "torch_batched" \
            else args.experts_backend
        layer = MoELayer(config, backend=backend)
        full = random_weights(config.replace(parallel=ParallelConfig()), seed=0)
        ids = torch.tensor(local_experts(config))
        local = {n: (t if n in ("a13_scale", "a2_scale") else t[ids]).to(device) for n, t in full.items()}
        layer.load_weights(**local)
        from moe_oracle.distributed.base import ExpertParallelPrepareFinalize

        kernel, pf = layer.kernel, layer.prepare_finalize
        assert kernel is not None and isinstance(pf, ExpertParallelPrepareFinalize)
        experts = kernel.experts
        assert isinstance(experts, ExpertsModular)
        for t in args.tokens:
            g = torch.Generator().manual_seed(1000 * rank + t)
            hidden = torch.randn(t, args.hidden, generator=g).to(config.dtype).to(device)
            logits = torch.randn(t, args.experts, generator=g).to(device)
            from moe_oracle.router import route

            weights, topk = route(logits, config)
            times: dict[str, list[float]] = {"dispatch": [], "experts": [], "combine": []}
            traffic: dict[str, int] = {}
            for i in range(args.warmup + args.rounds):
                before = dict(pf.traffic)
                dist.barrier()
                _sync(device)
                t0 = time.perf_counter()
                prepared = pf.prepare(hidden, weights, topk)
                _sync(device)
                t1 = time.perf_counter()
                y = experts.apply(prepared.hidden, prepared.topk_weights, prepared.topk_ids,
                                         expert_map=layer.expert_map, expert_num_tokens=prepared.expert_num_tokens)
                _sync(device)
                t2 = time.perf_counter()
                pf.finalize(y, prepared)
                _sync(device)
                t3 = time.perf_counter()
                if i >= args.warmup:
                    times["dispatch"].append(t1 - t0)
                    times["experts"].append(t2 - t1)
                    times["combine"].append(t3 - t2)
                traffic = {k: v - before.get(k, 0) for k, v in pf.traffic.items()}
            rows.append({"all2all": all2all, "experts": layer.backend, "tokens": t, "rank": rank,
                         "ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
                         "bytes": traffic})
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(rows, f)
    dist.destroy_process_group()


def summarize(results: list[list[dict[str, Any]]], args: argparse.Namespace) -> list[dict[str, Any]]:
    elem = torch.empty((), dtype=getattr(torch, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
                                          .get(args.dtype, args.dtype))).element_size()
    out = []
    for i, row in enumerate(results[0]):
        per_rank = [r[i] for r in results]
        t = row["tokens"]
        ms = {k: max(r["ms"][k] for r in per_rank) for k in ("dispatch", "experts", "combine")}
        b = row["bytes"]
        out.append({
            "all2all": row["all2all"], "experts": row["experts"], "tokens_per_rank": t,
            "dispatch_ms": round(ms["dispatch"], 3), "experts_ms": round(ms["experts"], 3),
            "combine_ms": round(ms["combine"], 3),
            "dispatch_bytes": b.get("dispatch", 0), "combine_bytes": b.get("combine", 0),
            "counts_bytes": b.get("counts", 0),
            "dispatch_bytes_per_token": round(b.get("dispatch", 0) / t, 1) if t else None,
            "bound_K_H_elem": args.top_k * args.hidden * elem,
        })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="gloo", choices=("gloo", "nccl"))
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 16, 64, 256, 1024])
    ap.add_argument("--dispatchers", nargs="+", default=list(DISPATCHERS), choices=DISPATCHERS)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--inter", type=int, default=256)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--quant", default=None)
    ap.add_argument("--experts-backend", default=None, help="standard-format experts (default: the oracle's pick)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp()
    start = time.time()
    mp.start_processes(worker, args=(args.world, os.path.join(tmp, "init"), args, tmp), nprocs=args.world,
                       start_method="spawn")
    results = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(args.world)]
    import moe_oracle

    device = (torch.cuda.get_device_name(0) if args.backend == "nccl" else _cpu_model())
    record = {
        "date": datetime.date.today().isoformat(), "machine": {
            "device": device, "cpus": os.cpu_count(), "host": pyplatform.node(), "system": pyplatform.platform()},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "moe_oracle": moe_oracle.__version__},
        "process_group": args.backend, "world": args.world,
        "layer": {"num_experts": args.experts, "top_k": args.top_k, "hidden_size": args.hidden,
                  "intermediate_size": args.inter, "dtype": args.dtype, "quant": args.quant or args.dtype},
        "rounds": args.rounds, "wall_s": round(time.time() - start, 1),
        "rows": summarize(results, args),
    }
    lines = [f"# ep_moe: {args.backend}, {args.world} ranks, {device}, {record['date']}",
             f"E={args.experts} K={args.top_k} H={args.hidden} I={args.inter} {args.dtype} quant={args.quant or args.dtype}; "
             f"torch {torch.__version__}, moe-oracle {moe_oracle.__version__}; medians of {args.rounds} rounds, "
             "slowest rank per phase; bytes sent by rank 0 to other ranks per forward", "",
             "| all2all | experts | T/rank | dispatch ms | experts ms | combine ms | dispatch B | combine B | "
             "B/token | K*H*elem |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        lines.append(f"| {r['all2all']} | {r['experts']} | {r['tokens_per_rank']} | {r['dispatch_ms']} | "
                     f"{r['experts_ms']} | {r['combine_ms']} | {r['dispatch_bytes']} | {r['combine_bytes']} | "
                     f"{r['dispatch_bytes_per_token']} | {r['bound_K_H_elem']} |")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"ep_moe_{args.backend}_{args.world}ranks_{args.quant or args.dtype}_{record['date']}"
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / f"{stem}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
