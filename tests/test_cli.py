"""The CLI as a user runs it: list, explain (table and JSON), run, bench, and its errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import moe_oracle
from moe_oracle import MoEConfig
from moe_oracle.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_backend_and_why_not(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--platform", "cpu")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["backend", "package", "vendors", "format", "here", "schemes"]
    by_name = {row.split()[0]: row for row in rows if row[:1].isalpha()}
    assert "moe-oracle-core 0.1.0" in by_name["reference"] and by_name["reference"].split()[5] == "available"
    aiter = rows.index(by_name["aiter"])
    assert by_name["aiter"].split()[5:7] == ["not", "usable"] and rows[aiter + 1] == "    serves rocm, not cpu"
    assert all(len(line) <= 100 for line in out.splitlines())
    assert "available: serves this machine's vendor and its vendor libraries are installed" in out
    # --check runs every support check on a small layer (it builds MoEConfigs, so torch is imported)
    code, out, _ = run(capsys, "list", "--platform", "cpu,triton=3.6.0", "--wide")
    assert {row.split()[0]: row for row in out.splitlines()}["triton"].split()[5] == "available"
    code, out, _ = run(capsys, "list", "--check", "--platform", "cpu,triton=3.6.0", "--wide")
    by_name = {row.split()[0]: row for row in out.splitlines()}
    assert by_name["reference"].split()[5] == "usable"
    assert "not usable here: needs TRITON_INTERPRET=1 on cpu" in by_name["triton"]
    code, out, _ = run(capsys, "list", "--json", "--platform", "cuda:9.0")
    rows = {r["name"]: r for r in json.loads(out)["backends"]}
    assert rows["reference"]["usable"] is None and rows["aiter"]["usable"] is False
    assert rows["aiter"]["reason"] == "serves rocm, not cuda"
    code, out, _ = run(capsys, "list", "--json", "--check", "--platform", "cuda:9.0")
    assert {r["name"]: r["usable"] for r in json.loads(out)["backends"]}["reference"] is True


def test_list_wide_is_one_line_per_backend(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--platform", "cpu", "--wide")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    schemes = ",".join(sorted(moe_oracle.registry().get("aiter").schemes))
    assert re.search(r"  not usable here: serves rocm, not cpu +" + schemes + "$", lines["aiter"])


_PROBE = """
import sys
from moe_oracle.platform import _gpu_possible
gpu = _gpu_possible()
from moe_oracle.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("TORCH", "torch" in sys.modules, "GPU", gpu)
"""


@pytest.mark.parametrize("argv", [["--help"], ["explain", "--help"], ["bench", "--help"], ["--version"],
                                  ["list", "--platform", "cuda:9.0"], ["list"], ["list", "--json"]])
def test_help_version_and_list_import_no_torch(argv: list[str]) -> None:
    # A fresh interpreter, as `moe-oracle ...` runs; torch would cost seconds. Detecting the real
    # machine (plain `list`) needs torch only where a GPU is possible, to read its capability.
    result = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr
    torch_loaded, gpu = result.stdout.split()[-3] == "True", result.stdout.split()[-1] == "True"
    assert not torch_loaded or (argv[0] == "list" and "--platform" not in argv and gpu), result.stdout


def test_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["list"], ["explain"], ["run"], ["bench"], ["tune"]):
        with pytest.raises(SystemExit) as info:
            main([*argv, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: moe-oracle")
        assert "`" not in out and "**" not in out and ":ref:" not in out, (argv, out)
    main_help = _help(capsys, [])
    assert "examples:\n  moe-oracle list" in main_help and "--version" in main_help


def _help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_version_names_every_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"moe-oracle-core {moe_oracle.__version__} (plugin API {moe_oracle.PLUGIN_API_VERSION}")
    names = {line.split()[0]: line.split()[1] for line in lines[1:-1]}
    from importlib import metadata

    for dist in ("moe-oracle-cuda", "moe-oracle-rocm", "moe-oracle-xpu", "moe-oracle-cpu"):
        try:
            assert names[dist] == metadata.version(dist)
        except metadata.PackageNotFoundError:
            assert dist not in names
    assert lines[-1].startswith("torch ") and ", Python 3." in lines[-1]


def test_explain_fits_100_columns_unless_wide(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--model", "deepseek-v3", "--quant", "fp8_block", "--platform", "cuda:9.0,flashinfer=0.6.13"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 100
    code, wide, _ = run(capsys, *argv, "--wide")
    assert code == 0 and max(len(line) for line in wide.splitlines()) > 100
    assert " ".join(out.split()) == " ".join(wide.split())      # the same words, only wrapped


def test_explain_chosen_none_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "--model", "tiny", "--backend", "aiter", "--platform", "cpu", "--wide")
    assert code == 1
    [line] = [line for line in out.splitlines() if line.startswith("chosen: ")]
    assert line.startswith("chosen: none (backend 'aiter' cannot serve this config: serves rocm, not cpu. "
                           "Backends that can: ")
    code, out, _ = run(capsys, "explain", "--model", "tiny", "--platform", "cpu", "--exclude", "reference,cpu_grouped",
                       "--wide")
    assert code == 1 and "chosen: none (no candidate fits: " in out and "excluded by exclude= argument" in out


def test_explain_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "--model", "deepseek-v3", "--quant", "fp8_block", "--platform",
                       "cuda:9.0,flashinfer=0.6.13")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Fp8Oracle for E=256 top_k=8 H=7168 I=2048 silu bf16 quant=fp8_block")
    assert lines[1] == "platform: cuda, simulated cuda, capability 9.0, flashinfer=0.6.13, triton=3.6.0, (simulated)"
    assert lines[-1].startswith("chosen: ") or any(line.startswith("chosen: ") for line in lines)


def test_explain_json_and_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "--model", "tiny", "--platform", "cpu", "--backend", "reference", "--json")
    data = json.loads(out)
    assert code == 0 and data["chosen"] == "reference"
    assert data["overrides"]["origin"] == {"backend": "backend= argument"}
    assert data["candidates"][-1]["name"] == "reference"


def test_explain_errors_are_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "explain", "--model", "tiny", "--backend", "warp")
    assert code == 2 and err.startswith("error: backend= argument: unknown backend 'warp' (allowed: ")
    code, _, err = run(capsys, "explain", "--model", "tiny", "--platform", "tpu")
    assert code == 2 and "unknown vendor 'tpu'" in err
    with pytest.raises(SystemExit):
        main(["explain", "--model", "nope"])


def test_explain_from_hf_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2, "hidden_size": 256,
        "intermediate_size": 512, "torch_dtype": "bfloat16", "hidden_act": "silu",
    }))
    code, out, _ = run(capsys, "explain", "--hf-config", str(path), "--platform", "cpu", "--json")
    data = json.loads(out)
    assert code == 0 and data["config"]["num_experts"] == 8 and data["config"]["intermediate_size"] == 512


def test_run_checks_against_reference(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "run", "--model", "tiny", "--tokens", "0,1,5", "--dtype", "fp32", "--iters", "2")
    assert code == 0, out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["tokens", "max_abs_err"])
    rows = [line.split() for line in lines[start + 1:start + 4]]
    assert [r[0] for r in rows] == ["0", "1", "5"] and all(r[3] == "PASS" for r in rows)
    assert "tolerance: atol=" in out and "chosen:" in out


def test_run_rejects_bad_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "run", "--model", "tiny", "--tokens", "a,b")
    assert (code, err) == (2, "error: --tokens: must be comma-separated integers, got 'a,b'\n")


def test_bench_writes_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    code, out, _ = run(capsys, "bench", "--model", "tiny", "--dtype", "fp32", "--tokens", "1,4", "--iters", "1",
                       "--reps", "3", "--backends", "reference", "--json", str(out_json), "--plot", str(out_png))
    assert code == 0
    data = json.loads(out_json.read_text())
    assert set(data["ms"]["reference"]) == {"1", "4"} and data["config"]["quant"] == "fp32"
    s = data["stats"]["reference"]["4"]
    assert len(s["samples"]) == 3 and s["min"] <= s["median"] <= s["max"] and data["ms"]["reference"]["4"] == s["median"]
    assert data["backend"] == moe_oracle.explain(MoEConfig.preset("tiny", dtype="fp32")).chosen
    assert data["chosen"] == {"1": data["backend"], "4": data["backend"]} and data["fastest"]["1"] == "reference"
    assert data["device"] == "cpu" and data["device_name"] and data["repetitions"] == 3
    assert data["versions"]["moe-oracle-core"] == moe_oracle.__version__ and "torch" in data["versions"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", data["date"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = out.splitlines()[1].split()
    assert header == ["tokens", "backend", "median", "ms", "min", "ms", "max", "ms", "x", "floor", "calls"]
    assert all(len(line) <= 100 for line in out.splitlines())


def test_bench_interleaves_backends_and_reports_median_min_max(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import moe_oracle.cli as cli

    order: list[tuple[str, int]] = []
    fake = {"reference": [0.003, 0.001, 0.002], "cpu_grouped": [0.0005, 0.0009, 0.0004]}

    def timed(fn: Any, device: Any, iters: int) -> float:
        key = (fn.func.backend, fn.args[0].shape[0])
        order.append(key)
        return fake[key[0]][sum(k == key for k in order) - 1]

    monkeypatch.setattr(cli, "_time_iters", timed)
    code, out, _ = run(capsys, "bench", "--model", "tiny", "--dtype", "fp32", "--tokens", "1,4", "--iters", "1",
                       "--reps", "3", "--backends", "reference,cpu_grouped")
    assert code == 0
    r, g = "reference", "cpu_grouped"
    assert order == [(r, 1), (g, 1), (r, 4), (g, 4),      # round 1: reference first
                     (g, 1), (r, 1), (g, 4), (r, 4),      # round 2: the other one first
                     (r, 1), (g, 1), (r, 4), (g, 4)]
    rows = {(line.split()[0], line.split()[1]): line.split() for line in out.splitlines()[2:]}
    assert rows[("4", "reference")][2:5] == ["2.000", "1.000", "3.000"]          # median, min, max (ms)
    assert rows[("4", "cpu_grouped")][-1] == "fastest"


def test_bench_plot_marks_the_chosen_backend_and_plain_token_labels(tmp_path: Path) -> None:
    from moe_oracle.cli import _plot

    stats = {name: {t: {"median": m * int(t), "min": m * int(t) * 0.9, "max": m * int(t) * 1.5}
                    for t in ("1", "16", "256")} for name, m in (("fast", 1.0), ("slow", 2.0))}
    payload = {"stats": stats, "chosen": {"1": "slow", "16": "fast", "256": "fast"}, "model": "tiny",
               "config": {"quant": "bf16"}, "device": "cpu", "device_name": "Test CPU", "date": "2026-12-06T00:00:00"}
    fig = _plot(payload, str(tmp_path / "p.png"))
    [ax] = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "16", "256"]
    [stars] = [c for c in ax.collections if c.get_label() == "chosen by moe-oracle"]
    assert stars.get_offsets().tolist() == [[1, 2.0], [16, 16.0], [256, 256.0]]   # slow at 1, fast after
    assert "chosen by moe-oracle" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_bench_plot_without_matplotlib_stops_before_any_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import moe_oracle.testing

    monkeypatch.setitem(sys.modules, "matplotlib", None)           # import matplotlib raises ImportError
    monkeypatch.setattr(moe_oracle.testing, "random_weights", lambda *a, **k: pytest.fail("benchmark started"))
    assert main(["bench", "--model", "tiny", "--tokens", "1", "--plot", str(tmp_path / "p.png")]) == 2
    assert ("error: --plot: needs matplotlib, which is not installed: pip install 'moe-oracle-core[plot]'"
            in capsys.readouterr().err)


def test_tune_triton_tables_need_a_gpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: tests/gpu runs moe-oracle tune for real")
    assert main(["tune", "--model", "qwen3-30b-a3b", "--tokens", "1", "--out", str(tmp_path)]) == 2
    assert "writes Triton launch configs, timed with CUDA graphs: it needs a CUDA or ROCm GPU" in \
        capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_tune_measures_per_bucket_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """On the CPU: every usable CPU backend per bucket, a table with ms and x floor, JSON, the cache."""
    import moe_oracle.oracle.measure as measure
    from moe_oracle.oracle.measured import clear_memo

    monkeypatch.setenv("MOE_ORACLE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(measure, "cpu_timer", lambda **kw: lambda cand, tokens, call: 1.0 + len(cand.label))
    clear_memo()
    try:
        code, out, err = run(capsys, "tune", "--model", "tiny", "--dtype", "fp32", "--buckets", "4",
                             "--json", str(tmp_path / "plan.json"))
    finally:
        clear_memo()
    assert code == 0, err
    assert "x floor" in out and "cpu_grouped *" in out and "1-4" in out and ">4" in out
    assert "] 2/" in err or "/" in err  # the progress bar
    data = json.loads((tmp_path / "plan.json").read_text())
    assert [p["source"] for p in data["plan"]] == ["measured", "measured"]
    assert any(r["chosen"] for r in data["table"])
    assert list((tmp_path / "cache" / "selection").glob("*.json"))


def test_tune_rejects_zero_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tune", "--model", "tiny", "--tokens", "0,1", "--out", str(tmp_path))
    assert (code, err) == (2, "error: --tokens: for tune must be positive\n")
