"""``cpu_grouped``'s native expert GEMMs: built on first use, verified, loaded with ctypes.

Why C: torch has no CPU op for "one GEMM per expert over rows sorted by expert". Per-expert
oneDNN calls from Python pulled weights at 40-60% of read bandwidth at 1-16 rows per expert, and
their per-call overhead dominated small experts. One C call per projection covers every expert,
streams panels at memory speed for decode and runs near the fp32 ``torch.mm`` rate for prefill
(``bench/cpu_moe.py``).

Builds (``BUILDS``), one chosen per config from the CPU's features (``choose_build``):

- ``avx512``: ``moe_gemm.c``, hand-written AVX-512 micro-kernels for bf16 (``vdpbf16ps``, needs
  AVX512-BF16) and fp32 weights;
- ``vec_avx512`` / ``vec_avx2`` / ``vec_portable``: ``moe_gemm_vec.c`` (GCC vector extensions)
  compiled for AVX-512F, AVX2 + FMA, or no ISA flags at all (SSE2 on x86-64, NEON on aarch64): bf16
  and fp32 weights, and quantized weights (int8, int4, fp8 e4m3, fp4 e2m1 codes with per-group
  scales and zero points) dequantized per panel block inside the GEMM loop.

``MOE_ORACLE_CPU_NATIVE``: ``1``/``auto`` (default) picks the fastest build the CPU runs; ``0``
turns the kernels off (oneDNN or torch GEMMs run); ``avx512``, ``avx2`` or ``portable`` forces that
ISA family (for tests and comparisons). Any other value is a ``ConfigError``.

Build: the system C compiler (``$CC``, else ``cc``/``gcc``) with explicit ISA flags (not
``-march=native``, so a cached library is valid on any CPU with those features) into
``$MOE_ORACLE_CACHE_DIR`` (default ``~/.cache/moe-oracle``), named by a hash of the sources,
compiler and flags, written atomically with a sidecar recording its size and SHA-256. A library is
verified against its sidecar before it is loaded (a truncated or replaced file would crash the
process inside the loader); one that fails is rebuilt with a warning. A library without the kernel
symbols is a ``NativeError``, so the layer falls back. The library needs ``libgomp.so.1`` by soname,
which resolves to the OpenMP runtime torch already loaded: kernel and torch share one thread pool.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch

from moe_oracle.plugin import ConfigError, MoEConfig, deinterleave_gate_up, interleave_gate_up

ENV_SWITCH = "MOE_ORACLE_CPU_NATIVE"
ENV_CACHE = "MOE_ORACLE_CACHE_DIR"
HERE = Path(__file__).parent
PANEL = 64          # output columns per packed panel (NB in the C sources)
ISAS = ("avx512", "avx2", "portable")
_ON, _OFF = ("1", "on", "auto", "true", "yes"), ("0", "off", "false", "no")
SWITCH_VALUES = (*_ON, *_OFF, *ISAS)
# Weight formats of moe_gemm_vec.c (FMT_* there).
FMT_F32, FMT_BF16, FMT_I8, FMT_E4M3, FMT_U4, FMT_E2M1 = range(6)

_log = logging.getLogger(__name__)
_P, _L, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int


class NativeError(RuntimeError):
    """The kernels cannot be built or loaded here; the message says which step failed and why."""


class Build(NamedTuple):
    """One compiled variant: its source, ISA flags and the CPU features those flags need."""

    name: str
    source: str
    flags: tuple[str, ...]
    features: frozenset[str]


BUILDS = {
    "avx512": Build("avx512", "moe_gemm.c", ("-mavx512f", "-mavx512bw", "-mavx512bf16", "-mfma"),
                    frozenset({"avx512"})),
    "vec_avx512": Build("vec_avx512", "moe_gemm_vec.c", ("-mavx512f", "-mfma"), frozenset({"avx512"})),
    "vec_avx2": Build("vec_avx2", "moe_gemm_vec.c", ("-mavx2", "-mfma"), frozenset({"avx2", "fma"})),
    "vec_portable": Build("vec_portable", "moe_gemm_vec.c", (), frozenset()),
}
_COMMON_FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC")
# The hand-written bf16 kernel's instruction (vdpbf16ps) needs this beyond the build's features.
_AVX512_BF16 = "avx512_bf16"


class Library(NamedTuple):
    path: Path
    build: str
    functions: dict[str, Callable[..., Any]]


class Panels(NamedTuple):
    """One projection's packed weights as a build reads them: ``codes`` ``[E_l, N/64, ...]`` panels
    (``pack`` / ``panels.pack_quantized``), and for quantized formats ``scale`` (and ``zero``)
    float32 ``[E_l, N/64, G, 64]`` with ``group`` k steps per scale row and ``offset`` subtracted
    from every code when there are no zero points."""

    build: str
    format: int
    codes: torch.Tensor
    scale: torch.Tensor | None = None
    zero: torch.Tensor | None = None
    offset: float = 0.0
    group: int = 0


class SortedRows(NamedTuple):
    """The routed pairs of this rank grouped by local expert (as ``moe_oracle_cpu._routing.ExpertRows``,
    with the spans as a tensor). token ``[R]`` int64, weight ``[R]`` float32, spans ``[S, 3]`` int64
    ``(expert, start, end)`` in ascending expert order, token order within an expert."""

    token: torch.Tensor
    weight: torch.Tensor
    spans: torch.Tensor


class _Weights(ctypes.Structure):
    """``weights_t`` of moe_gemm_vec.c."""

    _fields_ = [("format", _I), ("group", _I), ("groups", _I), ("offset", ctypes.c_float),
                ("codes", _P), ("scale", _P), ("zero", _P)]


_switch_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("moe_oracle_cpu_native", default=None)


@contextlib.contextmanager
def switch_override(value: str | None) -> Iterator[None]:
    """``MOE_ORACLE_CPU_NATIVE`` as ``value`` inside the block (``None``: as set), for the measured
    policy's conversion of one layout variant; the environment itself is untouched."""
    token = _switch_override.set(value)
    try:
        yield
    finally:
        _switch_override.reset(token)


def switch() -> str:
    """``MOE_ORACLE_CPU_NATIVE`` as ``"auto"``, ``"off"`` or an ISA of ``ISAS``; ``ConfigError`` otherwise."""
    forced = _switch_override.get()
    if forced is not None:
        return forced
    value = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if value in _ON or value == "":
        return "auto"
    if value in _OFF:
        return "off"
    if value in ISAS:
        return value
    raise ConfigError(ENV_SWITCH, f"unknown value {os.environ[ENV_SWITCH]!r}", allowed=SWITCH_VALUES)


def disabled() -> bool:
    return switch() == "off"


def _candidates(config: MoEConfig, mode: str) -> tuple[str, ...]:
    """Builds to try for ``config`` under switch ``mode``, fastest first."""
    float_weights = config.scheme.weight is None
    hand = ("avx512",) if float_weights else ()
    return {"auto": (*hand, "vec_avx512", "vec_avx2", "vec_portable"), "avx512": (*hand, "vec_avx512"),
            "avx2": ("vec_avx2",), "portable": ("vec_portable",)}[mode]


def _runs_on(build: str, config: MoEConfig, features: frozenset[str]) -> bool:
    needs = BUILDS[build].features | ({_AVX512_BF16} if build == "avx512" and config.dtype == torch.bfloat16 else set())
    return needs <= features


def choose_build(config: MoEConfig, features: frozenset[str]) -> tuple[str, str]:
    """``(build, "")`` for the build that runs ``config`` on a CPU with ``features``, else ``("", why not)``;
    builds nothing. ``ConfigError`` for an unknown ``MOE_ORACLE_CPU_NATIVE``."""
    mode = switch()
    if mode == "off":
        return "", f"{ENV_SWITCH}={os.environ.get(ENV_SWITCH, 'off')} turns the native kernels off"
    if config.scheme.weight is None and config.dtype not in (torch.bfloat16, torch.float32):
        return "", f"the native kernels take bf16, fp32 or quantized experts, not {config.scheme.name} {config.dtype}"
    n13, h = config.w13_rows, config.hidden_size
    if n13 % PANEL or h % PANEL:
        return "", (f"the native kernels need w13 rows and the hidden size to be multiples of {PANEL}, "
                    f"have {n13} and {h}")
    candidates = _candidates(config, mode)
    for build in candidates:
        if _runs_on(build, config, features):
            return build, ""
    needed = sorted(BUILDS[candidates[0]].features - features)
    return "", f"{ENV_SWITCH}={mode} needs the CPU features {', '.join(needed)}, which this CPU lacks"


def unsupported(config: MoEConfig, features: frozenset[str]) -> str:
    """'' when ``config`` can run on a native build on a CPU with ``features``; else why not."""
    return choose_build(config, features)[1]


# Argument types of each exported function (the C signatures in moe_gemm.c / moe_gemm_vec.c).
_SORT = ([_P, _I, _P, _L, _I, _P, _L, _I, _P, _P, _P, _P, ctypes.POINTER(_L)], _L)
_HAND_GEMM = ([_P, _L, _P, _P, _I, _I, _P, _I, _P, _L, _P, _P, _I], None)
_HAND_FORWARD = ([_P, _L, _I, _I, _P, _I, _P, _I, _P, _L, _I, _P, _P, _I, _P, _P, _P, _P, _P, _I], _L)
_VEC_GEMM = ([_P, _L, _P, ctypes.POINTER(_Weights), _I, _I, _P, _I, _P, _L, _P, _P, _I], None)
_VEC_FORWARD = ([_P, _L, _I, _I, _P, _I, _P, _I, _P, _L, _I, ctypes.POINTER(_Weights),
                 ctypes.POINTER(_Weights), _I, _P, _P, _P, _P, _P, _I, _I], _L)
_SYMBOLS: dict[str, dict[str, tuple[list[Any], Any]]] = {
    "moe_gemm.c": {"moe_sort_rows": _SORT, "moe_gemm_bf16": _HAND_GEMM, "moe_gemm_f32": _HAND_GEMM,
                   "moe_forward_silu_bf16": _HAND_FORWARD, "moe_forward_silu_f32": _HAND_FORWARD},
    "moe_gemm_vec.c": {"moe_sort_rows": _SORT, "moe_vec_gemm": _VEC_GEMM, "moe_vec_forward_silu": _VEC_FORWARD},
}


class _Recipe(NamedTuple):
    compiler: str
    flags: tuple[str, ...]
    source: Path
    path: Path


def _recipe(build: str) -> _Recipe:
    """How ``build`` is compiled here and where its library lives (named by sources, compiler and flags)."""
    spec = BUILDS[build]
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise NativeError("no C compiler: set CC or install gcc (cpu_grouped builds its kernels on first use)")
    source = HERE / spec.source
    flags = (*_COMMON_FLAGS, *spec.flags)
    version = _run([compiler, "--version"], "query the C compiler").splitlines()[0]
    inputs = [source.read_bytes(), (HERE / "moe_common.h").read_bytes(), version.encode(), " ".join(flags).encode()]
    key = hashlib.sha256(b"\0".join(inputs)).hexdigest()[:16]
    return _Recipe(compiler, flags, source, _cache_dir() / f"moe_gemm_{build}_{key}.so")


def library_path(build: str) -> Path:
    """Where ``build``'s library is cached on this machine (built or not)."""
    return _recipe(build).path


@functools.cache
def load(build: str) -> Library:
    """Build (once per sources, compiler and flags), verify and load ``build``; ``NativeError`` says why not."""
    compiler, flags, source, path = _recipe(build)
    problem = _verify(path)
    if problem:
        if path.exists():
            _log.warning("rebuilding the cached kernel library %s: %s", path, problem)
        _compile(compiler, flags, source, path)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise NativeError(f"cannot load {path}: {exc}") from exc
    functions = {}
    for name, (argtypes, restype) in _SYMBOLS[source.name].items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise NativeError(f"{path} lacks the kernel symbol {name}: not a library built from "
                              f"{source.name}; delete it or point {ENV_CACHE} elsewhere") from None
        fn.argtypes, fn.restype = argtypes, restype
        functions[name] = fn
    return Library(path, build, functions)


def load_error(build: str) -> str:
    """'' when ``load(build)`` succeeds; else its message."""
    try:
        load(build)
    except NativeError as exc:
        return str(exc)
    return ""


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _digest(path: Path) -> str:
    data = path.read_bytes()
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"


def _verify(path: Path) -> str:
    """'' when ``path`` holds the library its sidecar describes; else what is wrong."""
    try:
        recorded = _sidecar(path).read_text(encoding="ascii").strip()
        actual = _digest(path)
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read it or its checksum ({exc.__class__.__name__}: {exc})"
    if recorded != actual:
        return f"its size and SHA-256 ({actual[:24]}...) differ from those recorded when it was built ({recorded[:24]}...)"
    return ""


def _compile(compiler: str, flags: tuple[str, ...], source: Path, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            built = Path(scratch) / path.name
            _run([compiler, *flags, str(source), "-o", str(built)], f"compile {source.name} with {compiler}")
            checksum = Path(scratch) / _sidecar(path).name
            checksum.write_text(_digest(built) + "\n", encoding="ascii")
            os.replace(built, path)
            os.replace(checksum, _sidecar(path))
    except OSError as exc:
        raise NativeError(f"cannot write the kernel cache folder {path.parent} ({exc}); "
                          f"set {ENV_CACHE} to a writable folder") from exc


def _cache_dir() -> Path:
    root = os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache", "moe-oracle")
    return Path(root)


def _run(command: list[str], what: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NativeError(f"cannot {what}: {exc}") from exc
    if done.returncode:
        raise NativeError(f"cannot {what} (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout or done.stderr


def pack(w: torch.Tensor, *, gate_up: bool = False) -> torch.Tensor:
    """Canonical experts ``[E, N, K]`` -> panels: bf16 ``[E, N/64, K/2, 64, 2]``, fp32 ``[E, N/64, K, 64]``
    (one k step of a panel is 256 contiguous bytes). With ``gate_up`` (gated ``w13``, N = 2I), panel b
    holds gate rows ``32b..32b+31`` then up rows ``I+32b..I+32b+31``, as the silu epilogue reads them.
    A new tensor."""
    e, n, k = w.shape
    if gate_up:
        w = interleave_gate_up(w, block=PANEL // 2)
    if w.dtype == torch.bfloat16:
        return w.reshape(e, n // PANEL, PANEL, k // 2, 2).permute(0, 1, 3, 2, 4).contiguous()
    return w.reshape(e, n // PANEL, PANEL, k).permute(0, 1, 3, 2).contiguous()


def unpack(p: torch.Tensor, *, gate_up: bool = False) -> torch.Tensor:
    """The inverse of ``pack``: ``[E, N, K]``."""
    if p.dim() == 5:
        e, blocks, pairs, _, _ = p.shape
        w = p.permute(0, 1, 3, 2, 4).reshape(e, blocks * PANEL, pairs * 2)
    else:
        e, blocks, k, _ = p.shape
        w = p.permute(0, 1, 3, 2).reshape(e, blocks * PANEL, k)
    return deinterleave_gate_up(w, block=PANEL // 2) if gate_up else w


def float_panels(build: str, w: torch.Tensor, *, gate_up: bool = False) -> Panels:
    """Unquantized experts ``[E, N, K]`` (bf16 or fp32) packed for ``build``."""
    return Panels(build, FMT_BF16 if w.dtype == torch.bfloat16 else FMT_F32, pack(w, gate_up=gate_up))


def sort_rows(topk_weights: torch.Tensor, topk_ids: torch.Tensor, *, num_local_experts: int,
              expert_map: torch.Tensor | None = None, build: str) -> SortedRows | None:
    """A counting sort of the ``[T, K]`` (token, slot) pairs by local expert in one C call (the torch
    sort costs ~0.1 ms per call, 5% of a decode step). ``topk_weights`` float32, ``topk_ids``
    int32/int64 (global with ``expert_map`` ``[E]``, whose -1 entries drop the pair, else local).
    None if an id (or a mapped id) is out of range: the caller's full input check names it."""
    ids, weights, emap = _routing(topk_weights, topk_ids, expert_map)
    pairs = ids.numel()
    counts = torch.empty(num_local_experts, dtype=torch.int64)
    token = torch.empty(pairs, dtype=torch.int64)
    weight = torch.empty(pairs, dtype=torch.float32)
    spans = torch.empty(num_local_experts, 3, dtype=torch.int64)
    rows = ctypes.c_long()
    n_spans = load(build).functions["moe_sort_rows"](
        ids.data_ptr(), ids.dtype == torch.int64, weights.data_ptr(), pairs, ids.shape[-1], _ptr(emap),
        0 if emap is None else emap.numel(), num_local_experts, counts.data_ptr(), token.data_ptr(),
        weight.data_ptr(), spans.data_ptr(), ctypes.byref(rows))
    if n_spans < 0:
        return None
    return SortedRows(token[: rows.value], weight[: rows.value], spans[:n_spans])


def forward_silu(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, w13: Panels, w2: Panels, *,
                 num_local_experts: int, expert_map: torch.Tensor | None = None,
                 weighted: bool = True) -> torch.Tensor | None:
    """A gated-silu layer without biases in one C call: sort, GEMM1 with the silu epilogue, GEMM2 with
    the top-k sum in its epilogue, cast to ``x``'s dtype. One call because after a decode step has
    streamed the weights through every cache, each further torch op costs tens of microseconds.

    ``x`` ``[T, H]`` contiguous bf16/fp32; ``w13`` packed with ``gate_up=True``, ``w2`` plain, both for
    one build; ``weighted=False`` when the router weights were applied to ``x``. Returns ``[T, H]`` in
    ``x``'s dtype, or None if an id is out of range (the caller's full input check names it)."""
    tokens, h = x.shape
    ids, weights, emap = _routing(topk_weights, topk_ids, expert_map)
    assert x.is_contiguous() and x.dtype in (torch.bfloat16, torch.float32) and w13.build == w2.build
    i = w13.codes.shape[1] * PANEL // 2
    pairs = ids.numel()
    iwork = torch.empty(4 * num_local_experts + pairs, dtype=torch.int64)
    weight = torch.empty(pairs, dtype=torch.float32)
    out = torch.empty(tokens, h, dtype=x.dtype)
    sums = out if x.dtype == torch.float32 else torch.empty(tokens, h, dtype=torch.float32)
    functions = load(w13.build).functions
    routing = (ids.data_ptr(), ids.dtype == torch.int64, weights.data_ptr(), ids.shape[-1], _ptr(emap),
               0 if emap is None else emap.numel(), num_local_experts)
    if w13.build == "avx512":
        assert w13.codes.dtype == w2.codes.dtype == x.dtype
        act = torch.empty(pairs, i, dtype=x.dtype)
        fn = functions["moe_forward_silu_bf16" if x.dtype == torch.bfloat16 else "moe_forward_silu_f32"]
        found = fn(x.data_ptr(), tokens, h, i, *routing, w13.codes.data_ptr(), w2.codes.data_ptr(), weighted,
                   iwork.data_ptr(), weight.data_ptr(), act.data_ptr(), sums.data_ptr(), out.data_ptr(),
                   torch.get_num_threads())
    else:
        act = torch.empty(pairs, i, dtype=torch.float32)
        x32 = x.float()                                  # converted once here, not once per panel in C
        found = functions["moe_vec_forward_silu"](
            x32.data_ptr(), tokens, h, i, *routing, ctypes.byref(_weights_t(w13)),
            ctypes.byref(_weights_t(w2)), weighted, iwork.data_ptr(), weight.data_ptr(), act.data_ptr(),
            sums.data_ptr(), out.data_ptr(), x.dtype == torch.bfloat16, torch.get_num_threads())
    return None if found < 0 else out


def expert_gemm(x: torch.Tensor, w: Panels, spans: torch.Tensor, out: torch.Tensor, *,
                rows_in: torch.Tensor | None = None, rows_out: torch.Tensor | None = None,
                scale: torch.Tensor | None = None) -> None:
    """``out[rows_out[r] or r] += scale[r] * x[rows_in[r] or r] @ W_e^T`` for every row r of every span
    ``(e, start, end)`` of ``spans`` ``[S, 3]`` int64. ``x`` ``[*, K]`` with unit column stride: the
    panels' dtype for the ``avx512`` build, fp32 for the vector builds; ``out`` float32 ``[*, N]`` contiguous;
    ``rows_in``/``rows_out`` ``[R]`` int64; ``scale`` ``[R]`` float32. Runs on ``torch.get_num_threads()``
    threads."""
    _check(x, w, spans, rows_in)
    n = w.codes.shape[1] * PANEL
    assert out.is_contiguous() and out.dtype == torch.float32 and out.shape[1] == n
    assert rows_out is None or (rows_out.dtype == torch.int64 and rows_out.is_contiguous())
    assert scale is None or (scale.dtype == torch.float32 and scale.is_contiguous())
    functions = load(w.build).functions
    rows = (_ptr(rows_in),)
    tail = (n, x.shape[1], spans.data_ptr(), spans.shape[0], out.data_ptr(), out.stride(0), _ptr(rows_out),
            _ptr(scale), torch.get_num_threads())
    if w.build == "avx512":
        fn = functions["moe_gemm_bf16" if x.dtype == torch.bfloat16 else "moe_gemm_f32"]
        fn(x.data_ptr(), x.stride(0), *rows, w.codes.data_ptr(), *tail)
    else:
        functions["moe_vec_gemm"](x.data_ptr(), x.stride(0), *rows,
                                  ctypes.byref(_weights_t(w)), *tail)


def _weights_t(w: Panels) -> _Weights:
    groups = 0 if w.scale is None else w.scale.shape[2]
    return _Weights(w.format, w.group, groups, w.offset, w.codes.data_ptr(), _ptr(w.scale), _ptr(w.zero))


def _routing(topk_weights: torch.Tensor, topk_ids: torch.Tensor,
             expert_map: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The routing tensors as the C sort reads them: contiguous int32/int64 ids, float32 weights, int64 map."""
    ids, weights = topk_ids.contiguous(), topk_weights.contiguous()
    assert ids.dtype in (torch.int32, torch.int64) and weights.dtype == torch.float32
    return ids, weights, None if expert_map is None else expert_map.to(torch.int64).contiguous()


def _check(x: torch.Tensor, w: Panels, spans: torch.Tensor, rows_in: torch.Tensor | None) -> None:
    """The kernels' pointer contract (callers are this package's experts; a breach is a bug there)."""
    assert x.stride(1) == 1 and x.dtype in (torch.bfloat16, torch.float32) and w.codes.is_contiguous()
    assert x.dtype == (w.codes.dtype if w.build == "avx512" else torch.float32)
    assert spans.dtype == torch.int64 and spans.is_contiguous() and spans.shape[1:] == (3,)
    assert rows_in is None or (rows_in.dtype == torch.int64 and rows_in.is_contiguous())


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()
