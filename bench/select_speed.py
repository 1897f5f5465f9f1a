"""Selection overhead: `import moe_oracle` time (in a fresh interpreter, checking CUDA stays
uninitialized), `moe_oracle.select()` with a warm registry and a warm cache, a measured selection
served by the selection cache (issue 15 target: < 1 ms at construction) and the per-forward bucket
dispatch (target: < 2 us of host time).

    python bench/select_speed.py          # prints a table; writes bench/results/select_speed.json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

IMPORT_PROBE = """
import time, sys
t0 = time.perf_counter()
import moe_oracle
t1 = time.perf_counter()
torch_loaded = "torch" in sys.modules
import torch
t2 = time.perf_counter()
print(t2 - t1, t1 - t0, int(torch.cuda.is_initialized()), int("triton" in sys.modules), int(torch_loaded))
"""


def import_time(repeats: int = 7) -> tuple[float, float, bool, bool, bool]:
    """Medians over fresh interpreters: (torch import s, ``import moe_oracle`` s, CUDA initialized,
    triton imported, torch imported by ``import moe_oracle``)."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], check=True, capture_output=True, text=True)
        torch_s, ours_s, cuda_init, triton_loaded, torch_loaded = out.stdout.split()
        runs.append((float(ours_s), float(torch_s), cuda_init == "1", triton_loaded == "1", torch_loaded == "1"))
    runs.sort()
    ours, torch_s, cuda_init, triton_loaded, torch_loaded = runs[len(runs) // 2]
    return torch_s, ours, cuda_init, triton_loaded, torch_loaded


def select_time(calls: int = 20000) -> dict[str, float]:
    import moe_oracle
    from moe_oracle import MoEConfig, Platform

    results = {}
    cases = {
        "tiny bf16, this machine": (MoEConfig.preset("tiny"), None),
        "deepseek-v3 fp8_block, simulated H100": (MoEConfig.preset("deepseek-v3", quant="fp8_block"),
                                                   Platform.simulate("cuda", capability=(9, 0))),
    }
    for name, (config, plat) in cases.items():
        moe_oracle.select(config, plat)  # warm the registry and the cache
        start = time.perf_counter()
        for _ in range(calls):
            moe_oracle.select(config, plat)
        results[name] = (time.perf_counter() - start) / calls * 1e6
        start = time.perf_counter()
        cold = 200
        for _ in range(cold):
            moe_oracle.oracle_for(config)._cache.clear()
            moe_oracle.select(config, plat)
        results[name + " (uncached evaluation)"] = (time.perf_counter() - start) / cold * 1e6
    return results


def measured_time(calls: int = 300) -> dict[str, float]:
    """A measured plan for the tiny layer (timed once, into a temporary cache folder), then: a
    selection answered by the cache file (the plan memo cleared before each call: a new process),
    one answered by the in-process memo, and the bucket lookup a forward does, with 8 buckets and 1."""
    import tempfile

    import moe_oracle
    from moe_oracle import MoEConfig
    from moe_oracle.oracle.measured import clear_memo
    from moe_oracle.testing import random_weights

    config = MoEConfig.preset("tiny")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        os.environ["MOE_ORACLE_CACHE_DIR"] = folder
        start = time.perf_counter()
        moe_oracle.tune(config)
        results["tune tiny, all default buckets (s)"] = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(calls):
            clear_memo()
            moe_oracle.select(config, policy="measured")
        results["measured select from the cache file (us)"] = (time.perf_counter() - start) / calls * 1e6
        start = time.perf_counter()
        for _ in range(calls):
            moe_oracle.select(config, policy="measured")
        results["measured select from the memo (us)"] = (time.perf_counter() - start) / calls * 1e6
        weights = dict(random_weights(config, seed=0).items())
        for policy in ("measured", "rules"):
            layer = moe_oracle.MoELayer(config, policy=policy)
            layer.load_weights(**weights)
            lookups = 200_000
            start = time.perf_counter()
            for t in range(lookups):
                layer._kernel_for(t & 8191)
            results[f"bucket dispatch per forward, {len(layer.selection.plan)} bucket(s) (us)"] = (
                (time.perf_counter() - start) / lookups * 1e6)
        del os.environ["MOE_ORACLE_CACHE_DIR"]
    return results


def main() -> None:
    import torch

    torch_s, seconds, cuda_init, triton_loaded, torch_loaded = import_time()
    selects = select_time()
    measured = measured_time()
    for name, value in measured.items():
        print(f"{name}: {value:.2f}")
    print(f"import moe_oracle: {seconds * 1e3:.1f} ms (median of 7 fresh interpreters); imports torch: {torch_loaded}; "
          f"triton: {triton_loaded}; CUDA initialized after importing torch too: {cuda_init} "
          f"(import torch alone: {torch_s * 1e3:.0f} ms)")
    for name, us in selects.items():
        print(f"select() {name}: {us:.1f} us/call")
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "import_ms": seconds * 1e3, "torch_import_ms": torch_s * 1e3,
        "cuda_initialized_by_import": cuda_init, "triton_imported_by_import": triton_loaded,
        "torch_imported_by_import": torch_loaded,
        "select_us": selects,
        "measured": measured,
    }
    out = Path(__file__).parent / "results" / "select_speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
