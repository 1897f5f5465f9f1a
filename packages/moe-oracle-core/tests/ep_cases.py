"""Expert-parallel cases, run inside spawned gloo process groups by ``test_distributed.py``.

Each spawned group runs every case of its world size in one process group (spawning costs seconds;
a case costs milliseconds) and writes ``{case: "ok" | traceback}`` per rank. Every case is
collective: all ranks run it, in the same order, so a case that fails on one rank fails (or times
out, within the group's timeout) on the others and the group goes on with the next case.

The single-process reference: every rank builds the same global weights ``[E, ...]`` and the same
per-rank tokens from fixed seeds, and compares its output with ``reference_moe`` on the full
weights for its own tokens.
"""

from __future__ import annotations

import datetime
import json
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from moe_oracle import CanonicalWeights, ConfigError, InputError, MoEConfig, ParallelConfig, Platform
from moe_oracle.testing import random_weights, reference_moe

E, K, H, INTER = 8, 3, 32, 16
UNUSED_EXPERT = 5  # no token picks it: an expert with no tokens on every placement
CPU = Platform.simulate("cpu")
TIMEOUT_S = 10.0        # the world group's: a bug fails a collective, never hangs the suite
SHORT_TIMEOUT_S = 1.0   # the group of the timeout case
DISPATCHERS = ("torch", "torch_batched", "allgather_reducescatter")
EXPERTS = {"torch": "reference", "torch_batched": "batched_reference", "allgather_reducescatter": "reference"}
FP32_EXACT = dict(rtol=1e-5, atol=1e-5)  # fp32, exact up to summation order


# Data ------------------------------------------------------------------------------------------
def token_counts(world: int) -> list[int]:
    """Uneven, with a rank that has no tokens."""
    return [5, 0, 3, 9][:world] if world <= 4 else [3] * world


def tokens(config: MoEConfig, num_tokens: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """hidden ``[T, H]``, topk_weights ``[T, K]`` float32, topk_ids ``[T, K]`` int32 (distinct per
    token, never ``UNUSED_EXPERT``), from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(num_tokens, config.hidden_size, generator=g).to(config.dtype)
    scores = torch.rand(num_tokens, config.num_experts, generator=g)
    scores[:, UNUSED_EXPERT] = -1.0
    ids = scores.argsort(dim=1, descending=True)[:, :config.top_k].to(torch.int32)
    weights = torch.softmax(torch.randn(num_tokens, config.top_k, generator=g), dim=1)
    return hidden, weights, ids


def single(config: MoEConfig) -> MoEConfig:
    """The same layer in one process: no parallelism."""
    return config.replace(parallel=ParallelConfig())


def shard(config: MoEConfig, full: CanonicalWeights) -> dict[str, torch.Tensor]:
    """This rank's canonical tensors: its experts in local order, and its I/tp slice."""
    from moe_oracle.distributed import local_experts

    ids = torch.tensor(local_experts(config))
    p, i_full = config.parallel, config.intermediate_size
    i_p = config.intermediate_size_per_partition
    lo = p.tp_rank * i_p
    out = {}
    for name, t in full.items():
        if name in ("a13_scale", "a2_scale", "score_correction_bias"):
            out[name] = t
            continue
        t = t[ids]
        if p.tp_size > 1:
            assert not config.scheme.is_quantized and not config.has_bias, "tp slicing of plain weights only"
            if name == "w13":
                t = torch.cat([t[:, lo:lo + i_p], t[:, i_full + lo:i_full + lo + i_p]], dim=1)
            elif name == "w2":
                t = t[:, :, lo:lo + i_p]
        out[name] = t.contiguous()
    return out


def parallel(world: int, rank: int, all2all: str, *, tp: int = 1, dp: int = 1, placement: str = "contiguous") -> ParallelConfig:
    """The ranks of world ``rank`` under moe_oracle.distributed.groups' layout."""
    ep = world // (tp * dp)
    return ParallelConfig(tp_size=tp, dp_size=dp, ep_size=ep, tp_rank=rank % tp, ep_rank=(rank // tp) % ep,
                          dp_rank=rank // (tp * ep), all2all=all2all, placement=placement)


def config_for(p: ParallelConfig, **kw: Any) -> MoEConfig:
    base = dict(num_experts=E, top_k=K, hidden_size=H, intermediate_size=INTER, dtype="fp32")
    return MoEConfig(**{**base, **kw}, parallel=p)


def layer_output(config: MoEConfig, backend: str | None, *, seed: int, num_tokens: int,
                 tp_group: Any = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """This rank's MoELayer output and the single-process reference for its tokens."""
    from moe_oracle.layer import MoELayer

    full = random_weights(single(config), seed=seed)
    hidden, weights, ids = tokens(config, num_tokens, seed=seed * 100 + _token_owner(config))
    layer = MoELayer(config, backend=backend, platform=CPU)
    layer.load_weights(**shard(config, full))
    out = layer.forward_routed(hidden, weights, ids)
    if tp_group is not None:
        dist.all_reduce(out, group=tp_group)   # partial sums over I, reduced as the model would
    expected = reference_moe(single(config), full, hidden, weights, ids)
    return out, expected, layer


def _token_owner(config: MoEConfig) -> int:
    """Tokens are shared by a tensor-parallel group: keyed by (dp, ep) rank, not tp rank."""
    p = config.parallel
    return p.dp_rank * p.ep_size + p.ep_rank


# Cases -----------------------------------------------------------------------------------------
def case_dispatcher(all2all: str, placement: str, **kw: Any) -> Callable[[int, int], None]:
    def run(rank: int, world: int) -> None:
        config = config_for(parallel(world, rank, all2all, placement=placement), **kw)
        n = token_counts(world)[config.parallel.ep_rank]
        out, expected, layer = layer_output(config, EXPERTS[all2all], seed=1, num_tokens=n)
        assert out.shape == (n, H), out.shape
        torch.testing.assert_close(out, expected, **FP32_EXACT)
        assert layer.prepare_finalize.name == all2all
    return run


def case_no_tokens_anywhere(all2all: str) -> Callable[[int, int], None]:
    def run(rank: int, world: int) -> None:
        config = config_for(parallel(world, rank, all2all))
        out, expected, _ = layer_output(config, EXPERTS[all2all], seed=2, num_tokens=0)
        assert out.shape == expected.shape == (0, H)
    return run


def case_fp8_block(all2all: str) -> Callable[[int, int], None]:
    """Activations travel as fp8 + per-128 scales, quantized once on the sender."""
    def run(rank: int, world: int) -> None:
        config = config_for(parallel(world, rank, all2all), hidden_size=128, quant="fp8_block")
        n = token_counts(world)[rank]
        out, expected, layer = layer_output(config, EXPERTS[all2all], seed=3, num_tokens=n)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
        rows = layer.prepare_finalize._row_layout()
        assert rows[0][1] == torch.float8_e4m3fn and rows[1] == ((1,), torch.float32), rows
    return run


def case_bias_and_routing(all2all: str) -> Callable[[int, int], None]:
    """Biases, and the full path: router logits in, routing inside the layer."""
    def run(rank: int, world: int) -> None:
        from moe_oracle.layer import MoELayer
        from moe_oracle.router import route

        config = config_for(parallel(world, rank, all2all, placement="round_robin"), has_bias=True)
        full = random_weights(single(config), seed=4)
        g = torch.Generator().manual_seed(40 + rank)
        n = token_counts(world)[rank]
        hidden, logits = torch.randn(n, H, generator=g), torch.randn(n, E, generator=g)
        layer = MoELayer(config, backend=EXPERTS[all2all], platform=CPU)
        layer.load_weights(**shard(config, full))
        out = layer(hidden, logits)
        weights, ids = route(logits, config)
        torch.testing.assert_close(out, reference_moe(single(config), full, hidden, weights, ids), **FP32_EXACT)
    return run


def case_weight_on_input(all2all: str) -> Callable[[int, int], None]:
    def run(rank: int, world: int) -> None:
        config = config_for(parallel(world, rank, all2all), top_k=1, apply_router_weight_on_input=True)
        out, expected, _ = layer_output(config, EXPERTS[all2all], seed=5, num_tokens=token_counts(world)[rank])
        torch.testing.assert_close(out, expected, **FP32_EXACT)
    return run


def case_bf16(all2all: str) -> Callable[[int, int], None]:
    def run(rank: int, world: int) -> None:
        from moe_oracle.testing import assert_close

        config = config_for(parallel(world, rank, all2all), dtype="bf16")
        out, expected, _ = layer_output(config, EXPERTS[all2all], seed=6, num_tokens=token_counts(world)[rank])
        assert_close(out, expected, config=config, name=all2all)
    return run


def case_ep_with_tp(all2all: str) -> Callable[[int, int], None]:
    """world 4 = tp 2 x ep 2: each ep group dispatches; each tp group reduces its partial sums."""
    def run(rank: int, world: int) -> None:
        from moe_oracle.distributed import tensor_parallel_group

        config = config_for(parallel(world, rank, all2all, tp=2))
        n = token_counts(world)[_token_owner(config)]
        out, expected, layer = layer_output(config, EXPERTS[all2all], seed=7, num_tokens=n,
                                            tp_group=tensor_parallel_group(config.parallel))
        torch.testing.assert_close(out, expected, **FP32_EXACT)
        assert layer.prepare_finalize.ep_size == 2
    return run


def case_ep_with_dp(rank: int, world: int) -> None:
    """world 4 = dp 2 x ep 2: two independent expert-parallel groups."""
    config = config_for(parallel(world, rank, "torch", dp=2))
    out, expected, _ = layer_output(config, "reference", seed=8, num_tokens=token_counts(world)[rank])
    torch.testing.assert_close(out, expected, **FP32_EXACT)


def case_bytes_torch(rank: int, world: int) -> None:
    """"torch" sends each token once per rank holding one of its experts, never padded: per token at
    most min(K, P) rows of H * 4 bytes of activations + 8 * K bytes of ids and weights."""
    from moe_oracle.distributed import make_prepare_finalize
    from moe_oracle.distributed.torch_a2a import route_rows

    config = config_for(parallel(world, rank, "torch"))
    n = token_counts(world)[rank]
    hidden, weights, ids = tokens(config, n, seed=9 + rank)
    pf = make_prepare_finalize(config)
    prepared = pf.prepare(hidden, weights, ids)
    pf.finalize(torch.zeros_like(prepared.hidden), prepared)
    _, per_rank = route_rows(pf.owners_on(hidden.device), ids, world)
    to_peers = int(per_rank.sum() - per_rank[rank])
    row = H * 4 + 8 * K
    assert pf.traffic["dispatch"] == to_peers * row, (pf.traffic, to_peers)
    from_peers = prepared.hidden.shape[0] - int(per_rank[rank])
    assert pf.traffic["combine"] == from_peers * H * 4, (pf.traffic, from_peers)
    assert pf.traffic["dispatch"] <= n * min(K, world) * row <= n * K * row


def case_selection_agrees(rank: int, world: int) -> None:
    """backend=None: rank 0 selects on its platform; every rank ends up with rank 0's backend."""
    from moe_oracle.layer import MoELayer

    platform = CPU if rank == 0 else Platform.simulate("cpu", features=("avx512", "amx"))
    layer = MoELayer(config_for(parallel(world, rank, "torch")), platform=platform)
    names: list[Any] = [None] * world
    dist.all_gather_object(names, layer.selection.backend)
    assert len(set(names)) == 1, names


def case_selection_follower_cannot_run(rank: int, world: int) -> None:
    """A rank that cannot run rank 0's choice fails at construction, and so does every other rank."""
    from moe_oracle.distributed import RemoteRankError
    from moe_oracle.errors import UnsupportedBackendError
    from moe_oracle.layer import MoELayer

    platform = CPU if rank != 1 else Platform.simulate("cuda", capability=(9, 0))
    try:
        MoELayer(config_for(parallel(world, rank, "torch")), backend="cpu_grouped", platform=platform)
    except UnsupportedBackendError:
        assert rank == 1
    except RemoteRankError as exc:
        assert rank != 1 and exc.ranks == (1,), exc
    else:
        raise AssertionError("construction should have failed")


def case_selection_leader_fails(rank: int, world: int) -> None:
    from moe_oracle.distributed import RemoteRankError
    from moe_oracle.errors import UnsupportedBackendError
    from moe_oracle.layer import MoELayer

    try:
        MoELayer(config_for(parallel(world, rank, "torch")), backend="triton" if rank == 0 else None, platform=CPU)
    except UnsupportedBackendError:
        assert rank == 0
    except RemoteRankError as exc:
        assert rank != 0 and exc.ranks == (0,) and "triton" in str(exc), exc
    else:
        raise AssertionError("construction should have failed")


def case_bad_input_flagged(all2all: str) -> Callable[[int, int], None]:
    """A rank whose expert ids are out of range raises InputError; the others a RemoteRankError
    naming it, at once (the verdict rides with the token counts)."""
    def run(rank: int, world: int) -> None:
        from moe_oracle.distributed import RemoteRankError, make_prepare_finalize

        config = config_for(parallel(world, rank, all2all))
        hidden, weights, ids = tokens(config, 4, seed=10)
        if rank == world - 1:
            ids[0, 0] = E + 3
        pf = make_prepare_finalize(config)
        start = time.monotonic()
        try:
            pf.prepare(hidden, weights, ids)
        except InputError as exc:
            assert rank == world - 1 and "topk_ids" in str(exc), exc
        except RemoteRankError as exc:
            assert rank != world - 1 and exc.ranks == (world - 1,), exc
        else:
            raise AssertionError("prepare should have failed")
        assert time.monotonic() - start < SHORT_TIMEOUT_S
    return run


def case_rank_raises_before_dispatch(rank: int, world: int) -> None:
    """The last rank raises in its own code before reaching the dispatcher: the others fail with a
    DistributedError within the group's timeout instead of hanging."""
    from moe_oracle.distributed import DistributedError
    from moe_oracle.layer import MoELayer

    group = dist.new_group(list(range(world)), timeout=datetime.timedelta(seconds=SHORT_TIMEOUT_S))
    config = config_for(parallel(world, rank, "torch"))
    layer = MoELayer(config, backend="reference", platform=CPU, process_group=group)
    layer.load_weights(**shard(config, random_weights(single(config), seed=11)))
    hidden, weights, ids = tokens(config, 3, seed=11)
    if rank == world - 1:
        return  # "raised": it never calls the layer
    start = time.monotonic()
    try:
        layer.forward_routed(hidden, weights, ids)
    except DistributedError as exc:
        waited = time.monotonic() - start
        assert "torch: token counts" in str(exc) and "another rank" in str(exc), exc
        assert waited < SHORT_TIMEOUT_S + 5, waited
    else:
        raise AssertionError("the forward should have timed out")


def case_config_errors(rank: int, world: int) -> None:
    """Invalid combinations are ConfigErrors at construction, before any collective."""
    from moe_oracle.distributed import comm, make_prepare_finalize
    from moe_oracle.layer import MoELayer

    def refuses(message: str, make: Callable[[], object]) -> None:
        try:
            make()
        except ConfigError as exc:
            assert message in str(exc), (message, str(exc))
        else:
            raise AssertionError(f"expected ConfigError {message!r}")

    wrong_world = ParallelConfig(ep_size=world * 2, ep_rank=rank, all2all="torch")
    refuses(f"world size {world} != dp_size*ep_size*tp_size = 1*{world * 2}*1",
            lambda: MoELayer(config_for(wrong_world, num_experts=world * 4), backend="reference", platform=CPU))
    swapped = ParallelConfig(ep_size=world, ep_rank=(rank + 1) % world, all2all="torch")
    refuses(f"this process is world rank {rank}", lambda: make_prepare_finalize(config_for(swapped)))
    refuses("parallel.ep_rank",
            lambda: make_prepare_finalize(config_for(swapped), dist.group.WORLD))
    refuses("not a dispatcher moe-oracle ships",
            lambda: make_prepare_finalize(config_for(parallel(world, rank, "deepep_low_latency"))))
    saved = comm.BACKEND_COLLECTIVES["gloo"]
    comm.BACKEND_COLLECTIVES["gloo"] = frozenset({"all_to_all", "all_gather", "broadcast"})
    try:
        refuses("'allgather_reducescatter' needs reduce_scatter, which the gloo process group lacks",
                lambda: make_prepare_finalize(config_for(parallel(world, rank, "allgather_reducescatter"))))
    finally:
        comm.BACKEND_COLLECTIVES["gloo"] = saved


def cases(world: int) -> dict[str, Callable[[int, int], None]]:
    out: dict[str, Callable[[int, int], None]] = {}
    for a in DISPATCHERS:
        for placement in ("contiguous", "round_robin"):
            out[f"{a}-{placement}"] = case_dispatcher(a, placement)
        out[f"{a}-no-tokens-anywhere"] = case_no_tokens_anywhere(a)
        out[f"{a}-fp8_block"] = case_fp8_block(a)
        out[f"{a}-bias-routing"] = case_bias_and_routing(a)
        out[f"{a}-weight-on-input"] = case_weight_on_input(a)
        out[f"{a}-bf16"] = case_bf16(a)
        out[f"{a}-bad-input"] = case_bad_input_flagged(a)
        if world == 4:
            out[f"{a}-ep2-tp2"] = case_ep_with_tp(a)
    if world == 4:
        out["torch-ep2-dp2"] = case_ep_with_dp
    out["torch-bytes"] = case_bytes_torch
    out["selection-agrees"] = case_selection_agrees
    out["selection-follower-cannot-run"] = case_selection_follower_cannot_run
    out["selection-leader-fails"] = case_selection_leader_fails
    out["config-errors"] = case_config_errors
    out["rank-raises-before-dispatch"] = case_rank_raises_before_dispatch  # last: leaves a broken group
    return out


# The spawned process ---------------------------------------------------------------------------
def run_group(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Entry point of one spawned rank: run every case, write ``rank<r>.json``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    from moe_oracle import registry
    from moe_oracle.backends.reference.spec import BATCHED_REFERENCE_SPEC

    registry().register(BATCHED_REFERENCE_SPEC, source="tests")
    results: dict[str, Any] = {}
    broken = ""
    for name, case in cases(world).items():
        if broken:
            results[name] = {"ok": False, "error": f"not run: the process group broke in {broken}"}
            continue
        start = time.monotonic()
        try:
            case(rank, world)
            results[name] = {"ok": True, "s": round(time.monotonic() - start, 3)}
        except Exception:
            results[name] = {"ok": False, "error": traceback.format_exc()}
        try:
            dist.barrier()  # realign the ranks after every case (after a failure above all)
        except RuntimeError:
            broken = name
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f, indent=1)
    dist.destroy_process_group()
