"""``sort_by_expert``: pairs grouped by local expert, token order kept, remote experts dropped."""

from __future__ import annotations

import torch

from moe_oracle_cpu._routing import sort_by_expert


def test_groups_pairs_by_expert_keeping_token_order() -> None:
    ids = torch.tensor([[2, 0], [0, 3], [2, 1]], dtype=torch.int32)            # [T=3, K=2]
    weights = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1]])
    rows = sort_by_expert(weights, ids, num_local_experts=5)
    assert rows.spans == [(0, 0, 2), (1, 2, 3), (2, 3, 5), (3, 5, 6)]
    assert rows.token.tolist() == [0, 1, 2, 0, 2, 1]
    assert torch.equal(rows.weight, torch.tensor([0.4, 0.7, 0.1, 0.6, 0.9, 0.3]))
    assert rows.token.dtype == torch.int64


def test_expert_map_drops_remote_pairs_and_uses_local_ids() -> None:
    ids = torch.tensor([[5, 1], [2, 4]])                                       # global ids, E=6
    weights = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    expert_map = torch.tensor([-1, -1, -1, 0, 1, 2], dtype=torch.int32)      # experts 3..5 are local 0..2
    rows = sort_by_expert(weights, ids, num_local_experts=3, expert_map=expert_map)
    assert rows.spans == [(1, 0, 1), (2, 1, 2)]
    assert rows.token.tolist() == [1, 0]
    assert torch.equal(rows.weight, torch.tensor([0.75, 0.5]))


def test_no_tokens_and_all_remote_give_no_spans() -> None:
    empty = sort_by_expert(torch.zeros(0, 2), torch.zeros(0, 2, dtype=torch.int64), num_local_experts=4)
    assert empty.spans == [] and empty.token.numel() == 0
    remote = sort_by_expert(torch.ones(2, 1), torch.tensor([[0], [1]]), num_local_experts=1,
                            expert_map=torch.tensor([-1, -1, 0]))
    assert remote.spans == [] and remote.token.numel() == 0
