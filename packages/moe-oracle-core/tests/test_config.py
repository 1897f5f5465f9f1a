import re

import pytest
import torch

from moe_oracle import ConfigError, MoEConfig, ParallelConfig, RoutingConfig


def make(**kw: object) -> MoEConfig:
    base: dict[str, object] = dict(num_experts=8, top_k=2, hidden_size=256, intermediate_size=512)
    base.update(kw)
    return MoEConfig(**base)  # type: ignore[arg-type]


def test_defaults_and_derived_fields() -> None:
    c = make()
    assert c.dtype == torch.bfloat16 and c.scheme.name == "bf16" and c.is_gated
    assert c.w13_rows == 1024 and c.num_local_experts == 8
    relu = make(activation="relu2", dtype="fp16")
    assert not relu.is_gated and relu.w13_rows == 512 and relu.scheme.name == "fp16"
    oai = make(activation="swigluoai")
    assert (oai.swiglu_alpha, oai.swiglu_limit) == (1.702, 7.0)
    sharded = make(parallel=ParallelConfig(tp_size=2, ep_size=4, tp_rank=1, ep_rank=3))
    assert sharded.intermediate_size_per_partition == 256 and sharded.num_local_experts == 2


def test_repr_round_trips() -> None:
    from moe_oracle import QuantScheme  # noqa: F401  (eval needs it)

    c = make(quant="fp8_block", routing=RoutingConfig(scoring="sigmoid", num_expert_groups=2, topk_groups=1))
    assert eval(repr(c), {"torch": torch, **globals(), "QuantScheme": __import__("moe_oracle").QuantScheme}) == c


@pytest.mark.parametrize(("kw", "field", "message"), [
    (dict(num_experts=0), "num_experts", "must be a positive int, got 0"),
    (dict(top_k=9), "top_k", "9 exceeds num_experts=8"),
    (dict(hidden_size=2.5), "hidden_size", "must be a positive int, got 2.5"),
    (dict(activation="swish"), "activation", "invalid value 'swish' (allowed: silu, gelu, swigluoai, relu2)"),
    (dict(activation="relu2", is_gated=True), "is_gated", "activation 'relu2' is not gated"),
    (dict(activation="swigluoai", is_gated=False), "is_gated", "activation 'swigluoai' is always gated"),
    (dict(dtype=torch.int8), "dtype", "unsupported compute dtype torch.int8"),
    (dict(dtype="float64"), "dtype", "unsupported compute dtype 'float64'"),
    (dict(quant="fp16"), "quant", "unquantized scheme 'fp16' contradicts dtype=bf16"),
    (dict(quant="int4_w4a16", hidden_size=200), "hidden_size", "200 is not a multiple of the quant group size 128"),
    (dict(swiglu_alpha=1.0), "swiglu_alpha", "only applies to activation 'swigluoai', not 'silu'"),
    (dict(activation="relu2", swiglu_limit=7.0), "swiglu_limit", "needs a gated activation"),
    (dict(parallel=ParallelConfig(tp_size=3)), "intermediate_size", "512 is not divisible by tp_size=3"),
    (dict(parallel=ParallelConfig(ep_size=3)), "num_experts", "8 is not divisible by ep_size=3"),
    (dict(routing=RoutingConfig(num_expert_groups=3, topk_groups=1)), "routing.num_expert_groups",
     "num_experts=8 is not divisible into 3 groups"),
    (dict(top_k=4, routing=RoutingConfig(num_expert_groups=8, topk_groups=2)), "routing.topk_groups",
     "2 groups of 1 experts cannot hold top_k=4"),
    (dict(parallel="tp=2"), "parallel", "expected ParallelConfig, got str"),
    (dict(apply_router_weight_on_input=True), "apply_router_weight_on_input", "needs top_k == 1, got top_k=2"),
])
def test_invalid_config(kw: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{field}: {message}")) as info:
        make(**kw)
    assert info.value.field == field


@pytest.mark.parametrize(("kw", "message"), [
    (dict(tp_size=0), "parallel.tp_size: must be a positive int, got 0"),
    (dict(ep_size=2, ep_rank=2), "parallel.ep_rank: 2 is out of range for ep_size=2"),
    (dict(all2all="nccl"), "parallel.all2all: invalid value 'nccl' (allowed: none, torch, torch_batched"),
    (dict(all2all="torch"), "parallel.all2all: 'torch' needs ep_size > 1, got ep_size=1"),
])
def test_invalid_parallel(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ParallelConfig(**kw)  # type: ignore[arg-type]


def test_activation_format_follows_all2all() -> None:
    assert ParallelConfig().activation_format == "standard"
    assert ParallelConfig(ep_size=2, all2all="deepep_high_throughput").activation_format == "standard"
    assert ParallelConfig(ep_size=2, all2all="deepep_low_latency").activation_format == "batched"
    assert ParallelConfig(ep_size=2, all2all="torch_batched").use_all2all_kernels
    assert not ParallelConfig(ep_size=2).use_all2all_kernels


@pytest.mark.parametrize(("kw", "message"), [
    (dict(scoring="tanh"), "routing.scoring: invalid value 'tanh'"),
    (dict(num_expert_groups=4), "num_expert_groups and topk_groups must be given together"),
    (dict(num_expert_groups=4, topk_groups=5), "routing.topk_groups: 5 exceeds num_expert_groups=4"),
    (dict(scoring="sigmoid", softmax_after_topk=True), "routing.softmax_after_topk: needs scoring='softmax'"),
    (dict(routed_scaling_factor=0), "routing.routed_scaling_factor: must be a positive number, got 0"),
])
def test_invalid_routing(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        RoutingConfig(**kw)  # type: ignore[arg-type]


def test_unknown_preset_lists_known() -> None:
    with pytest.raises(ConfigError, match=r"preset: unknown preset 'llama' \(allowed: .*deepseek-v3.*tiny"):
        MoEConfig.preset("llama")


def test_replace_derives_again() -> None:
    c = make(activation="swigluoai")
    relu = c.replace(activation="relu2")
    assert not relu.is_gated and relu.swiglu_alpha is None and relu.swiglu_limit is None
    assert make().replace(dtype="fp16").scheme.name == "fp16"
    assert make(quant="fp8_block").replace(dtype="fp16").scheme.name == "fp8_block"


# Issue 13, item 6: every field is checked at construction; bools must be bools, floats finite.
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("kw", "field", "message"), [
    (dict(renormalize="no"), "routing.renormalize", "must be a bool (True or False), got 'no'"),
    (dict(softmax_after_topk="yes"), "routing.softmax_after_topk", "must be a bool (True or False), got 'yes'"),
    (dict(score_correction_bias="yes"), "routing.score_correction_bias", "must be a bool (True or False), got 'yes'"),
    (dict(renormalize=1), "routing.renormalize", "must be a bool (True or False), got 1"),
    (dict(routed_scaling_factor=NAN), "routing.routed_scaling_factor", "must be a finite number, got nan"),
    (dict(routed_scaling_factor=INF), "routing.routed_scaling_factor", "must be a finite number, got inf"),
    (dict(routed_scaling_factor=True), "routing.routed_scaling_factor", "must be a number, got True"),
    (dict(routed_scaling_factor=10 ** 400), "routing.routed_scaling_factor", "must be a finite number, got an int"),
    (dict(topk_groups=2), "routing.num_expert_groups", "num_expert_groups and topk_groups must be given together"),
    (dict(num_expert_groups="4", topk_groups=1), "routing.num_expert_groups", "must be a positive int, got '4'"),
    (dict(scoring=["softmax"]), "routing.scoring", "invalid value ['softmax']"),
])
def test_invalid_routing_fields(kw: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{field}: {message}")) as info:
        RoutingConfig(**kw)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(("kw", "field", "message"), [
    (dict(has_bias="yes"), "has_bias", "must be a bool (True or False), got 'yes'"),
    (dict(top_k=1, apply_router_weight_on_input="yes"), "apply_router_weight_on_input",
     "must be a bool (True or False), got 'yes'"),
    (dict(activation="swigluoai", swiglu_alpha="1"), "swiglu_alpha", "must be a number, got '1'"),
    (dict(activation="swigluoai", swiglu_alpha=NAN), "swiglu_alpha", "must be a finite number, got nan"),
    (dict(activation="swigluoai", swiglu_limit=INF), "swiglu_limit", "must be a finite number, got inf"),
    (dict(activation="swigluoai", swiglu_limit=-1.0), "swiglu_limit", "must be a positive number, got -1.0"),
    (dict(intermediate_size=33, quant="int4_w4a16"), "intermediate_size",
     "33 is odd; int4_w4a16 packs two 4-bit weights per byte along it, so it must be even"),
    (dict(intermediate_size=66, quant="mxfp4", parallel=ParallelConfig(tp_size=2)), "intermediate_size",
     "33 per tensor-parallel rank is odd; mxfp4 packs"),
    (dict(num_experts=-10 ** 5000), "num_experts", "must be a positive int, got an int of"),
    (dict(activation=None), "activation", "invalid value None"),
])
def test_invalid_config_fields(kw: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{field}: {message}")) as info:
        make(**kw)
    assert info.value.field == field


def test_even_intermediate_size_with_packed_weights_constructs() -> None:
    assert make(intermediate_size=34, quant="int4_w4a16").intermediate_size == 34
    assert make(activation="swigluoai", swiglu_alpha=1, swiglu_limit=7).swiglu_alpha == 1
