"""Shared fixtures: AITER's layouts restated element by element, and a fake ``aiter`` module.

The layouts here are written as index formulas (which source element lands at each output
position), independently of ``moe_oracle_rocm.aiter.layout``'s view/permute code, from AITER's
``aiter/ops/shuffle.py`` and ``aiter/int4_utils.py`` semantics.
"""

from __future__ import annotations

import enum
import os
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch

INT4_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _digits(total: int, radix: tuple[int, ...]) -> list[torch.Tensor]:
    """Mixed-radix digits (most significant first) of 0..total-1."""
    o = torch.arange(total)
    out = []
    for r in reversed(radix):
        out.append(o % r)
        o = o // r
    return list(reversed(out))


def _gather(src: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per expert, the output's flat order taken from ``src[e, rows, cols]``."""
    flat = src.reshape(src.shape[0], -1)
    return flat[:, rows * src.shape[-1] + cols].reshape(src.shape)


def ref_tiles(src: torch.Tensor, pack: int) -> torch.Tensor:
    """(16, 16) shuffle of ``[E, N, K]``: tiles of 16 rows x 32 columns, packs of ``pack``."""
    _, n, k = src.shape
    nb, kb, kp, r, j = _digits(n * k, (n // 16, k // 32, 32 // pack, 16, pack))
    return _gather(src, nb * 16 + r, kb * 32 + kp * pack + j)


def ref_a16w4(src: torch.Tensor, gate_up: bool) -> torch.Tensor:
    """a16w4 data shuffle of ``[E, N, Kb]`` bytes (16 lanes x 4 k-lanes x 16-byte packs)."""
    _, n, kb = src.shape
    if gate_up:
        n0, half, k0, kl, nl, kp = _digits(n * kb, (n // 32, 2, kb // 64, 4, 16, 16))
        rows = half * (n // 2) + n0 * 16 + nl
    else:
        n0, k0, kl, nl, kp = _digits(n * kb, (n // 16, kb // 64, 4, 16, 16))
        rows = n0 * 16 + nl
    return _gather(src, rows, k0 * 64 + kl * 16 + kp)


def ref_a16w4_scale(src: torch.Tensor, gate_up: bool) -> torch.Tensor:
    """a16w4 scale shuffle of per-expert ``[E, n, G]`` e8m0 bytes (returned ``[E, n, G]``)."""
    _, n, g = src.shape
    n1, k1, kl, nl, kp, np_ = _digits(n * g, (n // 32, g // 8, 4, 16, 2, 2))
    rows = np_ * (n // 2) + n1 * 16 + nl if gate_up else n1 * 32 + np_ * 16 + nl
    return _gather(src, rows, k1 * 8 + kp * 4 + kl)


def ref_int4_words(values: torch.Tensor) -> torch.Tensor:
    """int8 ``[E, N, K]`` in [-8, 7] -> int64 words ``[E, N, K/8]``: nibble p = element ORDER[p]."""
    e, n, k = values.shape
    v = (values.to(torch.int64) & 0xF).reshape(e, n, k // 8, 8)
    return sum(v[..., INT4_ORDER[p]] << (4 * p) for p in range(8))


class FakeAiter(types.ModuleType):
    """Stands in for ``aiter``: enums like AITER's (built from C++ there) and a recording ``fused_moe``.

    ``respond(kwargs)`` checks the call and returns the output; positional arguments fail.
    """

    ActivationType = enum.IntEnum("ActivationType", {"No": -1, "Silu": 0, "Gelu": 1, "Swiglu": 2, "Situv2": 3})
    QuantType = enum.IntEnum("QuantType", {"No": 0, "per_Tensor": 1, "per_Token": 2, "per_1x32": 3,
                                           "per_1x128": 4, "per_128x128": 5})

    def __init__(self, respond: Callable[[dict[str, Any]], torch.Tensor]) -> None:
        super().__init__("aiter")
        self.respond = respond
        self.calls: list[dict[str, Any]] = []

    def fused_moe(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        assert not args, f"aiter.fused_moe called with {len(args)} positional arguments; keywords only"
        self.calls.append(kwargs)
        return self.respond(kwargs)


@pytest.fixture
def fake_aiter(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[dict[str, Any]], torch.Tensor]], FakeAiter]:
    """Install a ``FakeAiter`` with the given responder as ``sys.modules["aiter"]``."""

    def install(respond: Callable[[dict[str, Any]], torch.Tensor]) -> FakeAiter:
        module = FakeAiter(respond)
        monkeypatch.setitem(sys.modules, "aiter", module)
        return module

    return install


@pytest.fixture
def layouts() -> types.SimpleNamespace:
    """The index-formula layouts above, for test modules (which cannot import conftest)."""
    return types.SimpleNamespace(tiles=ref_tiles, a16w4=ref_a16w4, a16w4_scale=ref_a16w4_scale,
                                 int4_words=ref_int4_words, int4_order=INT4_ORDER)


def per_channel_int4(config: Any, seed: int) -> Any:
    """w4a8_fp8 canonical weights whose group scales are equal along each row (what AITER runs)."""
    from moe_oracle.plugin import CanonicalWeights

    g = torch.Generator().manual_seed(seed)
    e, n, h, i = config.num_local_experts, config.w13_rows, config.hidden_size, config.intermediate_size_per_partition
    tensors = {}
    for name, rows, k in (("w13", n, h), ("w2", h, i)):
        tensors[name] = torch.randint(0, 256, (e, rows, k // 2), generator=g, dtype=torch.uint8)
        per_row = (torch.rand(e, rows, 1, generator=g) + 0.5) / (7 * k ** 0.5)
        tensors[f"{name}_scale"] = per_row.expand(e, rows, -(-k // 128)).contiguous()
    return CanonicalWeights(**tensors)


@pytest.fixture
def w4a8_weights() -> Callable[[Any, int], Any]:
    return per_channel_int4


@pytest.fixture
def real_aiter() -> types.ModuleType:
    """The real ``aiter`` under ``nox -s test-rocm`` (MOE_ORACLE_TEST_ROCM=1) on a ROCm GPU; skips otherwise."""
    if os.environ.get("MOE_ORACLE_TEST_ROCM") != "1":
        pytest.skip("AITER numerics run under nox -s test-rocm (MOE_ORACLE_TEST_ROCM=1)")
    if not getattr(torch.version, "hip", None) or not torch.cuda.is_available():
        pytest.skip("needs a ROCm build of torch and an AMD GPU")
    try:
        import aiter
    except Exception as exc:  # AITER raises various errors off a working ROCm install
        pytest.skip(f"aiter does not import here: {type(exc).__name__}: {exc}")
    return aiter
