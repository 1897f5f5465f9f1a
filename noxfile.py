"""Test matrices per platform. `nox -s test-cpu` (the default) runs everything that runs on a CPU;
`test-cuda` / `test-rocm` / `test-xpu` run the same tests plus the hardware ones where the hardware
is present, and skip without building a venv where it is not."""

from __future__ import annotations

import glob
import os
import shutil

import nox

nox.options.sessions = ["test-cpu"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ("moe-oracle-core", "moe-oracle-cuda", "moe-oracle-rocm", "moe-oracle-xpu", "moe-oracle-cpu")
# Installed first in every venv: any unpinned torch requirement would otherwise pull a CUDA build.
CPU_TORCH = "torch==2.13.0"
# transformers: the integration tests (moe_oracle.integrations.transformers); it brings no torch of its own.
TEST_DEPS = ("numpy<2.4", "pytest", "pytest-xdist", "hypothesis", "matplotlib", "transformers==5.25.0")
# Optional vendor libraries that install on a CPU machine, so their CPU-side tests run too.
CPU_EXTRAS = ("triton==3.6.0", "zentorch==2.13.0.1", "flashinfer-python==0.6.13")


def has_cuda() -> bool:
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def has_rocm() -> bool:
    return os.path.exists("/dev/kfd") or shutil.which("rocm-smi") is not None


def has_xpu() -> bool:
    return shutil.which("xpu-smi") is not None or shutil.which("sycl-ls") is not None


def install_packages(session: nox.Session) -> None:
    editable = [arg for name in PACKAGES for arg in ("-e", f"packages/{name}")]
    session.install(*editable, "-e", ".")


def pytest_args(session: nox.Session) -> list[str]:
    return ["-n", "2", "-q", "-p", "no:cacheprovider", *session.posargs]


@nox.session(name="test-cpu")
def test_cpu(session: nox.Session) -> None:
    """Every test that runs without a GPU; the Triton kernels run in the interpreter."""
    session.install(CPU_TORCH)
    session.install(CPU_TORCH, *TEST_DEPS, *CPU_EXTRAS)
    install_packages(session)
    session.run("python", "-m", "pytest", *pytest_args(session))


def _hardware_session(session: nox.Session) -> None:
    # Runs in the invoking interpreter's environment: that is where the machine's own torch build
    # (CUDA/ROCm/XPU) lives, and a fresh venv cannot see it when that interpreter is itself a venv.
    # Our packages are installed there editable, without build isolation or dependencies, so the
    # session also runs on machines without network access (pip then only confirms what is present).
    pip = ("python", "-m", "pip", "install", "-q")
    session.run(*pip, "pytest", "pytest-xdist", "hypothesis", "hatchling", "editables", external=True)
    editable = [arg for name in PACKAGES for arg in ("-e", f"packages/{name}")]
    session.run(*pip, "--no-build-isolation", "--no-deps", *editable, external=True)
    session.run("python", "-m", "pytest", "-n", "8", "-q", "-p", "no:cacheprovider", *session.posargs, external=True)


@nox.session(name="test-cuda", venv_backend="none")
def test_cuda(session: nox.Session) -> None:
    """The CPU suite plus GPU numerics and CUDA-graph tests, on the machine's CUDA torch."""
    if not has_cuda():
        session.skip("no CUDA device on this machine")
    _hardware_session(session)


@nox.session(name="test-rocm", venv_backend="none")
def test_rocm(session: nox.Session) -> None:
    """The CPU suite plus AITER numerics against the real library, on the machine's ROCm torch."""
    if not has_rocm():
        session.skip("no ROCm device on this machine")
    _hardware_session(session)


@nox.session(name="test-xpu", venv_backend="none")
def test_xpu(session: nox.Session) -> None:
    """The CPU suite plus vllm-xpu-kernels / IPEX numerics, on the machine's XPU torch."""
    if not has_xpu():
        session.skip("no Intel XPU on this machine")
    _hardware_session(session)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy over every package."""
    session.install(CPU_TORCH)
    session.install(CPU_TORCH, "ruff", "mypy", "numpy<2.4", "triton==3.6.0", "pytest")
    install_packages(session)
    session.run("ruff", "check", ".")
    session.run("mypy", *[f"packages/{name}/src" for name in PACKAGES])


@nox.session
def bench(session: nox.Session) -> None:
    """Selection and import overhead, then the CPU MoE benchmark (writes bench/results/)."""
    session.install(CPU_TORCH)
    session.install(CPU_TORCH, "numpy<2.4", *CPU_EXTRAS)
    install_packages(session)
    session.run("python", "bench/select_speed.py")
    if os.path.exists("bench/cpu_moe.py"):
        session.run("python", "bench/cpu_moe.py", *session.posargs)
