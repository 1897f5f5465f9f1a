"""Plugin faults at every hook (issue 13): a plugin that raises, answers with the wrong type or calls
``sys.exit`` in its entry point, its spec list, a support check, a hint condition, its converter or its
experts is contained. Selection goes on with the other backends, and the report (or the error, for
faults that only show once weights load) names the plugin's distribution.

Fake distributions are dist-info folders on ``sys.path``, as in ``test_plugins.py``.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import moe_oracle
from moe_oracle import KernelOutputError, MoEConfig, Platform, RegistryError
from moe_oracle.cli import main
from moe_oracle.layer import MoELayer
from moe_oracle.testing import random_inputs, random_weights

CPU = Platform.simulate("cpu")
CONFIG = MoEConfig.preset("tiny", dtype="fp32", quant="fp32", num_experts=4, hidden_size=32, intermediate_size=64)
DIST = "fake-broken"
REFERENCE = "moe_oracle.backends.reference.experts:ReferenceExperts"

Install = Callable[[str], None]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """``install(module_source)`` makes the distribution ``fake-broken`` with entry point ``fake_broken:backends``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    for var in ("MOE_ORACLE_BACKEND", "MOE_ORACLE_EXCLUDE", "MOE_ORACLE_PREFER"):
        monkeypatch.delenv(var, raising=False)

    def _install(source: str) -> None:
        (tmp_path / "fake_broken.py").write_text(textwrap.dedent(source))
        info = tmp_path / "fake_broken-0.1.0.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text("[moe_oracle.backends]\nfake_broken = fake_broken:backends\n")
        for name in [m for m in sys.modules if m.startswith("fake_broken")]:
            del sys.modules[name]

    yield _install
    monkeypatch.undo()
    for name in [m for m in sys.modules if m.startswith("fake_broken")]:
        del sys.modules[name]
    moe_oracle.registry(refresh=True)


def plugin(*, checks: str = "()", hints: str = "()", experts: str = REFERENCE, converter: str = "None",
           prelude: str = "", items: str = "[spec]") -> str:
    """A plugin registering ``broken`` first on the CPU (rank 1), with the hook under test filled in."""
    return f"""
import sys
from moe_oracle import BackendSpec, PriorityHint, Support
from moe_oracle.support import Check, Condition
from moe_oracle.backends.reference.experts import ReferenceExperts
from moe_oracle.kernel.weights import canonical_kernel_weights
{textwrap.dedent(prelude)}
def backends():
    spec = BackendSpec(name="broken", experts={experts!r}, vendors={{"cpu"}}, schemes={{"fp32"}}, rank=1,
                       checks={checks}, hints={hints}, converter={converter})
    return {items}
"""


def exploding(what: str) -> str:
    return f"(_ for _ in ()).throw(RuntimeError({what!r}))"


def assert_selection_goes_on() -> moe_oracle.SelectionReport:
    """Selection, the layer and ``moe-oracle list`` all work; the broken backend is not chosen."""
    selection = moe_oracle.select(CONFIG, CPU)
    assert selection.backend != "broken"
    layer = MoELayer(CONFIG, platform=CPU)
    assert layer.backend == selection.backend
    assert main(["list", "--platform", "cpu"]) == 0
    return selection.report


def assert_plugin_failure(error: str) -> None:
    reg = moe_oracle.registry(refresh=True)
    assert "broken" not in reg.names()
    [failure] = [f for f in reg.failures if f.distribution == DIST]
    assert re.fullmatch(error, failure.error), failure.error
    report = assert_selection_goes_on()
    assert [f.distribution for f in report.plugin_failures] == [DIST]


def assert_rejected(reason: str) -> None:
    moe_oracle.registry(refresh=True)
    report = assert_selection_goes_on()
    row = report.candidate("broken")
    assert (row.status, row.distribution) == ("rejected", DIST)
    assert re.fullmatch(reason, row.reason), row.reason


# Entry point ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("source", "error"), [
    ("raise RuntimeError('vendor runtime missing')\n", "RuntimeError: vendor runtime missing"),
    ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    ("raise BaseException('odd')\n", "BaseException: odd"),
    ("def backends():\n    return None\n",
     "RegistryError: fake-broken: the entry point must return an iterable of BackendSpec and PriorityHint, "
     "got NoneType"),
    ("def backends():\n    return 42\n", "RegistryError: .* got int"),
    ("def backends():\n    raise RuntimeError('no')\n", "RuntimeError: no"),
    ("import sys\ndef backends():\n    sys.exit('bye')\n", "SystemExit: bye"),
])
def test_entry_point_faults(install: Install, source: str, error: str,
                            capsys: pytest.CaptureFixture[str]) -> None:
    install(source)
    assert_plugin_failure(error)
    assert f"plugin failed to load: {DIST}" in capsys.readouterr().out


# Spec items ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("items", "error"), [
    ("iter([spec, 1 / 0])", "ZeroDivisionError: division by zero"),
    ("[spec, 'not a spec']", "RegistryError: fake-broken: expected BackendSpec or PriorityHint, got str"),
    ("(x for x in [spec, sys.exit(4)])", "SystemExit: 4"),
    ("[spec, PriorityHint(target='broken', rank=1, when=lambda c, p: True, reason='r')]",
     "RegistryError: PriorityHint 'r': when= must be a moe_oracle.support.Condition .*, got function"),
])
def test_spec_faults(install: Install, items: str, error: str) -> None:
    install(plugin(items=items))
    assert_plugin_failure(error)


# Support checks ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("check", "reason"), [
    (f"Check('explodes', lambda c, p: {exploding('check exploded')})",
     r"support check 'explodes' \(from fake-broken\) raised RuntimeError: check exploded"),
    ("Check('answers None', lambda c, p: None)",
     r"support check 'answers None' \(from fake-broken\) returned NoneType, not a Support"),
    ("Check('answers True', lambda c, p: True)",
     r"support check 'answers True' \(from fake-broken\) returned bool, not a Support"),
    ("Check('bad reason', lambda c, p: Support(True, 5))",
     r"support check 'bad reason' \(from fake-broken\) returned a Support whose reason is int, not a str"),
    ("Check('exits', lambda c, p: sys.exit(5))", r"support check 'exits' \(from fake-broken\) raised SystemExit: 5"),
])
def test_check_faults(install: Install, check: str, reason: str) -> None:
    install(plugin(checks=f"({check},)"))
    assert_rejected(reason)


# Hint conditions -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("condition", "error"), [
    (f"Condition('explodes', lambda c, p: {exploding('condition exploded')})", "RuntimeError: condition exploded"),
    ("Condition('exits', lambda c, p: sys.exit(6))", "SystemExit: 6"),
    ("Condition('not a bool', lambda c, p: Weird())", "TypeError: no truth"),
    ("~Condition('inner', lambda c, p: 1 / 0)", "ZeroDivisionError: division by zero"),
])
def test_condition_faults(install: Install, condition: str, error: str) -> None:
    prelude = """
    class Weird:
        def __bool__(self):
            raise TypeError("no truth")
    """
    install(plugin(prelude=prelude, hints=f"(PriorityHint(rank=500, when={condition}, reason='demote'),)"))
    moe_oracle.registry(refresh=True)
    # The hint is ignored (rank stays 1), so the plugin's backend is chosen, and the report says why.
    report = moe_oracle.explain(CONFIG, CPU)
    assert report.chosen == "broken"
    [hint] = report.candidate("broken").hints
    assert (hint.source, hint.effect) == (DIST, "ignored")
    assert re.fullmatch(r"condition '.*' raised " + re.escape(error), hint.reason), hint.reason
    assert main(["list", "--platform", "cpu"]) == 0
    assert "ignored (fake-broken: condition" in str(report)


# Experts and converter paths: resolved at selection ---------------------------------------------------
@pytest.mark.parametrize(("kwargs", "prelude", "reason"), [
    (dict(experts="fake_broken_missing.experts:Experts"), "",
     r"backend 'broken' experts \(from fake-broken\): cannot load 'fake_broken_missing.experts:Experts': "
     r"No module named 'fake_broken_missing'"),
    (dict(experts="fake_broken:Missing"), "",
     r"backend 'broken' experts \(from fake-broken\): cannot load 'fake_broken:Missing': .*Missing.*"),
    (dict(experts="fake_broken:NOT_A_CLASS"), "NOT_A_CLASS = 3",
     r"backend 'broken' experts \(from fake-broken\): 'fake_broken:NOT_A_CLASS' is a int, "
     r"not a moe_oracle.Experts subclass"),
    (dict(experts="fake_broken:Plain"), "class Plain: pass",
     r"backend 'broken' experts \(from fake-broken\): 'fake_broken:Plain' is the class Plain, "
     r"not a moe_oracle.Experts subclass"),
    (dict(experts="fake_broken_exits:Experts"), "",
     r"backend 'broken' experts \(from fake-broken\): cannot load 'fake_broken_exits:Experts': "
     r"importing it raised SystemExit: 7"),
    (dict(converter="'fake_broken_exits:convert'"), "",
     r"backend 'broken' converter \(from fake-broken\): cannot load 'fake_broken_exits:convert': "
     r"importing it raised SystemExit: 7"),
    (dict(converter="'fake_broken:CONVERTER'"), "CONVERTER = 'not callable'",
     r"backend 'broken' converter \(from fake-broken\): 'fake_broken:CONVERTER' is a str, not callable"),
])
def test_experts_and_converter_paths_are_resolved_at_selection(install: Install, tmp_path: Path,
                                                               kwargs: dict[str, str], prelude: str,
                                                               reason: str) -> None:
    (tmp_path / "fake_broken_exits.py").write_text("import sys\nsys.exit(7)\n")
    install(plugin(prelude=prelude, **kwargs))
    assert_rejected(reason)
    with pytest.raises(moe_oracle.UnsupportedBackendError, match=re.escape("backend 'broken' cannot serve")):
        MoELayer(CONFIG, backend="broken", platform=CPU)


# Converter and experts calls: faults once weights load or a forward runs --------------------------------
CALL_PRELUDE = """
class Raises(ReferenceExperts):
    def __init__(self, *args):
        raise RuntimeError("experts exploded")

class Exits(ReferenceExperts):
    def __init__(self, *args):
        sys.exit(8)

class WrongShape(ReferenceExperts):
    def apply(self, hidden, *args, **kwargs):
        return super().apply(hidden, *args, **kwargs)[:1, :3]

class WrongDtype(ReferenceExperts):
    def apply(self, hidden, *args, **kwargs):
        return super().apply(hidden, *args, **kwargs).double()

def convert_raises(weights, config):
    raise RuntimeError("converter exploded")

def convert_exits(weights, config):
    sys.exit(9)

def convert_wrong_type(weights, config):
    return {"w13": weights.w13}

def convert_wrong_backend(weights, config):
    return canonical_kernel_weights(weights, config, backend="reference")
"""


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(experts="fake_broken:Raises"),
     "backend 'broken' experts fake_broken:Raises (from fake-broken) raised RuntimeError: experts exploded"),
    (dict(experts="fake_broken:Exits"), "backend 'broken' experts fake_broken:Exits (from fake-broken) raised SystemExit: 8"),
    (dict(converter="'fake_broken:convert_raises'"),
     "backend 'broken' converter fake_broken:convert_raises (from fake-broken) raised RuntimeError: converter exploded"),
    (dict(converter="'fake_broken:convert_exits'"),
     "backend 'broken' converter fake_broken:convert_exits (from fake-broken) raised SystemExit: 9"),
    (dict(converter="'fake_broken:convert_wrong_type'"),
     "converter fake_broken:convert_wrong_type (from fake-broken) must return KernelWeights(backend='broken'), got dict"),
    (dict(converter="'fake_broken:convert_wrong_backend'"),
     "converter fake_broken:convert_wrong_backend (from fake-broken) must return KernelWeights(backend='broken'), "
     "got KernelWeights for backend 'reference'"),
])
def test_converter_and_experts_call_faults_name_the_distribution(install: Install, kwargs: dict[str, str],
                                                                 message: str) -> None:
    install(plugin(prelude=CALL_PRELUDE, **kwargs))
    moe_oracle.registry(refresh=True)
    layer = MoELayer(CONFIG, platform=CPU)
    assert layer.backend == "broken"
    with pytest.raises(RegistryError) as info:
        layer.load_weights(**dict(random_weights(CONFIG, seed=0).items()))
    assert str(info.value) == message
    assert MoELayer(CONFIG, platform=CPU, exclude="broken").backend != "broken"


@pytest.mark.parametrize(("experts", "got"), [
    ("WrongShape", "shape [1, 3] dtype float32 on cpu"),
    ("WrongDtype", "shape [3, 32] dtype float64 on cpu"),
])
def test_experts_output_is_checked_at_the_layer_boundary(install: Install, experts: str, got: str) -> None:
    install(plugin(prelude=CALL_PRELUDE, experts=f"fake_broken:{experts}"))
    moe_oracle.registry(refresh=True)
    layer = MoELayer(CONFIG, platform=CPU)
    layer.load_weights(**dict(random_weights(CONFIG, seed=0).items()))
    hidden, logits = random_inputs(CONFIG, 3, seed=1)
    for call in (lambda: layer(hidden, logits), lambda: layer.forward_routed(hidden, logits[:, :2].softmax(-1),
                                                                             logits.topk(2).indices)):
        with pytest.raises(KernelOutputError) as info:
            call()
        assert str(info.value) == (f"backend 'broken' (from fake-broken) returned {got}, "
                                   "expected shape [3, 32] dtype float32 on cpu")
        assert (info.value.backend, info.value.distribution) == ("broken", DIST)


def test_keyboard_interrupt_is_not_contained(install: Install) -> None:
    install("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        moe_oracle.registry(refresh=True)
