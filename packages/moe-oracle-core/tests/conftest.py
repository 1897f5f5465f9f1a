"""Shared by core's tests: the helper modules beside them are importable by name, and a fixture
turns the Triton interpreter on while kernels run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # hf_configs.py, triton_interpreter.py


@pytest.fixture
def triton_interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreter reads TRITON_INTERPRET while kernels run too, not only at import."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
