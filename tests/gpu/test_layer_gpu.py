"""MoELayer inside real models on a CUDA GPU (issue 14), every backend that runs here, tiny shapes:

- zero host synchronizations in a default forward (``torch.cuda.set_sync_debug_mode("error")`` and no
  device-to-host copy under the profiler), for ``layer(hidden, router_logits)`` and ``forward_routed``;
- the whole forward captured in a CUDA graph, replayed bitwise equal to eager, on new inputs too;
- ``check_values=True`` still checks (outside capture); ``.to("cuda")`` of a CPU-loaded layer;
- memory after ``load_weights`` (caller's tensors dropped) at most 1.05x the canonical bytes;
- ``torch.compile(fullgraph=True)`` with inductor of a module calling the layer;
- the transformers integration: fp32 greedy tokens identical to eager experts, bf16 logits close.

Skipped without CUDA; backends this GPU or its libraries cannot run are skipped with the report's reason.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

import moe_oracle  # noqa: E402
from moe_oracle import InputError, MoEConfig, MoELayer  # noqa: E402
from moe_oracle.router import route  # noqa: E402
from moe_oracle.testing import assert_close, random_inputs, random_weights  # noqa: E402

DEV = "cuda"
BACKENDS = ("triton", "reference", "flashinfer_cutlass", "flashinfer_trtllm")
BF16 = MoEConfig.preset("tiny", dtype="bf16", hidden_size=256, intermediate_size=256)


def _usable(config: MoEConfig, backend: str) -> None:
    """Skip, with the selection report's reason, unless ``backend`` can serve ``config`` here."""
    report = moe_oracle.explain(config)
    try:
        row = report.candidate(backend)
    except KeyError:
        pytest.skip(f"{backend} is not a candidate on this machine")
    if row.status not in ("selected", "usable"):
        pytest.skip(f"{backend}: {row.reason}")


def _on_gpu(config: MoEConfig, backend: str, seed: int = 0, **kwargs: object) -> MoELayer:
    _usable(config, backend)
    layer = MoELayer(config, backend=backend, **kwargs)  # type: ignore[arg-type]
    layer.load_weights(**{k: v.to(DEV) for k, v in random_weights(config, seed=seed).items()})
    return layer


def _inputs(config: MoEConfig, t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    hidden, logits = random_inputs(config, t, seed=seed)
    return hidden.to(DEV), logits.to(DEV)


def _monolithic(layer: MoELayer) -> bool:
    return layer.kernel is not None and layer.kernel.monolithic


# Zero host synchronizations ------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tokens", [1, 7, 64])
def test_default_forward_makes_no_host_sync(backend: str, tokens: int) -> None:
    layer = _on_gpu(BF16, backend)
    hidden, logits = _inputs(BF16, tokens, seed=1)
    weights, ids = route(logits, BF16)
    calls = [lambda: layer(hidden, logits)]
    if not _monolithic(layer):
        calls.append(lambda: layer.forward_routed(hidden, weights, ids))
    for call in calls:
        call()                                                              # warm up: compile, configs, caches
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for call in calls:
            call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for call in calls:
            call()
        torch.cuda.synchronize()
    copies = [e.name for e in prof.events() if "DtoH" in e.name or "Memcpy D2H" in e.name]
    assert copies == [], f"{backend}: device-to-host copies in a forward: {copies}"


def test_check_values_true_still_checks_on_the_gpu() -> None:
    layer = _on_gpu(BF16, "triton", check_values=True)
    hidden, logits = _inputs(BF16, 4, seed=2)
    with pytest.raises(InputError, match="router_logits: expected finite values"):
        layer(hidden, logits.index_fill(1, torch.tensor([3], device=DEV), float("nan")))
    weights, ids = route(logits, BF16)
    with pytest.raises(InputError, match="topk_ids: expected expert ids in"):
        layer.forward_routed(hidden, weights, torch.full_like(ids, BF16.num_experts))


# CUDA graphs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("routed", [False, True])
@pytest.mark.parametrize("tokens", [1, 16])
def test_whole_forward_captured_and_replayed_bitwise(backend: str, routed: bool, tokens: int) -> None:
    layer = _on_gpu(BF16, backend)
    if routed and _monolithic(layer):
        pytest.skip(f"{backend} is monolithic: no forward_routed")
    hidden, logits = _inputs(BF16, tokens, seed=3)
    weights, ids = route(logits, BF16)

    def run() -> torch.Tensor:
        return layer.forward_routed(hidden, weights, ids) if routed else layer(hidden, logits)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            run()                                                           # warm up off the default stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run()
    for seed in (3, 4):
        new_hidden, new_logits = _inputs(BF16, tokens, seed=seed)
        hidden.copy_(new_hidden)
        logits.copy_(new_logits)
        new_weights, new_ids = route(new_logits, BF16)
        weights.copy_(new_weights)
        ids.copy_(new_ids)
        graph.replay()
        torch.cuda.synchronize()
        eager = run()
        assert torch.equal(captured, eager), f"{backend}: replay differs from eager (seed {seed})"


# Module semantics on the GPU ---------------------------------------------------------------------
def test_to_cuda_moves_the_weights() -> None:
    _usable(BF16, "triton")
    weights = random_weights(BF16, seed=5)
    layer = MoELayer(BF16, backend="triton")
    layer.load_weights(**dict(weights.items()))                            # on the CPU
    direct = MoELayer(BF16, backend="triton")
    direct.load_weights(**{k: v.to(DEV) for k, v in weights.items()})
    assert layer.to(DEV) is layer and layer.kernel_weights is not None and layer.kernel_weights.w13.is_cuda
    hidden, logits = _inputs(BF16, 9, seed=6)
    assert torch.equal(layer(hidden, logits), direct(hidden, logits))
    sd = layer.state_dict()
    assert all(t.is_cuda for t in sd.values())
    assert all(torch.equal(sd[k].cpu(), v) for k, v in weights.items())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("quant", ["bf16", "fp8_block"])
def test_memory_after_load_is_one_copy(backend: str, quant: str) -> None:
    config = MoEConfig.preset("tiny", quant=quant, num_experts=16, hidden_size=512, intermediate_size=512)
    _usable(config, backend)
    layer = MoELayer(config, backend=backend)
    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    weights = {k: v.to(DEV) for k, v in random_weights(config, seed=7).items()}
    nbytes = sum(t.numel() * t.element_size() for t in weights.values())
    layer.load_weights(**weights)
    del weights
    gc.collect()
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - base
    assert held <= 1.05 * nbytes, f"{backend} {quant}: holds {held / nbytes:.2f}x the weights' bytes"


# torch.compile -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_torch_compile_fullgraph_inductor(backend: str) -> None:
    layer = _on_gpu(BF16, backend)

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = torch.nn.Linear(BF16.hidden_size, BF16.num_experts, bias=False, device=DEV, dtype=torch.bfloat16)
            self.moe = layer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.moe(x, self.gate(x).float()) + x

    model = Block().eval()
    compiled = torch.compile(model, fullgraph=True)
    for t in (1, 33):
        x = torch.randn(t, BF16.hidden_size, device=DEV, dtype=torch.bfloat16)
        with torch.no_grad():
            assert_close(compiled(x), model(x), config=BF16)


# transformers ------------------------------------------------------------------------------------
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packages" / "moe-oracle-core" / "tests"))


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss", "olmoe"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_transformers_on_the_gpu(family: str, dtype: torch.dtype) -> None:
    pytest.importorskip("transformers", minversion="5", reason="transformers >= 5")
    from tf_models import tiny_model

    import moe_oracle.integrations.transformers as moe_tf

    model = tiny_model(family, dtype=dtype, device=DEV)
    ids = torch.randint(0, 128, (2, 7), device=DEV, generator=torch.Generator(DEV).manual_seed(0))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits.float()
        tokens = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
        moe_tf.enable(model)
        out = model(ids, attention_mask=mask).logits.float()
        if dtype == torch.float32:
            assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                              pad_token_id=0), tokens)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        else:
            assert (out - ref).abs().max().item() <= 0.05 * ref.abs().max().item()
        moe_tf.disable(model)
        assert torch.equal(model(ids, attention_mask=mask).logits.float(), ref)
