"""The package as a plugin: its entry point, and the CPU order that its hints produce."""

from __future__ import annotations

import dataclasses

import pytest

from moe_oracle import MoEConfig, MoELayer, Platform, explain, registry
from moe_oracle.testing import assert_close, random_inputs, random_weights, reference_moe, route
from moe_oracle_cpu import backends

QWEN3 = MoEConfig.preset("qwen3-30b-a3b")
AMX = Platform.simulate("cpu", features=("intel", "avx512", "amx"), libraries={"sgl_kernel": "0.3.21"})
ZEN = Platform.simulate("cpu", features=("amd", "avx512", "avx512_bf16"), libraries={"zentorch": "2.13.0.1", "torch": "2.13.0"})
ZEN_AVX2 = Platform.simulate("cpu", features=("amd", "avx2", "fma", "f16c"),
                             libraries={"zentorch": "2.13.0.1", "torch": "2.13.0"})
PLAIN = Platform.simulate("cpu", features=("avx2",))
# This machine's CPU and libraries, also where the machine has a GPU (CPU tensors run on the CPU).
HERE = dataclasses.replace(Platform.detect(), vendor="cpu", capability=None, arch=None)


def test_entry_point_registers_the_three_backends() -> None:
    reg = registry()
    assert not [f for f in reg.failures if f.distribution == "moe-oracle-cpu"]
    for name in ("cpu_amx", "cpu_zentorch", "cpu_grouped"):
        assert reg.get(name).distribution == "moe-oracle-cpu"
    assert [item.name for item in backends() if hasattr(item, "name")] == ["cpu_amx", "cpu_zentorch", "cpu_grouped"]


def _order(config: MoEConfig, platform: Platform) -> list[tuple[str, str]]:
    report = explain(config, platform)
    return [(c.name, c.status) for c in report.candidates if c.name.startswith("cpu_") or c.name == "reference"]


ZEN_FIRST = ["cpu_amx", "cpu_zentorch", "cpu_grouped", "reference"]
GROUPED_FIRST = ["cpu_amx", "cpu_grouped", "cpu_zentorch", "reference"]


@pytest.mark.parametrize(("platform", "native", "order", "chosen"), [
    (AMX, "1", ZEN_FIRST, "cpu_amx"),              # no avx512_bf16 in this simulation: no native bf16 kernel
    (ZEN, "1", GROUPED_FIRST, "cpu_grouped"),      # native kernels measured faster than zentorch
    (ZEN, "0", ZEN_FIRST, "cpu_zentorch"),         # switched off: oneDNN cpu_grouped, slower than zentorch
    (ZEN_AVX2, "1", ZEN_FIRST, "cpu_grouped"),     # zentorch's bf16 is wrong without AVX512-BF16: rejected
    (PLAIN, "1", ZEN_FIRST, "cpu_grouped"),
])
def test_order_on_cpus(monkeypatch: pytest.MonkeyPatch, platform: Platform, native: str, order: list[str],
                       chosen: str) -> None:
    monkeypatch.setenv("MOE_ORACLE_CPU_NATIVE", native)
    got = _order(QWEN3, platform)
    assert [name for name, _ in got] == order
    assert dict(got)[chosen] == "selected"
    assert explain(QWEN3, platform).chosen == chosen


def test_zentorch_keeps_fp32_on_avx2() -> None:
    assert explain(QWEN3.replace(dtype="fp32"), ZEN_AVX2).chosen == "cpu_zentorch"


def test_explain_names_the_gemm_path_and_the_missing_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an AVX2-only CPU: the AVX2 build runs; switched off, the torch path in fp32, and why."""
    def note(platform: Platform, **changes: object) -> str:
        rows = {c.name: c for c in explain(QWEN3.replace(**changes), platform).candidates}
        return rows["cpu_grouped"].reason

    assert note(ZEN_AVX2) == "native vec_avx2 kernels"
    skylake = Platform.simulate("cpu", features=("intel", "avx512", "avx2", "fma"))
    assert note(skylake) == "native vec_avx512 kernels (the hand-written AVX-512 bf16 kernel needs avx512_bf16)"
    monkeypatch.setenv("MOE_ORACLE_CPU_NATIVE", "0")
    assert note(ZEN_AVX2) == ("per-expert torch GEMMs in float32: MOE_ORACLE_CPU_NATIVE=0 turns the native kernels "
                              "off; oneDNN has no bf16 GEMMs on this CPU (onednn_bf16 missing)")
    assert note(ZEN_AVX2, dtype="fp32") == "oneDNN-packed GEMMs: MOE_ORACLE_CPU_NATIVE=0 turns the native kernels off"
    monkeypatch.setenv("MOE_ORACLE_CPU_NATIVE", "avx512")
    assert "MOE_ORACLE_CPU_NATIVE=avx512 needs the CPU features avx512, which this CPU lacks" in note(ZEN_AVX2)


def test_native_order_needs_a_native_config() -> None:
    """H not a multiple of 64: no native kernels, so zentorch keeps its place."""
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=96, intermediate_size=64)
    assert explain(config, ZEN).chosen == "cpu_zentorch"


def test_quantized_schemes_fall_to_cpu_grouped_everywhere() -> None:
    config = MoEConfig.preset("qwen3-30b-a3b", quant="int4_w4a16")
    for platform in (AMX, ZEN, PLAIN):
        assert explain(config, platform).chosen == "cpu_grouped"


def test_every_cpu_hint_has_a_reason_and_a_source() -> None:
    report = explain(QWEN3, AMX)
    hints = {c.name: c.hints for c in report.candidates}
    assert any("AMX tiles" in h.reason for h in hints["cpu_amx"])
    assert any("measured by bench/cpu_moe.py" in h.reason for h in hints["cpu_zentorch"])
    zen = {c.name: c.hints for c in explain(QWEN3, ZEN).candidates}           # where the native kernels run
    assert any("measured by bench/cpu_moe.py" in h.reason for h in zen["cpu_grouped"])
    for name in ("cpu_amx", "cpu_zentorch", "cpu_grouped"):
        assert all(h.source == "moe-oracle-cpu" and h.reason for h in hints[name])


def test_not_offered_on_gpus() -> None:
    report = explain(QWEN3, Platform.simulate("cuda", capability=(9, 0)))
    assert {n for n, _ in report.other_vendors} >= {"cpu_amx", "cpu_zentorch", "cpu_grouped"}


@pytest.mark.parametrize(("backend", "quant"), [("cpu_grouped", "bf16"), ("cpu_grouped", "mxfp4"), (None, "bf16")])
def test_moe_layer_runs_the_cpu_backends(backend: str | None, quant: str) -> None:
    """Through the public API: select (or force), load canonical weights, route, run."""
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=128, intermediate_size=64, quant=quant)
    layer = MoELayer(config, backend=backend, platform=HERE)
    if backend is None:
        assert layer.backend.startswith("cpu_")                                 # whichever this CPU picks
    weights = random_weights(config, seed=0)
    layer.load_weights(**dict(weights.items()))
    hidden, logits = random_inputs(config, 11, seed=1)
    topk_weights, topk_ids = route(logits, config)
    assert_close(layer(hidden, logits), reference_moe(config, weights, hidden, topk_weights, topk_ids), config=config)
