"""The plugin surface: vendor packages reach core only through ``moe_oracle.plugin`` (their tests also
through ``moe_oracle.testing`` and the user API, ``moe_oracle`` itself), and importing it costs no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
VENDORS = ("moe-oracle-cuda", "moe-oracle-rocm", "moe-oracle-xpu", "moe-oracle-cpu")


def _core_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "moe_oracle":
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):  # ``import moe_oracle.plugin`` (to monkeypatch it) counts as the module
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "moe_oracle"]
    return found


@pytest.mark.parametrize("package", VENDORS)
def test_vendor_sources_import_only_the_plugin_module(package: str) -> None:
    bad = [f"{p.relative_to(ROOT)}:{line} imports {module}"
           for p in sorted((ROOT / "packages" / package / "src").rglob("*.py"))
           for line, module in _core_imports(p) if module != "moe_oracle.plugin"]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", VENDORS)
def test_vendor_tests_import_only_plugin_and_testing(package: str) -> None:
    allowed = ("moe_oracle", "moe_oracle.plugin", "moe_oracle.testing")
    bad = [f"{p.relative_to(ROOT)}:{line} imports {module}"
           for p in sorted((ROOT / "packages" / package / "tests").rglob("*.py"))
           for line, module in _core_imports(p) if module not in allowed]
    assert not bad, "\n".join(bad)


def test_the_plugin_module_imports_no_torch() -> None:
    code = ("import sys, moe_oracle.plugin as p; assert 'torch' not in sys.modules, 'torch imported'; "
            "p.BackendSpec, p.capability_by_scheme, p.load_library")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_names_resolve() -> None:
    import moe_oracle.plugin as plugin
    from moe_oracle.kernel.modular import ExpertsModular

    assert plugin.ExpertsModular is ExpertsModular
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        plugin.Nope  # noqa: B018


def test_load_library_names_the_backend_and_what_to_install() -> None:
    from moe_oracle.plugin import VendorLibraryError, load_library

    with pytest.raises(VendorLibraryError, match=r"the demo backend needs pip install demo-lib: "
                                                 r"ModuleNotFoundError: No module named 'no_such_lib_x'") as info:
        load_library("no_such_lib_x", backend="demo", install="pip install demo-lib")
    assert isinstance(info.value, ImportError)
