"""The vector-extension kernels built for aarch64 (NEON), run under qemu-user, against this machine's build
on the same packed weights: every weight format, at the C level (``native/gemm_harness.c``).

Needs Debian's ``gcc-aarch64-linux-gnu`` (with ``libgomp1-arm64-cross``) and ``qemu-user``; skipped, with
that reason, where they are not installed.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import torch

from moe_oracle import MoEConfig, Platform
from moe_oracle.testing import random_weights
from moe_oracle_cpu.cpu_grouped import native
from moe_oracle_cpu.cpu_grouped.panels import pack_quantized

HERE = Path(__file__).parent
CROSS, QEMU = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
pytestmark = pytest.mark.skipif(not (CROSS and QEMU), reason="needs gcc-aarch64-linux-gnu and qemu-user (apt)")
# Every format of moe_gemm_vec.c: (dtype or scheme) -> a small w13 [E, N, K] in it.
CASES = ("fp32", "bf16", "int8_w8a16", "int8_w8a16_group_g32_zp", "fp8_block", "int4_w4a16_g32", "int4_w4a16_g64_zp",
         "mxfp4", "nvfp4")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("arm") / "gemm_harness"
    source = native.HERE / "moe_gemm_vec.c"
    subprocess.run([str(CROSS), "-O3", "-fopenmp", "-static", str(HERE / "native" / "gemm_harness.c"), str(source),
                    f"-I{native.HERE}", "-o", str(out)], check=True, capture_output=True)
    return out


def _panels(case: str) -> tuple[native.Panels, int]:
    """w13 of a 3-expert layer (N = 128, K = 192) packed for a vector build."""
    if case in ("fp32", "bf16"):
        config = MoEConfig(num_experts=3, top_k=1, hidden_size=192, intermediate_size=64, dtype=case)
        return native.float_panels("vec_portable", random_weights(config, seed=3).w13), 192
    config = MoEConfig(num_experts=3, top_k=1, hidden_size=256, intermediate_size=64, quant=case, dtype="fp32")
    w = random_weights(config, seed=3)
    return pack_quantized(config, "vec_portable", w.w13, w.w13_scale, w.w13_zero_point, w.w13_global_scale), 256


@pytest.mark.parametrize("case", CASES)
def test_aarch64_build_matches_this_machines(harness: Path, tmp_path: Path, case: str) -> None:
    panels, k = _panels(case)
    n = panels.codes.shape[1] * native.PANEL
    torch.manual_seed(0)
    x = torch.randn(7, k)
    spans = torch.tensor([(2, 0, 3), (0, 3, 4), (1, 4, 7)])                     # 3 rows, 1 row (direct), 3 rows
    groups = 0 if panels.scale is None else panels.scale.shape[2]
    header = struct.pack("<9if", panels.format, panels.group, groups, panels.zero is not None, n, k, 7, 3, 3,
                         panels.offset)
    parts = [header, spans.numpy().tobytes(), x.numpy().tobytes(), panels.codes.contiguous().view(torch.uint8).numpy().tobytes()]
    parts += [t.numpy().tobytes() for t in (panels.scale, panels.zero) if t is not None]
    (tmp_path / "in.bin").write_bytes(b"".join(parts))
    subprocess.run([str(QEMU), str(harness), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True,
                   timeout=120)
    got = torch.frombuffer(bytearray((tmp_path / "out.bin").read_bytes()), dtype=torch.float32).reshape(7, n)
    if native.load_error("vec_portable"):
        pytest.fail(native.load_error("vec_portable"))
    want = torch.zeros(7, n)
    native.expert_gemm(x, panels, spans, want)
    assert want.abs().max() > 0 and bool(got.isfinite().all())
    assert (got - want).abs().max() <= 1e-5 * want.abs().max(), (case, Platform.detect().device_name)
