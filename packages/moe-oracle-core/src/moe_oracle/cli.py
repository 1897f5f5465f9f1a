"""``moe-oracle``: a thin command line over the API.

``--help``, ``--version`` and ``list`` import no torch (``list --check`` does: the per-layer
checks build a ``MoEConfig``); the commands that build layers import it when they run.

    moe-oracle list                                   every backend, its package, and whether it runs here
    moe-oracle explain --model deepseek-v3 --quant fp8_block --platform cuda:9.0,flashinfer=0.6.13
    moe-oracle run --model tiny --tokens 1,16,64      select, run, check against the reference, time
    moe-oracle bench --model tiny --tokens 1,16 --json out.json --plot out.png
    moe-oracle tune --model qwen3-30b-a3b --json plan.json   every backend per token bucket, cached

Exit codes: 0 success; 1 a failure at run time (a backend that disagrees with the reference, nothing
fits in explain, a kernel error); 2 a usage or configuration error (bad arguments, an unknown backend,
a config that cannot be built, an unusable device or output path). Errors print as one line
``error: ...`` on stderr, never as a traceback; output paths are checked before any work starts.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from moe_oracle.config.moe import MoEConfig, dtype_name
from moe_oracle.config.parallel import ALL2ALL_BACKENDS, ParallelConfig
from moe_oracle.config.presets import PRESETS
from moe_oracle.config.quant import SCHEME_NAMES
from moe_oracle.errors import ConfigError, MoEOracleError
from moe_oracle.platform import Platform

if TYPE_CHECKING:  # torch is imported by the commands that run kernels, never for --help or list
    import torch


DESCRIPTION = """moe-oracle: which fused Mixture-of-Experts kernel a layer gets on this machine and why;
run it against the reference experts, and time every candidate."""
EXAMPLES = """examples:
  moe-oracle list                                   every backend: its package, and whether it runs here
  moe-oracle explain --model deepseek-v3 --quant fp8_block --platform cuda:9.0,flashinfer=0.6.13
  moe-oracle run --model tiny --tokens 1,16,64      select, run, check against the reference, time
  moe-oracle bench --model tiny --tokens 1,16 --json out.json --plot out.png
  moe-oracle tune --model qwen3-30b-a3b --json plan.json   time every backend per token bucket; cache the plan
  moe-oracle COMMAND --help                         the options of one command"""


EXIT_FAILURE, EXIT_USAGE = 1, 2
MAX_TOKENS = 1 << 20  # token counts above this are a usage error, not an allocation failure halfway through


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MoEOracleError as exc:  # usage and configuration errors (ConfigError, unknown/unsupported backends)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a failure at run time: one line, no traceback
        print(f"error: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moe-oracle", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_VersionAction,
                        help="print every installed moe-oracle distribution and plugin with its version, and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="every registered backend and whether it runs here",
                       description="Every registered backend: its package, vendors, activation format, schemes, "
                                   "and whether it runs here. Without --check only the vendor and the vendor "
                                   "libraries are checked, which needs no torch.")
    p.add_argument("--platform", help="simulate a platform, e.g. cuda:9.0,flashinfer=0.6.13")
    p.add_argument("--check", action="store_true",
                   help="also run every backend's support checks on a small layer (imports torch)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--wide", action="store_true", help="one line per backend, nothing wrapped or shortened")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("explain", help="the selection for one layer: every candidate and why")
    _layer_args(p)
    p.add_argument("--wide", action="store_true", help="one line per candidate and hint, nothing wrapped")
    p.add_argument("--platform", help="simulate a platform: vendor[:capability|arch][,feature][,lib=version]...")
    p.add_argument("--backend", help="force a backend (as MOE_ORACLE_BACKEND would)")
    p.add_argument("--exclude", help="comma-separated backends to skip")
    p.add_argument("--prefer", help="comma-separated backends to try first")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("run", help="build one layer with seeded random weights, run it, check it, time it")
    _layer_args(p)
    _run_args(p)
    p.add_argument("--backend", help="force a backend")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="time every usable backend for one layer over token counts",
                       description="Time every usable backend (or --backends) on one layer with seeded random "
                                   "weights. Every layer is built first (one copy of the weights each), then "
                                   "timed in interleaved rounds; the table gives the median and min-max per "
                                   "backend and token count and marks the backend moe-oracle chooses.")
    _layer_args(p)
    _run_args(p)
    p.add_argument("--backends", help="comma-separated backends (default: every usable one)")
    p.add_argument("--reps", type=int, default=5,
                   help="repetitions: each times every backend and token count once, interleaved (default 5); "
                        "the table gives their median, min and max")
    p.add_argument("--json", dest="json_out", help="write results to this JSON file")
    p.add_argument("--plot", help="write a PNG plot (needs matplotlib: pip install 'moe-oracle-core[plot]')")
    p.add_argument("--policy", choices=("rules", "measured"), default=None,
                   help="which plan marks the chosen backend per token count (default: MOE_ORACLE_POLICY, else "
                        "rules; measured reads the selection cache or measures, as MoELayer does)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tune", help="measure every usable backend per token bucket on this machine; cache the plan",
                       description="The measured policy now: time every usable backend (and Triton's launch "
                                   "configs) at one token count per bucket on this device, write the selection "
                                   "cache that MoELayer(policy='measured') reads, and print ms and multiple of the "
                                   "fastest per backend per bucket.")
    _layer_args(p)
    p.add_argument("--buckets", "--tokens", dest="tokens", default=None,
                   help="bucket upper bounds, comma-separated (default 1,4,16,64,256,1024,4096; the last bucket "
                        "is unbounded)")
    p.add_argument("--out", help="also write the Triton launch configs measured into a tuned-table folder "
                                 "(read through MOE_ORACLE_TRITON_CONFIG_DIR); needs a GPU")
    p.add_argument("--rep-ms", type=int, default=60, help="timing window per candidate on a GPU (ms)")
    p.add_argument("--allow-extra-memory", action="store_true",
                   help="let buckets run backends on other weight layouts (each costs a converted copy)")
    p.add_argument("--json", dest="json_out", help="write the plan and every timing to this JSON file")
    p.add_argument("--plot", help="write a PNG plot of ms per backend per bucket, the chosen one marked")
    p.set_defaults(func=cmd_tune)
    return parser


def _layer_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", choices=sorted(PRESETS), help="a named preset")
    src.add_argument("--hf-config", help="a Hugging Face config.json (or its directory)")
    p.add_argument("--quant", choices=SCHEME_NAMES, metavar="NAME",
                   help=f"quantization scheme; one of {', '.join(SCHEME_NAMES)} (grouped ones also take _g32/_g64/_zp)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="compute dtype")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel size")
    p.add_argument("--dp", type=int, default=1, help="data parallel size")
    p.add_argument("--ep", type=int, default=1, help="expert parallel size")
    p.add_argument("--all2all", choices=ALL2ALL_BACKENDS, default="none", help="expert-parallel dispatcher")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokens", default="1,16", help="token counts, comma-separated (default 1,16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=0,
                   help="timed calls per measurement (default: auto, about 0.5 s per backend and token count)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def _check_run_args(args: argparse.Namespace) -> None:
    """The numbers ``run``/``bench``/``tune`` take, checked before any work (``ConfigError``: exit 2)."""
    seed = getattr(args, "seed", 0)
    if not 0 <= seed < 2 ** 63:
        raise ConfigError("--seed", f"must be in [0, 2**63), got {seed}")
    if getattr(args, "rep_ms", 1) <= 0:
        raise ConfigError("--rep-ms", f"must be positive, got {args.rep_ms}")


def _check_output_path(option: str, path: str | None, *, folder: bool = False) -> None:
    """An output file (or ``folder``) must be writable where it is asked for: checked before the work
    whose results it would hold, so a typo never loses a finished benchmark."""
    if path is None:
        return
    import os
    from pathlib import Path

    target = Path(path)
    if folder:  # created with its parents when missing: the nearest existing ancestor must be a writable folder
        where = next(p for p in (target, *target.parents) if p.exists() or p == Path(p.anchor or "."))
        if not where.is_dir():
            raise ConfigError(option, f"cannot create {path}: {where} exists and is not a folder")
    else:
        if target.is_dir():
            raise ConfigError(option, f"{path} is a folder; give a file name")
        where = target.parent
        if not where.is_dir():
            raise ConfigError(option, f"cannot write {path}: folder {where} does not exist")
    if not os.access(where, os.W_OK):
        raise ConfigError(option, f"cannot write {path}: folder {where} is not writable")


def build_config(args: argparse.Namespace) -> MoEConfig:
    overrides: dict[str, Any] = {}
    if args.dtype:
        overrides["dtype"] = args.dtype
    if args.quant:
        overrides["quant"] = args.quant
    elif args.dtype:
        overrides["quant"] = args.dtype
    if (args.tp, args.dp, args.ep, args.all2all) != (1, 1, 1, "none"):
        overrides["parallel"] = ParallelConfig(tp_size=args.tp, dp_size=args.dp, ep_size=args.ep, all2all=args.all2all)
    if args.model:
        return MoEConfig.preset(args.model, **overrides)
    return MoEConfig.from_hf(args.hf_config, **overrides)


def _platform(text: str | None) -> Platform | None:
    return Platform.parse(text) if text else None


# --version ---------------------------------------------------------------------------------
def installed_versions() -> list[tuple[str, str, str]]:
    """``(distribution, version, note)`` of this core, every other installed ``moe-oracle*``
    distribution and every distribution with a ``moe_oracle.backends`` entry point, core first.
    Read from package metadata: nothing is imported."""
    import re
    from importlib import metadata

    from moe_oracle.registry import CORE_DISTRIBUTION, ENTRY_POINT_GROUP
    from moe_oracle.version import PLUGIN_API_VERSION, __version__

    core_note = f"plugin API {PLUGIN_API_VERSION}"
    try:
        if metadata.version(CORE_DISTRIBUTION) != __version__:
            core_note += f"; metadata says {metadata.version(CORE_DISTRIBUTION)}"
    except metadata.PackageNotFoundError:
        core_note += "; not installed, imported from its source folder"
    found: dict[str, tuple[str, str, str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        key = re.sub(r"[-_.]+", "-", name).lower()
        if not key or key in found or key == CORE_DISTRIBUTION:
            continue
        plugin = any(ep.group == ENTRY_POINT_GROUP for ep in dist.entry_points)
        if key == "moe-oracle" or key.startswith("moe-oracle-"):
            found[key] = (name, dist.version, "backend plugin" if plugin else "")
        elif plugin:
            found[key] = (name, dist.version, "backend plugin")
    return [(CORE_DISTRIBUTION, __version__, core_note), *(found[k] for k in sorted(found))]


def _version_text() -> str:
    import platform as pyplatform
    from importlib import metadata

    lines = [f"{name} {version}" + (f" ({note})" if note else "") for name, version, note in installed_versions()]
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    lines.append(f"torch {torch_version}, Python {pyplatform.python_version()}")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    """``--version``: computed when asked, so that other invocations never read every package's metadata."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(_version_text())
        parser.exit()


# list ------------------------------------------------------------------------------------
AVAILABLE = "available"
_LIST_NOTE = ("available: serves this machine's vendor and its vendor libraries are installed; its per-layer "
              "checks run in moe-oracle explain and in moe-oracle list --check (both import torch).")


def backend_rows(platform: Platform | None = None, *, check: bool = False) -> list[dict[str, Any]]:
    """One row per registered backend: package, version, vendors, schemes, and whether it runs here.

    ``usable`` is False with a ``reason`` when the backend serves another vendor or misses a vendor
    library. Otherwise, with ``check``, every support check runs on a small layer of each scheme
    until one passes (this builds ``MoEConfig``s, so it imports torch): True, or False with the
    first reason; without ``check`` it is None (not checked per layer).
    """
    from importlib import metadata

    from moe_oracle.oracle.base import default_platform
    from moe_oracle.registry import registry

    reg = registry()
    platform = platform or default_platform(reg)
    rows = []
    for spec in reg.specs():
        try:
            version = metadata.version(spec.distribution)
        except metadata.PackageNotFoundError:
            version = "?"
        usable, reason = _runs_here(spec, platform)
        if usable is not False and check:
            usable, reason = _usable_here(spec, platform)
        rows.append({"name": spec.name, "distribution": spec.distribution, "version": version,
                     "vendors": sorted(spec.vendors), "schemes": sorted(spec.schemes),
                     "format": spec.activation_format, "usable": usable, "reason": reason})
    return rows


def _runs_here(spec: Any, platform: Platform) -> tuple[bool | None, str]:
    """What needs no layer (and no torch): the vendor, then the vendor libraries."""
    if not spec.serves_vendor(platform.vendor):
        return False, f"serves {'/'.join(sorted(spec.vendors))}, not {platform.vendor}"
    for library, distribution in spec.libraries.items():
        if not platform.has(library):
            return False, f"{library} not installed (pip install {distribution})"
    return None, ""


def _usable_here(spec: Any, platform: Platform) -> tuple[bool, str]:
    """Usable if some scheme it claims passes its checks on a small layer on this platform."""
    from moe_oracle.oracle.base import support_of

    first_reason = ""
    order = sorted(spec.schemes, key=lambda s: (s not in ("bf16", "fp16", "fp32"), s))
    for scheme in order:
        dtype = scheme if scheme in ("bf16", "fp16", "fp32") else "bf16"
        try:
            config = MoEConfig.preset("tiny", quant=scheme, dtype=dtype,
                                      parallel=ParallelConfig(ep_size=2, all2all="torch_batched")
                                      if spec.activation_format == "batched" else ParallelConfig())
        except MoEOracleError:
            continue
        support = support_of(spec, config, platform)  # a plugin's faulty check is a reason, not a traceback
        if support.ok:
            return True, ""
        first_reason = first_reason or support.reason
    return False, first_reason


def _here(row: dict[str, Any], *, wide: bool) -> str:
    if row["usable"] is None:
        return AVAILABLE
    if row["usable"]:
        return "usable"
    return f"not usable here: {row['reason']}" if wide else "not usable"


def cmd_list(args: argparse.Namespace) -> int:
    from moe_oracle._table import WIDTH, format_table, wrap
    from moe_oracle.registry import registry

    rows = backend_rows(_platform(args.platform), check=args.check)
    failures = registry().failures
    if args.json:
        print(json.dumps({"backends": rows, "plugin_failures": [
            {"distribution": f.distribution, "entry_point": f.entry_point, "error": f.error} for f in failures]},
            indent=2))
        return 0
    # Narrow (the default): a rejection's reason goes on its own lines under the row, and a long
    # scheme list becomes a count, so every line fits WIDTH columns.
    table = [("backend", "package", "vendors", "format", "here", "schemes")]
    notes: list[list[str]] = [[]]
    for r in rows:
        schemes = ",".join(r["schemes"])
        if not args.wide and len(schemes) > 16:
            schemes = f"{len(r['schemes'])} schemes"
        table.append((r["name"], f"{r['distribution']} {r['version']}", ",".join(r["vendors"]), r["format"],
                      _here(r, wide=args.wide), schemes))
        notes.append([r["reason"]] if r["usable"] is False and not args.wide else [])
    width = None if args.wide else WIDTH
    for line in format_table(table, width=width, notes=notes, note_indent=4):
        print(line)
    if any(r["usable"] is None for r in rows):
        print("\n".join(wrap(_LIST_NOTE, width)))
    for f in failures:
        print(f"plugin failed to load: {f}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from moe_oracle._table import WIDTH
    from moe_oracle.oracle.schemes import oracle_for

    config = build_config(args)
    report = oracle_for(config).explain(config, _platform(args.platform), backend=args.backend,
                                        exclude=args.exclude, prefer=args.prefer)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render(None if args.wide else WIDTH))
    return 0 if report.chosen else 1


# run / bench -----------------------------------------------------------------------------
def _device(args: argparse.Namespace) -> torch.device:
    import torch

    """``--device``, checked to exist on this machine (``ConfigError`` naming it otherwise)."""
    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError("--device", f"{name!r} is not a torch device ({str(exc).splitlines()[0]})") from None
    try:
        torch.empty(0, device=device)
    except Exception as exc:  # e.g. "Torch not compiled with CUDA enabled", an out-of-range index
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError("--device", f"{name} is not usable here: {first}") from None
    return device


def _tokens(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError("--tokens", f"must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise ConfigError("--tokens", f"needs non-negative integers, got {text!r}")
    if max(values) > MAX_TOKENS:
        raise ConfigError("--tokens", f"at most {MAX_TOKENS} tokens per call, got {max(values)}")
    return values


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu":
        torch.xpu.synchronize(device)


def _calibrate(fn: Any, device: torch.device, iters: int = 0, budget_s: float = 0.5) -> int:
    """Warm up ``fn``; ``iters`` if given, else as many calls as fit ``budget_s`` (1 to 200)."""
    fn()
    _sync(device)
    if iters > 0:
        return iters
    start = time.perf_counter()
    fn()
    _sync(device)
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, min(200, int(budget_s / once)))


def _time_iters(fn: Any, device: torch.device, iters: int) -> float:
    """Seconds per call over ``iters`` back-to-back calls, synchronized before the clock stops."""
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iters


def time_call(fn: Any, device: torch.device, iters: int = 0) -> float:
    """Seconds per call: warm up, then time ``iters`` calls (auto: about half a second's worth)."""
    return _time_iters(fn, device, _calibrate(fn, device, iters))


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from moe_oracle.layer import MoELayer
    from moe_oracle.testing import compare, random_inputs, random_weights

    _check_run_args(args)
    tokens = _tokens(args.tokens)
    config = build_config(args)
    device = _device(args)
    layer = MoELayer(config, backend=args.backend)
    print(layer.selection.report)
    weights = random_weights(config, seed=args.seed, device=device)
    layer.load_weights(**dict(weights.items()))
    # The checking layer: exclude=() so that MOE_ORACLE_EXCLUDE (which shapes the layer under test) never
    # excludes the reference the run is checked against.
    reference = MoELayer(config, backend="reference", exclude=())
    reference.load_weights(**dict(weights.items()))
    ok = True
    print(f"\nbackend {layer.backend} on {device}; checked against the reference experts")
    print(f"{'tokens':>7} {'max_abs_err':>12} {'max_rel_err':>12} {'check':>6} {'ms/call':>10} {'tokens/s':>12}")
    for t in tokens:
        hidden, logits = random_inputs(config, t, seed=args.seed + t, device=device)
        with torch.inference_mode():
            out = layer(hidden, logits)
            expected = reference(hidden, logits)
            result = compare(out, expected, config=config)
            seconds = time_call(functools.partial(layer, hidden, logits), device, args.iters)
        ok &= result.ok
        rate = t / seconds if t else 0.0
        print(f"{t:>7} {result.max_abs:>12.3e} {result.max_rel:>12.3e} {'PASS' if result.ok else 'FAIL':>6} "
              f"{seconds * 1e3:>10.3f} {rate:>12.1f}")
    print(f"\ntolerance: {result.tolerance}")
    return 0 if ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from moe_oracle.layer import MoELayer
    from moe_oracle.oracle.schemes import oracle_for
    from moe_oracle.registry import registry
    from moe_oracle.testing import random_inputs, random_weights

    _check_output_path("--json", args.json_out)
    _check_output_path("--plot", args.plot)
    if args.plot:
        _require_matplotlib()                              # before the benchmark, not after it
    if args.reps < 1:
        raise ConfigError("--reps", f"must be at least 1, got {args.reps}")
    _check_run_args(args)
    tokens = _tokens(args.tokens)
    config = build_config(args)
    device = _device(args)
    selection = oracle_for(config).select_backend(config, policy=args.policy)
    report = selection.report
    names = [n.strip().lower() for n in args.backends.split(",") if n.strip()] if args.backends else \
        [c.name for c in report.candidates if c.status in ("selected", "usable")]
    if args.backends and not names:
        raise ConfigError("--backends", f"names no backend: {args.backends!r}", allowed=registry().names())
    for name in names:
        registry().get(name)  # an unknown name fails now (UnknownBackendError lists the known ones)
    weights = random_weights(config, seed=args.seed, device=device)
    layers = {}
    for name in names:
        layers[name] = MoELayer(config, backend=name)
        layers[name].load_weights(**dict(weights.items()))
    inputs = {t: random_inputs(config, t, seed=args.seed + t, device=device) for t in tokens}
    calls = {(n, t): functools.partial(layers[n], *inputs[t]) for n in names for t in tokens}
    samples: dict[tuple[str, int], list[float]] = {key: [] for key in calls}
    started = time.perf_counter()
    with torch.inference_mode():
        iters = {key: _calibrate(fn, device, args.iters, budget_s=0.5 / args.reps) for key, fn in calls.items()}
        # Interleaved: each round times every (backend, tokens) once, and the backend that goes
        # first rotates, so a machine that gets busier or cooler mid-run shifts every candidate alike.
        for rep in range(args.reps):
            shift = rep % len(names)
            for t in tokens:
                for name in names[shift:] + names[:shift]:
                    samples[(name, t)].append(_time_iters(calls[(name, t)], device, iters[(name, t)]))
            print(f"round {rep + 1}/{args.reps} done, {time.perf_counter() - started:.1f} s",
                  file=sys.stderr, flush=True)
    payload = _bench_payload(args, config, report, device, names, tokens, samples, iters)
    payload["chosen"] = {str(t): selection.backend_for(t) for t in tokens}
    payload["plan"] = report.to_dict()["plan"]
    for line in _bench_table(payload):
        print(line)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
    if args.plot:
        _plot(payload, args.plot)
    return 0


def _bench_payload(args: argparse.Namespace, config: MoEConfig, report: Any, device: torch.device, names: list[str],
                   tokens: list[int], samples: dict[tuple[str, int], list[float]],
                   iters: dict[tuple[str, int], int]) -> dict[str, Any]:
    """What ``bench --json`` writes: per backend and token count the median, min and max ms over
    the repetitions (and every sample), the backend moe-oracle chooses per token count, the
    fastest one measured, and the device, versions and date the numbers belong to."""
    import datetime
    import platform as pyplatform
    import statistics

    import torch

    ms = {key: [v * 1e3 for v in values] for key, values in samples.items()}
    stats = {n: {str(t): {"median": statistics.median(ms[(n, t)]), "min": min(ms[(n, t)]), "max": max(ms[(n, t)]),
                          "samples": ms[(n, t)], "calls_per_sample": iters[(n, t)]} for t in tokens} for n in names}
    # The rules choose one backend for every token count; the plan is kept per token count so a
    # reader (and the plot) never has to assume that.
    chosen = {str(t): report.chosen for t in tokens}
    medians = {key: statistics.median(values) for key, values in ms.items()}
    fastest = {str(t): min((medians[(n, t)], i, n) for i, n in enumerate(names))[2] for t in tokens}
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    elif device.type == "xpu":
        device_name = torch.xpu.get_device_name(device)
    else:
        device_name = report.platform.device_name or pyplatform.processor()
    versions = {dist: version for dist, version, _ in installed_versions()}
    versions.update({"python": pyplatform.python_version(), "torch": torch.__version__})
    versions.update({lib: v for lib, v in report.platform.libraries.items() if lib not in versions})
    d = report.to_dict()
    return {
        "model": args.model or args.hf_config, "config": d["config"], "platform": d["platform"],
        "backend": report.chosen, "chosen": chosen, "fastest": fastest,
        "device": str(device), "device_name": device_name, "threads": torch.get_num_threads(),
        "versions": versions, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dtype": dtype_name(config.dtype), "repetitions": args.reps, "interleaved": True,
        "ms": {n: {t: s["median"] for t, s in per.items()} for n, per in stats.items()},
        "stats": stats,
    }


def _bench_table(payload: dict[str, Any]) -> list[str]:
    chosen = payload["backend"]
    lines = [f"{payload['model']} {payload['config']['quant']} on {payload['device']} ({payload['device_name']}), "
             f"{payload['repetitions']} interleaved repetitions; moe-oracle chooses {chosen or 'none'} (*)",
             f"{'tokens':>7}  {'backend':<20} {'median ms':>10} {'min ms':>10} {'max ms':>10} {'x floor':>8} "
             f"{'calls':>6}"]
    for t, fastest in payload["fastest"].items():
        floor = payload["stats"][fastest][t]["median"]
        for name, per in payload["stats"].items():
            s = per[t]
            mark = " *" if name == payload["chosen"][t] else ""
            ratio = s["median"] / floor if floor else float("nan")
            lines.append(f"{t:>7}  {name + mark:<20} {s['median']:>10.3f} {s['min']:>10.3f} {s['max']:>10.3f} "
                         f"{ratio:>8.2f} {s['calls_per_sample']:>6}" + ("  fastest" if name == fastest else ""))
    return lines


def cmd_tune(args: argparse.Namespace) -> int:
    """``moe_oracle.tune`` with a progress bar; the table, JSON and plot come from its report."""
    from pathlib import Path

    import torch

    import moe_oracle
    from moe_oracle.oracle.plan import DEFAULT_BUCKETS

    _check_output_path("--out", args.out, folder=True)
    _check_output_path("--json", args.json_out)
    _check_output_path("--plot", args.plot)
    if args.plot:
        _require_matplotlib()
    _check_run_args(args)
    bounds = tuple(_tokens(args.tokens)) if args.tokens else DEFAULT_BUCKETS
    if 0 in bounds:
        raise ConfigError("--tokens", "for tune must be positive")
    if list(bounds) != sorted(set(bounds)):
        raise ConfigError("--buckets", f"upper bounds must increase strictly, got {args.tokens!r}")
    config = build_config(args)
    if args.out and not torch.cuda.is_available():
        print("error: moe-oracle tune --out writes Triton launch configs, timed with CUDA graphs: it needs a CUDA "
              "or ROCm GPU; torch sees none here", file=sys.stderr)
        return 2
    timer = None
    if torch.cuda.is_available():
        from moe_oracle.oracle.measure import cuda_graph_timer

        timer = cuda_graph_timer(replays=max(5, min(200, args.rep_ms // 3)))
    print(f"measuring {config.scheme.name} E={config.num_local_experts} H={config.hidden_size} "
          f"I={config.intermediate_size_per_partition} top_k={config.top_k} for buckets up to "
          f"{','.join(map(str, bounds))} and beyond", file=sys.stderr, flush=True)
    started = time.perf_counter()
    selection = moe_oracle.tune(config, buckets=bounds, allow_extra_memory=args.allow_extra_memory, timer=timer,
                                progress=_progress_bar(started))
    print(file=sys.stderr)
    report = selection.report
    for line in tune_table(report.plan):
        print(line)
    info = report.plan_info
    print(f"primary backend {selection.backend} (weights layout {info.primary_layout if info else '?'}); "
          f"{info.origin if info else ''}; {time.perf_counter() - started:.1f} s")
    payload = {**report.to_dict(), "table": tune_rows(report.plan)}
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, default=str)
    if args.plot:
        _plot_plan(payload, args.plot)
    if args.out:
        path = _write_triton_table(config, report.plan, Path(args.out))
        print(f"wrote {path}" if path else "no Triton launch configs were measured; nothing written to --out")
    return 0


def tune_rows(plan: Any) -> list[dict[str, Any]]:
    """Per bucket and candidate: ms, multiple of the bucket's fastest, whether it is chosen, error."""
    rows = []
    for p in plan:
        floor = p.floor_ms
        for t in p.timings:
            rows.append({"bucket": p.label, "tokens": p.tokens, "candidate": t.label, "backend": t.backend,
                         "ms": t.ms, "x_floor": (t.ms / floor) if (t.ms is not None and floor) else None,
                         "chosen": t.backend == p.backend and t.kernel_config == p.kernel_config and t.ms == p.measured_ms,
                         "error": t.error, "kernel_config": t.kernel_config})
    return rows


def tune_table(plan: Any) -> list[str]:
    lines = [f"{'bucket':>10} {'@tokens':>8}  {'candidate':<28} {'ms':>10} {'x floor':>8}"]
    for row in tune_rows(plan):
        mark = " *" if row["chosen"] else ""
        if row["ms"] is None:
            lines.append(f"{row['bucket']:>10} {row['tokens']:>8}  {row['candidate']:<28} rejected: {row['error']}")
        else:
            lines.append(f"{row['bucket']:>10} {row['tokens']:>8}  {row['candidate'] + mark:<28} {row['ms']:>10.4f} "
                         f"{row['x_floor']:>8.2f}")
    lines.append("* the backend this bucket runs (ms: median on this device; x floor: multiple of the fastest)")
    return lines


def _progress_bar(started: float) -> Any:
    width = 30

    def progress(done: int, total: int, what: str) -> None:
        filled = int(width * done / max(total, 1))
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {time.perf_counter() - started:5.1f} s {what}"
        if sys.stderr.isatty():
            print("\r" + line[:150].ljust(150), end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    return progress


def _write_triton_table(config: MoEConfig, plan: Any, out: Any) -> Any:
    """The Triton rows of the plan as a tuned table (one entry per bucket's token count)."""
    import torch

    from moe_oracle.triton.configs import default_configs
    from moe_oracle.triton.tune import TunedPoint, write_configs
    from moe_oracle.triton.tuning import from_kernel_config

    points = []
    for p in plan:
        for t in p.timings:
            if t.backend == "triton" and t.ms is not None and p.tokens is not None:
                layer = from_kernel_config(t.kernel_config) if t.kernel_config else default_configs(config, p.tokens)
                points.append(TunedPoint(p.tokens, layer, t.ms, t.ms))
    if not points:
        return None
    return write_configs(config, list({pt.tokens: pt for pt in points}.values()), out, torch.cuda.get_device_name())


def _plot_plan(payload: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["table"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for cand in dict.fromkeys(r["candidate"] for r in rows):
        pts = sorted({(r["tokens"], r["ms"]) for r in rows if r["candidate"] == cand and r["ms"] is not None})
        if pts:
            ax.plot([t for t, _ in pts], [m for _, m in pts], marker="o", markersize=4, label=cand)
    chosen = sorted({(r["tokens"], r["ms"]) for r in rows if r["chosen"] and r["ms"] is not None})
    if chosen:
        ax.scatter([t for t, _ in chosen], [m for _, m in chosen], marker="*", s=220, facecolors="none",
                   edgecolors="black", linewidths=1.2, zorder=5, label="chosen per bucket")
    tokens = sorted({r["tokens"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(tokens, [str(t) for t in tokens])
    ax.set_xlabel("tokens per call (one per bucket)")
    ax.set_ylabel("ms per layer call (median)")
    ax.set_title(f"moe-oracle tune: {payload['config']['quant']} on {payload['platform']['device_name']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


PLOT_EXTRA = "pip install 'moe-oracle-core[plot]'"


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("--plot", f"needs matplotlib, which is not installed: {PLOT_EXTRA} "
                          "(or pip install matplotlib)") from None


def _plot(payload: dict[str, Any], path: str) -> Any:
    """Median ms per backend over token counts (bars: min to max over the repetitions), a star on
    the backend moe-oracle chooses at each token count, tokens labelled as plain numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    tokens = sorted(int(t) for t in payload["chosen"])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, per in payload["stats"].items():
        med = [per[str(t)]["median"] for t in tokens]
        low = [m - per[str(t)]["min"] for m, t in zip(med, tokens, strict=True)]
        high = [per[str(t)]["max"] - m for m, t in zip(med, tokens, strict=True)]
        ax.errorbar(tokens, med, yerr=[low, high], marker="o", markersize=4, capsize=3, label=name)
    picked = [(t, payload["stats"][payload["chosen"][str(t)]][str(t)]["median"]) for t in tokens
              if payload["chosen"][str(t)] in payload["stats"]]
    if picked:
        ax.scatter([t for t, _ in picked], [m for _, m in picked], marker="*", s=220, facecolors="none",
                   edgecolors="black", linewidths=1.2, zorder=5, label="chosen by moe-oracle")
    if 0 in tokens:
        ax.set_xscale("symlog", base=2, linthresh=1)
    else:
        ax.set_xscale("log", base=2)
    ax.set_xticks(tokens, [str(t) for t in tokens])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yscale("log")
    ax.set_xlabel("tokens per call")
    ax.set_ylabel("ms per layer call (median; bars: min to max)")
    ax.set_title(f"{payload['model']} {payload['config']['quant']} on {payload['device_name'] or payload['device']}, "
                 f"{payload['date'][:10]}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


if __name__ == "__main__":
    raise SystemExit(main())
