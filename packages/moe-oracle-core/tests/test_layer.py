"""MoELayer: build-time selection, weight validation, one conversion per canonical load, input checks."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator

import pytest
import torch

import moe_oracle
from moe_oracle import (
    BackendSpec,
    ConfigError,
    InputError,
    KernelWeights,
    MoEConfig,
    MoELayer,
    NoBackendError,
    ParallelConfig,
    Platform,
    UnsupportedBackendError,
    WeightError,
)
from moe_oracle.backends.reference.experts import ReferenceExperts
from moe_oracle.testing import assert_close, random_inputs, random_weights, reference_moe

CPU = Platform.simulate("cpu")
TINY = MoEConfig.preset("tiny", dtype="fp32", hidden_size=64, intermediate_size=96)


def test_selects_at_construction_and_fails_there() -> None:
    layer = MoELayer(TINY, platform=CPU)
    assert layer.selection.backend == layer.backend
    assert "backend=" in repr(layer)
    with pytest.raises(UnsupportedBackendError, match="backend 'triton' cannot serve this config"):
        MoELayer(TINY, backend="triton", platform=Platform.simulate("cpu", libraries={}))
    with pytest.raises(NoBackendError):
        MoELayer(TINY, platform=CPU, exclude=[n for n in moe_oracle.registry().names()])
    with pytest.raises(TypeError, match="config must be a MoEConfig, got dict"):
        MoELayer({"num_experts": 8})  # type: ignore[arg-type]


# Weight validation -------------------------------------------------------------------------
FP8 = MoEConfig.preset("tiny", quant="fp8_block", hidden_size=256, intermediate_size=256)


@pytest.mark.parametrize(("change", "message"), [
    (dict(w13_scale=None), "w13_scale: expected a tensor with shape [8, 4, 2] dtype float32 for scheme fp8_block, got None"),
    (dict(w13=torch.zeros(8, 512, 128, dtype=torch.float8_e4m3fn)), "w13: expected shape [8, 512, 256], got shape [8, 512, 128]"),
    (dict(w2=torch.zeros(8, 256, 256, dtype=torch.bfloat16)), "w2: expected dtype float8_e4m3fn, got dtype bfloat16"),
    (dict(w13_bias=torch.zeros(8, 512)), "w13_bias: expected no such tensor for scheme fp8_block without has_bias"),
    (dict(a13_scale=torch.ones(())), "a13_scale: expected no such tensor for scheme fp8_block"),
    (dict(w2_scale=torch.ones(8, 2, 2, dtype=torch.float64)), "w2_scale: expected dtype float32, got dtype float64"),
])
def test_load_weights_validates_every_tensor(change: dict[str, object], message: str) -> None:
    layer = MoELayer(FP8, backend="reference", platform=CPU)
    tensors = dict(random_weights(FP8, seed=0).items())
    tensors.update(change)
    tensors = {k: v for k, v in tensors.items() if v is not None}
    with pytest.raises(WeightError, match=re.escape(message)) as info:
        layer.load_weights(**tensors)
    assert info.value.name == message.split(":")[0]
    assert layer.kernel is None


def test_load_weights_is_keyword_only() -> None:
    layer = MoELayer(TINY, backend="reference", platform=CPU)
    w = random_weights(TINY, seed=0)
    with pytest.raises(TypeError):
        layer.load_weights(w.w13, w.w2)  # type: ignore[misc]


def test_static_scales_are_required_for_static_schemes() -> None:
    config = MoEConfig.preset("tiny", quant="fp8_tensor_static", hidden_size=64, intermediate_size=64)
    tensors = dict(random_weights(config, seed=1).items())
    assert tensors["a13_scale"].numel() == 1
    del tensors["a2_scale"]
    with pytest.raises(WeightError, match=re.escape("a2_scale: expected a tensor with shape [] dtype float32")):
        MoELayer(config, backend="reference", platform=CPU).load_weights(**tensors)


# Conversion provenance ----------------------------------------------------------------------
class SwappedExperts(ReferenceExperts):
    """Consumes w13 stored as [up; gate] (as FlashInfer wants); swaps back and runs the reference."""

    def __init__(self, config, quant_config, weights):  # type: ignore[no-untyped-def]
        tensors = dict(weights.tensors)
        up, gate = tensors["w13"].chunk(2, dim=1)
        tensors["w13"] = torch.cat([gate, up], dim=1)
        super().__init__(config, quant_config, KernelWeights(backend="swapped", config=weights.config, tensors=tensors))


CALLS: list[torch.Tensor] = []


def convert_swapped(weights, config):  # type: ignore[no-untyped-def]
    CALLS.append(weights.w13)
    gate, up = weights.w13.chunk(2, dim=1)
    tensors = dict(weights.items())
    tensors["w13"] = torch.cat([up, gate], dim=1)
    return KernelWeights(backend="swapped", config=config, tensors=tensors, layout="w31")


@pytest.fixture
def swapped_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    module = types.ModuleType("fake_swapped_backend")
    module.SwappedExperts = SwappedExperts  # type: ignore[attr-defined]
    module.convert = convert_swapped  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_swapped_backend", module)
    CALLS.clear()
    reg = moe_oracle.registry(refresh=True)
    reg.register(BackendSpec(name="swapped", experts="fake_swapped_backend:SwappedExperts",
                             converter="fake_swapped_backend:convert", vendors=frozenset({"cpu"}),
                             schemes=frozenset({"fp32"}), rank=1), source="test")
    yield "swapped"
    moe_oracle.registry(refresh=True)


def test_conversion_happens_once_per_canonical_load(swapped_backend: str) -> None:
    layer = MoELayer(TINY, platform=CPU)
    assert layer.backend == swapped_backend
    first = random_weights(TINY, seed=1)
    layer.load_weights(**dict(first.items()))
    layer.process_weights()
    layer.process_weights()
    assert layer.conversions == 1 and len(CALLS) == 1 and CALLS[0] is first.w13
    assert layer.kernel_weights is not None and layer.kernel_weights.layout == "w31"
    hidden, logits = random_inputs(TINY, 5, seed=2)
    out1 = layer(hidden, logits)
    ref = MoELayer(TINY, backend="reference", platform=CPU)
    ref.load_weights(**dict(first.items()))
    assert_close(out1, ref(hidden, logits), config=TINY)

    # Reload (an RL trainer pushing new weights): the new canonical tensors are converted, once.
    second = random_weights(TINY, seed=3)
    layer.load_weights(**dict(second.items()))
    layer.process_weights()
    assert layer.conversions == 2 and len(CALLS) == 2 and CALLS[1] is second.w13
    ref.load_weights(**dict(second.items()))
    assert_close(layer(hidden, logits), ref(hidden, logits), config=TINY)
    assert not torch.equal(layer(hidden, logits), out1)


def test_process_before_load_is_an_error() -> None:
    layer = MoELayer(TINY, backend="reference", platform=CPU)
    with pytest.raises(RuntimeError, match=re.escape("process_weights() before load_weights()")):
        layer.process_weights()
    with pytest.raises(RuntimeError, match=re.escape("MoELayer has no weights: call load_weights(")):
        layer(*random_inputs(TINY, 2, seed=0))


# Forward inputs -----------------------------------------------------------------------------
@pytest.fixture
def loaded() -> MoELayer:
    layer = MoELayer(TINY, backend="reference", platform=CPU)
    layer.load_weights(**dict(random_weights(TINY, seed=0).items()))
    return layer


@pytest.mark.parametrize(("make", "name", "message"), [
    (lambda h, g: (h[:, :10], g), "hidden_states", "expected shape [T, 64], got shape [4, 10] dtype float32 on cpu"),
    (lambda h, g: (h.half(), g), "hidden_states", "expected dtype float32, got dtype float16"),
    (lambda h, g: (h, g[:, :3]), "router_logits", "expected shape [4, 8], got shape [4, 3]"),
    (lambda h, g: (h, g[:2]), "router_logits", "expected shape [4, 8], got shape [2, 8]"),
    (lambda h, g: (h, g.long()), "router_logits", "expected dtype float32/bfloat16/float16, got dtype int64"),
    (lambda h, g: (h, g.index_fill(1, torch.tensor([3]), float("nan"))), "router_logits",
     "expected finite values, got NaN or inf (first at index [0, 3])"),
    (lambda h, g: (h, g.tolist()), "router_logits", "expected a tensor of shape [4, 8], got list"),
])
def test_forward_checks_inputs(loaded: MoELayer, make, name: str, message: str) -> None:  # type: ignore[no-untyped-def]
    hidden, logits = random_inputs(TINY, 4, seed=0)
    with pytest.raises(InputError, match=re.escape(f"{name}: {message}")):
        loaded(*make(hidden, logits))


@pytest.mark.parametrize(("weights", "ids", "message"), [
    (torch.ones(4, 2), torch.full((4, 2), 8), "topk_ids: expected expert ids in [0, 8), got ids in [8, 8]"),
    (torch.ones(4, 2), torch.full((4, 2), -1), "topk_ids: expected expert ids in [0, 8), got ids in [-1, -1]"),
    (torch.ones(4, 2), torch.zeros(4, 2, dtype=torch.float32), "topk_ids: expected dtype int32/int64, got dtype float32"),
    (torch.ones(4, 3), torch.zeros(4, 2, dtype=torch.int32), "topk_weights: expected shape [4, 2], got shape [4, 3]"),
    # Issue 13, item 5: non-finite weights are refused like non-finite logits (CPU tensors: no sync).
    (torch.ones(4, 2).index_fill(1, torch.tensor([1]), float("nan")), torch.zeros(4, 2, dtype=torch.int32),
     "topk_weights: expected finite values, got NaN or inf (first at index [0, 1])"),
    (torch.ones(4, 2).index_fill(0, torch.tensor([2]), float("-inf")), torch.zeros(4, 2, dtype=torch.int32),
     "topk_weights: expected finite values, got NaN or inf (first at index [2, 0])"),
])
def test_forward_routed_checks_inputs(loaded: MoELayer, weights: torch.Tensor, ids: torch.Tensor,
                                      message: str) -> None:
    hidden, _ = random_inputs(TINY, 4, seed=0)
    with pytest.raises(InputError, match=re.escape(message)):
        loaded.forward_routed(hidden, weights, ids)


def test_forward_and_forward_routed_agree_with_reference(loaded: MoELayer) -> None:
    from moe_oracle.router import route

    for t in (0, 1, 7):
        hidden, logits = random_inputs(TINY, t, seed=t)
        out = loaded(hidden, logits)
        assert out.shape == (t, TINY.hidden_size) and out.dtype == TINY.dtype
        weights, ids = route(logits, TINY)
        assert torch.equal(out, loaded.forward_routed(hidden, weights, ids))
        assert_close(out, reference_moe(TINY, loaded.canonical, hidden, weights, ids), config=TINY)  # type: ignore[arg-type]


def test_expert_parallel_rank_holds_its_experts_only() -> None:
    config = TINY.replace(parallel=ParallelConfig(ep_size=2, ep_rank=1))
    layer = MoELayer(config, backend="reference", platform=CPU)
    weights = random_weights(config, seed=4)
    assert weights.w13.shape[0] == 4
    layer.load_weights(**dict(weights.items()))
    assert layer.expert_map is not None and layer.expert_map.tolist() == [-1, -1, -1, -1, 0, 1, 2, 3]
    hidden, logits = random_inputs(config, 6, seed=5)
    from moe_oracle.router import route

    w, ids = route(logits, config)
    out = layer.forward_routed(hidden, w, ids)
    # Tokens whose experts all live on rank 0 get exactly zero here.
    remote = (ids < 4).all(dim=1)
    assert torch.equal(out[remote], torch.zeros_like(out[remote]))
    expected = reference_moe(config, weights, hidden, w, ids, expert_map=layer.expert_map)
    assert_close(out, expected, config=config)


def test_config_error_surfaces_at_build() -> None:
    with pytest.raises(ConfigError, match="top_k: 9 exceeds num_experts=8"):
        MoELayer(MoEConfig.preset("tiny", top_k=9))


def test_all_to_all_needs_a_dispatcher_at_construction() -> None:
    config = TINY.replace(parallel=ParallelConfig(ep_size=2, all2all="torch"))
    with pytest.raises(ConfigError, match=re.escape("parallel.all2all: 'torch' dispatches tokens between ranks: "
                                                    "initialize torch.distributed")):
        MoELayer(config, backend="reference", platform=CPU)


def test_a_given_dispatcher_is_used() -> None:
    from moe_oracle import LocalPrepareFinalize

    class Counting(LocalPrepareFinalize):
        calls = 0

        def prepare(self, hidden, topk_weights, topk_ids):  # type: ignore[no-untyped-def]
            Counting.calls += 1
            return super().prepare(hidden, topk_weights, topk_ids)

    layer = MoELayer(TINY, backend="reference", platform=CPU, prepare_finalize=Counting())
    layer.load_weights(**dict(random_weights(TINY, seed=0).items()))
    layer(*random_inputs(TINY, 3, seed=1))
    assert Counting.calls == 1 and layer.kernel is not None and layer.kernel.prepare_finalize is layer.prepare_finalize


def test_layer_strict_refuses_the_reference_where_nothing_fast_fits() -> None:
    from moe_oracle import MoELayer, NoBackendError, Platform

    no_triton = Platform.simulate("cuda", capability=(8, 0), libraries={})
    config = MoEConfig.preset("tiny")
    with pytest.raises(NoBackendError, match=r"other than the reference experts"):
        MoELayer(config, platform=no_triton, strict=True)
    assert MoELayer(config, platform=no_triton, strict=False).backend == "reference"
