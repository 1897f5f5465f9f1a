"""Launch configs of the Triton experts: tuned JSON files per device and layer shape, else a heuristic.

A tuned file covers one (device, E, N = I per partition, scheme) and holds, per token count M,
one config for each GEMM (``w13``: gate/up with the fused activation; ``w2``: down projection):

    E=256,N=2048,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_block,block_shape=[128,128].json
    {"device": "...", "E": 256, "N": 2048, "H": 7168, "top_k": 8, "dtype": "fp8_block",
     "triton": "3.6.0", "date": "...", "configs": {"1": {"w13": {...}, "w2": {...}}, "64": {...}}}

The entry whose M is nearest the call's T is used. Files are searched in the directories of
``MOE_ORACLE_TRITON_CONFIG_DIR`` (``os.pathsep``-separated), then in every package registered
under the ``moe_oracle.triton_configs`` entry-point group (a vendor package ships its tuned files
as package data; ``moe-oracle-cuda`` does for NVIDIA GPUs).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from moe_oracle.config.moe import MoEConfig

logger = logging.getLogger("moe_oracle")
ENV_DIR = "MOE_ORACLE_TRITON_CONFIG_DIR"
ENTRY_POINT_GROUP = "moe_oracle.triton_configs"
GEMMS = ("w13", "w2")


def _pow2(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or value < low or value > high or value & (value - 1):
        raise ValueError(f"TritonConfig.{name}: expected a power of two in [{low}, {high}], got {value!r}")


@dataclass(frozen=True, kw_only=True)
class TritonConfig:
    """One GEMM launch: tile shape, L2 grouping, warps, pipeline depth and reduction splits."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3
    split_k: int = 1

    def __post_init__(self) -> None:
        _pow2("block_m", self.block_m, 16, 256)
        _pow2("block_n", self.block_n, 16, 256)
        _pow2("block_k", self.block_k, 16, 512)
        _pow2("num_warps", self.num_warps, 1, 16)
        _pow2("split_k", self.split_k, 1, 64)
        if not isinstance(self.group_m, int) or self.group_m < 1:
            raise ValueError(f"TritonConfig.group_m: expected a positive int, got {self.group_m!r}")
        if not isinstance(self.num_stages, int) or not 1 <= self.num_stages <= 8:
            raise ValueError(f"TritonConfig.num_stages: expected an int in [1, 8], got {self.num_stages!r}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TritonConfig:
        return cls(**{k: int(v) for k, v in data.items()})


@dataclass(frozen=True)
class LayerConfigs:
    """The two GEMMs' configs for one token count."""

    w13: TritonConfig
    w2: TritonConfig


def device_key(device_name: str) -> str:
    """File-name form of a device name: spaces and slashes become underscores."""
    return device_name.strip().replace(" ", "_").replace("/", "_")


def scheme_block(config: MoEConfig) -> tuple[int, ...] | None:
    """The weight block (fp8_block) or group (grouped int) shape that a config file is keyed by."""
    key = config.scheme.weight
    if key is None or key.granularity.kind not in ("block", "group"):
        return None
    return key.granularity.shape


def config_file_name(*, device_name: str, num_experts: int, n: int, dtype: str,
                     block: tuple[int, ...] | None) -> str:
    name = f"E={num_experts},N={n},device_name={device_key(device_name)},dtype={dtype}"
    if block:
        name += f",block_shape=[{','.join(map(str, block))}]"
    return name + ".json"


def file_name_for(config: MoEConfig, device_name: str) -> str:
    return config_file_name(device_name=device_name, num_experts=config.num_local_experts,
                            n=config.intermediate_size_per_partition, dtype=config.scheme.name,
                            block=scheme_block(config))


def search_dirs() -> list[Path]:
    """Directories holding tuned files, in lookup order (environment first, then vendor packages)."""
    dirs = [Path(p) for p in os.environ.get(ENV_DIR, "").split(os.pathsep) if p]
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            dirs.append(Path(str(resources.files(ep.value))))
        except (ImportError, TypeError) as exc:
            logger.warning("moe-oracle: triton config package %s (%s) did not load: %s", ep.name, ep.value, exc)
    return dirs


@functools.cache
def _load(name: str, dirs: tuple[Path, ...]) -> dict[int, LayerConfigs] | None:
    for d in dirs:
        path = d / name
        if path.is_file():
            data = json.loads(path.read_text())
            return {int(m): LayerConfigs(*(TritonConfig.from_dict(entry[g]) for g in GEMMS))
                    for m, entry in data["configs"].items()}
    return None


def tuned_configs(config: MoEConfig, device_name: str) -> dict[int, LayerConfigs] | None:
    """Every tuned entry (by M) for this layer on this device, or None when no file exists."""
    return _load(file_name_for(config, device_name), tuple(search_dirs()))


def get_configs(config: MoEConfig, num_tokens: int, device_name: str, *,
                sm_count: int = 132) -> LayerConfigs:
    """The configs for ``num_tokens`` tokens: the tuned entry of nearest M, else the heuristic."""
    table = tuned_configs(config, device_name)
    if table:
        m = min(table, key=lambda key: (abs(key - num_tokens), key))
        return table[m]
    return default_configs(config, num_tokens, sm_count=sm_count)


def default_configs(config: MoEConfig, num_tokens: int, *, sm_count: int = 132) -> LayerConfigs:
    """A heuristic that is good without a tuned file.

    Small M (few pairs per expert) is weight-streaming: 16-row blocks, narrow columns so every SM
    has a tile, and the down projection split along I when its tiles would not fill the device.
    Large M is compute-bound: 64-128-row blocks and 128-wide tiles.
    """
    e = config.num_local_experts
    pairs = max(1, num_tokens * config.top_k)
    per_expert = pairs / e
    hit = min(e, pairs)
    h, i = config.hidden_size, config.intermediate_size_per_partition
    quant = config.scheme.weight
    fp8_block = quant is not None and quant.granularity.kind == "block"
    # 8-bit weights with one scale per channel or tensor stream best with 256-wide K steps.
    wide_k = 256 if quant is not None and quant.granularity.kind in ("tensor", "channel") else 128
    if per_expert <= 16:
        bm, bn13, bn2, bk, warps, stages = 16, 64, 64, wide_k, 4, 4
    elif per_expert <= 32:
        bm, bn13, bn2, bk, warps, stages = 32, 64, 64, 128, 4, 4
    elif per_expert <= 96:
        bm, bn13, bn2, bk, warps, stages = 64, 64, 128, 64, 4, 3
    else:
        bm, bn13, bn2, bk, warps, stages = 128, 128, 128, 64, 8, 3
    if fp8_block:
        bn13, bk = max(bn13, 128), 128
    split = 1
    tiles2 = hit * -(-h // bn2)
    while tiles2 * split < 2 * sm_count and i // (bk * split * 2) >= 4 and per_expert <= 16:
        split *= 2
    w13 = TritonConfig(block_m=bm, block_n=bn13, block_k=bk, group_m=1 if per_expert <= 16 else 8,
                       num_warps=warps, num_stages=stages)
    w2 = TritonConfig(block_m=bm, block_n=bn2, block_k=bk, group_m=1 if per_expert <= 16 else 8,
                      num_warps=warps, num_stages=stages, split_k=split)
    return LayerConfigs(w13, w2)
