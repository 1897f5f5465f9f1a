"""Zero padding of H and I for kernels with alignment needs, and the config the padding implies.

Padding never changes the result: padded intermediate channels have zero weights (and zero
biases), so they contribute zero (every activation here maps (0, 0) to 0), and padded hidden
channels are zero inputs whose output columns are dropped. Converters return the padded config
in ``KernelWeights.config`` and the caller's sizes in ``KernelWeights.extras`` (``hidden_size``,
``intermediate_size_per_partition``); nothing the caller holds is mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from moe_oracle.plugin import MoEConfig, pad_halves, pad_to, round_up, unpad_halves


@dataclass(frozen=True)
class Sizes:
    """Hidden size H and intermediate size per partition I, before and after padding."""

    h: int
    i: int
    h_pad: int
    i_pad: int

    @classmethod
    def of(cls, config: MoEConfig, *, hidden_multiple: int = 1, inter_multiple: int = 1) -> Sizes:
        h, i = config.hidden_size, config.intermediate_size_per_partition
        return cls(h, i, round_up(h, hidden_multiple), round_up(i, inter_multiple))

    @classmethod
    def from_extras(cls, config: MoEConfig, extras: Mapping[str, object]) -> Sizes:
        """The sizes of a converted layout: padded ones from its config, the caller's from extras."""
        h, i = extras["hidden_size"], extras["intermediate_size_per_partition"]
        assert isinstance(h, int) and isinstance(i, int)
        return cls(h, i, config.hidden_size, config.intermediate_size_per_partition)

    @property
    def extras(self) -> dict[str, int]:
        return {"hidden_size": self.h, "intermediate_size_per_partition": self.i}

    def config(self, config: MoEConfig) -> MoEConfig:
        """``config`` with the padded sizes (I is per partition, so the full size is I' * tp)."""
        if (self.h_pad, self.i_pad) == (self.h, self.i):
            return config
        return config.replace(hidden_size=self.h_pad, intermediate_size=self.i_pad * config.parallel.tp_size)


def _per_column(config: MoEConfig, name: str) -> int:
    """Elements of the K dimension one column of a canonical tensor covers: 1 for plain weights,
    2 for packed 4-bit weights, the group size for group scales (a partial last group counts)."""
    key = config.scheme.weight
    if key is None:
        return 1
    if name.endswith("_scale"):
        return key.granularity.shape[0]
    return 2 if key.dtype in ("int4", "fp4_e2m1") else 1


def _cols(config: MoEConfig, name: str, full: int) -> int:
    return -(-full // _per_column(config, name))


def pad_canonical(tensors: Mapping[str, torch.Tensor], config: MoEConfig, sizes: Sizes) -> dict[str, torch.Tensor]:
    """Zero-pad canonical ``w13``/``w2`` (plain, packed or group-scaled) and their biases.

    Only 3-D scales (per group) are padded; per-tensor, global and activation scales are
    shape-independent. Block-scaled (fp8 128x128) weights are never padded (converters pad
    nothing for them; their configs are checked aligned).
    """
    s = sizes
    out = dict(tensors)
    if (s.h_pad, s.i_pad) == (s.h, s.i):
        return out

    def rows13(t: torch.Tensor) -> torch.Tensor:
        return pad_halves(t, dim=1, half=s.i_pad) if config.is_gated else pad_to(t, dim=1, size=s.i_pad)

    for name in ("w13", "w13_scale"):
        t = tensors.get(name)
        if t is not None and t.dim() == 3:
            out[name] = pad_to(rows13(t), dim=2, size=_cols(config, name, s.h_pad))
    for name in ("w2", "w2_scale"):
        t = tensors.get(name)
        if t is not None and t.dim() == 3:
            out[name] = pad_to(pad_to(t, dim=1, size=s.h_pad), dim=2, size=_cols(config, name, s.i_pad))
    if "w13_bias" in tensors:
        out["w13_bias"] = rows13(tensors["w13_bias"])
    if "w2_bias" in tensors:
        out["w2_bias"] = pad_to(tensors["w2_bias"], dim=1, size=s.h_pad)
    return out


def unpad_canonical(tensors: Mapping[str, torch.Tensor], config: MoEConfig, sizes: Sizes) -> dict[str, torch.Tensor]:
    """Inverse of ``pad_canonical`` (``config`` is either the padded or the caller's config)."""
    s = sizes
    out = dict(tensors)
    if (s.h_pad, s.i_pad) == (s.h, s.i):
        return out

    def rows13(t: torch.Tensor) -> torch.Tensor:
        return unpad_halves(t, dim=1, half=s.i) if config.is_gated else t[:, :s.i]

    for name in ("w13", "w13_scale"):
        t = tensors.get(name)
        if t is not None and t.dim() == 3:
            out[name] = rows13(t)[:, :, :_cols(config, name, s.h)].contiguous()
    for name in ("w2", "w2_scale"):
        t = tensors.get(name)
        if t is not None and t.dim() == 3:
            out[name] = t[:, :s.h, :_cols(config, name, s.i)].contiguous()
    if "w13_bias" in tensors:
        out["w13_bias"] = rows13(tensors["w13_bias"]).contiguous()
    if "w2_bias" in tensors:
        out["w2_bias"] = tensors["w2_bias"][:, :s.h].contiguous()
    return out
