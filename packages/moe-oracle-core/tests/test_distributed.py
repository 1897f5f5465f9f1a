"""Expert parallelism on CPU over gloo: 2 and 4 spawned processes, every dispatcher, against the
single-process reference (the cases are in ``ep_cases.py``; each world size spawns once)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import ep_cases
import pytest
import torch.multiprocessing as mp

from moe_oracle import ConfigError, MoEConfig, ParallelConfig

JOIN_TIMEOUT_S = 150  # a whole group, spawn included; a stuck group is killed, never waited on


def _spawn(world: int, tmp: Path) -> dict[int, dict[str, dict[str, object]]]:
    ctx = mp.start_processes(ep_cases.run_group, args=(world, str(tmp / "init"), str(tmp)), nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the {world}-process group did not finish within {JOIN_TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return {r: json.loads((tmp / f"rank{r}.json").read_text()) for r in range(world)}


@pytest.mark.parametrize("world", [2, 4])
def test_expert_parallel_group(world: int, tmp_path: Path) -> None:
    results = _spawn(world, tmp_path)
    expected = set(ep_cases.cases(world))
    failures = []
    for rank, cases in results.items():
        assert set(cases) == expected, f"rank {rank} ran {sorted(cases)}"
        failures += [f"--- {name} on rank {rank}:\n{r['error']}" for name, r in cases.items() if not r["ok"]]
    assert not failures, "\n".join(failures)


def test_cases_cover_the_matrix() -> None:
    names = set(ep_cases.cases(4))
    for a in ("torch", "torch_batched", "allgather_reducescatter"):
        assert {f"{a}-contiguous", f"{a}-round_robin", f"{a}-ep2-tp2", f"{a}-fp8_block", f"{a}-bad-input"} <= names
    assert 0 in ep_cases.token_counts(2) and len(set(ep_cases.token_counts(4))) == 4


# Single-process: placement and configuration (no process group needed) ----------------------------
def _config(**parallel: object) -> MoEConfig:
    return MoEConfig(num_experts=8, top_k=2, hidden_size=32, intermediate_size=16, dtype="fp32",
                     parallel=ParallelConfig(**parallel))  # type: ignore[arg-type]


def test_placements() -> None:
    from moe_oracle.distributed import expert_map, local_experts
    from moe_oracle.distributed.placement import expert_owners, owner

    contiguous = _config(ep_size=4, ep_rank=1)
    rr = _config(ep_size=4, ep_rank=1, placement="round_robin")
    assert local_experts(contiguous) == [2, 3] and local_experts(rr) == [1, 5]
    assert expert_map(rr).tolist() == [-1, 0, -1, -1, -1, 1, -1, -1]
    assert expert_owners(contiguous).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert expert_owners(rr).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    for config in (contiguous, rr):
        for g in range(8):
            assert g in local_experts(config, owner(config, g))
    assert expert_map(_config()) is None


def test_placement_is_validated() -> None:
    with pytest.raises(ConfigError, match=re.escape("parallel.placement: invalid value 'striped'")):
        ParallelConfig(ep_size=2, placement="striped")


def test_layer_without_a_process_group_fails_at_construction() -> None:
    from moe_oracle.layer import MoELayer

    with pytest.raises(ConfigError, match=re.escape("initialize torch.distributed")):
        MoELayer(_config(ep_size=2, all2all="torch"), backend="reference")


def test_dispatchers_are_data() -> None:
    from moe_oracle.config.parallel import BATCHED_ALL2ALL
    from moe_oracle.distributed import DISPATCHERS

    for spec in DISPATCHERS.values():
        assert spec.load().name == spec.name and spec.load().activation_format == spec.activation_format
        assert (spec.activation_format == "batched") == (spec.name in BATCHED_ALL2ALL)


def test_wire_rows_round_trip() -> None:
    import torch

    from moe_oracle.distributed.comm import pack_rows, unpack_rows

    a = torch.randn(3, 4)
    b = torch.randint(0, 9, (3, 2), dtype=torch.int32)
    c = torch.randn(3, 5).to(torch.float8_e4m3fn)
    packed = pack_rows(a, b, c)
    assert packed.shape == (3, 16 + 8 + 5) and packed.dtype == torch.uint8
    a2, b2, c2 = unpack_rows(packed, ((4,), torch.float32), ((2,), torch.int32), ((5,), torch.float8_e4m3fn))
    assert torch.equal(a, a2) and torch.equal(b, b2) and torch.equal(c.view(torch.uint8), c2.view(torch.uint8))
    empty = unpack_rows(pack_rows(a[:0], b[:0]), ((4,), torch.float32), ((2,), torch.int32))
    assert [t.shape for t in empty] == [(0, 4), (0, 2)]


def test_fp8_wire_format_gives_back_the_same_codes() -> None:
    """Quantized once on the sender, dequantized on the receiver: the experts' own quantization of
    the received rows reproduces the sender's codes."""
    import torch

    from moe_oracle.distributed import payload
    from moe_oracle.quant import quantize_activation

    config = MoEConfig(num_experts=8, top_k=2, hidden_size=256, intermediate_size=64, dtype="bf16", quant="fp8_block")
    x = torch.randn(7, 256).to(torch.bfloat16)
    parts = payload.encode(config, x)
    assert [p.dtype for p in parts] == [torch.float8_e4m3fn, torch.float32] and parts[1].shape == (7, 2)
    received = payload.decode(config, parts)
    assert received.dtype == torch.bfloat16
    again, _ = quantize_activation(config.scheme, received)
    assert torch.equal(again.view(torch.uint8), parts[0].view(torch.uint8))
    assert payload.wire_quantization(config.replace(quant="fp8_tensor")) is None


def test_batched_reference_matches_the_reference() -> None:
    import torch

    from moe_oracle.backends.reference.experts import BatchedReferenceExperts
    from moe_oracle.kernel.weights import canonical_kernel_weights
    from moe_oracle.oracle.schemes import oracle_for
    from moe_oracle.testing import random_weights, reference_moe
    from moe_oracle.triton.batched import BatchedPrepareFinalize

    config = _config().replace(has_bias=True)
    weights = random_weights(config, seed=0)
    hidden, w, ids = ep_cases.tokens(config, 6, seed=1)
    kw = canonical_kernel_weights(weights, config, backend="batched_reference")
    experts = BatchedReferenceExperts(config, oracle_for(config).make_quant_config(config, kw), kw)
    pf = BatchedPrepareFinalize(8)
    prepared = pf.prepare(hidden, w, ids)
    out = pf.finalize(experts.apply(prepared.hidden, w, ids, expert_num_tokens=prepared.expert_num_tokens), prepared)
    torch.testing.assert_close(out, reference_moe(config, weights, hidden, w, ids), rtol=1e-5, atol=1e-5)


def test_real_deployments_from_hf() -> None:
    """A checkpoint's config plus a ParallelConfig describes a deployment; sizes that do not divide
    are ConfigErrors at construction."""
    import hf_configs as hf

    from moe_oracle.distributed import local_experts

    dsv3 = MoEConfig.from_hf(hf.DEEPSEEK_V3, parallel=ParallelConfig(
        dp_size=2, ep_size=32, tp_size=1, ep_rank=5, dp_rank=1, all2all="torch", placement="round_robin"))
    assert dsv3.num_local_experts == 8 and local_experts(dsv3) == [5 + 32 * j for j in range(8)]
    qwen = MoEConfig.from_hf(hf.QWEN3_30B_A3B, parallel=ParallelConfig(tp_size=2, ep_size=4, all2all="torch_batched"))
    assert (qwen.num_local_experts, qwen.intermediate_size_per_partition) == (32, qwen.intermediate_size // 2)
    assert qwen.parallel.activation_format == "batched"
    with pytest.raises(ConfigError, match=re.escape("num_experts: 8 is not divisible by ep_size=3")):
        MoEConfig.from_hf(hf.MIXTRAL_8X7B, parallel=ParallelConfig(ep_size=3, all2all="torch"))


def test_the_format_follows_the_dispatcher_with_reasons() -> None:
    """Under torch_batched only batched experts qualify; each standard one says why not."""
    import moe_oracle
    from moe_oracle import Platform

    config = _config(ep_size=2, all2all="torch_batched")
    report = moe_oracle.explain(config, Platform.simulate("cuda", capability=(9, 0), libraries={"triton": "3.6.0"}))
    assert report.chosen == "batched_triton"
    assert report.candidate("reference").reason == ("takes the standard activation format, "
                                                    "all2all='torch_batched' gives batched")
    standard = moe_oracle.explain(config.replace(parallel=ParallelConfig(ep_size=2, all2all="torch")),
                                  Platform.simulate("cpu"))
    assert standard.candidate("batched_triton").status == "rejected"
