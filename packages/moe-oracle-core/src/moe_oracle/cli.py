"""``moe-oracle``: a thin command line over the API.

    moe-oracle list                                   every backend, its package, and whether it runs here
    moe-oracle explain --model deepseek-v3 --quant fp8_block --platform cuda:9.0,flashinfer=0.6.13
    moe-oracle run --model tiny --tokens 1,16,64      select, run, check against the reference, time
    moe-oracle bench --model tiny --tokens 1,16 --json out.json --plot out.png
    moe-oracle tune --model qwen3-30b-a3b --tokens 1,16,256 --out configs/   Triton configs for this GPU

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
from typing import Any

import torch

from moe_oracle.config.moe import MoEConfig, dtype_name
from moe_oracle.config.parallel import ALL2ALL_BACKENDS, ParallelConfig
from moe_oracle.config.presets import PRESETS
from moe_oracle.config.quant import SCHEME_NAMES
from moe_oracle.errors import ConfigError, MoEOracleError
from moe_oracle.platform import Platform


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
    parser = argparse.ArgumentParser(prog="moe-oracle", description=__doc__.splitlines()[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="every registered backend and whether it is usable here")
    p.add_argument("--platform", help="simulate a platform, e.g. cuda:9.0,flashinfer=0.6.13")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("explain", help="the selection for one layer: every candidate and why")
    _layer_args(p)
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

    p = sub.add_parser("bench", help="time every usable backend for one layer over token counts")
    _layer_args(p)
    _run_args(p)
    p.add_argument("--backends", help="comma-separated backends (default: every usable one)")
    p.add_argument("--json", dest="json_out", help="write results to this JSON file")
    p.add_argument("--plot", help="write a PNG plot (needs matplotlib)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tune", help="tune the Triton experts' launch configs for one layer on this GPU")
    _layer_args(p)
    p.add_argument("--tokens", default="1,16,64,256,1024", help="token counts, comma-separated")
    p.add_argument("--out", required=True, help="folder for the tuned JSON file (an existing one is merged into); "
                                                "use it through MOE_ORACLE_TRITON_CONFIG_DIR")
    p.add_argument("--rep-ms", type=int, default=60, help="timing window per candidate (ms)")
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
    p.add_argument("--iters", type=int, default=0, help="timed calls per token count (default: auto, ~0.5 s)")
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


# list ------------------------------------------------------------------------------------
def backend_rows(platform: Platform | None = None) -> list[dict[str, Any]]:
    """One row per registered backend: package, version, vendors, schemes, usable here or why not."""
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
        usable, reason = _usable_here(spec, platform)
        rows.append({"name": spec.name, "distribution": spec.distribution, "version": version,
                     "vendors": sorted(spec.vendors), "schemes": sorted(spec.schemes),
                     "format": spec.activation_format, "usable": usable, "reason": reason})
    return rows


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


def cmd_list(args: argparse.Namespace) -> int:
    from moe_oracle.registry import registry

    rows = backend_rows(_platform(args.platform))
    failures = registry().failures
    if args.json:
        print(json.dumps({"backends": rows, "plugin_failures": [
            {"distribution": f.distribution, "entry_point": f.entry_point, "error": f.error} for f in failures]},
            indent=2))
        return 0
    table = [("backend", "package", "vendors", "format", "here", "schemes")]
    for r in rows:
        here = "usable" if r["usable"] else f"not usable here: {r['reason']}"
        table.append((r["name"], f"{r['distribution']} {r['version']}", ",".join(r["vendors"]), r["format"], here,
                      ",".join(r["schemes"]) if len(r["schemes"]) < 8 else f"{len(r['schemes'])} schemes"))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        print("  ".join(row[i].ljust(widths[i]) for i in range(5)) + "  " + row[5])
    for f in failures:
        print(f"plugin failed to load: {f}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from moe_oracle.oracle.schemes import oracle_for

    config = build_config(args)
    report = oracle_for(config).explain(config, _platform(args.platform), backend=args.backend,
                                        exclude=args.exclude, prefer=args.prefer)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0 if report.chosen else 1


# run / bench -----------------------------------------------------------------------------
def _device(args: argparse.Namespace) -> torch.device:
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


def time_call(fn: Any, device: torch.device, iters: int = 0) -> float:
    """Seconds per call: warm up, then time ``iters`` calls (auto: about half a second's worth)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    if iters <= 0:
        start = time.perf_counter()
        fn()
        sync()
        once = max(time.perf_counter() - start, 1e-6)
        iters = max(1, min(200, int(0.5 / once)))
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - start) / iters


def cmd_run(args: argparse.Namespace) -> int:
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
    from moe_oracle.layer import MoELayer
    from moe_oracle.oracle.schemes import oracle_for
    from moe_oracle.testing import random_inputs, random_weights

    from moe_oracle.registry import registry

    _check_output_path("--json", args.json_out)
    _check_output_path("--plot", args.plot)
    if args.plot:
        _matplotlib()
    _check_run_args(args)
    tokens = _tokens(args.tokens)
    config = build_config(args)
    device = _device(args)
    report = oracle_for(config).explain(config)
    names = [n.strip().lower() for n in args.backends.split(",") if n.strip()] if args.backends else \
        [c.name for c in report.candidates if c.status in ("selected", "usable")]
    if args.backends and not names:
        raise ConfigError("--backends", f"names no backend: {args.backends!r}", allowed=registry().names())
    for name in names:
        registry().get(name)  # an unknown name fails now (UnknownBackendError lists the known ones)
    weights = random_weights(config, seed=args.seed, device=device)
    results: dict[str, dict[int, float]] = {}
    for name in names:
        layer = MoELayer(config, backend=name)
        layer.load_weights(**dict(weights.items()))
        results[name] = {}
        for t in tokens:
            hidden, logits = random_inputs(config, t, seed=args.seed + t, device=device)
            with torch.inference_mode():
                results[name][t] = time_call(functools.partial(layer, hidden, logits), device, args.iters)
            print(f"{name:>16} tokens={t:<6} {results[name][t] * 1e3:9.3f} ms", file=sys.stderr, flush=True)
    print(f"{'tokens':>7} " + " ".join(f"{n:>16}" for n in names))
    for t in tokens:
        print(f"{t:>7} " + " ".join(f"{results[n][t] * 1e3:>13.3f} ms" for n in names))
    payload = {"config": report.to_dict()["config"], "platform": report.to_dict()["platform"],
               "device": str(device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
               "dtype": dtype_name(config.dtype), "ms": {n: {str(t): v * 1e3 for t, v in r.items()}
                                                         for n, r in results.items()}}
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
    if args.plot:
        _plot(results, args.plot, title=f"{args.model or args.hf_config} {config.scheme.name} on {device}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_oracle import registry

    _check_output_path("--out", args.out, folder=True)
    _check_run_args(args)
    tokens = _tokens(args.tokens)
    if 0 in tokens:
        raise ConfigError("--tokens", "for tune must be positive")
    config = build_config(args)
    if not torch.cuda.is_available():
        print("error: moe-oracle tune times the Triton experts with CUDA graphs and needs a CUDA or ROCm GPU; "
              "torch sees none here", file=sys.stderr)
        return 2
    from moe_oracle.triton.tune import tune, write_configs

    support = registry().get("triton").supports(config, Platform.detect())
    if not support.ok:
        print(f"error: the Triton experts do not run this layer here: {support.reason}", file=sys.stderr)
        return 2
    device_name = torch.cuda.get_device_name()
    print(f"tuning {config.scheme.name} E={config.num_local_experts} N={config.intermediate_size_per_partition} "
          f"H={config.hidden_size} top_k={config.top_k} on {device_name} at M={','.join(map(str, tokens))}",
          file=sys.stderr, flush=True)
    points = tune(config, tokens, rep_ms=args.rep_ms, progress=lambda line: print(line, file=sys.stderr, flush=True))
    path = write_configs(config, points, Path(args.out), device_name)
    print(f"{'tokens':>7} {'tuned ms':>10} {'default ms':>11}")
    for p in points:
        print(f"{p.tokens:>7} {p.ms:>10.4f} {p.default_ms:>11.4f}")
    print(f"wrote {path}")
    return 0


def _matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot", "needs matplotlib (pip install matplotlib)") from None
    return plt


def _plot(results: dict[str, dict[int, float]], path: str, title: str) -> None:
    plt = _matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, series in results.items():
        xs = sorted(series)
        ax.plot([max(x, 1) for x in xs], [series[x] * 1e3 for x in xs], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens")
    ax.set_ylabel("ms per layer call")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
