"""Launch-config lookup (tuned files by device and shape, nearest M, search order) and the
Triton backends' specs (vendors, interpreter, fp8 hardware)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import moe_oracle
from moe_oracle import MoEConfig, ParallelConfig, Platform
from moe_oracle.triton import configs
from moe_oracle.triton.configs import LayerConfigs, TritonConfig, default_configs, file_name_for, get_configs

DEVICE = "NVIDIA H100 80GB HBM3"


def _write(directory: Path, config: MoEConfig, entries: dict[int, tuple[dict, dict]]) -> Path:
    path = directory / file_name_for(config, DEVICE)
    path.write_text(json.dumps({"device": DEVICE, "configs": {
        str(m): {"w13": a, "w2": b} for m, (a, b) in entries.items()}}))
    return path


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    configs._load.cache_clear()


def test_file_name_follows_device_shape_and_scheme() -> None:
    config = MoEConfig(num_experts=256, top_k=8, hidden_size=7168, intermediate_size=2048, quant="fp8_block")
    assert file_name_for(config, DEVICE) == ("E=256,N=2048,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_block,"
                                             "block_shape=[128,128].json")
    sharded = MoEConfig(num_experts=8, top_k=2, hidden_size=4096, intermediate_size=14336,
                        parallel=ParallelConfig(tp_size=2))
    assert file_name_for(sharded, DEVICE) == "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=bf16.json"


def test_nearest_token_count_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=256, intermediate_size=512)
    small = {"block_m": 16, "block_n": 32, "block_k": 256, "group_m": 1, "num_warps": 4, "num_stages": 5}
    large = {"block_m": 128, "block_n": 128, "block_k": 64, "num_warps": 8, "split_k": 1}
    _write(tmp_path, config, {1: (small, small), 1024: (large, large)})
    monkeypatch.setenv(configs.ENV_DIR, str(tmp_path))
    assert get_configs(config, 3, DEVICE).w13 == TritonConfig(**small)
    assert get_configs(config, 900, DEVICE).w2 == TritonConfig(**large)
    assert get_configs(config, 64, "NVIDIA A100") == default_configs(config, 64)


@pytest.mark.parametrize(("entry", "why"), [
    ({"w13": {"block_m": 16, "block_n": 32, "block_k": 64}}, "KeyError: 'w2'"),
    ({"w13": {"block_m": 24, "block_n": 32, "block_k": 64}, "w2": {"block_m": 16, "block_n": 32, "block_k": 64}},
     "ValueError: TritonConfig.block_m: expected a power of two in [16, 256], got 24"),
])
def test_malformed_tuned_file_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             entry: dict[str, object], why: str) -> None:
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=256, intermediate_size=384)
    (tmp_path / file_name_for(config, DEVICE)).write_text(json.dumps({"configs": {"1": entry}}))
    monkeypatch.setenv(configs.ENV_DIR, str(tmp_path))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / file_name_for(config, DEVICE)}: expected a tuned "
                                                   f"config file {configs._FILE_SHAPE}, got {why}")):
        get_configs(config, 1, DEVICE)


@pytest.mark.parametrize(("device", "tuned_on", "note"), [
    ("NVIDIA H200", "NVIDIA H200", "launch configs tuned on NVIDIA H200"),
    ("NVIDIA H200 NVL", "NVIDIA H200", "launch configs tuned on NVIDIA H200 (NVIDIA H200 NVL is in its H200 family)"),
    ("NVIDIA GH200 480GB", "NVIDIA H200", "launch configs tuned on NVIDIA H200 (NVIDIA GH200 480GB is in its H200 family)"),
    ("NVIDIA H100 PCIe", DEVICE, f"launch configs tuned on {DEVICE} (NVIDIA H100 PCIe is in its H100 family)"),
    ("NVIDIA H800", DEVICE, f"launch configs tuned on {DEVICE} (NVIDIA H800 is in its H100 family)"),
    ("NVIDIA A100-SXM4-80GB", None, "heuristic launch configs (no tuned table for NVIDIA A100-SXM4-80GB; "
                                    "moe-oracle tune writes one)"),
])
def test_a_device_family_shares_its_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str,
                                           tuned_on: str | None, note: str) -> None:
    """An H200 NVL or GH200 runs the H200's tables, an H100 PCIe or H800 the H100 SXM's; explain says which."""
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=256, intermediate_size=512)
    h100 = {"block_m": 16, "block_n": 32, "block_k": 256}
    h200 = {"block_m": 16, "block_n": 64, "block_k": 128}
    _write(tmp_path, config, {1: (h100, h100)})
    (tmp_path / file_name_for(config, "NVIDIA H200")).write_text(json.dumps({"configs": {"1": {"w13": h200, "w2": h200}}}))
    monkeypatch.setenv(configs.ENV_DIR, str(tmp_path))
    table = configs.tuned_table(config, device)
    assert (table.tuned_on if table else None) == tuned_on
    if tuned_on:
        assert get_configs(config, 1, device).w13 == TritonConfig(**(h200 if "H200" in tuned_on else h100))
    assert configs.describe_configs(config, device) == note
    platform = Platform.simulate("cuda", capability=(9, 0), device_name=device)
    assert moe_oracle.explain(config, platform).candidate("triton").reason == note


def test_environment_directory_comes_before_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(configs.ENV_DIR, str(tmp_path))
    assert configs.search_dirs()[0] == tmp_path


def test_shipped_files_parse() -> None:
    """Every tuned file a vendor package ships loads into configs."""
    files = [f for d in configs.search_dirs() if d.is_dir() for f in d.glob("E=*.json")]
    for f in files:
        table = configs._load(f.name, (f.parent,))
        assert table and all(isinstance(v, LayerConfigs) for v in table.values()), f


@pytest.mark.parametrize(("field", "value", "message"), [
    ("block_m", 24, r"TritonConfig.block_m: expected a power of two in \[16, 256\], got 24"),
    ("num_stages", 0, r"TritonConfig.num_stages: expected an int in \[1, 8\], got 0"),
    ("group_m", 0, r"TritonConfig.group_m: expected a positive int, got 0"),
])
def test_config_validation(field: str, value: int, message: str) -> None:
    args = {"block_m": 16, "block_n": 64, "block_k": 64, field: value}
    with pytest.raises(ValueError, match=message):
        TritonConfig(**args)


@pytest.mark.parametrize(("quant", "tokens"), [("bf16", 1), ("bf16", 4096), ("fp8_block", 1), ("fp8_block", 4096),
                                               ("int4_w4a16_g32", 64)])
def test_default_configs_fit_the_scheme(quant: str, tokens: int) -> None:
    config = MoEConfig(num_experts=256, top_k=8, hidden_size=7168, intermediate_size=2048, quant=quant)
    cfg = default_configs(config, tokens)
    if quant == "fp8_block":
        assert 128 % cfg.w13.block_k == 0 and 128 % cfg.w2.block_k == 0
    assert cfg.w13.block_m == (16 if tokens == 1 else cfg.w13.block_m)


@pytest.mark.parametrize("quant", ["fp32", "bf16", "fp8_block", "int8_w8a16"])
@pytest.mark.parametrize("tokens", [1, 64, 1024, 4096])
def test_default_configs_fit_shared_memory(quant: str, tokens: int) -> None:
    """fp32 tiles hold twice the bytes: the heuristic shrinks them under the limit (an H100 refused
    a 240 KiB fp32 decode tile)."""
    dtype = "fp32" if quant == "fp32" else "bf16"
    config = MoEConfig(num_experts=16, top_k=4, hidden_size=1024, intermediate_size=768, dtype=dtype, quant=quant)
    cfg = default_configs(config, tokens)
    a_bytes = 1 if config.scheme.activation is not None else config.dtype.itemsize
    b_bytes = 1 if config.scheme.weight is not None else config.dtype.itemsize
    assert configs.shared_memory(cfg.w13, a_bytes, b_bytes, gated=True) <= configs.SHARED_MEMORY_BYTES
    assert configs.shared_memory(cfg.w2, a_bytes, b_bytes, gated=False) <= configs.SHARED_MEMORY_BYTES


# Specs -------------------------------------------------------------------------------------------
CONFIG = MoEConfig(num_experts=8, top_k=2, hidden_size=256, intermediate_size=512)


def _candidate(config: MoEConfig, platform: Platform, name: str = "triton"):
    return moe_oracle.explain(config, platform).candidate(name)


def test_triton_is_chosen_on_gpus() -> None:
    for platform in (Platform.simulate("cuda", capability=(9, 0), libraries={"triton": "3.6.0"}),
                     Platform.simulate("rocm", arch="gfx942"), Platform.simulate("xpu")):
        assert _candidate(CONFIG, platform).status in ("selected", "usable"), platform


def test_cpu_needs_the_interpreter() -> None:
    plain = Platform.simulate("cpu", libraries={"triton": "3.6.0"})
    assert _candidate(CONFIG, plain).reason == "needs TRITON_INTERPRET=1 on cpu"
    interpreted = Platform.simulate("cpu", libraries={"triton": "3.6.0"}, triton_interpreter=True)
    row = _candidate(CONFIG, interpreted)
    assert row.status in ("selected", "usable") and "Triton interpreter" in row.reason
    assert row.rank == 900_000


def test_triton_must_be_installed() -> None:
    platform = Platform.simulate("cuda", capability=(9, 0), libraries={})
    assert _candidate(CONFIG, platform).reason == "triton not installed (pip install triton)"


@pytest.mark.parametrize(("platform", "why"), [
    (Platform.simulate("cuda", capability=(8, 0)), "no fp8 MMA below capability 8.9, have 8.0"),
    (Platform.simulate("rocm", arch="gfx1100"), "no fp8 MMA off arch gfx9/gfx12, have gfx1100"),
])
def test_fp8_without_fp8_hardware_is_weight_only(platform: Platform, why: str) -> None:
    candidate = _candidate(CONFIG.replace(quant="fp8_block"), platform)
    assert candidate.status in ("selected", "usable") and candidate.served_scheme == "fp8_block_a16"
    assert candidate.reason.endswith(f"serves fp8_block at higher activation precision (bf16) as fp8_block_a16: {why}")
    assert _candidate(CONFIG, platform).served_scheme is None


def test_batched_triton_takes_the_batched_format() -> None:
    platform = Platform.simulate("cuda", capability=(9, 0))
    batched = CONFIG.replace(parallel=ParallelConfig(ep_size=2, all2all="deepep_low_latency"))
    assert moe_oracle.explain(batched, platform).chosen == "batched_triton"
    assert _candidate(CONFIG, platform, "batched_triton").status == "rejected"


def test_vendor_config_packages_are_scanned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scanning every distribution's entry points took 28 ms per forward on the H100 before this
    was cached: more than the whole decode step."""
    from moe_oracle.triton import configs as cfgs

    cfgs.package_dirs.cache_clear()
    calls: list[object] = []
    real = cfgs.metadata.entry_points
    monkeypatch.setattr(cfgs.metadata, "entry_points", lambda **kw: calls.append(kw) or real(**kw))
    first = cfgs.search_dirs()
    assert [cfgs.search_dirs() for _ in range(3)] == [first] * 3
    assert calls == [{"group": cfgs.ENTRY_POINT_GROUP}]
