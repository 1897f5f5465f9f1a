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
_FILE_SHAPE = '{"configs": {"<M>": {"w13": {<TritonConfig>}, "w2": {<TritonConfig>}}}}'


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
    return [Path(p) for p in os.environ.get(ENV_DIR, "").split(os.pathsep) if p] + list(package_dirs())


@functools.cache
def package_dirs() -> tuple[Path, ...]:
    """Vendor packages' config folders, from entry points. Cached: scanning every installed
    distribution's metadata costs tens of milliseconds, far more than a whole decode step."""
    dirs = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            dirs.append(Path(str(resources.files(ep.value))))
        except (ImportError, TypeError) as exc:
            logger.warning("moe-oracle: triton config package %s (%s) did not load: %s", ep.name, ep.value, exc)
    return tuple(dirs)


@functools.cache
def _load(name: str, dirs: tuple[Path, ...]) -> dict[int, LayerConfigs] | None:
    for d in dirs:
        path = d / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                return {int(m): LayerConfigs(*(TritonConfig.from_dict(entry[g]) for g in GEMMS))
                        for m, entry in data["configs"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
                raise ValueError(f"{path}: expected a tuned config file {_FILE_SHAPE}, "
                                 f"got {type(exc).__name__}: {exc}") from exc
    return None


@dataclass(frozen=True)
class DeviceFamily:
    """Devices close enough (same SM count class, memory system and clocks) that a table tuned on one
    serves the others better than the heuristic. ``members`` are device-name prefixes, most specific
    first; ``tables`` the device names whose tuned files the family shares, in preference order."""

    name: str
    members: tuple[str, ...]
    tables: tuple[str, ...]
    reason: str


DEVICE_FAMILIES = (
    DeviceFamily("H200", ("NVIDIA H200", "NVIDIA GH200"), ("NVIDIA H200", "NVIDIA H200 NVL", "NVIDIA GH200 480GB"),
                 "GH100 with HBM3e (141 GB, 4.8 TB/s): H200 SXM, H200 NVL and GH200 share tiles and pipelines"),
    DeviceFamily("H100", ("NVIDIA H100", "NVIDIA H800"),
                 ("NVIDIA H100 80GB HBM3", "NVIDIA H100 NVL", "NVIDIA H100 PCIe", "NVIDIA H800"),
                 "GH100 with HBM3/HBM2e (80-94 GB): H100 SXM, NVL, PCIe and H800"),
)


def device_family(device_name: str) -> DeviceFamily | None:
    name = device_name.strip()
    return next((f for f in DEVICE_FAMILIES if any(name.startswith(m) for m in f.members)), None)


@dataclass(frozen=True)
class TunedTable:
    """A tuned table and the device it was tuned on (``device_name`` itself, or a family member)."""

    configs: dict[int, LayerConfigs]
    tuned_on: str


def tuned_table(config: MoEConfig, device_name: str) -> TunedTable | None:
    """This layer's tuned table for this device: its own file, else one of its family's (``DEVICE_FAMILIES``),
    else None."""
    dirs = tuple(search_dirs())
    family = device_family(device_name)
    for name in (device_name, *(family.tables if family else ())):
        table = _load(file_name_for(config, name), dirs)
        if table:
            return TunedTable(table, name)
    return None


def tuned_configs(config: MoEConfig, device_name: str) -> dict[int, LayerConfigs] | None:
    """Every tuned entry (by M) for this layer on this device (or its family), or None when no file exists."""
    table = tuned_table(config, device_name)
    return None if table is None else table.configs


def describe_configs(config: MoEConfig, device_name: str) -> str:
    """Where this layer's launch configs come from on this device, for ``explain``."""
    table = tuned_table(config, device_name)
    if table is None:
        family = device_family(device_name)
        where = f"{device_name} or its {family.name} family" if family else device_name
        return f"heuristic launch configs (no tuned table for {where}; moe-oracle tune writes one)"
    if table.tuned_on == device_name:
        return f"launch configs tuned on {device_name}"
    family = device_family(device_name)
    assert family is not None
    return f"launch configs tuned on {table.tuned_on} ({device_name} is in its {family.name} family)"


def get_configs(config: MoEConfig, num_tokens: int, device_name: str) -> LayerConfigs:
    """The configs for ``num_tokens`` tokens: the tuned entry of nearest M, else the heuristic."""
    table = tuned_configs(config, device_name)
    if table:
        m = min(table, key=lambda key: (abs(key - num_tokens), key))
        return table[m]
    return default_configs(config, num_tokens)


def default_configs(config: MoEConfig, num_tokens: int) -> LayerConfigs:
    """A heuristic that is good without a tuned file (it follows what tuning found on an H100).

    Few rows per expert is weight streaming: 16-row blocks, narrow GEMM1 tiles so every SM has
    work, 256-wide K steps where the weights allow. Many rows per expert is compute-bound: 128-row
    blocks, 128x128 (GEMM1, two accumulators) and 128x256 (GEMM2) tiles, 8 warps.
    """
    per_expert = max(1, num_tokens * config.top_k) / config.num_local_experts
    quant = config.scheme.weight
    grouped = quant is not None and quant.granularity.kind in ("block", "group")
    # Weight-only (mixed input: packed weights dequantized in registers, 16-bit MMA): prefill takes
    # the bf16 tiles, so each dequantized weight tile feeds 128 rows (issue 17: the 64-row tiles
    # left int4 prefill 11x slower than bf16). Not yet measured on a GPU: bench/gpu_quant_moe.py.
    weight_only = quant is not None and config.scheme.activation is None
    bf16_like = quant is None
    if per_expert <= 8:
        bk = 128 if grouped else 256
        w13 = TritonConfig(block_m=16, block_n=64 if grouped else 32, block_k=bk, group_m=1,
                           num_warps=4, num_stages=4)
        w2 = TritonConfig(block_m=16, block_n=64, block_k=bk, group_m=1, num_warps=4, num_stages=4)
    elif per_expert <= 48:
        w13 = TritonConfig(block_m=32, block_n=64, block_k=128, group_m=1, num_warps=4, num_stages=3)
        w2 = TritonConfig(block_m=32, block_n=128, block_k=128, group_m=1, num_warps=4, num_stages=4)
    elif per_expert <= 160:
        bk = 128 if grouped else 64
        w13 = TritonConfig(block_m=64, block_n=64 if bf16_like else 128, block_k=bk, group_m=8, num_warps=4,
                           num_stages=3 if bf16_like else 4)
        w2 = TritonConfig(block_m=64, block_n=128, block_k=bk, group_m=8, num_warps=4, num_stages=4)
    elif not bf16_like and grouped and not weight_only:
        w13 = TritonConfig(block_m=64, block_n=128, block_k=128, group_m=8, num_warps=8, num_stages=4)
        w2 = TritonConfig(block_m=64, block_n=128, block_k=128, group_m=8, num_warps=4, num_stages=4)
    else:
        w13 = TritonConfig(block_m=128, block_n=128, block_k=64, group_m=8, num_warps=8, num_stages=4)
        w2 = TritonConfig(block_m=128, block_n=256 if bf16_like else 128, block_k=64, group_m=8, num_warps=8,
                          num_stages=4 if bf16_like else 3)
    a_bytes = 1 if config.scheme.activation is not None else config.dtype.itemsize
    b_bytes = 1 if quant is not None else config.dtype.itemsize
    return LayerConfigs(fit_shared_memory(w13, a_bytes, b_bytes, gated=bool(config.is_gated)),
                        fit_shared_memory(w2, a_bytes, b_bytes, gated=False))


SHARED_MEMORY_BYTES = 200 * 1024  # under every target's per-block limit (H100: 227 KiB)


def shared_memory(cfg: TritonConfig, a_bytes: int, b_bytes: int, *, gated: bool) -> int:
    """Pipelined operand buffers of one program: (stages - 1) copies of the A tile and the B tile(s)."""
    per_stage = cfg.block_m * cfg.block_k * a_bytes + cfg.block_k * cfg.block_n * b_bytes * (2 if gated else 1)
    return (cfg.num_stages - 1) * per_stage


def fit_shared_memory(cfg: TritonConfig, a_bytes: int, b_bytes: int, *, gated: bool) -> TritonConfig:
    """Fewer stages (down to 3), then narrower K steps, until the buffers fit (fp32 needs it)."""
    while shared_memory(cfg, a_bytes, b_bytes, gated=gated) > SHARED_MEMORY_BYTES:
        if cfg.num_stages > 3:
            cfg = TritonConfig(**{**cfg.to_dict(), "num_stages": cfg.num_stages - 1})
        elif cfg.block_k > 16:
            cfg = TritonConfig(**{**cfg.to_dict(), "block_k": cfg.block_k // 2})
        else:
            break
    return cfg
