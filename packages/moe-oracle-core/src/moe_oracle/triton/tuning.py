"""The Triton experts' launch configs under ``policy="measured"``: tuned per bucket on first use.

At each bucket's token count the search starts from what the experts would launch anyway (the
shipped table's entry for this device, else the heuristic), then tries ``tune.candidates`` for
GEMM1 with GEMM2 fixed, then for GEMM2 with GEMM1 at its best (the coordinate descent of
``moe-oracle tune``'s table search). So a GPU without shipped tables (an H200) is tuned where it
runs, and a tuned entry is never slower than the start as measured. The chosen configs are
``{"w13": {...}, "w2": {...}}`` in ``BucketPlan.kernel_config``; every bucket shares the weights.
"""

from __future__ import annotations

import math
from typing import Any

from moe_oracle.config.moe import MoEConfig
from moe_oracle.kernel.tuning import KernelConfig, Run, Tuning


def to_kernel_config(layer: Any) -> dict[str, Any]:
    return {"w13": layer.w13.to_dict(), "w2": layer.w2.to_dict()}


def from_kernel_config(kc: KernelConfig) -> Any:
    from moe_oracle.triton.configs import LayerConfigs, TritonConfig

    return LayerConfigs(TritonConfig.from_dict(kc["w13"]), TritonConfig.from_dict(kc["w2"]))


class TritonTuning(Tuning):
    """``max_candidates``: the most configs tried per GEMM and bucket (None: every pruned candidate;
    tests and quick runs lower it, since each new config is a Triton compile)."""

    max_candidates: int | None = None

    def search(self, config: MoEConfig, num_tokens: int, run: Run) -> tuple[dict[str, Any], float]:
        from moe_oracle.triton.configs import LayerConfigs
        from moe_oracle.triton.tune import candidates

        base_ms = run({})
        start = self._start(config, num_tokens)
        if start is None:
            return {}, base_ms
        best, best_ms = start, base_ms
        tried = {to_kernel_config_key(start)}
        for cand in candidates(config, num_tokens, "w13")[:self.max_candidates]:
            layer = LayerConfigs(cand, start.w2)
            if to_kernel_config_key(layer) in tried:
                continue
            tried.add(to_kernel_config_key(layer))
            if (ms := run(to_kernel_config(layer))) < best_ms:
                best, best_ms = layer, ms
        for cand in candidates(config, num_tokens, "w2")[:self.max_candidates]:
            layer = LayerConfigs(best.w13, cand)
            if to_kernel_config_key(layer) in tried:
                continue
            tried.add(to_kernel_config_key(layer))
            if (ms := run(to_kernel_config(layer))) < best_ms:
                best, best_ms = layer, ms
        if not math.isfinite(best_ms):
            return {}, best_ms
        return ({} if best is start else to_kernel_config(best)), best_ms

    def _start(self, config: MoEConfig, num_tokens: int) -> Any:
        try:
            import torch

            from moe_oracle.triton.configs import get_configs

            return get_configs(config, num_tokens, torch.cuda.get_device_name())
        except Exception:  # no GPU to name: the heuristic
            from moe_oracle.triton.configs import default_configs

            return default_configs(config, num_tokens)

    def apply(self, experts: Any, kernel_config: KernelConfig | None) -> None:
        experts.configs_override = from_kernel_config(kernel_config) if kernel_config else None


def to_kernel_config_key(layer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(layer.w13.to_dict().values()), tuple(layer.w2.to_dict().values())


TUNING = TritonTuning()
