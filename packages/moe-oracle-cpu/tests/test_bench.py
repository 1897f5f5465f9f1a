"""bench/cpu_moe.py runs end to end on the tiny preset and writes its JSON (timings are not checked)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "cpu_moe.py"


@pytest.mark.skipif(not BENCH.exists(), reason="bench/cpu_moe.py is outside this checkout")
def test_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("cpu_moe_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)                        # dataclasses look it up
    spec.loader.exec_module(bench)
    assert bench.main(["--presets", "tiny", "--tokens", "1", "64", "--min-seconds", "0", "--max-seconds", "0.2",
                       "--reference-rounds", "1", "--mm-size", "1024", "--bw-mib", "128",
                       "--out", str(tmp_path), "--tag", "smoke"]) == 0
    report = json.loads((tmp_path / "cpu_moe_bf16_smoke.json").read_text())
    cell = report["presets"][0]["cells"][0]
    assert {"cpu_grouped", "naive_loop", "reference"} <= set(cell["times_ms"])
    assert report["load_average_before"] and report["matmul_gflops"]["used"] > 0   # measured even under load
    checks = report["presets"][0]["checks"]
    assert all(result["ok"] for per_t in checks.values() for result in per_t.values()), checks
    assert set(report["verdicts"]["tiny"][0]) >= {"floor_ms", "cpu_grouped_x_floor", "pick", "pick_at_least_as_fast_as"}
    assert "x floor" in capsys.readouterr().out
