"""Prefill and decode tokens/s of a small MoE model in transformers, per experts implementation.

    python bench/transformers_moe.py                              # GPU if present, else CPU; writes bench/results/
    python bench/transformers_moe.py --device cpu --layers 2 --prefill 128 --decode 16
    python bench/transformers_moe.py --impls eager grouped_mm moe_oracle --dtype bf16

The model is a Qwen3-MoE with real hidden sizes (Qwen3-30B-A3B: H=2048, I=768, 128 experts, top-8,
32 heads, 4 KV heads) and only ``--layers`` decoder layers, random weights (N(0, 0.02)), one sequence.
Implementations are transformers' own (``eager``, ``batched_mm``, ``grouped_mm``) and ``moe_oracle``
(``moe_oracle.integrations.transformers``), all on the same model object, timed in interleaved rounds:

- prefill: one forward over ``--prefill`` tokens; tokens/s = prefill / median time;
- decode: ``generate`` of ``--decode`` new tokens after a 16-token prompt (greedy, KV cache),
  tokens/s = decode / (median generate time - median time of its 16-token prefill).

The device is synchronized before every clock read. Results (medians, every round, the machine, the
versions, the backend moe-oracle chose) go to ``bench/results/transformers_moe_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch

QWEN3_30B_A3B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                     num_experts=128, num_experts_per_tok=8, num_attention_heads=32, num_key_value_heads=4,
                     head_dim=128, norm_topk_prob=True, decoder_sparse_step=1, max_position_embeddings=4096,
                     tie_word_embeddings=False)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:  # type: ignore[no-untyped-def]
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=None, help="smaller vocabulary (default: Qwen3's)")
    parser.add_argument("--prefill", type=int, default=None, help="prefill tokens (default 2048 GPU, 128 CPU)")
    parser.add_argument("--decode", type=int, default=None, help="new tokens per generate (default 64 GPU, 16 CPU)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--impls", nargs="+", default=["eager", "batched_mm", "grouped_mm", "moe_oracle"])
    parser.add_argument("--backend", default=None, help="force a moe-oracle backend")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    import moe_oracle
    import moe_oracle.integrations.transformers as moe_tf

    device, gpu = args.device, args.device == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    prefill = args.prefill or (2048 if gpu else 128)
    decode = args.decode or (64 if gpu else 16)
    sizes = dict(QWEN3_30B_A3B, num_hidden_layers=args.layers)
    if args.vocab:
        sizes["vocab_size"] = args.vocab
    config = AutoConfig.for_model("qwen3_moe", **sizes)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.eval()
    prompt = torch.randint(0, sizes["vocab_size"], (1, prefill), device=device)
    short = prompt[:, :16]

    def run_prefill() -> None:
        with torch.no_grad():
            model(prompt)

    def run_short() -> None:
        with torch.no_grad():
            model(short)

    def run_decode() -> None:
        with torch.no_grad():
            model.generate(short, attention_mask=torch.ones_like(short), max_new_tokens=decode,
                           min_new_tokens=decode, do_sample=False, pad_token_id=0)

    def use(impl: str) -> None:
        if impl == "moe_oracle":
            moe_tf.enable(model, backend=args.backend)
        else:
            if model.__dict__.get("_moe_oracle_previous") is not None or model.config._experts_implementation == "moe_oracle":
                moe_tf.disable(model)
            model.set_experts_implementation(impl)

    impls = []
    for impl in args.impls:  # warm up (compiles Triton kernels, converts weights) and drop what cannot run
        try:
            use(impl)
            run_short()
            run_decode()
            impls.append(impl)
        except Exception as exc:  # an implementation this machine lacks (e.g. grouped_mm on an old GPU)
            print(f"skipping {impl}: {type(exc).__name__}: {exc}")
    times: dict[str, dict[str, list[float]]] = {i: {"prefill": [], "short": [], "generate": []} for i in impls}
    for r in range(args.rounds):
        for impl in impls:
            use(impl)
            times[impl]["prefill"].append(timed(run_prefill, device))
            times[impl]["short"].append(timed(run_short, device))
            times[impl]["generate"].append(timed(run_decode, device))
        print(f"round {r + 1}/{args.rounds} done")
    use("moe_oracle") if "moe_oracle" in impls else None
    chosen = sorted({m.__dict__["_moe_oracle"].layer.backend for _, m in moe_tf.experts_modules(model)
                     if "_moe_oracle" in m.__dict__})
    results = {}
    for impl, t in times.items():
        pre, short_t, gen = (statistics.median(t[k]) for k in ("prefill", "short", "generate"))
        results[impl] = {"prefill_tokens_per_s": prefill / pre, "decode_tokens_per_s": decode / max(gen - short_t, 1e-9),
                         "prefill_s": pre, "generate_s": gen, "short_prefill_s": short_t, "rounds": t}
    name = torch.cuda.get_device_name() if gpu else platform.processor() or platform.machine()
    record = {
        "what": "transformers Qwen3-MoE (Qwen3-30B-A3B sizes) tokens/s per experts implementation",
        "device": name, "device_type": device, "dtype": args.dtype, "layers": args.layers,
        "prefill_tokens": prefill, "decode_tokens": decode, "rounds": args.rounds,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
        "moe_oracle": moe_oracle.__version__, "moe_oracle_backends": chosen, "results": results,
    }
    print(f"{'impl':<12} {'prefill tok/s':>14} {'decode tok/s':>13}")
    for impl, r in results.items():
        print(f"{impl:<12} {r['prefill_tokens_per_s']:>14.1f} {r['decode_tokens_per_s']:>13.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    path = args.out / f"transformers_moe_{name.replace(' ', '_')}_{args.dtype}_{stamp}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
