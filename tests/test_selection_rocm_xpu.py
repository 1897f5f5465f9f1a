"""Selection on ROCm and XPU with every installed package: merged orders, choices, reasons, the CLI,
and that each vendor package loads without the other vendors' packages or libraries.

Orders required by issue 5: ROCm ``aiter, triton, batched_triton, reference``; XPU ``xpu,
xpu_ipex, triton, reference`` (core's ``batched_triton`` also serves XPU and sits after
``triton``). They follow from ranks alone, so no package adds a hint for them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import moe_oracle
from moe_oracle import MoEConfig, ParallelConfig, Platform
from moe_oracle.cli import main
from moe_oracle.oracle.schemes import ORACLE_CLASSES

ROCM = {arch: Platform.simulate("rocm", arch=arch, libraries={"aiter": "0.1.7", "triton": "3.6.0"})
        for arch in ("gfx942", "gfx950")}
XPU = Platform.simulate("xpu", libraries={"vllm_xpu_kernels": "0.1.16", "triton": "3.6.0"})
XPU_IPEX = Platform.simulate("xpu", libraries={"vllm_xpu_kernels": "0.1.16", "triton": "3.6.0",
                                               "intel_extension_for_pytorch": "2.8.10+xpu", "torch": "2.8.0"})


def _explain(config: MoEConfig, platform: Platform) -> moe_oracle.SelectionReport:
    """A fresh oracle: the process-wide ones cache reports, and these tests change the environment."""
    return ORACLE_CLASSES[config.scheme.family]().explain(config, platform)


def _tiny(**kw: object) -> MoEConfig:
    return MoEConfig.preset("tiny", **kw)


def test_registry_holds_the_vendor_backends() -> None:
    names = moe_oracle.registry().names()
    assert {"aiter", "xpu", "xpu_ipex", "triton", "batched_triton", "reference"} <= set(names)
    reg = moe_oracle.registry()
    assert reg.get("aiter").distribution == "moe-oracle-rocm"
    assert reg.get("xpu").distribution == reg.get("xpu_ipex").distribution == "moe-oracle-xpu"


@pytest.mark.parametrize("scheme", ["bf16", "fp16", "fp8_tensor", "fp8_channel", "fp8_block"])
def test_rocm_order_and_choice(scheme: str) -> None:
    config = _tiny(quant=scheme, dtype="fp16" if scheme == "fp16" else "bf16")
    report = _explain(config, ROCM["gfx942"])
    assert report.order == ["aiter", "triton", "batched_triton", "reference"]
    assert report.chosen == "aiter"


def test_rocm_falls_back_to_triton_when_aiter_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOE_ORACLE_ROCM_AITER", "0")
    report = _explain(_tiny(quant="fp8_block"), ROCM["gfx942"])
    assert report.chosen == "triton"
    assert report.candidate("aiter").reason == "disabled by MOE_ORACLE_ROCM_AITER=0 (unset it or set 1 to enable)"


def test_rocm_without_aiter_installed() -> None:
    report = _explain(_tiny(), Platform.simulate("rocm", arch="gfx942"))
    assert report.candidate("aiter").reason == "aiter not installed (pip install amd-aiter)"
    assert report.chosen == "triton"


@pytest.mark.parametrize(("arch", "scheme", "activation", "chosen"), [
    ("gfx950", "mxfp4", "swigluoai", "aiter"),
    ("gfx942", "mxfp4", "swigluoai", "triton"),             # no AITER mxfp4 on gfx942: Triton's mixed-input GEMM
    ("gfx950", "mxfp4_a8", "swigluoai", "aiter"),
    ("gfx942", "w4a8_fp8", "silu", "aiter"),
    ("gfx950", "w4a8_fp8", "silu", "triton"),               # no AITER w4a8 on gfx950: Triton as int4_w4a16
])
def test_rocm_arch_specific_schemes(arch: str, scheme: str, activation: str, chosen: str) -> None:
    assert _explain(_tiny(quant=scheme, activation=activation), ROCM[arch]).chosen == chosen


def test_rocm_batched_format_goes_to_batched_triton() -> None:
    config = _tiny(parallel=ParallelConfig(ep_size=2, dp_size=2, all2all="deepep_low_latency"))
    report = _explain(config, ROCM["gfx942"])
    assert report.chosen == "batched_triton"
    assert report.candidate("aiter").reason == (
        "takes the standard activation format, all2all='deepep_low_latency' gives batched")


def test_xpu_order_and_choice() -> None:
    report = _explain(_tiny(), XPU_IPEX)
    assert [n for n in report.order if n != "batched_triton"] == ["xpu", "xpu_ipex", "triton", "reference"]
    assert report.order.index("batched_triton") == report.order.index("triton") + 1
    assert report.chosen == "xpu"
    assert _explain(_tiny(), Platform.simulate("xpu", libraries={
        "intel_extension_for_pytorch": "2.8.10", "torch": "2.8.0"})).chosen == "xpu_ipex"


@pytest.mark.parametrize(("scheme", "chosen"), [("fp8_tensor", "xpu"), ("mxfp8", "xpu"), ("int4_w4a16", "xpu"),
                                                ("fp8_block", "triton"), ("int8_w8a8", "triton")])
def test_xpu_schemes(scheme: str, chosen: str) -> None:
    assert _explain(_tiny(quant=scheme), XPU).chosen == chosen


@pytest.mark.parametrize(("here", "accepted"), [("2.9.1", False), ("2.8.0+xpu", True)])
def test_xpu_ipex_needs_torch_28_when_this_torch_is_used(monkeypatch: pytest.MonkeyPatch, here: str,
                                                         accepted: bool) -> None:
    """Without a torch entry the platform means this process's torch; pinned here, not read from the machine."""
    import torch

    monkeypatch.setattr(torch, "__version__", here)
    platform = Platform.simulate("xpu", libraries={"intel_extension_for_pytorch": "2.8.10"})
    candidate = _explain(_tiny(), platform).candidate("xpu_ipex")
    if accepted:
        assert candidate.status in ("selected", "usable"), candidate.reason
    else:
        assert candidate.reason.startswith(f"intel_extension_for_pytorch 2.8.10 needs torch 2.8.*, have torch {here}")


def test_vendor_backends_are_absent_from_other_vendors() -> None:
    report = _explain(_tiny(), Platform.simulate("cuda", capability=(9, 0)))
    assert not {"aiter", "xpu", "xpu_ipex"} & set(report.order)
    assert ("aiter", "rocm") in report.other_vendors and ("xpu", "xpu") in report.other_vendors


def test_cli_explain_rocm(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explain", "--model", "deepseek-v3", "--quant", "fp8_block", "--platform", "rocm:gfx942,aiter=0.1.7"])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line.split()[1] for line in out.splitlines() if line[:1].isdigit()]
    assert rows == ["aiter", "triton", "batched_triton", "reference"]
    assert "chosen: aiter" in out and "moe-oracle-rocm" in out


def test_cli_explain_xpu(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explain", "--model", "deepseek-v3", "--quant", "fp8_block", "--platform", "xpu,vllm_xpu_kernels=0.1.16"])
    out = capsys.readouterr().out
    assert code == 0
    rows = {line.split()[1]: line for line in out.splitlines() if line[:1].isdigit()}
    assert list(rows) == ["xpu", "triton", "batched_triton", "reference"]   # xpu_ipex serves no fp8 scheme
    assert rows["xpu"].rstrip().endswith("does not support scheme fp8_block")
    assert "chosen: triton" in out


def test_cli_list_shows_vendor_backends_not_usable_here(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--platform", "cpu", "--wide"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "not usable here: serves rocm, not cpu" in lines["aiter"]
    assert "not usable here: serves xpu, not cpu" in lines["xpu"]
    assert "not usable here: serves xpu, not cpu" in lines["xpu_ipex"]


@pytest.mark.parametrize(("package", "absent"), [
    ("moe_oracle_rocm", ["moe_oracle_xpu", "moe_oracle_cuda", "moe_oracle_cpu", "aiter"]),
    ("moe_oracle_xpu", ["moe_oracle_rocm", "moe_oracle_cuda", "moe_oracle_cpu", "vllm_xpu_kernels",
                        "intel_extension_for_pytorch"]),
])
def test_each_package_loads_alone(package: str, absent: list[str]) -> None:
    code = textwrap.dedent(f"""
        import importlib, sys
        module = importlib.import_module({package!r})
        specs = module.backends()
        for spec in specs:
            spec.load_converter()
        loaded = sorted(name for name in {absent!r} if name in sys.modules)
        print(len(specs), loaded)
    """)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    count, loaded = out.split(" ", 1)
    assert int(count) >= 1 and loaded.strip() == "[]"
