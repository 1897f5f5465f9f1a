"""``cpu_grouped``'s native kernels, every build this CPU runs (AVX-512, and the vector-extension source for
AVX-512, AVX2 and portable C): the GEMM against float64 matmuls, the one-call layer, the build, the cache
and their errors."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from moe_oracle import ConfigError, MoEConfig, Platform
from moe_oracle.testing import random_weights
from moe_oracle_cpu.cpu_grouped import native
from moe_oracle_cpu.cpu_grouped.converter import PACKED_LAYOUT, _warn_once, convert

FEATURES = Platform.detect().features


def _runs(build: str, dtype: torch.dtype) -> None:
    needs = native.BUILDS[build].features | ({"avx512_bf16"} if build == "avx512" and dtype == torch.bfloat16 else set())
    if not needs <= FEATURES:
        pytest.skip(f"this CPU lacks {', '.join(sorted(needs - FEATURES))}")
    if error := native.load_error(build):
        pytest.fail(f"this CPU fits the {build} kernels but they do not build: {error}")


@pytest.fixture(params=list(native.BUILDS))
def build(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _expected(x: torch.Tensor, w: torch.Tensor, spans: list[tuple[int, int, int]]) -> torch.Tensor:
    return torch.cat([x[s:e].double() @ w[ex].double().T for ex, s, e in spans])


GEMM_CASES = {
    # 13 rows (two 6-row tiles and a remainder) of experts 2 then 0, K past one 2048 block.
    "tiles_and_k_blocks": {"shape": (3, 128, 4160), "rows": 13, "spans": [(2, 0, 5), (0, 5, 13)]},
    # Rows scaled and added into token rows (tokens 0 and 2 hit twice) of an output that is not zero.
    "scatter": {"shape": (4, 192, 256), "rows": 7, "spans": [(1, 0, 3), (3, 3, 7)],
                "rows_out": [0, 2, 4, 0, 1, 2, 3], "tokens": 5},
    # x rows read through an index (GEMM1 without a gathered copy).
    "gather": {"shape": (2, 64, 128), "rows": 4, "spans": [(1, 0, 2), (0, 2, 7)], "rows_in": [3, 0, 3, 1, 2, 0, 1]},
}


@pytest.mark.parametrize("case", GEMM_CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gemm_matches_float64(build: str, dtype: torch.dtype, case: str) -> None:
    _runs(build, dtype)
    spec = GEMM_CASES[case]
    torch.manual_seed(0)
    e, n, k = spec["shape"]
    w = torch.randn(e, n, k, dtype=dtype)
    x = torch.randn(spec["rows"], k, dtype=dtype)
    spans = spec["spans"]
    rows_in = None if "rows_in" not in spec else torch.tensor(spec["rows_in"])
    rows_out = None if "rows_out" not in spec else torch.tensor(spec["rows_out"])
    routed = spans[-1][2]
    scale = torch.rand(routed) if rows_out is not None else None
    out = torch.full((spec.get("tokens", routed), n), 0.5)                    # added to, not overwritten
    x_in = x if build == "avx512" else x.float()                                # the vector builds read fp32
    native.expert_gemm(x_in, native.float_panels(build, w), torch.tensor(spans), out, rows_in=rows_in,
                       rows_out=rows_out, scale=scale)
    y = _expected(x if rows_in is None else x[rows_in], w, spans) * (1.0 if scale is None else scale[:, None])
    want = torch.full(out.shape, 0.5, dtype=torch.float64).index_add_(
        0, torch.arange(routed) if rows_out is None else rows_out, y)
    assert (out.double() - want).abs().max() < 1e-5 * want.abs().max()


@pytest.mark.parametrize(("dtype", "k"), [(torch.bfloat16, 4160), (torch.float32, 128)])
def test_silu_epilogue_matches_silu_gate_times_up(build: str, dtype: torch.dtype, k: int) -> None:
    """The one-call layer with identity w2 and one unweighted slot per token returns GEMM1's epilogue
    itself: 13 tokens (tiles of 6, 6, 1 over two experts), K past one 2048 block for bf16, and one
    token large enough to reach exp's clamps (|g| in the hundreds)."""
    _runs(build, dtype)
    torch.manual_seed(4)
    i = 128
    w13 = torch.randn(3, 2 * i, k, dtype=dtype)
    w2 = torch.zeros(3, k, i, dtype=dtype)                     # [E, H, I]: out[:, :I] = act, the rest 0
    w2[:, :i] = torch.eye(i, dtype=dtype)
    x = torch.randn(13, k, dtype=dtype)
    x[4] *= 30
    ids = torch.tensor([2] * 6 + [0] * 7, dtype=torch.int32)[:, None]
    out = native.forward_silu(x, torch.ones(13, 1), ids, native.float_panels(build, w13, gate_up=True),
                              native.float_panels(build, w2), num_local_experts=3, weighted=False)
    assert out is not None
    h = torch.cat([x[:6].double() @ w13[2].double().T, x[6:].double() @ w13[0].double().T])   # [13, 2I]
    want = torch.nn.functional.silu(h[:, :i]) * h[:, i:]
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5                              # bf16 output rounding
    assert ((out[:, :i].double() - want).abs() <= tol * (want.abs() + want.abs().max() * 1e-3)).all()
    assert torch.equal(out[:, i:], torch.zeros_like(out[:, i:]))


def test_gemm_reads_strided_rows(build: str) -> None:
    """GEMM2 reads the activation as a view with the GEMM1 row stride."""
    _runs(build, torch.float32)
    torch.manual_seed(2)
    w = torch.randn(1, 64, 32)
    x = torch.randn(3, 80)[:, 8:40]                                             # row stride 80
    out = torch.zeros(3, 64)
    native.expert_gemm(x, native.float_panels(build, w), torch.tensor([(0, 0, 3)]), out)
    torch.testing.assert_close(out, x @ w[0].T)


@pytest.mark.parametrize("gate_up", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_pack_unpack_round_trip(dtype: torch.dtype, gate_up: bool) -> None:
    w = torch.randn(2, 128, 96).to(dtype)
    assert torch.equal(native.unpack(native.pack(w, gate_up=gate_up), gate_up=gate_up), w)


@pytest.fixture
def fresh_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty kernel cache and no loaded library; the real one is restored afterwards."""
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path / "cache"))
    native.load.cache_clear()
    yield tmp_path / "cache"
    native.load.cache_clear()


def _fake_compiler(folder: Path, exit_code: int, message: str) -> str:
    """A CC that answers --version and fails any compile with ``message`` on stderr."""
    script = folder / "fake-cc"
    script.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo "fake-cc 1.0"; exit 0; fi\n'
                      f'echo "{message}" >&2\nexit {exit_code}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_build_goes_to_the_cache_folder_once(fresh_build: Path) -> None:
    first = native.load("vec_portable")
    assert first.path.parent == fresh_build and first.path.name.startswith("moe_gemm_vec_portable_")
    built_at = first.path.stat().st_mtime_ns
    native.load.cache_clear()
    assert native.load("vec_portable").path == first.path and first.path.stat().st_mtime_ns == built_at
    sidecar = first.path.with_name(first.path.name + ".sha256")
    assert sorted(fresh_build.iterdir()) == [first.path, sidecar]            # no scratch left behind
    size, digest = sidecar.read_text().split()
    assert int(size) == first.path.stat().st_size and len(digest) == 64


@pytest.mark.parametrize("damage", ["truncate", "replace", "no_checksum"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(fresh_build: Path, damage: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A truncated .so would die in the loader (SIGBUS): it is checked against its recorded size and
    hash first, and rebuilt. Run in this process, so a crash would fail the suite."""
    path = native.load("vec_portable").path
    native.load.cache_clear()
    good = path.read_bytes()
    damaged = path.with_name("damaged")              # a new file put in place: this process has the old one mapped
    if damage == "truncate":
        damaged.write_bytes(good[: len(good) // 3])
    elif damage == "replace":
        damaged.write_bytes(b"\x7fELF" + bytes(len(good) - 4))
    else:
        damaged.write_bytes(good)
        path.with_name(path.name + ".sha256").unlink()
    os.replace(damaged, path)
    with caplog.at_level(logging.WARNING):
        rebuilt = native.load("vec_portable")
    assert rebuilt.path == path and "rebuilding the cached kernel library" in caplog.text
    assert native.sort_rows(torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.int32), num_local_experts=1,
                            build="vec_portable") is not None


def test_a_library_without_the_kernels_is_a_native_error(fresh_build: Path, tmp_path: Path) -> None:
    """A valid shared library (with a matching checksum) that lacks the kernel symbols: NativeError, not
    AttributeError, so the layer falls back."""
    path = native.library_path("vec_portable")      # not loaded yet in this cache folder
    source = tmp_path / "other.c"
    source.write_text("int something_else(void) { return 1; }\n")
    path.parent.mkdir(parents=True)
    subprocess.run(["cc", "-shared", "-fPIC", str(source), "-o", str(path)], check=True)
    path.with_name(path.name + ".sha256").write_text(native._digest(path))
    with pytest.raises(native.NativeError, match=r"lacks the kernel symbol moe_sort_rows: not a library built "
                                                 r"from moe_gemm_vec.c; delete it or point MOE_ORACLE_CACHE_DIR"):
        native.load("vec_portable")
    assert "lacks the kernel symbol" in native.load_error("vec_portable")


def test_missing_compiler_is_named(fresh_build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", str(fresh_build / "no-such-cc"))
    with pytest.raises(native.NativeError, match=r"cannot query the C compiler: .*No such file"):
        native.load("vec_portable")


def test_unwritable_cache_folder_is_named(fresh_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(native.ENV_CACHE, str(blocker / "cache"))
    with pytest.raises(native.NativeError, match=r"cannot write the kernel cache folder .*a-file/cache .*"
                                                 r"set MOE_ORACLE_CACHE_DIR to a writable folder"):
        native.load("vec_portable")


def test_compile_errors_carry_the_compiler_output(fresh_build: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", _fake_compiler(tmp_path, 3, "error: unknown flag -mavx512bf16"))
    with pytest.raises(native.NativeError, match=r"cannot compile moe_gemm.c with .*fake-cc \(exit 3\): "
                                                 r"error: unknown flag -mavx512bf16"):
        native.load("avx512")
    assert native.load_error("avx512").startswith("cannot compile moe_gemm.c")


def test_failed_build_falls_back_with_a_warning(fresh_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    config = MoEConfig(num_experts=4, top_k=2, hidden_size=128, intermediate_size=64, dtype="fp32")
    monkeypatch.setenv("CC", _fake_compiler(tmp_path, 1, "no"))
    _warn_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        converted = convert(random_weights(config, seed=0), config)
    _warn_once.cache_clear()
    assert converted.layout == PACKED_LAYOUT
    assert "cpu_grouped runs oneDNN or torch GEMMs instead of its native kernels: cannot compile" in caplog.text


def test_switch_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, mode in (("0", "off"), ("off", "off"), ("False", "off"), ("1", "auto"), ("", "auto"),
                        ("auto", "auto"), ("AVX2", "avx2"), ("portable", "portable"), ("avx512", "avx512")):
        monkeypatch.setenv(native.ENV_SWITCH, value)
        assert native.switch() == mode, value
        assert native.disabled() is (mode == "off"), value
    monkeypatch.delenv(native.ENV_SWITCH)
    assert native.switch() == "auto" and native.ENV_SWITCH not in os.environ


@pytest.mark.parametrize("value", ["disable", "avx", "2"])
def test_unknown_switch_values_are_refused_with_the_allowed_ones(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(native.ENV_SWITCH, value)
    with pytest.raises(ConfigError, match=rf"MOE_ORACLE_CPU_NATIVE: unknown value '{value}'.*avx512.*avx2.*portable"):
        native.switch()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_forward_silu_sorts_drops_and_weights(build: str, dtype: torch.dtype) -> None:
    """The one-call layer against float64: an expert map dropping another rank's experts, a token
    whose every slot is elsewhere (zero row), and router weights applied on the input instead."""
    _runs(build, dtype)
    torch.manual_seed(5)
    e, h, i = 6, 128, 64
    w13, w2 = torch.randn(e, 2 * i, h, dtype=dtype) / 8, torch.randn(e, h, i, dtype=dtype) / 8
    x = torch.randn(4, h, dtype=dtype)
    ids = torch.tensor([[0, 7], [3, 5], [6, 2], [1, 4]], dtype=torch.int32)     # global ids of 8 experts
    weights = torch.rand(4, 2)
    expert_map = torch.tensor([-1, 0, 1, 2, 3, 4, 5, -1])                       # experts 0 and 7 elsewhere
    ids[0] = torch.tensor([0, 7])                                               # token 0: nothing local
    packed = native.float_panels(build, w13, gate_up=True), native.float_panels(build, w2)
    for weighted in (True, False):
        out = native.forward_silu(x, weights, ids, *packed, num_local_experts=6, expert_map=expert_map,
                                  weighted=weighted)
        assert out is not None and out.dtype == dtype and torch.equal(out[0], torch.zeros(h, dtype=dtype))
        expected = _layer(x, w13, w2, ids, expert_map, weights if weighted else torch.ones(4, 2))
        tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
        assert (out.double() - expected).abs().max() <= tol * expected.abs().max()


def _layer(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, expert_map: torch.Tensor,
           weights: torch.Tensor) -> torch.Tensor:
    """float64 sum over local slots of ``weights * w2 @ (silu(gate) * up)``, the activation rounded to x's dtype."""
    i = w2.shape[2]
    want = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float64)
    for t in range(x.shape[0]):
        for k in range(ids.shape[1]):
            local = int(expert_map[ids[t, k]])
            if local >= 0:
                g_u = x[t].double() @ w13[local].double().T
                a = (torch.nn.functional.silu(g_u[:i]) * g_u[i:]).to(x.dtype).double()
                want[t] += weights[t, k] * (a @ w2[local].double().T)
    return want


@pytest.mark.parametrize(("ids", "expert_map"), [
    ([[0, 6]], None),                                        # local id past 6 experts
    ([[0, -1]], None),
    ([[0, 8]], [0, 1, 2, 3, 4, 5, -1, -1]),                  # global id past the map
    ([[0, 2]], [0, 1, 9, 3, 4, 5, -1, -1]),                  # mapped to a local id past 6
])
def test_out_of_range_ids_return_none(build: str, ids: list[list[int]], expert_map: list[int] | None) -> None:
    _runs(build, torch.float32)
    x = torch.randn(1, 64)
    packed = (native.float_panels(build, torch.randn(6, 64, 64), gate_up=True),
              native.float_panels(build, torch.randn(6, 64, 32)))
    emap = None if expert_map is None else torch.tensor(expert_map)
    topk_ids, weights = torch.tensor(ids), torch.ones(1, 2)
    assert native.forward_silu(x, weights, topk_ids, *packed, num_local_experts=6, expert_map=emap) is None
    assert native.sort_rows(weights, topk_ids, num_local_experts=6, expert_map=emap, build=build) is None
