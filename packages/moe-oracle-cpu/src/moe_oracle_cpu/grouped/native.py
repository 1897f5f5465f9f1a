"""``cpu_grouped``'s AVX-512 expert GEMMs (``moe_gemm.c``): built on first use, loaded with ctypes.

Why C: torch has no CPU op for "one GEMM per expert over rows sorted by expert". Per-expert
oneDNN calls from Python pulled weights at 40-60% of read bandwidth at 1-16 rows per expert, and
their per-call overhead dominated small experts. One C call per projection covers every expert,
streams panels at memory speed for decode and runs at or above the ``torch.mm`` rate for prefill
(``bench/cpu_moe.py``).

Build: the system C compiler (``$CC``, else ``cc``/``gcc``) with explicit ISA flags (not
``-march=native``, so a cached library is valid on any CPU that has those features) into
``$MOE_ORACLE_CACHE_DIR`` (default ``~/.cache/moe-oracle``), named by a hash of the source,
compiler and flags, written atomically. The library needs ``libgomp.so.1`` by soname, which
resolves to the OpenMP runtime torch already loaded, so the kernel and torch share one thread pool.

``MOE_ORACLE_CPU_NATIVE=0`` turns the kernels off (``cpu_grouped`` then runs oneDNN-packed GEMMs).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from moe_oracle.config.moe import MoEConfig

ENV_SWITCH = "MOE_ORACLE_CPU_NATIVE"
ENV_CACHE = "MOE_ORACLE_CACHE_DIR"
SOURCE = Path(__file__).with_name("moe_gemm.c")
FLAGS = ("-O3", "-mavx512f", "-mavx512bw", "-mavx512bf16", "-mfma", "-fopenmp", "-shared", "-fPIC")
PANEL = 64          # output columns per packed panel (NB in moe_gemm.c)
# The CPU feature (moe_oracle.platform names) each kernel's instructions need.
FEATURE = {torch.bfloat16: "avx512_bf16", torch.float32: "avx512"}

_P, _L, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
# x, ldx, rows_in, w, N, K, spans, nspans, out, ldo, rows_out, scale, nthreads.
_GEMM_ARGS = [_P, _L, _P, _P, _I, _I, _P, _I, _P, _L, _P, _P, _I]


class NativeError(RuntimeError):
    """The kernels cannot be built or loaded here; the message says which step failed and why."""


class Library(NamedTuple):
    path: Path
    gemm: dict[torch.dtype, Callable[..., None]]
    sort_rows: Callable[..., int]
    forward_silu: dict[torch.dtype, Callable[..., int]]


class SortedRows(NamedTuple):
    """The routed pairs of this rank grouped by local expert (as ``moe_oracle_cpu._routing.ExpertRows``,
    with the spans as a tensor). token ``[R]`` int64, weight ``[R]`` float32, spans ``[S, 3]`` int64
    ``(expert, start, end)`` in ascending expert order, token order within an expert."""

    token: torch.Tensor
    weight: torch.Tensor
    spans: torch.Tensor


def disabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off")


def unsupported(config: MoEConfig, features: frozenset[str]) -> str:
    """'' when ``config`` can run on the native kernels on a CPU with ``features``; else why not
    (without building anything)."""
    if disabled():
        return f"{ENV_SWITCH}={os.environ[ENV_SWITCH]} turns the native kernels off"
    if config.scheme.weight is not None or config.dtype not in FEATURE:
        return f"the native kernels take unquantized bf16 or fp32 experts, not {config.scheme.name} {config.dtype}"
    if FEATURE[config.dtype] not in features:
        return f"the {config.dtype} kernel needs the CPU feature {FEATURE[config.dtype]}"
    n13, h = config.w13_rows, config.hidden_size
    if n13 % PANEL or h % PANEL:
        return (f"the native kernels need w13 rows and the hidden size to be multiples of {PANEL}, "
                f"have {n13} and {h}")
    return ""


@functools.cache
def load() -> Library:
    """Build (once per source, compiler and flags) and load the kernels; ``NativeError`` says why not."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise NativeError("no C compiler: set CC or install gcc (cpu_grouped builds moe_gemm.c on first use)")
    source = SOURCE.read_bytes()
    version = _run([compiler, "--version"], "query the C compiler").splitlines()[0]
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(FLAGS).encode()])).hexdigest()[:16]
    path = _cache_dir() / f"moe_gemm_{key}.so"
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
                built = Path(scratch) / path.name
                _run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], f"compile {SOURCE.name} with {compiler}")
                os.replace(built, path)
        except OSError as exc:
            raise NativeError(f"cannot write the kernel cache folder {path.parent} ({exc}); "
                              f"set {ENV_CACHE} to a writable folder") from exc
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise NativeError(f"cannot load {path}: {exc}") from exc
    gemm = {}
    for dtype, suffix in ((torch.bfloat16, "bf16"), (torch.float32, "f32")):
        fn = getattr(lib, f"moe_gemm_{suffix}")
        fn.argtypes, fn.restype = _GEMM_ARGS, None
        gemm[dtype] = fn
    sort_rows = lib.moe_sort_rows
    sort_rows.argtypes = [_P, _I, _P, _L, _I, _P, _L, _I, _P, _P, _P, _P, ctypes.POINTER(_L)]
    sort_rows.restype = _L
    forward_silu = {}
    for dtype, suffix in ((torch.bfloat16, "bf16"), (torch.float32, "f32")):
        fn = getattr(lib, f"moe_forward_silu_{suffix}")
        fn.argtypes = [_P, _L, _I, _I, _P, _I, _P, _I, _P, _L, _I, _P, _P, _I, _P, _P, _P, _P, _P, _I]
        fn.restype = _L
        forward_silu[dtype] = fn
    return Library(path, gemm=gemm, sort_rows=sort_rows, forward_silu=forward_silu)


def load_error() -> str:
    """'' when ``load()`` succeeds; else its message."""
    try:
        load()
    except NativeError as exc:
        return str(exc)
    return ""


def _cache_dir() -> Path:
    root = os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache", "moe-oracle")
    return Path(root)


def _run(command: list[str], what: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    except OSError as exc:
        raise NativeError(f"cannot {what}: {exc}") from exc
    if done.returncode:
        raise NativeError(f"cannot {what} (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout or done.stderr


def pack(w: torch.Tensor, *, gate_up: bool = False) -> torch.Tensor:
    """Canonical experts ``[E, N, K]`` -> panels: bf16 ``[E, N/64, K/2, 64, 2]``, fp32 ``[E, N/64, K, 64]``
    (``moe_gemm.c``'s layout: one k step of a panel is 256 contiguous bytes). With ``gate_up`` (gated
    ``w13``, N = 2I), panel b holds gate rows ``32b..32b+31`` then up rows ``I+32b..I+32b+31``, as the
    silu epilogue reads them. A new tensor."""
    e, n, k = w.shape
    if gate_up:
        w = w.reshape(e, 2, n // PANEL, PANEL // 2, k).transpose(1, 2)          # [E, N/64, 2, 32, K]
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
    if gate_up:
        w = w.reshape(e, blocks, 2, PANEL // 2, -1).transpose(1, 2).reshape(e, blocks * PANEL, -1)
    return w


def sort_rows(topk_weights: torch.Tensor, topk_ids: torch.Tensor, *, num_local_experts: int,
              expert_map: torch.Tensor | None = None) -> SortedRows | None:
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
    n_spans = load().sort_rows(ids.data_ptr(), ids.dtype == torch.int64, weights.data_ptr(), pairs, ids.shape[-1],
                               _ptr(emap), 0 if emap is None else emap.numel(), num_local_experts, counts.data_ptr(),
                               token.data_ptr(), weight.data_ptr(), spans.data_ptr(), ctypes.byref(rows))
    if n_spans < 0:
        return None
    return SortedRows(token[: rows.value], weight[: rows.value], spans[:n_spans])


def forward_silu(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, w13: torch.Tensor,
                 w2: torch.Tensor, *, num_local_experts: int, expert_map: torch.Tensor | None = None,
                 weighted: bool = True) -> torch.Tensor | None:
    """A gated-silu layer without biases in one C call: sort, GEMM1 with the silu epilogue, GEMM2 with
    the top-k sum in its epilogue, cast to ``x``'s dtype. One call because after a decode step has
    streamed the weights through every cache, each further torch op costs tens of microseconds.

    ``x`` ``[T, H]`` contiguous; ``w13`` from ``pack(w13, gate_up=True)``, ``w2`` from ``pack(w2)``;
    ``weighted=False`` when the router weights were applied to ``x``. Returns ``[T, H]`` in ``x``'s
    dtype, or None if an id is out of range (the caller's full input check names it)."""
    tokens, h = x.shape
    ids, weights, emap = _routing(topk_weights, topk_ids, expert_map)
    assert x.is_contiguous() and w13.dtype == w2.dtype == x.dtype and w13.is_contiguous() and w2.is_contiguous()
    i = w13.shape[1] * PANEL // 2
    pairs = ids.numel()
    iwork = torch.empty(4 * num_local_experts + pairs, dtype=torch.int64)
    weight = torch.empty(pairs, dtype=torch.float32)
    act = torch.empty(pairs, i, dtype=x.dtype)
    out = torch.empty(tokens, h, dtype=x.dtype)
    sums = out if x.dtype == torch.float32 else torch.empty(tokens, h, dtype=torch.float32)
    found = load().forward_silu[x.dtype](
        x.data_ptr(), tokens, h, i, ids.data_ptr(), ids.dtype == torch.int64, weights.data_ptr(), ids.shape[-1],
        _ptr(emap), 0 if emap is None else emap.numel(), num_local_experts, w13.data_ptr(), w2.data_ptr(),
        weighted, iwork.data_ptr(), weight.data_ptr(), act.data_ptr(), sums.data_ptr(), out.data_ptr(),
        torch.get_num_threads())
    return None if found < 0 else out


def expert_gemm(x: torch.Tensor, packed: torch.Tensor, spans: torch.Tensor, out: torch.Tensor, *,
                rows_in: torch.Tensor | None = None, rows_out: torch.Tensor | None = None,
                scale: torch.Tensor | None = None) -> None:
    """``out[rows_out[r] or r] += scale[r] * x[rows_in[r] or r] @ W_e^T`` for every row r of every span
    ``(e, start, end)`` of ``spans`` ``[S, 3]`` int64. ``x`` ``[*, K]`` with unit column stride in the
    packed dtype; ``out`` float32 ``[*, N]`` contiguous; ``rows_in``/``rows_out`` ``[R]`` int64;
    ``scale`` ``[R]`` float32. Runs on ``torch.get_num_threads()`` threads."""
    _check(x, packed, spans, rows_in)
    assert out.is_contiguous() and out.dtype == torch.float32 and out.shape[1] == packed.shape[1] * PANEL
    assert rows_out is None or (rows_out.dtype == torch.int64 and rows_out.is_contiguous())
    assert scale is None or (scale.dtype == torch.float32 and scale.is_contiguous())
    load().gemm[x.dtype](x.data_ptr(), x.stride(0), _ptr(rows_in), packed.data_ptr(), packed.shape[1] * PANEL,
                         x.shape[1], spans.data_ptr(), spans.shape[0], out.data_ptr(), out.stride(0), _ptr(rows_out),
                         _ptr(scale), torch.get_num_threads())


def _routing(topk_weights: torch.Tensor, topk_ids: torch.Tensor,
             expert_map: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The routing tensors as the C sort reads them: contiguous int32/int64 ids, float32 weights, int64 map."""
    ids, weights = topk_ids.contiguous(), topk_weights.contiguous()
    assert ids.dtype in (torch.int32, torch.int64) and weights.dtype == torch.float32
    return ids, weights, None if expert_map is None else expert_map.to(torch.int64).contiguous()


def _check(x: torch.Tensor, packed: torch.Tensor, spans: torch.Tensor, rows_in: torch.Tensor | None) -> None:
    """The kernels' pointer contract (callers are this package's experts; a breach is a bug there)."""
    assert x.stride(1) == 1 and x.dtype == packed.dtype and packed.is_contiguous()
    assert spans.dtype == torch.int64 and spans.is_contiguous() and spans.shape[1:] == (3,)
    assert rows_in is None or (rows_in.dtype == torch.int64 and rows_in.is_contiguous())


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()
