"""``moe_oracle.triton.tune``: the candidate pruning, the search and the file it writes (the search
runs here with a stand-in for the GPU timing; ``tests/gpu`` and ``moe-oracle tune`` run it for real)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from moe_oracle import MoEConfig
from moe_oracle.triton import configs
from moe_oracle.triton.configs import LayerConfigs, TritonConfig, default_configs
from moe_oracle.triton.tune import TunedPoint, candidates, tune, write_configs

QWEN3 = MoEConfig.preset("qwen3-30b-a3b")
DSV3_FP8 = MoEConfig.preset("deepseek-v3", quant="fp8_block")


@pytest.mark.parametrize("config", [QWEN3, DSV3_FP8], ids=["qwen3", "dsv3_fp8_block"])
@pytest.mark.parametrize("tokens", [1, 64, 1024, 8192])
def test_candidates_respect_the_hardware_limits(config: MoEConfig, tokens: int) -> None:
    for gemm in ("w13", "w2"):
        found = candidates(config, tokens, gemm)
        assert found and len(set(found)) == len(found)
        for c in found:
            gated = 2 if gemm == "w13" else 1
            assert c.block_m * c.block_n * gated <= 128 * 256                 # accumulators fit the registers
            assert c.split_k == 1 or (gemm == "w2" and tokens * config.top_k / config.num_experts <= 8)
            if config.scheme.weight is not None:
                assert c.block_k <= 128                                      # one 128-wide scale block per step


def _fake(best: LayerConfigs) -> tuple[list[tuple[LayerConfigs, int]], Callable[[LayerConfigs, int], float]]:
    """A timing where ``best``'s w13 costs 1 ms and any other 2 ms, plus 0.5 ms for any w2 but ``best``'s;
    it records its calls."""
    calls: list[tuple[LayerConfigs, int]] = []

    def measure(layer: LayerConfigs, tokens: int) -> float:
        calls.append((layer, tokens))
        return (1.0 if layer.w13 == best.w13 else 2.0) + (0.0 if layer.w2 == best.w2 else 0.5)

    return calls, measure


def test_search_finds_the_fastest_pair_from_the_default() -> None:
    w13 = candidates(QWEN3, 16, "w13")[3]
    w2 = candidates(QWEN3, 16, "w2")[2]
    calls, measure = _fake(LayerConfigs(w13, w2))
    lines: list[str] = []
    (point,) = tune(QWEN3, [16], measure=measure, progress=lines.append)
    assert point.configs == LayerConfigs(w13, w2) and point.ms == 1.0
    assert point.default_ms == 2.5 and calls[0] == (default_configs(QWEN3, 16), 16)
    assert len(calls) == 1 + len(candidates(QWEN3, 16, "w13")) + len(candidates(QWEN3, 16, "w2"))
    assert lines and lines[0].startswith("M=16: 1.0000 ms (default 2.5000 ms")


def test_search_keeps_the_default_when_nothing_beats_it() -> None:
    (point,) = tune(QWEN3, [1], measure=lambda layer, m: 1.0 if layer == default_configs(QWEN3, 1) else float("inf"))
    assert point.configs == default_configs(QWEN3, 1) and point.ms == point.default_ms == 1.0


def test_written_file_is_what_the_lookup_reads_and_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = TritonConfig(block_m=16, block_n=64, block_k=128, group_m=1, num_warps=4, num_stages=4)
    first = write_configs(QWEN3, [TunedPoint(1, LayerConfigs(fast, fast), 0.1, 0.2)], tmp_path, "NVIDIA H100 80GB HBM3")
    second = TunedPoint(256, default_configs(QWEN3, 256), 0.5, 0.5)
    assert write_configs(QWEN3, [second], tmp_path, "NVIDIA H100 80GB HBM3") == first
    monkeypatch.setenv(configs.ENV_DIR, str(tmp_path))
    configs._load.cache_clear()
    try:
        table = configs.tuned_configs(QWEN3, "NVIDIA H100 80GB HBM3")
    finally:
        configs._load.cache_clear()
    assert table == {1: LayerConfigs(fast, fast), 256: default_configs(QWEN3, 256)}
