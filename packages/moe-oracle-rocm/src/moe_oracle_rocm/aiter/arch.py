"""Which AMD GPU architecture a tensor lives on, and the fp8 dtype AITER uses there.

gfx942 (MI300) has only the "fnuz" fp8 format (``float8_e4m3fnuz``: exponent bias 8, no negative
zero, max 240); gfx950 (MI350) has the OCP format (``float8_e4m3fn``, bias 7, max 448), which is
also the canonical format. The converter asks the weights' device, since a converter receives no
platform.
"""

from __future__ import annotations

import torch

FNUZ_ARCHS = ("gfx942",)


def device_arch(device: torch.device) -> str | None:
    """The gfx name (``"gfx942"``) of a ROCm device, or ``None`` for any other device."""
    if device.type != "cuda" or not getattr(torch.version, "hip", None):
        return None
    name = getattr(torch.cuda.get_device_properties(device), "gcnArchName", "")
    return name.split(":")[0] or None


def fp8_dtype(arch: str | None) -> torch.dtype:
    """The fp8 dtype AITER's kernels take on ``arch`` (OCP e4m3 when the arch is unknown)."""
    return torch.float8_e4m3fnuz if arch in FNUZ_ARCHS else torch.float8_e4m3fn
