"""The generic oracle: overrides, errors, the report, the enum built from the registry."""

import re

import pytest

from moe_oracle import (
    ConfigError,
    MoEConfig,
    NoBackendError,
    Platform,
    PriorityHint,
    Registry,
    UnknownBackendError,
    UnquantizedOracle,
    UnsupportedBackendError,
)
from moe_oracle.oracle.overrides import ENV_BACKEND, ENV_EXCLUDE, ENV_PREFER
from moe_oracle.spec import BackendSpec
from moe_oracle.support import capability_at_least, capability_major

EXPERTS = "moe_oracle.backends.reference.experts:ReferenceExperts"
CONFIG = MoEConfig.preset("tiny")
HOPPER = Platform.simulate("cuda", capability=(9, 0), libraries={"fastlib": "1.0"})
AMPERE = Platform.simulate("cuda", capability=(8, 0), libraries={})


@pytest.fixture
def oracle() -> UnquantizedOracle:
    reg = Registry()
    reg.register_all([
        BackendSpec(name="fast", experts=EXPERTS, vendors=frozenset({"cuda"}), schemes=frozenset({"bf16"}), rank=10,
                    libraries={"fastlib": "fastlib-dist"}, checks=(capability_at_least(9, 0),),
                    hints=(PriorityHint(after=("portable",), when=capability_major(9), reason="slower on Hopper"),)),
        BackendSpec(name="portable", experts=EXPERTS, vendors=frozenset({"cuda", "rocm"}),
                    schemes=frozenset({"bf16", "fp8_block"}), rank=50),
        BackendSpec(name="amd_only", experts=EXPERTS, vendors=frozenset({"rocm"}), schemes=frozenset({"bf16"}), rank=5),
        BackendSpec(name="fp8_only", experts=EXPERTS, vendors=frozenset({"cuda"}), schemes=frozenset({"fp8_block"})),
    ], source="test-pkg")
    return UnquantizedOracle(reg)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (ENV_BACKEND, ENV_EXCLUDE, ENV_PREFER):
        monkeypatch.delenv(var, raising=False)


def test_merged_order_and_hint_sources(oracle: UnquantizedOracle) -> None:
    report = oracle.explain(CONFIG, HOPPER)
    assert report.order == ["portable", "fast"]
    assert report.chosen == "portable"
    fast = report.candidate("fast")
    assert fast.status == "usable" and fast.distribution == "test-pkg"
    assert [str(h) for h in fast.hints] == ["after portable when capability 9.x (test-pkg: slower on Hopper)"]
    assert report.other_vendors == (("amd_only", "rocm"),)


def test_enum_is_built_from_registry(oracle: UnquantizedOracle) -> None:
    members = oracle.backend_enum_cls()
    assert [m.value for m in members] == ["fast", "portable", "amd_only"]  # fp8_only serves no unquantized scheme
    assert oracle.map_backend("FAST") is members.FAST
    with pytest.raises(UnknownBackendError, match=re.escape("unknown backend 'nope' (allowed: amd_only, fast, portable)")):
        oracle.map_backend("nope")
    assert [m.value for m in oracle.get_priority_backends(CONFIG, HOPPER)] == ["portable", "fast"]


def test_rejections_carry_the_first_failed_check(oracle: UnquantizedOracle) -> None:
    report = oracle.explain(CONFIG, AMPERE)
    assert report.candidate("fast").reason == "fastlib not installed (pip install fastlib-dist)"
    with_lib = Platform.simulate("cuda", capability=(8, 0), libraries={"fastlib": "1"})
    assert oracle.explain(CONFIG, with_lib).candidate("fast").reason == "needs capability >= 9.0, have 8.0"


def test_forced_backend(oracle: UnquantizedOracle) -> None:
    assert oracle.select_backend(CONFIG, HOPPER, backend="fast").backend == "fast"
    with pytest.raises(UnsupportedBackendError) as info:
        oracle.select_backend(CONFIG, AMPERE, backend="fast")
    err = info.value
    assert err.backend == "fast" and err.alternatives == ["portable"]
    assert str(err) == ("backend 'fast' cannot serve this config: fastlib not installed (pip install fastlib-dist). "
                        "Backends that can: portable")
    with pytest.raises(UnsupportedBackendError, match="serves rocm, not cuda"):
        oracle.select_backend(CONFIG, HOPPER, backend="amd_only")


def test_forced_backend_of_another_family() -> None:
    config = CONFIG
    with pytest.raises(UnsupportedBackendError, match=re.escape("does not serve the Unquantized schemes (bf16)")):
        reg = Registry()
        reg.register(BackendSpec(name="fp8_only", experts=EXPERTS, vendors=frozenset({"cuda"}),
                                 schemes=frozenset({"fp8_block"})), source="p")
        UnquantizedOracle(reg).select_backend(config, HOPPER, backend="fp8_only")


def test_no_backend_lists_every_reason(oracle: UnquantizedOracle) -> None:
    with pytest.raises(NoBackendError) as info:
        oracle.select_backend(CONFIG, AMPERE, exclude="portable")
    err = info.value
    assert err.reasons == {"fast": "fastlib not installed (pip install fastlib-dist)",
                           "portable": "excluded by exclude= argument"}
    assert str(err).startswith("no MoE backend fits for bf16 on cuda, simulated cuda, capability 8.0")
    assert "  fast: fastlib not installed (pip install fastlib-dist)\n  portable: excluded by exclude= argument" in str(err)


def test_exclude_prefer_and_their_sources(oracle: UnquantizedOracle, monkeypatch: pytest.MonkeyPatch) -> None:
    report = oracle.explain(CONFIG, HOPPER, exclude=["portable"])
    assert report.chosen == "fast"
    assert report.candidate("portable").status == "excluded"
    assert report.candidate("portable").reason == "excluded by exclude= argument"
    monkeypatch.setenv(ENV_PREFER, "fast")
    report = oracle.explain(CONFIG, HOPPER)
    assert report.order == ["fast", "portable"] and report.chosen == "fast"
    assert "preferred by MOE_ORACLE_PREFER" in str(report)
    monkeypatch.setenv(ENV_EXCLUDE, "fast")
    assert oracle.explain(CONFIG, HOPPER).candidate("fast").reason == "excluded by MOE_ORACLE_EXCLUDE"
    monkeypatch.setenv(ENV_BACKEND, "portable")
    assert oracle.select_backend(CONFIG, HOPPER, exclude=()).backend == "portable"


def test_argument_beats_environment(oracle: UnquantizedOracle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BACKEND, "portable")
    assert oracle.select_backend(CONFIG, HOPPER, backend="fast").backend == "fast"
    monkeypatch.setenv(ENV_BACKEND, "auto")
    assert oracle.select_backend(CONFIG, HOPPER).backend == "portable"


@pytest.mark.parametrize(("kwargs", "env", "message"), [
    (dict(backend="warp"), {}, "backend= argument: unknown backend 'warp' (allowed: amd_only, fast, fp8_only, portable)"),
    ({}, {ENV_BACKEND: "warp"}, "MOE_ORACLE_BACKEND: unknown backend 'warp'"),
    ({}, {ENV_EXCLUDE: "fast,,warp"}, "MOE_ORACLE_EXCLUDE: unknown backend 'warp'"),
    (dict(prefer="x"), {}, "prefer= argument: unknown backend 'x'"),
    (dict(backend="fast", exclude="fast"), {}, "backend 'fast' is forced and excluded (exclude= argument) at once"),
])
def test_override_errors(oracle: UnquantizedOracle, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, str],
                         env: dict[str, str], message: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=re.escape(message)):
        oracle.select_backend(CONFIG, HOPPER, **kwargs)


def test_report_table_and_dict(oracle: UnquantizedOracle) -> None:
    report = oracle.explain(CONFIG, HOPPER)
    text = str(report)
    assert text.splitlines()[0].startswith("UnquantizedOracle for E=8 top_k=2 H=256 I=512 silu bf16 quant=bf16")
    assert "platform: cuda, simulated cuda, capability 9.0, fastlib=1.0, (simulated)" in text
    assert re.search(r"1\s+portable\s+test-pkg\s+50\s+selected", text)
    assert re.search(r"2\s+fast\s+test-pkg\s+10\s+usable", text)
    assert "hint: after portable when capability 9.x (test-pkg: slower on Hopper)" in text
    assert text.endswith("other vendors' backends: amd_only (rocm)")
    d = report.to_dict()
    assert d["chosen"] == "portable" and d["config"]["quant"] == "bf16" and d["platform"]["capability"] == [9, 0]
    assert [c["name"] for c in d["candidates"]] == ["portable", "fast"]
    assert d["candidates"][1]["hints"] == [{"source": "test-pkg", "effect": "after portable when capability 9.x",
                                            "reason": "slower on Hopper"}]
    import json

    json.dumps(d)


def test_selection_is_cached_and_fast_path(oracle: UnquantizedOracle) -> None:
    a = oracle.select_backend(CONFIG, HOPPER)
    b = oracle.select_backend(CONFIG, HOPPER)
    assert a.report is b.report
    assert a.experts_cls.__name__ == "ReferenceExperts"


def test_reference_is_last_everywhere() -> None:
    import moe_oracle

    for platform in (HOPPER, Platform.simulate("rocm", arch="gfx942"), Platform.simulate("cpu"),
                     Platform.simulate("xpu")):
        for quant in ("bf16", "fp8_block", "mxfp4", "int4_w4a16"):
            report = moe_oracle.explain(MoEConfig.preset("tiny", quant=quant), platform)
            assert report.order[-1] == "reference"


def test_environment_read_by_checks_joins_the_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from moe_oracle.support import check

    switch = check("switch on", lambda c, p: os.environ.get("FAKE_SWITCH") != "0", "disabled by FAKE_SWITCH=0")
    reg = Registry()
    reg.register_all([
        BackendSpec(name="switched", experts=EXPERTS, vendors=frozenset({"cuda"}), schemes=frozenset({"bf16"}),
                    rank=1, checks=(switch,), environment=("FAKE_SWITCH",)),
        BackendSpec(name="portable", experts=EXPERTS, vendors=frozenset({"cuda"}), schemes=frozenset({"bf16"})),
    ], source="p")
    oracle = UnquantizedOracle(reg)
    assert reg.environment_variables() == ("FAKE_SWITCH",)
    assert oracle.select_backend(CONFIG, HOPPER).backend == "switched"
    monkeypatch.setenv("FAKE_SWITCH", "0")
    report = oracle.explain(CONFIG, HOPPER)
    assert report.chosen == "portable" and report.candidate("switched").reason == "disabled by FAKE_SWITCH=0"
    monkeypatch.delenv("FAKE_SWITCH")
    assert oracle.select_backend(CONFIG, HOPPER).backend == "switched"


@pytest.mark.parametrize(("kwargs", "platform", "why"), [
    # A forced backend of another vendor: the report says what select_backend would raise.
    (dict(backend="amd_only"), HOPPER, "backend 'amd_only' cannot serve this config: serves rocm, not cuda. "
                                       "Backends that can: portable, fast"),
    # A forced candidate that fails its checks: its own reason.
    (dict(backend="fast"), AMPERE, "backend 'fast' cannot serve this config: fastlib not installed "
                                   "(pip install fastlib-dist). Backends that can: portable"),
    # A forced backend of another scheme family.
    (dict(backend="fp8_only"), HOPPER, "backend 'fp8_only' cannot serve this config: does not serve the "
                                       "Unquantized schemes (bf16). Backends that can: portable, fast"),
    # Nothing forced: which candidates were rejected and which excluded, and by what.
    (dict(exclude="portable"), AMPERE, "no candidate fits: 1 rejected (fast), 1 excluded by exclude= argument "
                                       "(portable); each one's reason is in its row"),
])
def test_chosen_none_says_why(oracle: UnquantizedOracle, kwargs: dict[str, str], platform: Platform, why: str) -> None:
    report = oracle.explain(CONFIG, platform, **kwargs)
    assert report.chosen is None and report.none_reason == why
    assert report.to_dict()["none_reason"] == why
    assert f"chosen: none ({why})" in report.render(width=None)
    if "backend" in kwargs:
        with pytest.raises(UnsupportedBackendError) as info:
            oracle.select_backend(CONFIG, platform, **kwargs)
        assert str(info.value) == why          # the same words as the error `run` prints


def test_chosen_none_with_no_candidate_for_the_vendor(oracle: UnquantizedOracle) -> None:
    report = oracle.explain(CONFIG, Platform.simulate("xpu"))
    assert report.none_reason == ("no registered backend serves bf16 on xpu; other vendors' backends: fast, portable, "
                                  "amd_only")
    assert oracle.explain(CONFIG, HOPPER).none_reason == ""


def test_report_fits_100_columns_and_wide_keeps_one_line_per_row() -> None:
    long = "needs " + " and ".join(f"requirement number {i}" for i in range(12))
    hint = "measured " + ", ".join(f"{i}% faster at {2 ** i} tokens" for i in range(12))
    reg = Registry()
    reg.register_all([
        BackendSpec(name="picky", experts=EXPERTS, vendors={"cuda"}, schemes={"bf16"}, rank=1,
                    checks=(capability_at_least(10, 0),),
                    hints=(PriorityHint(rank=1, reason=hint),)),
        BackendSpec(name="portable", experts=EXPERTS, vendors={"cuda"}, schemes={"bf16"}, rank=50,
                    checks=(capability_at_least(10, 0),)),
    ], source="test-pkg")
    from dataclasses import replace

    report = UnquantizedOracle(reg).explain(CONFIG, HOPPER)
    report = replace(report, candidates=(replace(report.candidates[0], reason=long), *report.candidates[1:]))
    narrow = report.render()
    assert max(len(line) for line in narrow.splitlines()) <= 100
    assert str(report) == narrow
    # every word of the reason and the hint is still there, in order
    assert " ".join(narrow.split()).count(long) == 1 and " ".join(narrow.split()).count(hint) == 1
    row = next(line for line in narrow.splitlines() if line.startswith("1  picky"))
    assert row.split()[:5] == ["1", "picky", "test-pkg", "1", "rejected"]
    wide = report.render(width=None)
    assert any(line.startswith("1  picky") and line.endswith(long) for line in wide.splitlines())
    assert any(line.strip() == f"hint: rank 1 (test-pkg: {hint})" for line in wide.splitlines())


# Issue 13, item 9: wrongly typed arguments are ConfigErrors naming the argument.
@pytest.mark.parametrize(("kwargs", "field", "message"), [
    (dict(exclude=123), "exclude= argument",
     "expected backend names (a comma-separated str or an iterable of str), got int (allowed: "),
    (dict(prefer=3.5), "prefer= argument",
     "expected backend names (a comma-separated str or an iterable of str), got float"),
    (dict(exclude=["fast", 7]), "exclude= argument", "expected backend names (str), got 7 (int)"),
    (dict(prefer=b"fast"), "prefer= argument",
     "expected backend names (a comma-separated str or an iterable of str), got bytes"),
])
def test_override_argument_types(oracle: UnquantizedOracle, kwargs: dict[str, object], field: str,
                                 message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{field}: {message}")) as info:
        oracle.select_backend(CONFIG, HOPPER, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_platform_and_config_types() -> None:
    import moe_oracle

    with pytest.raises(ConfigError, match=re.escape("platform: expected a moe_oracle.Platform or None")) as info:
        moe_oracle.select(CONFIG, platform="cpu")  # type: ignore[arg-type]
    assert info.value.field == "platform"
    for bad, name in ((None, "NoneType"), (3, "int")):
        with pytest.raises(ConfigError, match=re.escape(f"config: expected a MoEConfig (or a scheme name), got {name}")):
            moe_oracle.select(bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=re.escape("config: expected a MoEConfig")):
            moe_oracle.explain(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=re.escape("config: expected a MoEConfig (e.g. MoEConfig.preset('tiny')), "
                                                    "got str")):
        UnquantizedOracle().select_backend("bf16")  # type: ignore[arg-type]


def test_preset_rejects_unknown_override_names() -> None:
    with pytest.raises(ConfigError, match=re.escape("overrides: unknown MoEConfig field(s) num_expert (allowed: "
                                                    "num_experts, top_k")) as info:
        MoEConfig.preset("tiny", num_expert=4)
    assert info.value.field == "overrides"


@pytest.fixture
def slow_only() -> UnquantizedOracle:
    """A fast backend that Ampere rejects, and the reference experts."""
    reg = Registry()
    reg.register_all([
        BackendSpec(name="fast", experts=EXPERTS, vendors=frozenset({"cuda"}), schemes=frozenset({"bf16"}), rank=10,
                    checks=(capability_at_least(9, 0),)),
        BackendSpec(name="reference", experts=EXPERTS, vendors=frozenset({"cuda"}), schemes=frozenset({"bf16"}),
                    rank=100),
    ], source="test-pkg")
    return UnquantizedOracle(reg)


def test_the_reference_chosen_for_want_of_a_fast_backend_warns(slow_only: UnquantizedOracle,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("MOE_ORACLE_STRICT", raising=False)
    config = CONFIG.replace(top_k=3)                        # a config no other test warned about (warned once)
    with caplog.at_level("WARNING", logger="moe_oracle"):
        assert slow_only.select_backend(config, AMPERE).backend == "reference"
    assert "only the reference experts (for correctness, orders of magnitude slower) fit bf16 on cuda; fast: " \
           "needs capability >= 9.0, have 8.0" in caplog.text
    report = slow_only.explain(config, AMPERE)
    assert "WARNING: only the reference experts" in report.render(width=None)
    assert report.to_dict()["warning"] == report.slow_warning
    assert slow_only.explain(config, HOPPER).slow_warning == ""                       # fast fits there
    assert slow_only.explain(config, AMPERE, backend="reference").slow_warning == ""  # asked for it


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_strict_refuses_the_reference(slow_only: UnquantizedOracle, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.setenv("MOE_ORACLE_STRICT", "1" if how == "environment" else "0")
    with pytest.raises(NoBackendError, match=r"no MoE backend fits for bf16 on .* other than the reference experts "
                                             r"\(strict: MOE_ORACLE_STRICT or strict=True\).*\n  fast: needs capability"):
        slow_only.select_backend(CONFIG, AMPERE, strict=True if how == "argument" else None)
    assert slow_only.select_backend(CONFIG, AMPERE, backend="reference", strict=True).backend == "reference"
    assert slow_only.select_backend(CONFIG, HOPPER, strict=True).backend == "fast"


def test_strict_values_are_checked(slow_only: UnquantizedOracle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOE_ORACLE_STRICT", "maybe")
    with pytest.raises(ConfigError, match=r"MOE_ORACLE_STRICT: unknown value 'maybe'"):
        slow_only.select_backend(CONFIG, HOPPER)
    monkeypatch.delenv("MOE_ORACLE_STRICT")
    with pytest.raises(ConfigError, match=r"strict: must be a bool or None, got 'yes'"):
        slow_only.select_backend(CONFIG, HOPPER, strict="yes")  # type: ignore[arg-type]
