"""policy="measured": buckets, the plan, rejections, layouts and extra memory, the selection cache,
per-bucket dispatch. Timings come from deterministic timers; no test asserts on real time."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from measured_backends import CALLS, TINY, install, launch_aware_timer, table_timer

import moe_oracle
from moe_oracle import ConfigError, MoELayer, Platform
from moe_oracle.oracle import cache
from moe_oracle.oracle.measured import clear_memo
from moe_oracle.oracle.plan import DEFAULT_BUCKETS, bucket_ranges, representative_tokens, resolve_policy
from moe_oracle.router import route
from moe_oracle.testing import assert_close, random_inputs, random_weights, reference_moe

HERE = dataclasses.replace(Platform.detect(), vendor="cpu", capability=None, arch=None)
# Representative token counts of the default buckets on a CPU (the last two capped at 1024).
TOKENS = [1, 3, 9, 33, 129, 513, 1024, 1024]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MOE_ORACLE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MOE_ORACLE_POLICY", raising=False)
    clear_memo()
    CALLS.clear()
    yield tmp_path / "cache"
    clear_memo()


@pytest.fixture
def backends() -> Iterator[None]:
    install()
    # The real CPU backends are measured too (a 100 ms stand-in time each): keep them, but skip the
    # slow ones' variants by excluding them; the test backends are what the plans are about.
    yield
    moe_oracle.registry(refresh=True)


def _never(*args: object) -> float:
    raise AssertionError("measured although a cached plan exists")


def _tune(**kw: object) -> moe_oracle.Selection:
    return moe_oracle.tune(TINY, HERE, exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"), timer=table_timer, **kw)


# Policy and buckets ------------------------------------------------------------------------------
def test_policy_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_policy(None) == "rules"
    monkeypatch.setenv("MOE_ORACLE_POLICY", "measured")
    assert resolve_policy(None) == "measured"
    monkeypatch.setenv("MOE_ORACLE_POLICY", "fastest")
    with pytest.raises(ConfigError, match=r"MOE_ORACLE_POLICY.*'fastest'.*rules.*measured"):
        resolve_policy(None)
    with pytest.raises(ConfigError, match=r"policy.*'fast'"):
        moe_oracle.select(TINY, HERE, policy="fast")


def test_default_buckets_cover_every_token_count() -> None:
    ranges = bucket_ranges(DEFAULT_BUCKETS)
    assert ranges == [(1, 1), (2, 4), (5, 16), (17, 64), (65, 256), (257, 1024), (1025, 4096), (4097, None)]
    assert [representative_tokens(lo, hi) for lo, hi in ranges] == [1, 3, 9, 33, 129, 513, 2049, 8192]
    assert [representative_tokens(lo, hi, 1024) for lo, hi in ranges] == TOKENS


@pytest.mark.parametrize("bad", [(4, 2), (0, 4), (1.5,), "1,4"])
def test_bad_buckets_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match="buckets"):
        moe_oracle.select(TINY, HERE, buckets=bad)  # type: ignore[arg-type]


def test_rules_plan_is_one_bucket_and_unchanged() -> None:
    sel = moe_oracle.select(TINY, HERE)
    assert sel.backend == moe_oracle.explain(TINY, HERE).chosen
    assert [(p.min_tokens, p.max_tokens, p.backend, p.source) for p in sel.plan] == [(1, None, sel.backend, "rules")]
    assert sel.backend_for(0) == sel.backend_for(10 ** 6) == sel.backend
    assert sel.report.to_dict()["plan"][0]["source"] == "rules"


def test_simulated_platforms_fall_back_to_rules() -> None:
    sel = moe_oracle.select(TINY, Platform.simulate("cpu", features=("avx2",)), policy="measured")
    assert [p.source for p in sel.plan] == ["rules"]
    assert "simulated" in sel.report.plan_info.origin


# The measured plan ---------------------------------------------------------------------------------
def test_measured_plan_per_bucket(backends: None) -> None:
    sel = _tune()
    plan = sel.plan
    assert [p.tokens for p in plan] == TOKENS
    assert [p.source for p in plan] == ["measured"] * 8
    # Without extra memory, every bucket stays on the canonical layout: small to 16 tokens, big beyond.
    assert [p.backend for p in plan] == ["tg_small"] * 3 + ["tg_big"] * 5
    assert sel.backend == "tg_big" and sel.report.plan_info.primary_layout == "canonical"
    assert [p.measured_ms for p in plan] == [1.0] * 3 + [2.0] * 5
    assert sel.backend_for(4) == "tg_small" and sel.backend_for(17) == "tg_big" and sel.backend_for(10 ** 6) == "tg_big"
    # Every candidate's timing is kept, rejections with their error.
    row = {t.label: t for t in plan[4].timings}
    assert row["tg_other"].ms == 0.5 and row["tg_other"].layout == "w31"
    assert row["tg_broken"].ms is None and "too many resources requested" in row["tg_broken"].error
    assert row["tg_nan"].ms is None and "non-finite output" in row["tg_nan"].error
    assert plan[4].floor_ms == 0.5
    assert sel.report.plan_info.extra_memory_bytes == 0


def test_extra_memory_only_when_allowed(backends: None) -> None:
    sel = _tune(allow_extra_memory=True)
    assert [p.backend for p in sel.plan] == ["tg_small"] * 3 + ["tg_big"] + ["tg_other"] * 4
    assert sel.backend == "tg_big"  # the weights' layout is still the canonical one
    w13 = TINY.num_experts * TINY.w13_rows * TINY.hidden_size * 4
    assert sel.report.plan_info.extra_memory_bytes == w13
    text = sel.report.render()
    assert "other layouts add" in text and "allow_extra_memory=True" in text


def test_layer_dispatches_per_bucket_and_matches_the_reference(backends: None) -> None:
    _tune(allow_extra_memory=True)
    layer = MoELayer(TINY, platform=HERE, policy="measured", allow_extra_memory=True,
                     exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"))
    assert [p.source for p in layer.selection.plan] == ["cache"] * 8
    weights = random_weights(TINY, seed=0)
    layer.load_weights(**dict(weights.items()))
    assert layer._buckets is not None and layer._buckets.extra_memory_bytes > 0
    CALLS.clear()
    for t, backend in ((1, "tg_small"), (4, "tg_small"), (30, "tg_big"), (100, "tg_other"), (5000, "tg_other")):
        hidden, logits = random_inputs(TINY, t, seed=t)
        CALLS.clear()
        out = layer(hidden, logits)
        assert {k.split("[")[0] for k in CALLS} == {backend}, (t, CALLS)
        tw, ti = route(logits, TINY)
        assert_close(out, reference_moe(TINY, weights, hidden, tw, ti), config=TINY)
        assert_close(layer.forward_routed(hidden, tw, ti), out, config=TINY)


def test_launch_configs_per_bucket_share_the_weights(backends: None) -> None:
    sel = moe_oracle.tune(TINY, HERE, exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"), timer=launch_aware_timer)
    assert sel.plan[0].kernel_config == {"tile": "b"}
    layer = MoELayer(TINY, platform=HERE, policy="measured", exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"))
    layer.load_weights(**dict(random_weights(TINY, seed=0).items()))
    assert layer._buckets is not None
    k1, k30 = layer._buckets.kernel_for(1), layer._buckets.kernel_for(30)
    assert k1 is not k30 and k1.experts.weights.w13 is k30.experts.weights.w13
    CALLS.clear()
    layer(*random_inputs(TINY, 2, seed=0))
    assert CALLS == {"tg_small[b]": 1}


def test_nothing_measurable_keeps_the_rules(backends: None) -> None:
    sel = moe_oracle.tune(TINY, HERE, backend="tg_broken", timer=table_timer)
    assert sel.backend == "tg_broken" and [p.source for p in sel.plan] == ["rules"]
    assert "too many resources requested" in sel.report.plan_info.origin


def test_explain_shows_the_plan_and_where_it_came_from(backends: None, _cache_dir: Path) -> None:
    _tune()
    clear_memo()
    report = moe_oracle.explain(TINY, HERE, policy="measured", exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"))
    text = report.render(None)
    assert f"plan (measured): cache {_cache_dir / 'selection'}" in text
    assert "tg_broken rejected: RuntimeError: kernel launch failed" in text
    assert "tg_other 0.5 (1.00x)" in text and "tg_big 2 (4.00x)" in text
    d = report.to_dict()
    assert len(d["plan"]) == 8 and d["plan"][7]["max_tokens"] is None
    assert d["plan_info"]["cache_path"].startswith(str(_cache_dir))
    json.dumps(d)


# The cache -----------------------------------------------------------------------------------------
def test_second_selection_reads_the_cache(backends: None) -> None:
    first = _tune()
    clear_memo()
    again = moe_oracle.oracle_for(TINY).select_backend(TINY, HERE, policy="measured", timer=_never,
                                                       exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"))
    assert [p.backend for p in again.plan] == [p.backend for p in first.plan]
    assert {p.source for p in again.plan} == {"cache"}
    assert again.report.plan_info.date


def test_a_version_change_measures_again(backends: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _tune()
    clear_memo()
    monkeypatch.setattr(cache, "__version__", "99.0.0")
    timed = []

    def timer(candidate: object, num_tokens: int, call: object) -> float:
        timed.append(candidate)
        return table_timer(candidate, num_tokens, call)

    sel = moe_oracle.oracle_for(TINY).select_backend(TINY, HERE, policy="measured", timer=timer,
                                                     exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"))
    assert timed and {p.source for p in sel.plan} == {"measured"}


def test_corrupt_cache_is_ignored_and_rewritten(backends: None, _cache_dir: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    _tune()
    [path] = (_cache_dir / "selection").glob("*.json")
    path.write_text('{"key": ')
    clear_memo()
    with caplog.at_level(logging.WARNING, logger="moe_oracle"):
        sel = moe_oracle.oracle_for(TINY).select_backend(TINY, HERE, policy="measured", timer=table_timer,
                                                         exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"))
    assert "ignoring the corrupt selection cache" in caplog.text
    assert {p.source for p in sel.plan} == {"measured"}
    assert json.loads(path.read_text())["plan"]


def test_unwritable_cache_measures_in_memory(backends: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("MOE_ORACLE_CACHE_DIR", str(blocker))  # selection/ under a file: mkdir fails
    with caplog.at_level(logging.WARNING, logger="moe_oracle"):
        sel = _tune()
    assert {p.source for p in sel.plan} == {"measured"}
    assert "in memory only" in sel.report.plan_info.origin
    assert any("kept in memory" in n for n in sel.report.plan_info.notes)
    assert "cannot write the selection cache" in caplog.text


def test_concurrent_writers_leave_a_whole_file(_cache_dir: Path) -> None:
    key = {"format": 1, "k": "v"}
    errors = []

    def write(i: int) -> None:
        try:
            for _ in range(20):
                path, why = cache.write(key, {"plan": [{"i": i}] * 200})
                assert path is not None, why
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.read(key) is not None
    assert [p.name for p in (_cache_dir / "selection").iterdir()] == [cache.path_for(key).name]


SECOND_PROCESS = """
import dataclasses, json, sys
sys.path.insert(0, sys.argv[1])
from measured_backends import TINY, install
install()
import moe_oracle
from moe_oracle import Platform
here = dataclasses.replace(Platform.detect(), vendor="cpu", capability=None, arch=None)
def never(*a):
    raise SystemExit("measured in the second process")
sel = moe_oracle.oracle_for(TINY).select_backend(TINY, here, policy="measured", timer=never,
                                                 exclude=("cpu_grouped", "cpu_zentorch", "cpu_amx"))
print(json.dumps([[p.backend, p.source] for p in sel.plan]))
"""


def test_a_second_process_reuses_the_cache(backends: None) -> None:
    first = _tune()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", SECOND_PROCESS, str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [[p.backend, "cache"] for p in first.plan]


# Real CPU backends ---------------------------------------------------------------------------------
def test_cpu_backends_and_cpu_grouped_builds_are_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real CPU candidates on a small layer, in well under a second with a stand-in timer."""
    config = moe_oracle.MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=64)

    def timer(candidate: object, num_tokens: int, call: object) -> float:
        return {"cpu_grouped": 1.0, "cpu_grouped[native=off]": 2.0}.get(candidate.label, 3.0)  # type: ignore[attr-defined]

    sel = moe_oracle.tune(config, HERE, buckets=(4,), timer=timer)
    labels = {t.label for t in sel.plan[0].timings}
    assert "reference" not in labels
    from moe_oracle_cpu.cpu_grouped import native

    if native.choose_build(config, HERE.features)[0] and not native.load_error(native.choose_build(config, HERE.features)[0]):
        assert {"cpu_grouped", "cpu_grouped[native=off]"} <= labels
        layouts = {t.label: t.layout for t in sel.plan[0].timings}
        assert layouts["cpu_grouped"] != layouts["cpu_grouped[native=off]"]
    assert [p.backend for p in sel.plan] == ["cpu_grouped", "cpu_grouped"]


def test_a_layout_variant_can_be_the_primary() -> None:
    """cpu_grouped with its native kernels off measured fastest: the weights are converted that way."""
    from moe_oracle_cpu.cpu_grouped import native

    config = moe_oracle.MoEConfig(num_experts=4, top_k=2, hidden_size=64, intermediate_size=64)
    build = native.choose_build(config, HERE.features)[0]
    if not build or native.load_error(build):
        pytest.skip("no native cpu_grouped build runs on this CPU")

    def timer(candidate: object, num_tokens: int, call: object) -> float:
        return {"cpu_grouped": 2.0, "cpu_grouped[native=off]": 1.0}.get(candidate.label, 3.0)  # type: ignore[attr-defined]

    moe_oracle.tune(config, HERE, buckets=(4,), timer=timer)
    layer = MoELayer(config, platform=HERE, policy="measured", buckets=(4,))
    assert layer.selection.backend == "cpu_grouped" and layer.selection.primary_config == {"native": "off"}
    weights = random_weights(config, seed=0)
    layer.load_weights(**dict(weights.items()))
    assert layer.kernel_weights is not None and "native_panels" not in layer.kernel_weights.layout
    hidden, logits = random_inputs(config, 9, seed=1)
    tw, ti = route(logits, config)
    assert_close(layer(hidden, logits), reference_moe(config, weights, hidden, tw, ti), config=config)
