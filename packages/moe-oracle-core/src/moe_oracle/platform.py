"""The hardware a layer runs on: vendor, device, capability, CPU features, vendor libraries.

``Platform.detect()`` reads the real machine without initializing CUDA kernels and without
importing vendor libraries (their versions come from package metadata). It imports torch only
where torch could see a GPU: not on a CPU build of torch, and not on a Linux machine without GPU
device nodes, so ``moe-oracle list`` and ``explain`` on a CPU machine never pay torch's import.
``Platform.simulate(...)`` builds one for tests and for ``moe-oracle explain --platform``.
"""

from __future__ import annotations

import functools
import glob
import os
import platform as _pyplatform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType

from moe_oracle.errors import ConfigError

VENDORS = ("cuda", "rocm", "xpu", "cpu")

# import name -> distribution name of the vendor libraries backends ask about. Plugins add
# theirs through ``BackendSpec.libraries``; this table only seeds detection.
KNOWN_LIBRARIES: dict[str, str] = {
    "torch": "torch",
    "triton": "triton",
    "flashinfer": "flashinfer-python",
    "aiter": "amd-aiter",
    "vllm_xpu_kernels": "vllm-xpu-kernels",
    "intel_extension_for_pytorch": "intel-extension-for-pytorch",
    "zentorch": "zentorch",
    "sgl_kernel": "sgl-kernel",
}
# Triton ships with the torch builds of these vendors, so a simulated GPU has it unless told otherwise.
_DEFAULT_SIMULATED_LIBRARIES = {"cuda": {"triton": "3.6.0"}, "rocm": {"triton": "3.6.0"},
                                "xpu": {"triton": "3.6.0"}}


@dataclass(frozen=True, kw_only=True)
class Platform:
    """One machine as selection sees it; hashable so selections can be cached per platform."""

    vendor: str
    device_name: str = ""
    capability: tuple[int, int] | None = None
    arch: str | None = None
    features: frozenset[str] = frozenset()
    libraries: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    simulated: bool = False
    triton_interpreter: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.vendor, str) or not self.vendor:
            raise ConfigError("platform.vendor", f"must be a non-empty str, got {self.vendor!r}",
                              allowed=VENDORS)
        object.__setattr__(self, "features", frozenset(self.features))
        object.__setattr__(self, "libraries", MappingProxyType(dict(self.libraries)))
        if self.capability is not None and (
            len(self.capability) != 2 or not all(isinstance(c, int) for c in self.capability)
        ):
            raise ConfigError("platform.capability", f"expected (major, minor), got {self.capability!r}")

    def _key(self) -> tuple[object, ...]:
        return (self.vendor, self.device_name, self.capability, self.arch, self.features,
                tuple(sorted(self.libraries.items())), self.simulated, self.triton_interpreter)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Platform) and self._key() == other._key()

    def has(self, library: str) -> bool:
        return library in self.libraries

    # A Platform is immutable: copies are itself; pickles carry ``libraries`` as a plain dict.
    def __copy__(self) -> Platform:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Platform:
        return self

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "libraries": dict(self.libraries)}

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "libraries", MappingProxyType(dict(self.libraries)))

    def describe(self) -> str:
        bits = [self.vendor]
        if self.device_name:
            bits.append(self.device_name)
        if self.capability:
            bits.append(f"capability {self.capability[0]}.{self.capability[1]}")
        if self.arch:
            bits.append(self.arch)
        if self.features:
            bits.append("features " + ",".join(sorted(self.features)))
        libs = ", ".join(f"{k}={v}" for k, v in sorted(self.libraries.items())) or "no vendor libraries"
        bits.append(libs)
        if self.triton_interpreter:
            bits.append("TRITON_INTERPRET=1")
        if self.simulated:
            bits.append("(simulated)")
        return ", ".join(bits)

    @classmethod
    def simulate(
        cls,
        vendor: str,
        *,
        capability: tuple[int, int] | None = None,
        arch: str | None = None,
        device_name: str | None = None,
        features: Iterable[str] = (),
        libraries: Mapping[str, str] | None = None,
        triton_interpreter: bool = False,
    ) -> Platform:
        """A platform for tests and ``explain --platform``.

        ``libraries`` maps import names to versions; ``None`` means the vendor's usual set
        (Triton on cuda/rocm/xpu, nothing on cpu), ``{}`` means none at all.
        """
        if libraries is None:
            libraries = _DEFAULT_SIMULATED_LIBRARIES.get(vendor, {})
        if vendor == "cuda" and capability is None:
            raise ConfigError("platform.capability", "a simulated cuda platform needs capability=(major, minor)")
        if vendor == "rocm" and arch is None:
            raise ConfigError("platform.arch", "a simulated rocm platform needs arch= (e.g. 'gfx942')")
        return cls(vendor=vendor, device_name=device_name or f"simulated {vendor}", capability=capability,
                   arch=arch, features=frozenset(features), libraries=dict(libraries), simulated=True,
                   triton_interpreter=triton_interpreter)

    @classmethod
    def detect(cls, extra_libraries: Mapping[str, str] | None = None) -> Platform:
        """The real machine. ``extra_libraries`` (import name -> distribution) adds to the probe list."""
        libs = dict(KNOWN_LIBRARIES)
        libs.update(extra_libraries or {})
        return _detect(tuple(sorted(libs.items())), os.environ.get("TRITON_INTERPRET") == "1")

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse the CLI form ``vendor[:capability|arch][,feature][,lib=version]...``.

        Examples: ``cuda:9.0,flashinfer=0.6.13``, ``rocm:gfx942,aiter=0.1.7``, ``cpu,avx512,amx``.
        Triton is assumed on GPUs unless ``triton=none`` is given.
        """
        head, *rest = [part.strip() for part in text.split(",") if part.strip()] or [""]
        vendor, _, target = head.partition(":")
        if vendor not in VENDORS:
            raise ConfigError("platform", f"unknown vendor {vendor!r} in {text!r}", allowed=VENDORS)
        capability = arch = None
        if target:
            if vendor == "cuda":
                try:
                    major, minor = (int(x) for x in target.split("."))
                except ValueError:
                    raise ConfigError("platform", f"capability must look like 9.0, got {target!r}") from None
                capability = (major, minor)
            else:
                arch = target
        libraries = dict(_DEFAULT_SIMULATED_LIBRARIES.get(vendor, {}))
        features: list[str] = []
        for part in rest:
            if "=" in part:
                name, _, version = part.partition("=")
                if version == "none":
                    libraries.pop(name, None)
                else:
                    libraries[name] = version
            else:
                features.append(part)
        return cls.simulate(vendor, capability=capability, arch=arch, features=features, libraries=libraries)


@functools.cache
def _detect(libraries: tuple[tuple[str, str], ...], interpreter: bool) -> Platform:
    found = {name: v for name, dist in libraries if (v := _version(dist)) is not None}
    features = _cpu_features()
    if not _gpu_possible():
        return Platform(vendor="cpu", device_name=_cpu_name(), features=features, libraries=found,
                        triton_interpreter=interpreter)
    import torch

    if getattr(torch.version, "hip", None) and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        arch = getattr(props, "gcnArchName", "").split(":")[0] or None
        return Platform(vendor="rocm", device_name=props.name, arch=arch, features=features,
                        libraries=found, triton_interpreter=interpreter)
    if torch.cuda.is_available():
        return Platform(vendor="cuda", device_name=torch.cuda.get_device_name(0),
                        capability=tuple(torch.cuda.get_device_capability(0)),  # type: ignore[arg-type]
                        features=features, libraries=found, triton_interpreter=interpreter)
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return Platform(vendor="xpu", device_name=xpu.get_device_name(0), features=features,
                        libraries=found, triton_interpreter=interpreter)
    return Platform(vendor="cpu", device_name=_cpu_name(), features=features, libraries=found,
                    triton_interpreter=interpreter)


# Device nodes a GPU driver creates on Linux: NVIDIA (WSL: dxg), AMD's KFD, Intel's DRM render nodes.
_GPU_DEVICE_GLOBS = ("/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd", "/dev/dri/renderD*")


def _gpu_possible() -> bool:
    """Whether torch could report a GPU here; ``False`` answers "cpu" without importing torch.

    An imported torch is asked directly (that costs nothing more). Otherwise no GPU is possible
    with a CPU build of torch (local version ``+cpu``), on macOS (no vendor of ours), or on Linux
    without any GPU device node; anything else imports torch and asks it.
    """
    if "torch" in sys.modules:
        return True
    version = _version("torch")
    if version is None or version.partition("+")[2].startswith("cpu") or sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return any(glob.glob(pattern) for pattern in _GPU_DEVICE_GLOBS)
    return True


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


# /proc/cpuinfo flag -> feature name used by backend checks (x86 "flags", then Arm "Features").
_CPU_FLAGS = {"avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512", "avx512bw": "avx512bw",
              "avx512vl": "avx512vl", "avx512dq": "avx512dq", "avx512_bf16": "avx512_bf16",
              "avx512_vnni": "avx512_vnni", "avx_ne_convert": "avx_ne_convert", "amx_tile": "amx",
              "amx_bf16": "amx_bf16", "amx_int8": "amx_int8",
              "asimd": "neon", "sve": "sve", "bf16": "arm_bf16"}
# Set where torch's oneDNN has bf16 GEMMs on this CPU; elsewhere its bf16 weight packing raises
# ("bf16 path needs the cpu support avx_ne_convert or avx512bw, avx512vl and avx512dq"), and on Arm
# it needs the bf16 extension. Derived from the flags, so detection needs no torch.
ONEDNN_BF16 = "onednn_bf16"
_ONEDNN_BF16_NEEDS = ({"avx_ne_convert"}, {"avx512bw", "avx512vl", "avx512dq"}, {"arm_bf16"})


def _cpu_features() -> frozenset[str]:
    flags: set[str] = set()
    vendor = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif key == "vendor_id" and not vendor:
                    vendor = value.strip()
                if flags and vendor:
                    break
    except OSError:
        pass
    features = {name for flag, name in _CPU_FLAGS.items() if flag in flags}
    if any(needs <= features for needs in _ONEDNN_BF16_NEEDS):
        features.add(ONEDNN_BF16)
    if vendor == "AuthenticAMD":
        features.add("amd")
    elif vendor == "GenuineIntel":
        features.add("intel")
    return frozenset(features)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return _pyplatform.processor() or "cpu"
