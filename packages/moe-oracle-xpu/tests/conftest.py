"""Shared fixtures: fake ``vllm_xpu_kernels`` and ``intel_extension_for_pytorch`` modules, and the
switches for the real-hardware numerics that ``nox -s test-xpu`` runs."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import torch

Hook = Callable[..., Any]


class FakeXpuFusedMoe:
    """Stands in for ``vllm_xpu_kernels.fused_moe_interface.XpuFusedMoe``: keyword-only calls,
    each checked by the test's hooks; ``apply`` writes what ``on_apply`` returns into ``output``."""

    instances: ClassVar[list[FakeXpuFusedMoe]] = []
    on_init: Hook = staticmethod(lambda kw: None)
    on_apply: Hook = staticmethod(lambda self, kw: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        assert not args, f"XpuFusedMoe built with {len(args)} positional arguments; keywords only"
        type(self).on_init(kwargs)
        self.init_kwargs = kwargs
        self.apply_calls: list[dict[str, Any]] = []
        type(self).instances.append(self)

    def apply(self, *args: Any, **kwargs: Any) -> None:
        assert not args, f"XpuFusedMoe.apply called with {len(args)} positional arguments; keywords only"
        self.apply_calls.append(kwargs)
        kwargs["output"].copy_(type(self).on_apply(self, kwargs))


@pytest.fixture
def fake_xpu_kernels(monkeypatch: pytest.MonkeyPatch) -> Callable[[Hook, Hook], type[FakeXpuFusedMoe]]:
    """Install ``vllm_xpu_kernels`` (+ ``.fused_moe_interface``) with a fresh ``FakeXpuFusedMoe`` class."""

    def install(on_init: Hook, on_apply: Hook) -> type[FakeXpuFusedMoe]:
        cls = type("XpuFusedMoe", (FakeXpuFusedMoe,), {"instances": [], "on_init": staticmethod(on_init),
                                                        "on_apply": staticmethod(on_apply)})
        package = types.ModuleType("vllm_xpu_kernels")
        interface = types.ModuleType("vllm_xpu_kernels.fused_moe_interface")
        interface.XpuFusedMoe = cls  # type: ignore[attr-defined]
        package.fused_moe_interface = interface  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "vllm_xpu_kernels", package)
        monkeypatch.setitem(sys.modules, "vllm_xpu_kernels.fused_moe_interface", interface)
        return cls

    return install


class FakeGatedMLPMOE:
    """Stands in for ``intel_extension_for_pytorch.llm.modules.GatedMLPMOE``."""

    instances: ClassVar[list[FakeGatedMLPMOE]] = []
    on_init: Hook = staticmethod(lambda kw: None)
    on_forward: Hook = staticmethod(lambda self, kw: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        assert not args, f"GatedMLPMOE built with {len(args)} positional arguments; keywords only"
        type(self).on_init(kwargs)
        self.init_kwargs = kwargs
        self.calls: list[dict[str, Any]] = []
        type(self).instances.append(self)

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        assert not args, f"GatedMLPMOE called with {len(args)} positional arguments; keywords only"
        self.calls.append(kwargs)
        return type(self).on_forward(self, kwargs)


@pytest.fixture
def fake_ipex(monkeypatch: pytest.MonkeyPatch) -> Callable[[Hook, Hook], type[FakeGatedMLPMOE]]:
    """Install ``intel_extension_for_pytorch`` with ``llm.modules.GatedMLPMOE`` a fresh fake class."""

    def install(on_init: Hook, on_forward: Hook) -> type[FakeGatedMLPMOE]:
        cls = type("GatedMLPMOE", (FakeGatedMLPMOE,), {"instances": [], "on_init": staticmethod(on_init),
                                                        "on_forward": staticmethod(on_forward)})
        ipex = types.ModuleType("intel_extension_for_pytorch")
        ipex.llm = types.SimpleNamespace(modules=types.SimpleNamespace(GatedMLPMOE=cls))  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "intel_extension_for_pytorch", ipex)
        return cls

    return install


def _xpu_device() -> bool:
    xpu = getattr(torch, "xpu", None)
    return xpu is not None and xpu.is_available()


@pytest.fixture
def real_xpu_kernels() -> types.ModuleType:
    """The real ``vllm_xpu_kernels.fused_moe_interface`` under ``nox -s test-xpu`` on an Intel GPU; skips otherwise."""
    if os.environ.get("MOE_ORACLE_TEST_XPU") != "1":
        pytest.skip("XPU numerics run under nox -s test-xpu (MOE_ORACLE_TEST_XPU=1)")
    if not _xpu_device():
        pytest.skip("needs torch with an available XPU device")
    try:
        from vllm_xpu_kernels import fused_moe_interface
    except Exception as exc:
        pytest.skip(f"vllm_xpu_kernels does not import here: {type(exc).__name__}: {exc}")
    return fused_moe_interface


@pytest.fixture
def real_ipex() -> types.ModuleType:
    """The real IPEX under ``nox -s test-xpu`` on an Intel GPU with torch 2.8; skips otherwise."""
    if os.environ.get("MOE_ORACLE_TEST_XPU") != "1":
        pytest.skip("XPU numerics run under nox -s test-xpu (MOE_ORACLE_TEST_XPU=1)")
    if not _xpu_device():
        pytest.skip("needs torch with an available XPU device")
    if not torch.__version__.startswith("2.8"):
        pytest.skip(f"IPEX 2.8 needs torch 2.8, have {torch.__version__}")
    try:
        import intel_extension_for_pytorch as ipex
    except Exception as exc:
        pytest.skip(f"intel_extension_for_pytorch does not import here: {type(exc).__name__}: {exc}")
    return ipex
