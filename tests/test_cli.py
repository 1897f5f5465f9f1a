"""The CLI as a user runs it: list, explain (table and JSON), run, bench, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moe_oracle.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_backend_and_why_not(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["backend", "package", "vendors", "format", "here"]
    by_name = {row.split()[0]: row for row in rows if row and not row.startswith("plugin")}
    assert "usable" in by_name["reference"] and "moe-oracle-core 0.1.0" in by_name["reference"]
    code, out, _ = run(capsys, "list", "--json", "--platform", "cuda:9.0")
    rows = json.loads(out)["backends"]
    assert {r["name"]: r["usable"] for r in rows}["reference"] is True


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
    code, _, _ = run(capsys, "bench", "--model", "tiny", "--dtype", "fp32", "--tokens", "1,4", "--iters", "1",
                       "--backends", "reference", "--json", str(out_json), "--plot", str(out_png))
    assert code == 0
    data = json.loads(out_json.read_text())
    assert set(data["ms"]["reference"]) == {"1", "4"} and data["config"]["quant"] == "fp32"
    assert out_png.stat().st_size > 1000


def test_tune_needs_a_gpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: tests/gpu runs moe-oracle tune for real")
    assert main(["tune", "--model", "qwen3-30b-a3b", "--tokens", "1", "--out", str(tmp_path)]) == 2
    assert "moe-oracle tune times the Triton experts with CUDA graphs and needs a CUDA or ROCm GPU" in \
        capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_tune_rejects_zero_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tune", "--model", "tiny", "--tokens", "0,1", "--out", str(tmp_path))
    assert (code, err) == (2, "error: --tokens: for tune must be positive\n")
