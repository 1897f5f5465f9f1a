"""One test per CUDA selection rule (vLLM 0.33's behaviour), each checking the order, the choice and
the reason ``explain`` shows."""

from __future__ import annotations

import pytest

import moe_oracle
from moe_oracle import MoEConfig, Mxfp4Oracle, ParallelConfig, Platform, Registry, RoutingConfig
from moe_oracle.plugin import BackendSpec
from moe_oracle.testing import REFERENCE_SPEC, SelectionReport, oracle_for
from moe_oracle_cuda import backends

FI = {"flashinfer": "0.6.13", "triton": "3.6.0"}
FIC, FIT = "flashinfer_cutlass", "flashinfer_trtllm"


def cuda(cap: tuple[int, int], flashinfer: bool = True) -> Platform:
    return Platform.simulate("cuda", capability=cap, libraries=FI if flashinfer else {"triton": "3.6.0"})


def config(quant: str = "bf16", **kw: object) -> MoEConfig:
    base: dict[str, object] = dict(num_experts=8, top_k=2, hidden_size=256, intermediate_size=256, quant=quant)
    base.update(kw)
    return MoEConfig(**base)  # type: ignore[arg-type]


def explain(cfg: MoEConfig, platform: Platform) -> SelectionReport:
    return moe_oracle.explain(cfg, platform)


def hint_reasons(report: SelectionReport, name: str) -> list[str]:
    return [h.reason for h in report.candidate(name).hints]


def test_entry_point_registers_both_backends_and_the_rules() -> None:
    names = moe_oracle.registry().names()
    assert FIT in names and FIC in names and "triton" in names and "batched_triton" in names
    items = backends()
    assert {s.name for s in items if isinstance(s, BackendSpec)} == {FIT, FIC}
    assert all(h.reason for h in moe_oracle.registry().hints())


# Unquantized ----------------------------------------------------------------------------------------
def test_unquantized_order_trtllm_cutlass_triton_batched() -> None:
    report = explain(config(), cuda((10, 0)))
    assert report.order == [FIT, FIC, "triton", "torch_grouped", "batched_triton", "reference"]
    assert report.chosen == FIT


def test_unquantized_on_hopper_puts_both_flashinfer_backends_behind_triton() -> None:
    report = explain(config(), cuda((9, 0)))
    assert report.order == ["triton", "torch_grouped", "batched_triton", FIT, FIC, "reference"]
    assert report.chosen == "triton"
    for name in (FIT, FIC):
        assert any("slower than Triton on Hopper" in r for r in hint_reasons(report, name))
    assert "bf16 FlashInfer is slower than Triton on Hopper" in str(report)


def test_unquantized_with_data_parallel_puts_cutlass_last() -> None:
    report = explain(config(parallel=ParallelConfig(dp_size=2)), cuda((12, 0)))
    assert report.order == [FIT, "triton", "torch_grouped", "batched_triton", FIC, "reference"]
    assert report.chosen == "triton"  # TRTLLM needs 10.x
    assert any("dp_size > 1" in r for r in hint_reasons(report, FIC))


def test_unquantized_swigluoai_puts_flashinfer_behind_triton() -> None:
    report = explain(config(activation="swigluoai"), cuda((10, 0)))
    assert report.order == ["triton", "torch_grouped", "batched_triton", FIT, FIC, "reference"]
    assert report.chosen == "triton"
    assert any("swigluoai" in r for r in hint_reasons(report, FIT))


def test_batched_activation_format_picks_batched_triton() -> None:
    cfg = config(parallel=ParallelConfig(ep_size=2, all2all="deepep_low_latency"))
    report = explain(cfg, cuda((10, 0)))
    assert report.chosen == "batched_triton"
    for name in (FIT, FIC, "triton"):
        assert report.candidate(name).reason == ("takes the standard activation format, "
                                                 "all2all='deepep_low_latency' gives batched")


# fp8 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cap", [(8, 9), (9, 0), (12, 0)])
def test_trtllm_needs_capability_10(cap: tuple[int, int]) -> None:
    report = explain(config("fp8_block"), cuda(cap))
    assert report.candidate(FIT).reason == f"needs capability 10.x, have {cap[0]}.{cap[1]}"


@pytest.mark.parametrize(("cap", "scheme", "ok", "reason"), [
    ((9, 0), "bf16", True, ""), ((9, 0), "fp8_tensor_static", True, ""), ((9, 0), "fp8_block", True, ""),
    ((9, 0), "mxfp4", True, ""),
    ((9, 0), "nvfp4", False, "nvfp4 needs capability 10.x/12.x, have 9.0"),
    ((9, 0), "mxfp4_a8", False, "mxfp4_a8 needs capability 10.x/12.x, have 9.0"),
    ((10, 0), "bf16", True, ""), ((10, 0), "fp8_tensor_static", True, ""), ((10, 0), "nvfp4", True, ""),
    ((10, 0), "mxfp4_a8", True, ""), ((12, 0), "nvfp4", True, ""), ((12, 0), "mxfp4_a8", True, ""),
    ((10, 0), "fp8_block", False, "fp8_block needs capability 9.0, have 10.0"),
    ((12, 0), "mxfp4", False, "mxfp4 needs capability 9.0, have 12.0"),
    ((11, 0), "bf16", False, "bf16 needs capability 9.0/10.x/12.x, have 11.0"),
    ((11, 0), "nvfp4", False, "nvfp4 needs capability 10.x/12.x, have 11.0"),
    ((8, 9), "fp8_tensor_static", False, "fp8_tensor_static needs capability 9.0/10.x/12.x, have 8.9"),
])
def test_cutlass_capabilities_by_scheme(cap: tuple[int, int], scheme: str, ok: bool, reason: str) -> None:
    candidate = explain(config(scheme), cuda(cap)).candidate(FIC)
    assert (candidate.status in ("selected", "usable")) == ok
    assert candidate.reason == reason


def test_fp8_block_on_hopper_without_expert_parallel_prefers_triton() -> None:
    report = explain(config("fp8_block"), cuda((9, 0)))
    assert report.order[0] == "triton" and report.chosen == "triton"
    assert any("Triton beats FlashInfer CUTLASS" in r for r in hint_reasons(report, "triton"))
    assert report.candidate(FIC).status == "usable"


def test_fp8_block_on_hopper_with_expert_parallel_prefers_cutlass() -> None:
    report = explain(config("fp8_block", parallel=ParallelConfig(ep_size=2)), cuda((9, 0)))
    assert report.order[0] == FIC and report.chosen == FIC
    assert any("with expert parallelism: FlashInfer CUTLASS first" in r for r in hint_reasons(report, FIC))


def test_fp8_block_on_blackwell_prefers_trtllm() -> None:
    report = explain(config("fp8_block"), cuda((10, 0)))
    assert report.order[:3] == [FIT, FIC, "triton"] and report.chosen == FIT


def test_triton_fp8_below_capability_8_9_is_weight_only() -> None:
    """Ampere has no fp8 MMA: Triton decodes the e4m3 weights in registers and keeps bf16 activations."""
    report = explain(config("fp8_tensor_static"), cuda((8, 0)))
    assert report.candidate("triton").reason.endswith(
        "serves fp8_tensor_static at higher activation precision (bf16) as fp8_tensor_a16: "
        "no fp8 MMA below capability 8.9, have 8.0")
    assert report.chosen == "triton" and report.served_scheme == "fp8_tensor_a16"
    exact = explain(config("fp8_tensor_static"), cuda((8, 9)))
    assert exact.chosen == "triton" and exact.served_scheme == "fp8_tensor_static"


# nvfp4 --------------------------------------------------------------------------------------------
def test_nvfp4_order_trtllm_then_cutlass() -> None:
    report = explain(config("nvfp4"), cuda((10, 0)))
    assert report.order[:2] == [FIT, FIC] and report.chosen == FIT
    assert explain(config("nvfp4"), cuda((12, 0))).chosen == FIC
    hopper = explain(config("nvfp4"), cuda((9, 0)))  # no fp4 MMA: Triton's w4a16 kernel, bf16 activations
    assert hopper.chosen == "triton" and hopper.served_scheme == "nvfp4_a16"


def test_swiglu_limit_keeps_only_backends_that_apply_the_clamp() -> None:
    nvfp4 = explain(config("nvfp4", swiglu_limit=7.0), cuda((10, 0)))
    assert nvfp4.candidate(FIT).status == "selected" and nvfp4.candidate(FIC).status == "usable"
    fp8 = explain(config("fp8_tensor_static", swiglu_limit=7.0), cuda((10, 0)))
    assert fp8.candidate(FIT).reason == ("swiglu_limit=7 is not applied by the fp8_tensor_static kernel "
                                         "(only bf16/fp8_block/mxfp4/mxfp4_a8/nvfp4 apply it)")
    assert fp8.chosen == FIC


# mxfp4 --------------------------------------------------------------------------------------------
def test_mxfp4_one_selector_for_both_activation_kinds() -> None:
    assert type(oracle_for("mxfp4")) is type(oracle_for("mxfp4_a8")) is Mxfp4Oracle
    assert explain(config("mxfp4"), cuda((9, 0))).chosen == FIC
    assert explain(config("mxfp4"), cuda((10, 0))).chosen == FIT
    assert explain(config("mxfp4_a8"), cuda((10, 0))).chosen == FIT
    assert explain(config("mxfp4_a8"), cuda((12, 0))).chosen == FIC
    hopper = explain(config("mxfp4_a8"), cuda((9, 0)))
    assert hopper.chosen == "triton" and hopper.served_scheme == "mxfp4"
    assert "serves mxfp4_a8 at higher activation precision (bf16)" in " ".join(str(hopper).split())


def test_exact_backends_come_before_a_higher_activation_precision() -> None:
    """mxfp4_a8 on 12.0: CUTLASS runs it exactly; Triton, ranked before it for gpt-oss, would upcast."""
    gpt_oss = explain(config("mxfp4_a8", activation="swigluoai", has_bias=True), cuda((12, 0)))
    assert gpt_oss.order.index("triton") < gpt_oss.order.index(FIC)
    assert gpt_oss.chosen == FIC and gpt_oss.served_scheme == "mxfp4_a8"
    assert gpt_oss.candidate("triton").status == "usable" and gpt_oss.candidate("triton").served_scheme == "mxfp4"


def test_gpt_oss_has_its_own_mxfp4_order() -> None:
    """With a Triton backend that serves mxfp4, gpt-oss ranks it before CUTLASS; other models do not."""
    triton = BackendSpec(name="triton", experts="moe_oracle.kernel.modular:ExpertsModular",
                         vendors=frozenset({"cuda"}), schemes=frozenset({"mxfp4", "mxfp4_a8"}), rank=50)
    reg = Registry()
    reg.register_all([REFERENCE_SPEC, triton], source="moe-oracle-core")
    reg.register_all(backends(), source="moe-oracle-cuda")
    oracle = Mxfp4Oracle(reg)
    gpt_oss = config("mxfp4", activation="swigluoai", has_bias=True)
    report = oracle.explain(gpt_oss, cuda((10, 0)))
    assert report.order == [FIT, "triton", FIC, "reference"]
    assert any("gpt-oss" in r for r in hint_reasons(report, "triton"))
    assert oracle.explain(config("mxfp4"), cuda((10, 0))).order == [FIT, FIC, "triton", "reference"]


# TRTLLM limits --------------------------------------------------------------------------------------
def test_trtllm_supports_at_most_2048_experts() -> None:
    report = explain(config(num_experts=4096), cuda((10, 0)))
    assert report.candidate(FIT).reason == "supports at most 2048 experts, config has 4096"
    assert report.chosen == FIC


def test_trtllm_bf16_needs_a_128_multiple_hidden_size() -> None:
    report = explain(config(hidden_size=192), cuda((10, 0)))
    assert report.candidate(FIT).reason == ("bf16 needs hidden_size % 128 == 0 (128-byte K blocks and 128-row "
                                            "epilogue tiles), have 192")


def test_trtllm_fp8_per_tensor_has_no_routed_kernel() -> None:
    a2a = explain(config("fp8_tensor_static", parallel=ParallelConfig(ep_size=2, all2all="deepep_high_throughput")),
                  cuda((10, 0)))
    assert a2a.candidate(FIT).reason == (
        "fp8_tensor_static has only the monolithic TRTLLM kernel (no routed variant) and "
        "all2all='deepep_high_throughput' hands it routed tokens")
    sigmoid = explain(config("fp8_tensor_static", routing=RoutingConfig(scoring="sigmoid")), cuda((10, 0)))
    assert "no in-kernel router computes" in sigmoid.candidate(FIT).reason
    # bf16 falls back to the routed kernel instead
    assert explain(config(routing=RoutingConfig(scoring="sigmoid")), cuda((10, 0))).chosen == FIT


def test_flashinfer_absent_is_a_reason_not_an_error() -> None:
    report = explain(config("nvfp4"), cuda((10, 0), flashinfer=False))
    for name in (FIT, FIC):
        assert report.candidate(name).reason == "flashinfer not installed (pip install flashinfer-python)"
    assert report.chosen == "triton" and report.served_scheme == "nvfp4_a16"
    assert not report.slow_warning


def test_router_weight_on_input_is_rejected() -> None:
    report = explain(config(top_k=1, apply_router_weight_on_input=True), cuda((10, 0)))
    for name in (FIT, FIC):
        assert report.candidate(name).reason == ("applies router weights to the expert outputs, not the input "
                                                 "(apply_router_weight_on_input=True)")


def test_rules_do_not_apply_on_other_vendors() -> None:
    report = explain(config("fp8_block"), Platform.simulate("rocm", arch="gfx942"))
    assert FIT not in report.order and not report.candidate("triton").hints


def test_selection_names_the_served_scheme_and_strict_accepts_it() -> None:
    """Higher activation precision is not the reference: strict passes, and no slow warning."""
    hopper = cuda((9, 0))
    for quant, served in (("mxfp4_a8", "mxfp4"), ("nvfp4", "nvfp4_a16"), ("w4a8_int8", "int4_w4a16"),
                          ("w4a8_fp8", "int4_w4a16")):
        selection = moe_oracle.select(config(quant), hopper, strict=True)
        assert (selection.backend, selection.served_scheme) == ("triton", served), str(selection.report)
        assert selection.report.to_dict()["served_scheme"] == served
    ampere = moe_oracle.select(MoEConfig.preset("deepseek-v3"), cuda((8, 0)), strict=True)
    assert (ampere.backend, ampere.served_scheme) == ("triton", "fp8_block_a16")
