"""Ranks agree on the measured plan: gloo, two processes spawned once, a cache on rank 0 only.

Rank 0 reads its cache; rank 1 (an empty cache folder, and a timer that fails if called) receives
the plan. The processes run under a timeout, so a broadcast that never comes fails the test
instead of hanging it."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import moe_oracle
from moe_oracle import Platform
from moe_oracle.oracle.measured import clear_memo

CORE_TESTS = Path(__file__).parents[1] / "packages" / "moe-oracle-core" / "tests"
WORKER = """
import dataclasses, json, os, sys
sys.path.insert(0, sys.argv[1])
import torch.distributed as dist
from measured_backends import TINY, install
install()
import moe_oracle
from moe_oracle import Platform
dist.init_process_group("gloo", init_method=sys.argv[2], rank=int(sys.argv[3]), world_size=2)
here = dataclasses.replace(Platform.detect(), vendor="cpu", capability=None, arch=None)
timed = []
def timer(candidate, num_tokens, call):
    timed.append(candidate.label)
    return 1.0
layer = moe_oracle.MoELayer(TINY, platform=here, policy="measured", exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"))
sel = moe_oracle.oracle_for(TINY).select_backend(TINY, here, policy="measured", timer=timer,
                                                 exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"))
print(json.dumps({"plan": [[p.backend, p.kernel_config, p.source] for p in layer.selection.plan],
                  "again": [p.backend for p in sel.plan], "timed": timed,
                  "origin": layer.selection.report.plan_info.origin}))
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rank0_decides_and_every_rank_runs_the_same_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(CORE_TESTS))
    from measured_backends import TINY, install, table_timer

    rank0_cache, rank1_cache = tmp_path / "rank0", tmp_path / "rank1"
    monkeypatch.setenv("MOE_ORACLE_CACHE_DIR", str(rank0_cache))
    install()
    try:
        clear_memo()
        here = dataclasses.replace(Platform.detect(), vendor="cpu", capability=None, arch=None)
        tuned = moe_oracle.tune(TINY, here, exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"), timer=table_timer)
    finally:
        clear_memo()
        moe_oracle.registry(refresh=True)
    expected = [p.backend for p in tuned.plan]
    assert len(set(expected)) > 1  # a plan that a rank measuring on its own (timer: 1 ms each) would not make
    init = f"tcp://127.0.0.1:{_free_port()}"
    procs = []
    for rank, folder in ((0, rank0_cache), (1, rank1_cache)):
        # Same thread count as this process: it is part of a CPU plan's cache key.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MOE_ORACLE_CACHE_DIR": str(folder)}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(CORE_TESTS), init, str(rank)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-3000:]
            results.append(json.loads(out.splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    r0, r1 = results
    assert [b for b, _, _ in r0["plan"]] == expected
    assert r1["plan"] == r0["plan"] and r1["again"] == r0["again"] == expected
    assert {s for _, _, s in r0["plan"]} == {"cache"}
    assert r0["timed"] == r1["timed"] == []   # nobody measured: rank 0 had its cache, rank 1 received it
    assert r0["origin"].startswith("cache ") and r1["origin"].startswith("from rank 0: cache ")
    assert not (rank1_cache / "selection").exists()
