"""Triton experts on a CUDA GPU (compiled kernels): every scheme against the reference on realistic
shapes, bf16 included (the interpreter cannot check it), the batched format, CUDA-graph capture,
the shipped tuned configs and ``moe-oracle tune``. Skipped without CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
pytest.importorskip("triton")

from moe_oracle import FusedMoEKernel, MoEConfig, ParallelConfig, oracle_for  # noqa: E402
from moe_oracle.kernel.weights import canonical_kernel_weights  # noqa: E402
from moe_oracle.router import route  # noqa: E402
from moe_oracle.testing import assert_close, assert_graph_replay_equals_eager, random_inputs, random_weights, reference_moe  # noqa: E402

DEV = "cuda"
FP8_SCHEMES = ("fp8_tensor", "fp8_tensor_static", "fp8_channel", "fp8_block")


def _experts(config: MoEConfig, weights, backend: str = "triton"):
    from moe_oracle.triton.experts import BatchedTritonExperts, TritonExperts

    cls = TritonExperts if backend == "triton" else BatchedTritonExperts
    kw = canonical_kernel_weights(weights, config, backend=backend)
    return cls(config, oracle_for(config).make_quant_config(config, kw), kw)


def _fp8_ok() -> bool:
    return torch.cuda.get_device_capability() >= (8, 9)


def _check(config: MoEConfig, tokens: int, *, seed: int = 0, expert_map: torch.Tensor | None = None) -> None:
    weights = random_weights(config, seed=seed, device=DEV)
    hidden, logits = random_inputs(config, tokens, seed=seed + 1, device=DEV)
    topk_weights, topk_ids = route(logits, config)
    expected = reference_moe(config, weights, hidden, topk_weights, topk_ids, expert_map=expert_map)
    out = _experts(config, weights).apply(hidden, topk_weights, topk_ids, expert_map=expert_map)
    assert_close(out, expected, config=config, name=f"triton {config.scheme.name} T={tokens}")


@pytest.mark.parametrize("tokens", [1, 7, 64, 300])
@pytest.mark.parametrize("quant", [
    "bf16", "fp16", "fp32", *FP8_SCHEMES, "int8_w8a8", "int8_w8a16",
    "int4_w4a16", "int4_w4a16_g64_zp", "int4_w4a16_g32", "int8_w8a16_group", "int8_w8a16_group_g64_zp",
])
def test_scheme_matches_reference(quant: str, tokens: int) -> None:
    if quant in FP8_SCHEMES and not _fp8_ok():
        pytest.skip("fp8 needs capability >= 8.9")
    dtype = {"fp16": torch.float16, "fp32": torch.float32}.get(quant, torch.bfloat16)
    _check(MoEConfig(num_experts=16, top_k=4, hidden_size=1024, intermediate_size=768, dtype=dtype, quant=quant),
           tokens)


@pytest.mark.parametrize(("activation", "gated"), [("silu", True), ("gelu", True), ("swigluoai", True),
                                                    ("relu2", False)])
def test_activations_with_bias_bf16(activation: str, gated: bool) -> None:
    _check(MoEConfig(num_experts=8, top_k=2, hidden_size=512, intermediate_size=384, activation=activation,
                     is_gated=gated, has_bias=True), 33)


def test_expert_map_fp8_block() -> None:
    if not _fp8_ok():
        pytest.skip("fp8 needs capability >= 8.9")
    config = MoEConfig(num_experts=32, top_k=8, hidden_size=1024, intermediate_size=512, quant="fp8_block",
                       parallel=ParallelConfig(ep_size=4, ep_rank=2))
    expert_map = torch.full((32,), -1, dtype=torch.int32, device=DEV)
    expert_map[16:24] = torch.arange(8, dtype=torch.int32, device=DEV)
    _check(config, 50, expert_map=expert_map)


def test_large_batch_three_pass_alignment() -> None:
    """T*K above one alignment chunk takes the count/scan/scatter path."""
    _check(MoEConfig(num_experts=64, top_k=8, hidden_size=512, intermediate_size=256), 1000)


def test_batched_format_end_to_end() -> None:
    from moe_oracle.triton.batched import BatchedPrepareFinalize

    config = MoEConfig(num_experts=16, top_k=4, hidden_size=1024, intermediate_size=512,
                       parallel=ParallelConfig(ep_size=2, ep_rank=1, all2all="torch_batched"))
    weights = random_weights(config, seed=2, device=DEV)
    hidden, logits = random_inputs(config, 40, seed=3, device=DEV)
    topk_weights, topk_ids = route(logits, config)
    expert_map = torch.full((16,), -1, dtype=torch.int32, device=DEV)
    expert_map[8:] = torch.arange(8, dtype=torch.int32, device=DEV)
    expected = reference_moe(config, weights, hidden, topk_weights, topk_ids, expert_map=expert_map)
    kernel = FusedMoEKernel(BatchedPrepareFinalize(8, expert_map), _experts(config, weights, "batched_triton"))
    out = kernel.forward_routed(hidden, topk_weights, topk_ids, expert_map=expert_map)
    assert_close(out, expected, config=config, name="batched_triton")


@pytest.mark.parametrize("quant", ["bf16", "fp8_block"])
@pytest.mark.parametrize("tokens", [4, 600])
def test_cuda_graph_capture_and_replay(quant: str, tokens: int) -> None:
    """The whole forward captures in a CUDA graph (no host synchronisation) and a replay on new
    inputs gives what an eager call on them gives, bit for bit."""
    if quant == "fp8_block" and not _fp8_ok():
        pytest.skip("fp8 needs capability >= 8.9")
    config = MoEConfig(num_experts=32, top_k=4, hidden_size=1024, intermediate_size=512, quant=quant)
    experts = _experts(config, random_weights(config, seed=4, device=DEV))
    hidden, logits = random_inputs(config, tokens, seed=5, device=DEV)
    topk_weights, topk_ids = route(logits, config)
    new_hidden, new_logits = random_inputs(config, tokens, seed=6, device=DEV)
    new_weights, new_ids = route(new_logits, config)
    assert_graph_replay_equals_eager(experts.apply, (hidden, topk_weights, topk_ids), (new_hidden, new_weights, new_ids))


def test_shipped_h100_configs_load() -> None:
    """Tuned files of moe-oracle-cuda are found through the entry point and parse."""
    pytest.importorskip("moe_oracle_cuda")
    from moe_oracle.triton.configs import get_configs, search_dirs, tuned_configs

    dirs = [d for d in search_dirs() if d.name == "triton_configs"]
    assert dirs, "moe_oracle_cuda's triton_configs directory is not registered"
    files = sorted(dirs[0].glob("E=*.json"))
    assert files, f"no tuned files in {dirs[0]}"
    config = MoEConfig.preset("qwen3-30b-a3b")
    name = torch.cuda.get_device_name()
    if "H100" in name and tuned_configs(config, name) is None:
        pytest.fail(f"no tuned Qwen3-30B-A3B bf16 file for {name} in {dirs[0]}")
    cfg = get_configs(config, 64, name)
    assert cfg.w13.block_m >= 16


def test_moe_oracle_tune_writes_a_file_the_lookup_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's real search on this GPU (tiny layer, short timing windows), read back by the lookup."""
    from moe_oracle.cli import main
    from moe_oracle.triton import configs

    assert main(["tune", "--model", "tiny", "--tokens", "1,64", "--out", str(tmp_path), "--rep-ms", "5"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out
    monkeypatch.setenv(configs.ENV_DIR, str(tmp_path))
    configs._load.cache_clear()
    try:
        table = configs.tuned_configs(MoEConfig.preset("tiny"), torch.cuda.get_device_name())
    finally:
        configs._load.cache_clear()
    # --tokens are the buckets' upper bounds (1, 2-64, >64); each is tuned at its representative count.
    assert table is not None and len(table) == 3 and min(table) == 1
    data = json.loads(next(tmp_path.iterdir()).read_text())
    assert all(entry["ms"] <= entry["default_ms"] for entry in data["configs"].values())
