"""Tune the Triton experts' launch configs for one layer on this GPU (``moe-oracle tune``).

Pruned search, per token count M: candidates come from the expected rows per expert
(M * top_k / E) and the scheme; GEMM1 is tuned with GEMM2 at its default, then GEMM2 with GEMM1
at its best (coordinate descent: the two GEMMs barely interact). Each measurement is the whole
layer as a CUDA graph over several independent routings, so the per-call launch overhead that
matters at decode is in it. The result is written as the JSON file ``moe_oracle.triton.configs``
looks up (put its folder in ``MOE_ORACLE_TRITON_CONFIG_DIR``, or ship it in a vendor package).
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from moe_oracle.config.moe import MoEConfig
from moe_oracle.triton.configs import LayerConfigs, TritonConfig, default_configs, file_name_for

Measure = Callable[[LayerConfigs, int], float]
"""ms per forward of the layer with these configs at M tokens (``inf`` if they do not launch)."""


@dataclass(frozen=True)
class TunedPoint:
    tokens: int
    configs: LayerConfigs
    ms: float
    default_ms: float


def candidates(config: MoEConfig, tokens: int, gemm: str) -> list[TritonConfig]:
    """Pruned candidate configs of one GEMM (``"w13"`` or ``"w2"``) at M = ``tokens``."""
    per_expert = tokens * config.top_k / config.num_local_experts
    weight = config.scheme.weight
    fp8_block = weight is not None and weight.granularity.kind == "block"
    gated = gemm == "w13" and bool(config.is_gated)
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
    n = config.intermediate_size_per_partition if gemm == "w13" else config.hidden_size
    out = []
    for bm, bn, bk, w, s, g, sk in itertools.product(bms, bns, bks, warps, stages, groups, splits):
        smem = s * (bm * bk + bk * bn * (2 if gated else 1)) * (1 if weight is not None else 2)
        if ((fp8_block and bk > 128)                              # one weight block along K per step
                or bm * bn * (2 if gated else 1) > 128 * 256      # accumulators past the register file
                or (bm >= 128 and w < 8 and bn >= 128)
                or smem > 200 * 1024
                or bn > 2 * max(64, n)
                or (sk > 1 and config.intermediate_size_per_partition // (bk * sk) < 2)):
            continue
        out.append(TritonConfig(block_m=bm, block_n=bn, block_k=bk, group_m=g, num_warps=w, num_stages=s,
                                split_k=sk))
    return out


def tune(config: MoEConfig, tokens: list[int], *, measure: Measure | None = None, rep_ms: int = 60,
         progress: Callable[[str], None] | None = None) -> list[TunedPoint]:
    """The best (w13, w2) configs at each token count, starting from the heuristic defaults (so a
    tuned entry is never slower than the default as measured). ``measure`` defaults to CUDA-graph
    timing of ``TritonExperts`` on random weights on the current GPU."""
    measure = measure or graph_measure(config, rep_ms=rep_ms)
    points = []
    for m in tokens:
        start = time.perf_counter()
        default = default_configs(config, m)
        base = measure(default, m)
        best13, t13 = default.w13, base
        for cand in candidates(config, m, "w13"):
            if (t := measure(LayerConfigs(cand, default.w2), m)) < t13:
                best13, t13 = cand, t
        best2, t2 = default.w2, t13
        for cand in candidates(config, m, "w2"):
            if (t := measure(LayerConfigs(best13, cand), m)) < t2:
                best2, t2 = cand, t
        points.append(TunedPoint(m, LayerConfigs(best13, best2), t2, base))
        if progress:
            progress(f"M={m}: {t2:.4f} ms (default {base:.4f} ms, {time.perf_counter() - start:.0f} s) "
                     f"w13={best13} w2={best2}")
    return points


def write_configs(config: MoEConfig, points: list[TunedPoint], out_dir: Path, device_name: str) -> Path:
    """Write (or merge into: other token counts are kept) the tuned file for this layer and device."""
    import triton

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name_for(config, device_name)
    table: dict[str, Any] = json.loads(path.read_text())["configs"] if path.is_file() else {}
    for p in points:
        table[str(p.tokens)] = {"w13": p.configs.w13.to_dict(), "w2": p.configs.w2.to_dict(),
                                "ms": round(p.ms, 5), "default_ms": round(p.default_ms, 5)}
    path.write_text(json.dumps({
        "device": device_name, "E": config.num_local_experts, "N": config.intermediate_size_per_partition,
        "H": config.hidden_size, "top_k": config.top_k, "dtype": config.scheme.name, "triton": triton.__version__,
        "date": datetime.date.today().isoformat(),
        "configs": dict(sorted(table.items(), key=lambda kv: int(kv[0])))}, indent=1) + "\n")
    return path


# Measuring on the GPU ------------------------------------------------------------------------------
def graph_measure(config: MoEConfig, *, rep_ms: int = 60, seed: int = 0) -> Measure:
    """``Measure`` by CUDA graphs of ``TritonExperts`` on random weights (built on first use)."""
    state: dict[str, Any] = {}

    def measure(layer: LayerConfigs, tokens: int) -> float:
        if "experts" not in state:
            state["experts"] = random_experts(config, seed=seed)
        if state.get("tokens") != tokens:
            state["tokens"], state["sets"] = tokens, input_sets(config, tokens, 8 if tokens <= 256 else 2)
        experts = state["experts"]
        experts.configs_override = layer
        try:
            return time_graph(experts, state["sets"], rep_ms=rep_ms, warmup_ms=15)
        except Exception:  # a candidate that does not compile or launch is dropped
            return math.inf
        finally:
            experts.configs_override = None

    return measure


def random_experts(config: MoEConfig, *, seed: int = 0) -> Any:
    """``TritonExperts`` on random canonical weights made on the GPU, eight experts at a time
    (quantizing a whole DeepSeek-V3 layer at once would not fit)."""
    from moe_oracle.kernel.weights import CanonicalWeights, canonical_kernel_weights
    from moe_oracle.oracle.schemes import oracle_for
    from moe_oracle.quant import quantize_weights
    from moe_oracle.triton.experts import TritonExperts

    torch.manual_seed(seed)
    e, h, i = config.num_local_experts, config.hidden_size, config.intermediate_size_per_partition
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in (("w13", (config.w13_rows, h)), ("w2", (h, i))):
        parts: dict[str, list[torch.Tensor]] = {}
        for e0 in range(0, e, 8):
            w = torch.randn(min(8, e - e0), *shape, device="cuda") / math.sqrt(shape[1])
            if config.scheme.weight is None:
                parts.setdefault("data", []).append(w.to(config.dtype))
                continue
            q = quantize_weights(config.scheme, w)
            assert q.scale is not None  # every weight scheme has scales
            parts.setdefault("data", []).append(q.data)
            for field in ("scale", "zero_point", "global_scale"):
                if getattr(q, field) is not None:
                    parts.setdefault(field, []).append(getattr(q, field))
        tensors[name] = torch.cat(parts["data"])
        for field in ("scale", "zero_point", "global_scale"):
            if field in parts:
                tensors[f"{name}_{field}"] = torch.cat(parts[field])
    if config.has_bias:
        tensors["w13_bias"] = torch.randn(e, config.w13_rows, device="cuda").to(config.dtype) * 0.5
        tensors["w2_bias"] = torch.randn(e, h, device="cuda").to(config.dtype) * 0.5
    act = config.scheme.activation
    if act is not None and (act.static or act.global_scale):  # unit scales: timing only
        tensors["a13_scale"] = tensors["a2_scale"] = torch.ones((), device="cuda")
    kw = canonical_kernel_weights(CanonicalWeights(**tensors), config, backend="triton")
    return TritonExperts(config, oracle_for(config).make_quant_config(config, kw), kw)


def input_sets(config: MoEConfig, tokens: int, count: int, *, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """``count`` independent (hidden [M, H], topk_weights [M, K] float32, topk_ids [M, K] int32) on
    the GPU: random logits, softmax, top-k, renormalized."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    sets: list[tuple[torch.Tensor, ...]] = []
    for _ in range(count):
        hidden = torch.randn(tokens, config.hidden_size, generator=g, device="cuda").to(config.dtype)
        logits = torch.randn(tokens, config.num_experts, generator=g, device="cuda")
        weights, ids = torch.topk(torch.softmax(logits, dim=-1), config.top_k, dim=-1)
        sets.append((hidden, (weights / weights.sum(dim=-1, keepdim=True)).float(), ids.to(torch.int32)))
    return sets


def time_graph(experts: Any, sets: list[tuple[torch.Tensor, ...]], *, rep_ms: int = 300, warmup_ms: int = 50) -> float:
    """Median ms per forward of a CUDA graph running ``experts.apply`` once per input set."""
    import triton.testing

    for s in sets:  # compile and settle allocations outside the capture
        experts.apply(*s)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for s in sets:
            experts.apply(*s)
    ms = triton.testing.do_bench(graph.replay, warmup=warmup_ms, rep=rep_ms, return_mode="median")
    del graph
    return float(ms) / len(sets)
