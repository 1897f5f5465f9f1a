"""Priority merging: ranks, before/after edges, globs, conditional hints, cycles."""

import re

import pytest

from moe_oracle import MoEConfig, Platform, PriorityCycleError, PriorityHint, Registry, RegistryError
from moe_oracle.priority import merge_order
from moe_oracle.spec import BackendSpec
from moe_oracle.support import capability_major, dp_size_above

EXPERTS = "moe_oracle.backends.reference.experts:ReferenceExperts"
CONFIG = MoEConfig.preset("tiny")
HOPPER = Platform.simulate("cuda", capability=(9, 0))
BLACKWELL = Platform.simulate("cuda", capability=(10, 0))


def spec(name: str, rank: int = 100, hints: tuple[PriorityHint, ...] = ()) -> BackendSpec:
    return BackendSpec(name=name, experts=EXPERTS, vendors=frozenset({"cuda"}), schemes=frozenset({"bf16"}),
                       rank=rank, hints=hints)


def order(reg: Registry, config: MoEConfig = CONFIG, platform: Platform = HOPPER) -> list[str]:
    return [r.spec.name for r in merge_order(reg.specs(), reg.hints(), config, platform)]


def test_rank_then_registration_order() -> None:
    reg = Registry()
    reg.register_all([spec("b", 20), spec("a", 10), spec("c", 20)], source="pkg")
    assert order(reg) == ["a", "b", "c"]


def test_before_after_and_globs() -> None:
    reg = Registry()
    reg.register_all([spec("fi_one", 10), spec("fi_two", 20), spec("triton", 50)], source="core")
    reg.register(PriorityHint(target="triton", before=("fi_*",), reason="triton wins here"), source="vendor")
    assert order(reg) == ["triton", "fi_one", "fi_two"]


def test_conditional_hints_apply_only_when_true() -> None:
    reg = Registry()
    hopper_rule = PriorityHint(after=("triton",), when=capability_major(9), reason="slower than Triton on Hopper")
    reg.register_all([spec("fit", 10, (hopper_rule,)), spec("fic", 20, (hopper_rule,)), spec("triton", 50)],
                     source="cuda")
    assert order(reg, platform=HOPPER) == ["triton", "fit", "fic"]
    assert order(reg, platform=BLACKWELL) == ["fit", "fic", "triton"]


def test_conditional_rank_replaces_and_largest_wins() -> None:
    reg = Registry()
    last = PriorityHint(rank=900, when=dp_size_above(1), reason="crashes with DP")
    middle = PriorityHint(rank=55, when=dp_size_above(1), reason="another demotion")
    reg.register_all([spec("fic", 20, (last, middle)), spec("triton", 50), spec("batched", 60)], source="cuda")
    from moe_oracle import ParallelConfig

    dp2 = CONFIG.replace(parallel=ParallelConfig(dp_size=2))
    assert order(reg) == ["fic", "triton", "batched"]
    assert order(reg, dp2) == ["triton", "batched", "fic"]
    ranked = merge_order(reg.specs(), reg.hints(), dp2, HOPPER)
    assert ranked[-1].rank == 900 and {h.reason for h in ranked[-1].hints} == {"crashes with DP", "another demotion"}


def test_hints_naming_unknown_backends_are_ignored() -> None:
    reg = Registry()
    reg.register_all([spec("a", 10, (PriorityHint(after=("not_installed",), reason="x"),)), spec("b", 20)], source="p")
    assert order(reg) == ["a", "b"]


def test_cycle_names_packages_and_hints() -> None:
    reg = Registry()
    reg.register_all([spec("a", 10), spec("b", 20)], source="pkg-one")
    reg.register(PriorityHint(target="a", after=("b",), reason="a is slow"), source="pkg-two")
    reg.register(PriorityHint(target="b", after=("a",), reason="b is slower"), source="pkg-three")
    with pytest.raises(PriorityCycleError) as info:
        order(reg)
    err = info.value
    assert err.packages == ["pkg-three", "pkg-two"]
    assert "a before b (from pkg-three: b is slower)" in str(err)
    assert "b before a (from pkg-two: a is slow)" in str(err)


def test_hint_validation() -> None:
    with pytest.raises(RegistryError, match=re.escape("PriorityHint needs a non-empty reason=")):
        PriorityHint(rank=1, reason="")
    with pytest.raises(RegistryError, match="sets none of rank, before, after"):
        PriorityHint(reason="nothing")
    reg = Registry()
    with pytest.raises(RegistryError, match="a standalone PriorityHint needs target="):
        reg.register(PriorityHint(rank=1, reason="whose?"), source="pkg")


def test_effect_text() -> None:
    hint = PriorityHint(after=("triton",), rank=5, when=capability_major(9), reason="r")
    assert hint.effect() == "rank 5; after triton when capability 9.x"
