import re

import pytest

from moe_oracle import ConfigError, Platform


def test_simulate_defaults_and_explicit_libraries() -> None:
    p = Platform.simulate("cuda", capability=(9, 0), libraries={"flashinfer": "0.6.13", "triton": "3.6.0"})
    assert p.vendor == "cuda" and p.capability == (9, 0) and p.simulated
    assert p.has("flashinfer") and dict(p.libraries) == {"flashinfer": "0.6.13", "triton": "3.6.0"}
    assert Platform.simulate("rocm", arch="gfx942").has("triton")  # ships with torch on GPUs
    assert not Platform.simulate("rocm", arch="gfx942", libraries={}).has("triton")
    assert dict(Platform.simulate("cpu", features=("avx512", "amx")).libraries) == {}
    assert Platform.simulate("cpu", features=("amx",)).features == frozenset({"amx"})


def test_platforms_are_hashable_values() -> None:
    a = Platform.simulate("xpu", libraries={"vllm_xpu_kernels": "0.1.16"})
    b = Platform.simulate("xpu", libraries={"vllm_xpu_kernels": "0.1.16"})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Platform.simulate("xpu", libraries={})


@pytest.mark.parametrize(("text", "vendor", "capability", "arch", "libs", "features"), [
    ("cuda:9.0,flashinfer=0.6.13", "cuda", (9, 0), None, {"flashinfer": "0.6.13", "triton": "3.6.0"}, set()),
    ("cuda:10.0,triton=none", "cuda", (10, 0), None, {}, set()),
    ("rocm:gfx942,aiter=0.1.7", "rocm", None, "gfx942", {"aiter": "0.1.7", "triton": "3.6.0"}, set()),
    ("xpu,vllm_xpu_kernels=0.1.16", "xpu", None, None, {"vllm_xpu_kernels": "0.1.16", "triton": "3.6.0"}, set()),
    ("cpu,avx512,amx", "cpu", None, None, {}, {"avx512", "amx"}),
])
def test_parse(text: str, vendor: str, capability: object, arch: object, libs: dict[str, str],
               features: set[str]) -> None:
    p = Platform.parse(text)
    assert (p.vendor, p.capability, p.arch, dict(p.libraries), set(p.features)) == (
        vendor, capability, arch, libs, features)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: Platform.parse("tpu"), "platform: unknown vendor 'tpu' in 'tpu' (allowed: cuda, rocm, xpu, cpu)"),
    (lambda: Platform.parse("cuda:nine"), "platform: capability must look like 9.0, got 'nine'"),
    (lambda: Platform.simulate("cuda"), "platform.capability: a simulated cuda platform needs capability=(major, minor)"),
    (lambda: Platform.simulate("rocm"), "platform.arch: a simulated rocm platform needs arch= (e.g. 'gfx942')"),
    (lambda: Platform(vendor=""), "platform.vendor: must be a non-empty str"),
    (lambda: Platform(vendor="cuda", capability=(9,)), "platform.capability: expected (major, minor), got (9,)"),
])
def test_invalid(call: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        call()  # type: ignore[operator]


def test_detect_on_this_machine_reads_metadata_not_imports() -> None:
    import sys

    from moe_oracle import platform as platform_module

    vendor_modules = ("flashinfer", "aiter", "zentorch", "vllm_xpu_kernels", "intel_extension_for_pytorch")
    before = {m for m in vendor_modules if m in sys.modules}
    platform_module._detect.cache_clear()
    p = Platform.detect()
    assert {m for m in vendor_modules if m in sys.modules} == before
    assert p.vendor in ("cpu", "cuda", "rocm", "xpu") and not p.simulated and p.device_name
    assert Platform.detect() is p  # cached per (libraries, interpreter)
    assert p.describe().startswith(p.vendor)


def test_detect_imports_torch_only_where_a_gpu_is_possible(monkeypatch: pytest.MonkeyPatch) -> None:
    import fnmatch
    import sys

    from moe_oracle import platform as platform_module

    versions = {"torch": "2.13.0+cpu"}
    monkeypatch.setattr(platform_module, "_version", lambda dist: versions.get(dist))
    nodes: list[str] = []
    monkeypatch.setattr(platform_module.glob, "glob", lambda pattern: fnmatch.filter(nodes, pattern))
    monkeypatch.delitem(sys.modules, "torch", raising=False)            # as in a fresh `moe-oracle list`
    monkeypatch.setattr(platform_module.sys, "platform", "linux")
    assert not platform_module._gpu_possible()           # a CPU build of torch never sees a GPU
    versions["torch"] = "2.13.0"                         # PyPI's default (CUDA) build ...
    assert not platform_module._gpu_possible()           # ... on a machine without GPU device nodes
    nodes.append("/dev/nvidiactl")
    assert platform_module._gpu_possible()
    nodes[:] = ["/dev/kfd"]
    assert platform_module._gpu_possible()
    versions.pop("torch")                                 # no torch at all: a CPU platform, no import attempted
    assert not platform_module._gpu_possible()
    platform_module._detect.cache_clear()
    p = Platform.detect()
    assert p.vendor == "cpu" and "torch" not in sys.modules and p.device_name
    platform_module._detect.cache_clear()
