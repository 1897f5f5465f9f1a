"""The Triton helper kernels on CPU through the interpreter: alignment (one-program and chunked
paths, expert maps), activation quantization against ``moe_oracle.quant``, and the top-k sum."""

from __future__ import annotations

import pytest
import torch
import triton_interpreter  # noqa: F401  (skips this module where the interpreter cannot run)

from moe_oracle.quant import fp8, int8
from moe_oracle.triton.align import max_blocks_for, moe_align
from moe_oracle.triton.gemm import moe_sum
from moe_oracle.triton.quant import quantize_per_token_group, quantize_rows

pytestmark = pytest.mark.usefixtures("triton_interpret")


def _random_ids(t: int, k: int, e: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)]).to(torch.int32)


@pytest.mark.parametrize(("t", "k", "e", "block_m", "ep"), [
    (1, 2, 8, 16, False), (7, 2, 8, 16, False), (33, 4, 16, 16, True), (64, 8, 64, 32, False),
    (300, 8, 16, 64, True), (200, 8, 256, 16, False),  # the last two exceed one chunk: three launches
])
def test_alignment_groups_every_local_pair_once(t: int, k: int, e: int, block_m: int, ep: bool) -> None:
    ids = _random_ids(t, k, e, seed=t)
    expert_map = None
    local = ids.reshape(-1).long()
    num_local = e
    if ep:
        num_local = e // 2
        expert_map = torch.full((e,), -1, dtype=torch.int32)
        expert_map[e // 2:] = torch.arange(num_local, dtype=torch.int32)
        local = expert_map.long()[local]
    r = moe_align(ids, num_local, block_m, expert_map=expert_map)
    padded = int(r.num_padded)
    assert padded % block_m == 0 and r.max_blocks == max_blocks_for(t * k, num_local, block_m)
    placed = []
    for b in range(padded // block_m):
        block = r.sorted_ids[b * block_m:(b + 1) * block_m].long()
        real = block[block < t * k]
        assert (block[block >= t * k] == t * k).all(), "padding must hold the sentinel P"
        assert (local[real] == int(r.block_expert[b])).all(), f"block {b} mixes experts"
        placed += real.tolist()
    assert sorted(placed) == torch.nonzero(local >= 0).squeeze(1).tolist()
    counts = torch.bincount(local[local >= 0], minlength=num_local)
    assert padded == int(((counts + block_m - 1) // block_m * block_m).sum())


def test_alignment_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"topk_ids: expected shape \[T, K\], got \[6\]"):
        moe_align(torch.zeros(6, dtype=torch.int32), 4, 16)
    with pytest.raises(ValueError, match=r"block_m: expected a power of two, got 24"):
        moe_align(torch.zeros(2, 2, dtype=torch.int32), 4, 24)


def test_fp8_quantization_matches_the_reference_formats() -> None:
    x = torch.randn(7, 300, generator=torch.Generator().manual_seed(0)).half()
    q, s = quantize_per_token_group(x, 128)
    rq, rs = fp8.quantize_fp8_per_token_group(x, 128)
    assert torch.equal(s, rs) and torch.equal(q.float(), rq.float())
    q, s = quantize_rows(x, per_token=True)
    rq, rs = fp8.quantize_fp8_per_token(x)
    assert torch.equal(s, rs) and torch.equal(q.float(), rq.float())
    q, s = quantize_rows(x, per_token=False)
    rq, rs = fp8.quantize_fp8_per_tensor_dynamic(x)
    assert torch.equal(s, rs.reshape(1)) and torch.equal(q.float(), rq.float())
    static = torch.tensor([0.02])
    q, _ = quantize_rows(x, per_token=False, static_scale=static)
    assert torch.equal(q.float(), fp8.quantize_fp8_static(x, static).float())


def test_int8_quantization_rounds_half_to_even() -> None:
    x = torch.tensor([[1.5, 2.5, -0.5, 127.0], [0.0, 0.0, 0.0, 0.0]])
    q, s = quantize_rows(x, per_token=True, dtype=torch.int8)
    rq, rs = int8.quantize_int8_per_token(x)
    assert torch.equal(q, rq) and torch.equal(s, rs)


def test_quantization_rejects_other_dtypes() -> None:
    with pytest.raises(ValueError, match=r"dtype: expected float8_e4m3fn or int8, got torch.float16"):
        quantize_rows(torch.zeros(2, 4), per_token=True, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"static_scale: a static scale is per tensor; got per_token=True"):
        quantize_rows(torch.zeros(2, 4), per_token=True, static_scale=torch.ones(1))


def test_topk_sum_adds_splits_and_skips_other_ranks() -> None:
    t, k, h = 3, 2, 40
    c = torch.randn(2, t * k, h)  # two split-K partials
    ids = torch.tensor([[0, 3], [1, 2], [3, 0]], dtype=torch.int32)
    expert_map = torch.tensor([0, -1, 1, -1], dtype=torch.int32)
    c[:, [1, 2, 4]] = float("nan")  # rows of other ranks' experts are never written
    out = torch.empty(t, h)
    moe_sum(c, out, ids, expert_map)
    keep = (expert_map.long()[ids.long()] >= 0).reshape(-1)
    expected = torch.where(keep[None, :, None], c, 0.0).sum(0).reshape(t, k, h).sum(1)
    torch.testing.assert_close(out, expected)
