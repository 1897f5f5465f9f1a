"""The ``xpu_ipex`` spec: when IPEX's ``GatedMLPMOE`` can serve a layer, and why not otherwise.

Which torch counts: ``platform.libraries["torch"]`` when the platform names one (simulate it with
``--platform xpu,intel_extension_for_pytorch=2.8.10,torch=2.8.0``), otherwise the torch of this
process (``torch.__version__`` once torch is imported, else its package metadata, so that
``moe-oracle list`` never imports torch), since that is the torch IPEX would be imported next to. IPEX
refuses to import unless torch's major.minor equals its own, and 2.8 is its last release.

``GatedMLPMOE`` routes inside (softmax top-k, or grouped top-k with softmax or sigmoid scores),
with no routed scaling factor, no score-correction bias (IPEX would add it to the weights too),
no gpt-oss softmax-after-top-k, no expert offset (IPEX 2.8's public module takes none), bf16/fp16,
gated silu without biases or clamping.
"""

from __future__ import annotations

import sys
from importlib import metadata
from typing import TYPE_CHECKING

from moe_oracle.plugin import BackendSpec, Check, Support, check, dtype_name, release, show_release
from moe_oracle_xpu.version import PLUGIN_API

if TYPE_CHECKING:
    from moe_oracle.plugin import MoEConfig, Platform

XPU_IPEX_RANK = 20
LIBRARY = "intel_extension_for_pytorch"
IPEX_LAST = (2, 8)


def torch_version(platform: Platform) -> str:
    """The torch version IPEX would meet: the platform's ``torch`` entry, else this process's."""
    if platform.libraries.get("torch"):
        return platform.libraries["torch"]
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _torch_matches(config: MoEConfig, platform: Platform) -> Support:
    ipex = platform.libraries.get(LIBRARY, "")
    want = release(ipex)[:2]
    have = torch_version(platform)
    if want and release(have)[:2] == want:
        return Support.yes()
    return Support.no(f"{LIBRARY} {ipex} needs torch {show_release(want or IPEX_LAST)}.*, have torch {have} (IPEX refuses "
                      f"to import with another torch; {show_release(IPEX_LAST)} is its last release)")


def _routing(config: MoEConfig, platform: Platform) -> Support:
    r = config.routing
    problems = []
    if r.routed_scaling_factor != 1.0:
        problems.append(f"routed_scaling_factor={r.routed_scaling_factor}")
    if r.score_correction_bias:
        problems.append("a score-correction bias")
    if r.softmax_after_topk:
        problems.append("softmax after top-k (gpt-oss)")
    if r.scoring == "sigmoid" and not r.grouped:
        problems.append("sigmoid scores without expert groups")
    if not problems:
        return Support.yes()
    return Support.no("routes inside with softmax top-k or grouped top-k only; config has " + ", ".join(problems))


CHECKS = (
    Check("torch major.minor equal to IPEX's (2.8)", _torch_matches),
    check("dtype bf16/fp16", lambda c, p: dtype_name(c.dtype) in ("bf16", "fp16"),
          lambda c, p: f"computes in bf16/fp16, config dtype is {dtype_name(c.dtype)}"),
    check("gated silu, no bias, no clamp", lambda c, p: bool(c.is_gated) and not c.has_bias and c.swiglu_limit is None,
          lambda c, p: "runs gated silu without biases or clamping only, config has "
                       f"is_gated={c.is_gated} has_bias={c.has_bias} swiglu_limit={c.swiglu_limit}"),
    Check("IPEX's own routing", _routing),
    check("no expert parallelism", lambda c, p: c.parallel.ep_size == 1,
          lambda c, p: f"takes all experts on one rank (GatedMLPMOE has no expert offset), ep_size={c.parallel.ep_size}"),
    check("router weight on the output", lambda c, p: not c.apply_router_weight_on_input,
          "applies router weights to the expert output only, config has apply_router_weight_on_input"),
)

XPU_IPEX_SPEC = BackendSpec(
    name="xpu_ipex",
    plugin_api=PLUGIN_API,
    experts="moe_oracle_xpu.xpu_ipex.experts:IpexExperts",
    converter="moe_oracle_xpu.xpu_ipex.converter:convert",
    vendors=frozenset({"xpu"}),
    schemes=frozenset({"bf16", "fp16"}),
    activations=frozenset({"silu"}),
    libraries={LIBRARY: "intel-extension-for-pytorch"},
    checks=CHECKS,
    rank=XPU_IPEX_RANK,
    description="IPEX 2.8 llm.modules.GatedMLPMOE (routes inside); needs torch 2.8",
)
