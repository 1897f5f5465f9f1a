"""The selection cache: measured plans in ``$MOE_ORACLE_CACHE_DIR/selection/`` as JSON.

One file per key: the device (vendor, name, capability or arch, CPU features and threads), its
driver, the torch / triton / vendor-library versions, every moe-oracle distribution's version, the
config, the scheme, the buckets and the overrides that shaped the candidates. The file name is a
hash of the key and the file repeats the key, so any change of version re-measures. Files are
written to a temporary file in the same folder and renamed over the target (atomic on POSIX and
Windows), so processes writing at once each leave a whole file and a reader never sees half of one.
A file that does not parse, or whose key differs, is ignored with a WARNING and rewritten; a folder
that cannot be written leaves the plan in memory, and the report says so.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moe_oracle.version import __version__

if TYPE_CHECKING:
    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.oracle.overrides import Overrides
    from moe_oracle.platform import Platform
    from moe_oracle.registry import Registry

logger = logging.getLogger("moe_oracle")
CACHE_ENV = "MOE_ORACLE_CACHE_DIR"
FORMAT = 1


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "moe-oracle")
    return Path(root) / "selection"


def cache_key(config: MoEConfig, platform: Platform, overrides: Overrides, reg: Registry, *,
              buckets: tuple[int, ...], allow_extra_memory: bool, config_dict: dict[str, Any]) -> dict[str, Any]:
    """Everything a measured plan depends on, as plain JSON data."""
    return {
        "format": FORMAT,
        "device": _device(platform),
        "versions": {**dict(sorted(platform.libraries.items())), **_distributions(reg.generation, reg)},
        "moe_oracle": __version__,
        "scheme": config.scheme.name,
        "config": config_dict,
        "buckets": list(buckets),
        "allow_extra_memory": allow_extra_memory,
        "overrides": {"backend": overrides.backend, "exclude": sorted(overrides.exclude),
                      "prefer": list(overrides.prefer)},
        "environment": {name: os.environ.get(name) for name in reg.environment_variables()},
    }


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def path_for(key: dict[str, Any]) -> Path:
    return cache_dir() / f"{key_hash(key)}.json"


@dataclass(frozen=True)
class Entry:
    path: Path
    date: str
    payload: dict[str, Any]


def read(key: dict[str, Any]) -> Entry | None:
    """The cached entry for ``key``, or None (missing; unreadable or corrupt: with a WARNING)."""
    path = path_for(key)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("moe-oracle: ignoring the selection cache %s, which cannot be read (%s); measuring again",
                       path, exc)
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(key, default=str)):
            raise ValueError("its key does not match this layer, device and versions")
        if not isinstance(data.get("plan"), list) or not data["plan"]:
            raise ValueError("it holds no plan")
    except (ValueError, TypeError) as exc:
        logger.warning("moe-oracle: ignoring the corrupt selection cache %s (%s); measuring again and rewriting it",
                       path, exc)
        return None
    return Entry(path, str(data.get("date", "")), data)


def write(key: dict[str, Any], payload: dict[str, Any]) -> tuple[Path | None, str]:
    """Write atomically; ``(path, "")`` or ``(None, why not)``."""
    path = path_for(key)
    data = {"key": key, "date": now(), **payload}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, default=str)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        return None, f"cannot write the selection cache in {path.parent} ({exc.strerror or exc}); kept in memory"
    return path, ""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _device(platform: Platform) -> dict[str, Any]:
    import torch

    d: dict[str, Any] = {"vendor": platform.vendor, "name": platform.device_name,
                         "capability": list(platform.capability) if platform.capability else None,
                         "arch": platform.arch, "driver": _driver(platform.vendor)}
    if platform.vendor == "cpu":
        d["features"] = sorted(platform.features)
        d["threads"] = torch.get_num_threads()
    return d


@functools.cache
def _driver(vendor: str) -> str | None:
    import torch

    if vendor == "cuda":
        try:
            driver = torch._C._cuda_getDriverVersion()  # type: ignore[attr-defined]  # e.g. 12080
        except (AttributeError, RuntimeError):
            driver = None
        return f"cuda {torch.version.cuda}, driver {driver}"
    if vendor == "rocm":
        return f"hip {torch.version.hip}"
    if vendor == "xpu":
        return f"xpu {getattr(torch.version, 'xpu', None)}"
    return None


@functools.lru_cache(maxsize=8)
def _distributions(generation: int, reg: Registry) -> dict[str, str]:
    """Versions of every distribution that registered a backend (once per registry generation)."""
    from importlib import metadata

    out = {}
    for dist in sorted({s.distribution for s in reg.specs() if s.distribution}):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "source"
    return out
