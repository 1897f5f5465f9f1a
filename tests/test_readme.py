"""The README as a new user reads it: its Python blocks run as written, its figures name machines."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch

import moe_oracle

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def python_block(title: str) -> str:
    [block] = re.findall(r"```python\n(.*?)```", section(title), re.S)
    return block


def test_the_api_block_runs_as_written() -> None:
    code = python_block("The API in a dozen lines")
    namespace: dict[str, object] = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)
    layer, config = namespace["layer"], namespace["config"]
    assert isinstance(layer, moe_oracle.MoELayer) and isinstance(config, moe_oracle.MoEConfig)
    out = namespace["out"]
    assert isinstance(out, torch.Tensor) and out.shape == (4, config.hidden_size) and bool(out.isfinite().all())
    # both forwards of the block give the same output: forward_routed with route() is what layer() does
    again = layer(namespace["hidden_states"], namespace["router_logits"])
    torch.testing.assert_close(again, out)
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("Fp8Oracle for E=8 top_k=2 H=256 I=512") and "chosen: triton" in lines
    assert lines[-1] == f"{layer.selection.backend} (4, {config.hidden_size})"


def test_the_plugin_block_builds_valid_specs() -> None:
    namespace: dict[str, object] = {}
    exec(compile(python_block("How a vendor adds a backend"), "README.md", "exec"), namespace)
    spec, hint = namespace["backends"]()  # type: ignore[operator]
    assert isinstance(spec, moe_oracle.BackendSpec) and isinstance(hint, moe_oracle.PriorityHint)
    assert spec.plugin_api == moe_oracle.PLUGIN_API_VERSION
    reg = moe_oracle.Registry()
    reg.register_all([spec, hint], source="moe-oracle-myvendor")      # passes every check at registration
    assert reg.get("my_kernel").distribution == "moe-oracle-myvendor"


def test_every_measured_figure_names_its_machine() -> None:
    bullets = re.findall(r"^- \*\*(.+?)\*\*(.*?)(?=^- \*\*|\Z)", section("Measured"), re.S | re.M)
    assert [title for title, _ in bullets][-1] == "Selection" and len(bullets) >= 3
    machines = ("NVIDIA H100 80GB HBM3", "H100", "AMD EPYC Zen 4")
    for title, body in bullets:
        text = f"{title} {' '.join(body.split())}"
        assert any(m in text for m in machines), f"the figure {title!r} does not name its machine"
        assert re.search(r"20\d\d-\d\d-\d\d", text), f"the figure {title!r} has no date"
