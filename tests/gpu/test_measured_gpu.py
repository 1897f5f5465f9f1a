"""The measured policy on a CUDA GPU: torch_grouped against the reference, real CUDA-graph timing
of triton and torch_grouped per bucket (Triton launch configs searched), the cache, and one CUDA
graph per bucket captured and replayed through ``MoELayer``. Small shapes: well under a minute.
Skipped without CUDA (capability >= 9.0 for torch_grouped)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

import moe_oracle  # noqa: E402
from moe_oracle import MoEConfig, MoELayer, oracle_for  # noqa: E402
from moe_oracle.kernel.weights import canonical_kernel_weights  # noqa: E402
from moe_oracle.oracle.measured import clear_memo  # noqa: E402
from moe_oracle.router import route  # noqa: E402
from moe_oracle.testing import assert_close, random_inputs, random_weights, reference_moe  # noqa: E402

DEV = "cuda"
HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)
needs_hopper = pytest.mark.skipif(not HOPPER, reason="torch_grouped needs capability >= 9.0")
CONFIG = MoEConfig(num_experts=8, top_k=2, hidden_size=256, intermediate_size=128)
BUCKETS = (1, 16, 128)  # four buckets: 1, 2-16, 17-128, > 128


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MOE_ORACLE_CACHE_DIR", str(tmp_path))
    from moe_oracle.triton.tuning import TUNING

    monkeypatch.setattr(TUNING, "max_candidates", 2)  # each new Triton config is a compile: keep the test short
    clear_memo()
    yield tmp_path
    clear_memo()


def _torch_grouped(config: MoEConfig, weights):
    from moe_oracle.backends.torch_grouped.experts import TorchGroupedExperts

    kw = canonical_kernel_weights(weights, config, backend="torch_grouped")
    return TorchGroupedExperts(config, oracle_for(config).make_quant_config(config, kw), kw)


@needs_hopper
@pytest.mark.parametrize("config", [
    CONFIG,
    MoEConfig(num_experts=16, top_k=4, hidden_size=512, intermediate_size=192, activation="swigluoai", has_bias=True),
    MoEConfig(num_experts=8, top_k=2, hidden_size=256, intermediate_size=128, activation="gelu"),
], ids=["silu", "swigluoai_bias", "gelu"])
@pytest.mark.parametrize("tokens", [1, 7, 300])
def test_torch_grouped_bf16_matches_the_reference(config: MoEConfig, tokens: int) -> None:
    weights = random_weights(config, seed=0, device=DEV)
    experts = _torch_grouped(config, weights)
    hidden, logits = random_inputs(config, tokens, seed=tokens, device=DEV)
    tw, ti = route(logits, config)
    assert_close(experts.apply(hidden, tw, ti), reference_moe(config, weights, hidden, tw, ti), config=config)


@needs_hopper
def test_torch_grouped_expert_map() -> None:
    weights = random_weights(CONFIG, seed=0, device=DEV)
    local = CONFIG.replace(parallel=moe_oracle.ParallelConfig(ep_size=2, ep_rank=1))
    half = moe_oracle.CanonicalWeights(w13=weights.w13[4:].contiguous(), w2=weights.w2[4:].contiguous())
    expert_map = torch.tensor([-1, -1, -1, -1, 0, 1, 2, 3], dtype=torch.int32, device=DEV)
    hidden, logits = random_inputs(CONFIG, 33, seed=1, device=DEV)
    tw, ti = route(logits, CONFIG)
    got = _torch_grouped(local, half).apply(hidden, tw, ti, expert_map=expert_map)
    assert_close(got, reference_moe(local, half, hidden, tw, ti, expert_map=expert_map), config=local)


@needs_hopper
def test_torch_grouped_fp8_channel_matches_the_reference() -> None:
    if not hasattr(torch, "_scaled_grouped_mm"):
        pytest.skip(f"torch {torch.__version__} has no torch._scaled_grouped_mm")
    config = CONFIG.replace(quant="fp8_channel")
    weights = random_weights(config, seed=0, device=DEV)
    hidden, logits = random_inputs(config, 40, seed=2, device=DEV)
    tw, ti = route(logits, config)
    assert_close(_torch_grouped(config, weights).apply(hidden, tw, ti),
                 reference_moe(config, weights, hidden, tw, ti), config=config)


@needs_hopper
def test_measured_plan_times_triton_and_torch_grouped(_cache: Path) -> None:
    pytest.importorskip("triton")
    sel = moe_oracle.tune(CONFIG, buckets=BUCKETS)
    assert [p.source for p in sel.plan] == ["measured"] * 4
    for p in sel.plan:
        labels = {t.label: t for t in p.timings}
        assert {"triton", "torch_grouped"} <= set(labels), p
        assert all(t.ms is not None and t.ms > 0 for t in labels.values()), p.timings
        assert p.measured_ms == p.floor_ms  # both canonical: every bucket may take the fastest
        tri = labels["triton"].kernel_config
        assert tri is None or set(tri) == {"w13", "w2"}
    assert (_cache / "selection").is_dir()
    clear_memo()
    again = moe_oracle.select(CONFIG, policy="measured", buckets=BUCKETS)
    assert [p.backend for p in again.plan] == [p.backend for p in sel.plan]
    assert {p.source for p in again.plan} == {"cache"}
    print(sel.report.render())


@needs_hopper
def test_one_cuda_graph_per_bucket(_cache: Path) -> None:
    """A plan alternating torch_grouped and triton (with a searched Triton config in one bucket):
    each bucket's forward is captured in its own graph, replayed on new inputs, and matches eager
    and the reference."""
    pytest.importorskip("triton")

    # Buckets 1, 2-16, 17-128, > 128 are measured at 1, 6, 47 and 256 tokens.
    def timer(candidate, num_tokens, call):  # torch_grouped wins buckets 1 and 17-128, triton the others
        call()
        fast = (candidate.backend == "torch_grouped") == (num_tokens in (1, 47))
        return 1.0 if fast else 2.0

    sel = moe_oracle.tune(CONFIG, buckets=BUCKETS, timer=timer)
    assert [p.backend for p in sel.plan] == ["torch_grouped", "triton", "torch_grouped", "triton"]
    layer = MoELayer(CONFIG, policy="measured", buckets=BUCKETS)
    weights = random_weights(CONFIG, seed=0, device=DEV)
    layer.load_weights(**dict(weights.items()))
    for tokens in (1, 8, 64, 300):
        assert layer.selection.backend_for(tokens) == sel.plan[[1, 16, 128, 10 ** 9].index(
            next(b for b in (1, 16, 128, 10 ** 9) if tokens <= b))].backend
        static_h, static_l = random_inputs(CONFIG, tokens, seed=tokens, device=DEV)
        layer(static_h, static_l)  # warm up (compile) outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = layer(static_h, static_l)
        for seed in (100, 200):
            h, lg = random_inputs(CONFIG, tokens, seed=seed + tokens, device=DEV)
            static_h.copy_(h)
            static_l.copy_(lg)
            graph.replay()
            torch.cuda.synchronize()
            eager = layer(h, lg)
            torch.testing.assert_close(static_out, eager, rtol=0, atol=0)
            tw, ti = route(lg, CONFIG)
            assert_close(static_out, reference_moe(CONFIG, weights, h, tw, ti), config=CONFIG)
