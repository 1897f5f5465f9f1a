"""Plugin discovery through real entry points: fake distributions are written as dist-info
folders on sys.path, exactly as pip would install them, and the registry is rebuilt."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import moe_oracle
from moe_oracle import MoEConfig, Platform, PriorityCycleError
from moe_oracle.cli import main

HOPPER = Platform.simulate("cuda", capability=(9, 0))
CONFIG = MoEConfig.preset("tiny")
EXPERTS = "moe_oracle.backends.reference.experts:ReferenceExperts"

Install = Callable[[str, str], None]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """``install(dist_name, module_source)`` makes a distribution whose entry point is ``<module>:backends``."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def _install(dist: str, source: str) -> None:
        module = dist.replace("-", "_")
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{module}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[moe_oracle.backends]\n{module} = {module}:backends\n")
        sys.modules.pop(module, None)

    yield _install
    monkeypatch.undo()
    moe_oracle.registry(refresh=True)


PLUGIN_A = f"""
from moe_oracle import BackendSpec, PriorityHint
def backends():
    return [BackendSpec(name="alpha", experts="{EXPERTS}", vendors={{"cuda"}}, schemes={{"bf16"}}, rank=30)]
"""
PLUGIN_B = f"""
from moe_oracle import BackendSpec, PriorityHint
from moe_oracle.support import capability_major
def backends():
    return [
        BackendSpec(name="beta", experts="{EXPERTS}", vendors={{"cuda"}}, schemes={{"bf16"}}, rank=20),
        PriorityHint(target="alpha", before=("beta",), when=capability_major(9), reason="alpha is faster on Hopper"),
    ]
"""


def test_two_plugins_merge_with_cross_package_hints(install: Install) -> None:
    install("fake-plugin-a", PLUGIN_A)
    install("fake-plugin-b", PLUGIN_B)
    reg = moe_oracle.registry(refresh=True)
    assert {"alpha", "beta"} <= set(reg.names()) and reg.failures == []
    assert reg.get("alpha").distribution == "fake-plugin-a"
    report = moe_oracle.explain(CONFIG, HOPPER)
    assert report.order.index("alpha") < report.order.index("beta") < report.order.index("reference")
    assert report.chosen == "alpha"
    hint = report.candidate("alpha").hints[0]
    assert (hint.source, hint.reason) == ("fake-plugin-b", "alpha is faster on Hopper")
    ampere = Platform.simulate("cuda", capability=(8, 0))
    assert moe_oracle.explain(CONFIG, ampere).chosen == "beta"
    assert "ALPHA" in moe_oracle.UnquantizedOracle().backend_enum_cls().__members__


def test_duplicate_name_is_an_error_naming_both_and_skips_the_second(install: Install) -> None:
    install("fake-plugin-a", PLUGIN_A)
    install("fake-plugin-dup", PLUGIN_A)
    reg = moe_oracle.registry(refresh=True)
    assert reg.get("alpha").distribution == "fake-plugin-a"
    [failure] = reg.failures
    assert failure.distribution == "fake-plugin-dup"
    assert failure.error == ("RegistryError: backend name 'alpha' registered twice: by fake-plugin-a and by "
                             "fake-plugin-dup")
    assert moe_oracle.select(CONFIG, HOPPER).backend == "alpha"


def test_plugin_that_raises_at_import_is_reported_not_fatal(install: Install,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    install("fake-plugin-a", PLUGIN_A)
    install("fake-plugin-broken", "raise RuntimeError('vendor runtime missing')\n")
    reg = moe_oracle.registry(refresh=True)
    [failure] = reg.failures
    assert str(failure) == ("fake-plugin-broken (fake_plugin_broken = fake_plugin_broken:backends): "
                            "RuntimeError: vendor runtime missing")
    report = moe_oracle.explain(CONFIG, HOPPER)
    assert report.chosen == "alpha"
    assert str(report).endswith("plugin failed to load: " + str(failure))
    assert report.to_dict()["plugin_failures"][0]["distribution"] == "fake-plugin-broken"
    assert main(["list"]) == 0
    assert "plugin failed to load: fake-plugin-broken" in capsys.readouterr().out


def test_invalid_items_reject_the_whole_plugin(install: Install) -> None:
    install("fake-plugin-bad", f"""
from moe_oracle import BackendSpec
def backends():
    return [BackendSpec(name="gamma", experts="{EXPERTS}", vendors={{"cuda"}}, schemes={{"bf16"}}), "not a spec"]
""")
    reg = moe_oracle.registry(refresh=True)
    assert "gamma" not in reg.names()
    assert reg.failures[0].error == "RegistryError: fake-plugin-bad: expected BackendSpec or PriorityHint, got str"


def test_malformed_spec_fails_at_load_with_the_field(install: Install) -> None:
    install("fake-plugin-typo", f"""
from moe_oracle import BackendSpec
def backends():
    return [BackendSpec(name="delta", experts="{EXPERTS}", vendors={{"cuda"}}, schemes={{"bf16", "fp7"}})]
""")
    reg = moe_oracle.registry(refresh=True)
    assert re.match(r"RegistryError: backend 'delta': unknown schemes \['fp7'\]; known: bf16, ", reg.failures[0].error)


def test_cycle_between_plugins_names_packages_and_hints(install: Install) -> None:
    install("fake-plugin-a", PLUGIN_A)
    install("fake-plugin-b", PLUGIN_B)
    install("fake-plugin-c", """
from moe_oracle import PriorityHint
def backends():
    return [PriorityHint(target="beta", before=("alpha",), reason="beta is faster everywhere")]
""")
    moe_oracle.registry(refresh=True)
    with pytest.raises(PriorityCycleError) as info:
        moe_oracle.select(CONFIG, HOPPER)
    assert info.value.packages == ["fake-plugin-b", "fake-plugin-c"]
    assert "alpha before beta (from fake-plugin-b: alpha is faster on Hopper)" in str(info.value)
    assert "beta before alpha (from fake-plugin-c: beta is faster everywhere)" in str(info.value)


def _versioned_plugin(name: str, plugin_api: object) -> str:
    return f"""
from moe_oracle import BackendSpec
def backends():
    return [BackendSpec(name="{name}", experts="{EXPERTS}", vendors={{"cuda"}}, schemes={{"bf16"}},
                        plugin_api={plugin_api!r})]
"""


def test_plugin_for_another_plugin_api_is_a_recorded_failure_with_both_versions(install: Install) -> None:
    install("fake-plugin-a", PLUGIN_A)                                   # declares nothing: accepted
    install("fake-plugin-now", _versioned_plugin("now", moe_oracle.PLUGIN_API_VERSION))
    install("fake-plugin-next", _versioned_plugin("later", moe_oracle.PLUGIN_API_VERSION + 1))
    reg = moe_oracle.registry(refresh=True)
    assert {"alpha", "now"} <= set(reg.names()) and "later" not in reg.names()
    [failure] = reg.failures
    assert failure.distribution == "fake-plugin-next"
    assert failure.error == (
        f"PluginAPIError: fake-plugin-next: backend 'later' declares plugin API {moe_oracle.PLUGIN_API_VERSION + 1}, "
        f"but moe-oracle-core {moe_oracle.__version__} provides plugin API {moe_oracle.PLUGIN_API_VERSION}; install "
        f"a release of fake-plugin-next built for plugin API {moe_oracle.PLUGIN_API_VERSION}, or a moe-oracle-core "
        f"that provides plugin API {moe_oracle.PLUGIN_API_VERSION + 1}")
    assert "plugin failed to load: fake-plugin-next" in str(moe_oracle.explain(CONFIG, HOPPER))


def test_plugin_api_must_be_a_positive_int() -> None:
    for bad in ("1", 0, 1.0, True):
        with pytest.raises(moe_oracle.RegistryError, match=r"backend 'x': plugin_api must be a positive int"):
            moe_oracle.BackendSpec(name="x", experts=EXPERTS, vendors={"cuda"}, schemes={"bf16"}, plugin_api=bad)


def test_vendor_packages_declare_this_plugin_api() -> None:
    reg = moe_oracle.registry(refresh=True)
    declared = {s.distribution: s.plugin_api for s in reg.specs() if s.distribution != "moe-oracle-core"}
    for dist in ("moe-oracle-cuda", "moe-oracle-rocm", "moe-oracle-xpu"):
        assert declared[dist] == moe_oracle.PLUGIN_API_VERSION, dist


def test_version_lists_plugin_distributions(install: Install, capsys: pytest.CaptureFixture[str]) -> None:
    install("fake-plugin-a", PLUGIN_A)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "fake-plugin-a 0.1.0 (backend plugin)" in capsys.readouterr().out.splitlines()
