"""``IpexExperts``: router logits through IPEX's ``llm.modules.GatedMLPMOE``, which routes inside.

    hidden [T, H], router_logits [T, E] --top-k (softmax or grouped)--> experts --> [T, H]

The module is built once per loaded weights (when the kernel is assembled); IPEX picks its CPU or
XPU implementation from the device of the first input.
"""

from __future__ import annotations

from types import ModuleType
from typing import ClassVar

import torch

from moe_oracle.plugin import ExpertsMonolithic, InputError, KernelWeights, MoEConfig, QuantConfig, load_library
from moe_oracle_xpu.xpu_ipex.converter import BACKEND, LAYOUT


def load_ipex() -> ModuleType:
    """``import intel_extension_for_pytorch``; IPEX exits (AttributeError) next to a torch it was not built for."""
    return load_library("intel_extension_for_pytorch", backend="xpu_ipex",
                        install=f"intel-extension-for-pytorch 2.8 with torch 2.8 (have torch {torch.__version__})",
                        catch=(ImportError, AttributeError))


class IpexExperts(ExpertsMonolithic):
    """Monolithic experts: ``GatedMLPMOE`` routes with the layer's ``RoutingConfig``."""

    activation_format: ClassVar[str] = "standard"

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        super().__init__(config, quant_config, weights)
        weights.require(BACKEND, LAYOUT)
        ipex = load_ipex()
        self.module = ipex.llm.modules.GatedMLPMOE(W13=weights.w13, W2=weights.w2, use_prepack=True)

    def apply(self, hidden: torch.Tensor, router_logits: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              score_correction_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``[T, H]`` in ``hidden.dtype``.

        Parameters
        ----------
        hidden : ``[T, H]`` bf16/fp16.
        router_logits : ``[T, E]`` float.
        expert_map : must be ``None`` (all experts on this rank).
        score_correction_bias : must be ``None`` (IPEX would add it to the weights as well).
        """
        if expert_map is not None:
            raise InputError("expert_map", "None (xpu_ipex holds every expert on one rank)", "a tensor")
        if score_correction_bias is not None:
            raise InputError("score_correction_bias", "None (xpu_ipex routes without one)", "a tensor")
        r = self.config.routing
        return self.module(
            hidden_states=hidden,
            use_grouped_topk=r.grouped,
            top_k=self.config.top_k,
            router_logits=router_logits,
            renormalize=r.renormalize,
            topk_group=r.topk_groups,
            num_expert_group=r.num_expert_groups,
            scoring_func=r.scoring,
        )
