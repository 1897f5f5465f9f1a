"""``cpu_grouped``'s layout variants for ``policy="measured"``: its native kernels, or oneDNN.

Where a native build runs the config, the measured policy times both the native panels (the
default) and the layout with the native kernels off (``{"native": "off"}``: oneDNN-packed experts
for unquantized bf16/fp32, per-expert torch GEMMs otherwise). On an AMX CPU oneDNN ran faster from
16 rows per expert (``experts.AMX_TORCH_ROWS``); measuring finds that crossover on each machine.
The two are different layouts: a plan that mixes them needs ``allow_extra_memory=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moe_oracle.plugin import KernelConfig, KernelWeights, MoEConfig, Platform, Tuning

NATIVE_KEY = "native"


class GroupedTuning(Tuning):
    def variants(self, config: MoEConfig, platform: Platform) -> list[dict[str, Any]]:
        from moe_oracle_cpu.cpu_grouped import native

        build, _ = native.choose_build(config, platform.features)
        if not build or native.disabled():
            return [{}]
        return [{}, {NATIVE_KEY: "off"}]

    def variant_of(self, kernel_config: KernelConfig | None) -> dict[str, Any]:
        kc = kernel_config or {}
        return {NATIVE_KEY: kc[NATIVE_KEY]} if NATIVE_KEY in kc else {}

    def convert(self, convert: Callable[[], KernelWeights], variant: KernelConfig) -> KernelWeights:
        from moe_oracle_cpu.cpu_grouped import native

        with native.switch_override(variant.get(NATIVE_KEY)):
            return convert()


TUNING = GroupedTuning()
