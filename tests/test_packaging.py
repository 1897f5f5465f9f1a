"""What the six distributions declare: license files, READMEs written for their PyPI pages,
bounds on core, pinned extras. Reads the files; builds nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import moe_oracle

tomllib = pytest.importorskip("tomllib")
from packaging.requirements import Requirement  # noqa: E402  (after the skip on Python 3.10)

ROOT = Path(__file__).resolve().parents[1]
VENDORS = ("moe-oracle-cuda", "moe-oracle-rocm", "moe-oracle-xpu", "moe-oracle-cpu")
PACKAGES = ("moe-oracle-core", *VENDORS)
# The torch this release supports, and the vendor builds made for it.
SUPPORTED_TORCH = "2.13.0"


def project(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text())["project"]


def folders() -> list[Path]:
    return [ROOT, *(ROOT / "packages" / name for name in PACKAGES)]


@pytest.mark.parametrize("folder", folders(), ids=lambda f: "moe-oracle" if f == ROOT else f.name)
def test_every_distribution_ships_the_apache_license(folder: Path) -> None:
    meta = project(folder)
    assert meta["license"] == "Apache-2.0" and meta["license-files"] == ["LICENSE"]
    text = (folder / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("folder", folders(), ids=lambda f: "moe-oracle" if f == ROOT else f.name)
def test_readme_is_written_for_the_package_page(folder: Path) -> None:
    meta = project(folder)
    readme = (folder / meta["readme"]).read_text()
    assert readme.startswith(f"# {meta['name']}\n")
    assert "pip install -e" not in readme and "../" not in readme and "shared/" not in readme
    assert not re.search(r"\]\((?!https?://)[^)]*\)", readme), "relative links do not resolve on a package page"
    assert re.search(rf"pip install '?{re.escape(meta['name'])}(\[|\b)", readme)
    words = " ".join(readme.split())
    assert "moe-oracle repository" in words and "Apache-2.0" in words


@pytest.mark.parametrize("name", PACKAGES)
def test_readme_names_every_backend_of_its_package(name: str) -> None:
    readme = (ROOT / "packages" / name / "README.md").read_text()
    backends = [s.name for s in moe_oracle.registry().specs() if s.distribution == name]
    assert backends or name not in VENDORS[:3]
    for backend in backends:
        assert f"`{backend}`" in readme, f"{name}'s README does not name its backend {backend}"


@pytest.mark.parametrize("name", VENDORS)
def test_vendor_packages_bound_core_to_its_minor_series(name: str) -> None:
    [req] = [Requirement(r) for r in project(ROOT / "packages" / name)["dependencies"]]
    major, minor, _ = moe_oracle.__version__.split(".")
    assert req.name == "moe-oracle-core" and str(req.specifier) == f"<{major}.{int(minor) + 1},>={major}.{minor}"
    assert req.specifier.contains(moe_oracle.__version__)


def test_extras_are_bounded_and_match_the_supported_torch() -> None:
    extras = {}
    for folder in folders():
        meta = project(folder)
        for extra, reqs in meta.get("optional-dependencies", {}).items():
            for text in reqs:
                req = Requirement(text)
                assert any(s.operator in ("==", "<", "<=", "~=") for s in req.specifier), f"{meta['name']}[{extra}]: {text}"
                extras[(meta["name"], extra)] = req
    assert str(extras[("moe-oracle-cpu", "zen")].specifier) == f"=={SUPPORTED_TORCH}.1"      # zentorch's build for it
    assert str(extras[("moe-oracle-core", "triton")].specifier) == "==3.6.0"                 # what torch 2.13 ships
    assert extras[("moe-oracle-core", "plot")].name == "matplotlib"
    assert str(extras[("moe-oracle", "plot")]) == f"moe-oracle-core[plot]=={moe_oracle.__version__}"
    assert extras[("moe-oracle-rocm", "aiter")].specifier.contains("0.1.7.post2.dev18")     # AITER's dev releases


def test_changelog_covers_this_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog") and f"## {moe_oracle.__version__}" in text
