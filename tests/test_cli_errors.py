"""Every subcommand with bad arguments (issue 13, item 8): one ``error:`` line, never a traceback;
exit 2 for usage and configuration errors, 1 for failures at run time; output paths are checked
before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moe_oracle.cli import MAX_TOKENS, main

TINY = ("--model", "tiny", "--dtype", "fp32")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` as the console script runs it; an exception escaping ``main`` fails the test."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines, err
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    binary = tmp_path / "binary" / "config.json"
    binary.parent.mkdir()
    binary.write_bytes(b"\x00\xff\xfe\x01")
    utf16 = tmp_path / "utf16.json"
    utf16.write_bytes(json.dumps({"model_type": "mixtral"}).encode("utf-16"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {"binary": binary, "utf16": utf16, "file": a_file, "tmp": tmp_path}


@pytest.mark.parametrize(("argv", "message"), [
    (("list", "--platform", "tpu"), "unknown vendor 'tpu'"),
    (("explain", "--model", "nope"), "argument --model: invalid choice: 'nope'"),
    (("explain", *TINY, "--quant", "fp7"), "argument --quant: invalid choice: 'fp7'"),
    (("explain", "--hf-config", "/definitely/missing"), "error: source: no config.json at /definitely/missing"),
    (("explain", *TINY, "--tp", "0"), "error: parallel.tp_size: must be a positive int, got 0"),
    (("explain", *TINY, "--tp", "3"), "error: intermediate_size: 512 is not divisible by tp_size=3"),
    (("explain", *TINY, "--tp", "x"), "argument --tp: invalid int value: 'x'"),
    (("explain", *TINY, "--backend", "warp"), "error: backend= argument: unknown backend 'warp'"),
    (("explain", *TINY, "--exclude", "3"), "error: exclude= argument: unknown backend '3'"),
    (("explain", *TINY, "--platform", "cuda:nine"), "error: "),
    (("run", *TINY, "--device", "nope"), "error: --device: 'nope' is not a torch device"),
    (("run", *TINY, "--tokens", str(10 ** 30)), f"error: --tokens: at most {MAX_TOKENS} tokens per call, got 1"),
    (("run", *TINY, "--tokens", "-1"), "error: --tokens: needs non-negative integers, got '-1'"),
    (("run", *TINY, "--tokens", ","), "error: --tokens: needs non-negative integers, got ','"),
    (("run", *TINY, "--seed", "-1"), "error: --seed: must be in [0, 2**63), got -1"),
    (("run", *TINY, "--seed", str(2 ** 70)), "error: --seed: must be in [0, 2**63), got 1180591620717411303424"),
    (("run", *TINY, "--backend", "warp"), "error: backend= argument: unknown backend 'warp'"),
    (("run", *TINY, "--ep", "2", "--all2all", "torch"), "error: parallel.all2all: 'torch' dispatches tokens"),
    (("bench", *TINY, "--json", "/missing/dir/x.json"),
     "error: --json: cannot write /missing/dir/x.json: folder /missing/dir does not exist"),
    (("bench", *TINY, "--plot", "/missing/dir/x.png"),
     "error: --plot: cannot write /missing/dir/x.png: folder /missing/dir does not exist"),
    (("bench", *TINY, "--backends", "warp"), "error: backend: unknown backend 'warp'"),
    (("bench", *TINY, "--backends", ","), "error: --backends: names no backend: ','"),
    (("bench", *TINY, "--tokens", "1e3"), "error: --tokens: must be comma-separated integers, got '1e3'"),
    (("tune", *TINY, "--out", "/x", "--rep-ms", "0"), "error: --rep-ms: must be positive, got 0"),
    (("tune", *TINY, "--out", "/x", "--tokens", "x"), "error: --tokens: must be comma-separated integers, got 'x'"),
    (("tune", "--out", "/x"), "one of the arguments --model --hf-config is required"),
    (("nope",), "argument COMMAND: invalid choice: 'nope'"),
])
def test_bad_arguments_are_one_line_usage_errors(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
                                                 message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert message in err, err
    assert not out.strip() or argv[0] == "explain"  # no work was done (no table, no timings)


@pytest.mark.parametrize(("name", "message"), [
    ("binary", "is not UTF-8 text (byte 1: invalid start byte); config.json files are UTF-8 JSON"),
    ("utf16", "is not UTF-8 text (byte 0: invalid start byte); config.json files are UTF-8 JSON"),
])
@pytest.mark.parametrize("command", ["explain", "run", "bench"])
def test_undecodable_hf_config(capsys: pytest.CaptureFixture[str], files: dict[str, Path], name: str, message: str,
                               command: str) -> None:
    line = usage_error(capsys, command, "--hf-config", str(files[name]))
    assert line.startswith("error: source: ") and line.endswith(message)


def test_output_paths_are_checked_before_the_benchmark(capsys: pytest.CaptureFixture[str],
                                                       files: dict[str, Path]) -> None:
    tmp = files["tmp"]
    assert usage_error(capsys, "bench", *TINY, "--json", str(tmp)) == f"error: --json: {tmp} is a folder; give a file name"
    line = usage_error(capsys, "tune", *TINY, "--out", str(files["file"] / "sub"))
    assert line == f"error: --out: cannot create {files['file'] / 'sub'}: {files['file']} exists and is not a folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that sees no CUDA device")
def test_cuda_device_on_a_cpu_only_machine(capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(capsys, "run", *TINY, "--device", "cuda")
    assert line.startswith("error: --device: cuda is not usable here: ")


def test_failures_at_run_time_exit_1_in_one_line(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from moe_oracle.layer import MoELayer

    def broken(self: MoELayer, *args: object) -> None:
        raise RuntimeError("kernel launch failed\nwith a second line")

    monkeypatch.setattr(MoELayer, "forward", broken)
    code, _, err = run(capsys, "run", *TINY, "--tokens", "1", "--iters", "1")
    assert code == 1
    assert err == "error: RuntimeError: kernel launch failed\n"


def test_run_checks_against_the_reference_even_when_the_environment_excludes_it(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOE_ORACLE_EXCLUDE", "reference")
    code, out, err = run(capsys, "run", *TINY, "--tokens", "1", "--iters", "1")
    assert code == 0, err
    assert "override exclude: reference (from MOE_ORACLE_EXCLUDE)" in out and "PASS" in out


def test_console_script_prints_no_traceback(files: dict[str, Path]) -> None:
    """The real process: exit status and stderr as a shell sees them."""
    proc = subprocess.run([sys.executable, "-m", "moe_oracle.cli", "run", *TINY, "--device", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --device: 'nope' is not a torch device") and "Traceback" not in proc.stderr
