"""The CUDA selection matrix: capability x scheme x parallel layout x activation x FlashInfer
present/absent, every choice pinned.

``expected_choice`` restates the rules of issue 4 (vLLM 0.33's oracles) independently of the
hints that implement them: which backend can serve, and in which order they are tried.
"""

from __future__ import annotations

import itertools

import pytest

import moe_oracle
from moe_oracle import MoEConfig, ParallelConfig, Platform

CAPABILITIES = [(8, 0), (8, 9), (9, 0), (10, 0), (12, 0)]
SCHEMES = ["bf16", "fp16", "fp8_tensor_static", "fp8_block", "mxfp4", "mxfp4_a8", "nvfp4"]
PARALLEL = {
    "tp2": ParallelConfig(tp_size=2),
    "dp2": ParallelConfig(dp_size=2),
    "ep2": ParallelConfig(ep_size=2),
    "ep2_a2a": ParallelConfig(ep_size=2, dp_size=2, all2all="deepep_high_throughput"),
    "ep2_batched": ParallelConfig(ep_size=2, dp_size=2, all2all="deepep_low_latency"),
}
ACTIVATIONS = ["silu", "swigluoai"]
TRITON_SCHEMES = {"bf16", "fp16", "fp8_tensor_static", "fp8_block", "mxfp4"}
# Served by Triton at a higher activation precision (issue 17): only when no exact backend but the
# reference fits; fp8 below capability 8.9 as well (no fp8 MMA: e4m3 weights decoded in registers).
TRITON_UPCAST = {"mxfp4_a8", "nvfp4"}

# What each FlashInfer backend serves (issue 4 / vLLM 0.33): capabilities and activations.
CUTLASS_CAPS = {"bf16": "9.0 10 12", "fp16": "9.0 10 12", "fp8_tensor_static": "9.0 10 12", "fp8_block": "9.0",
                "mxfp4": "9.0", "mxfp4_a8": "10 12", "nvfp4": "10 12"}
CUTLASS_ACTS = {"fp8_block": {"silu"}, "fp8_tensor_static": {"silu"}}
TRTLLM_SCHEMES = {"bf16", "fp8_tensor_static", "fp8_block", "mxfp4", "mxfp4_a8", "nvfp4"}
TRTLLM_ACTS = {"fp8_block": {"silu"}, "fp8_tensor_static": {"silu"}, "nvfp4": {"silu"}}


def _cap_in(cap: tuple[int, int], allowed: str) -> bool:
    return any(cap == (9, 0) if a == "9.0" else cap[0] == int(a) for a in allowed.split())


def expected_choice(cap: tuple[int, int], scheme: str, layout: str, activation: str, flashinfer: bool) -> str | None:
    """The backend selection must choose; ``None`` when nothing serves the batched format."""
    parallel = PARALLEL[layout]
    batched = layout == "ep2_batched"
    fp8 = scheme.startswith("fp8")
    triton_exact = scheme in TRITON_SCHEMES and (not fp8 or cap >= (8, 9))
    triton_upcast = scheme in TRITON_UPCAST or (fp8 and cap < (8, 9))
    if batched:  # the reference takes the standard format only
        return "batched_triton" if triton_exact or triton_upcast else None
    cutlass_ok = (flashinfer and _cap_in(cap, CUTLASS_CAPS[scheme])
                  and activation in CUTLASS_ACTS.get(scheme, {"silu", "swigluoai"}))
    trtllm_ok = (flashinfer and cap[0] == 10 and scheme in TRTLLM_SCHEMES
                 and activation in TRTLLM_ACTS.get(scheme, {"silu", "swigluoai"})
                 and not (scheme == "fp8_tensor_static" and layout == "ep2_a2a"))
    order = ["flashinfer_trtllm", "flashinfer_cutlass", "triton"]
    unquantized = scheme in ("bf16", "fp16")
    if unquantized and (cap[0] == 9 or activation == "swigluoai"):
        order = ["triton", "flashinfer_trtllm", "flashinfer_cutlass"]
    if unquantized and parallel.dp_size > 1:
        order.remove("flashinfer_cutlass")
        order.append("flashinfer_cutlass")
    if scheme == "fp8_block" and cap[0] == 9:
        first = "flashinfer_cutlass" if parallel.ep_size > 1 else "triton"
        order.remove(first)
        order.insert(0, first)
    ok = {"flashinfer_trtllm": trtllm_ok, "flashinfer_cutlass": cutlass_ok, "triton": triton_exact}
    exact = next((name for name in order if ok[name]), None)
    if exact is not None:
        return exact
    return "triton" if triton_upcast else "reference"


CASES = list(itertools.product(CAPABILITIES, SCHEMES, PARALLEL, ACTIVATIONS, (True, False)))


@pytest.mark.parametrize(("cap", "scheme", "layout", "activation", "flashinfer"), CASES,
                         ids=[f"sm{c[0]}{c[1]}-{s}-{lay}-{a}-{'fi' if f else 'nofi'}" for c, s, lay, a, f in CASES])
def test_selection_matrix(cap: tuple[int, int], scheme: str, layout: str, activation: str, flashinfer: bool) -> None:
    config = MoEConfig(num_experts=8, top_k=2, hidden_size=256, intermediate_size=256, quant=scheme,
                       dtype="fp16" if scheme == "fp16" else "bf16", activation=activation,
                       parallel=PARALLEL[layout])
    libraries = {"triton": "3.6.0", **({"flashinfer": "0.6.13"} if flashinfer else {})}
    report = moe_oracle.explain(config, Platform.simulate("cuda", capability=cap, libraries=libraries))
    assert report.chosen == expected_choice(cap, scheme, layout, activation, flashinfer), str(report)
    for candidate in report.candidates:  # every rejection and every rule says why
        assert candidate.status != "rejected" or candidate.reason
        assert all(h.reason for h in candidate.hints)


def test_matrix_covers_every_backend() -> None:
    chosen = {expected_choice(*case) for case in CASES}
    # Never silently slow (issue 17): with fp8 weight-only below 8.9 and mxfp4 / mxfp4_a8 / nvfp4 on
    # Triton's mixed-input GEMM, no case of this matrix falls to the reference (nor finds no backend) any more.
    assert chosen == {"flashinfer_trtllm", "flashinfer_cutlass", "triton", "batched_triton"}


def test_explain_prints_each_rules_reason() -> None:
    hopper = Platform.simulate("cuda", capability=(9, 0), libraries={"triton": "3.6.0", "flashinfer": "0.6.13"})
    # The table wraps at 100 columns: compare the words, not the line breaks.
    text = " ".join(str(moe_oracle.explain(MoEConfig(num_experts=8, top_k=2, hidden_size=256, intermediate_size=256,
                                                     parallel=ParallelConfig(dp_size=2)), hopper)).split())
    assert "moe-oracle-cuda: bf16 FlashInfer is slower than Triton on Hopper" in text
    assert "moe-oracle-cuda: bf16 FlashInfer CUTLASS crashed under data + expert parallelism" in text
    text = " ".join(str(moe_oracle.explain(MoEConfig(num_experts=8, top_k=2, hidden_size=256, intermediate_size=256,
                                                     quant="fp8_block"), hopper)).split())
    assert "Hopper fp8 block without expert parallelism: Triton beats FlashInfer CUTLASS" in text
