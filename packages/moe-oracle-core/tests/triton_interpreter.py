"""Imported first by the interpreter tests: it skips the importing test module where the Triton
kernels cannot run in the interpreter, and otherwise loads them in interpreter mode."""

from __future__ import annotations

import importlib.util

import pytest
import torch

if importlib.util.find_spec("triton") is None:  # importing triton here would fix the mode too early
    pytest.skip("triton is not installed", allow_module_level=True)
if torch.cuda.is_available():
    pytest.skip("interpreter tests run on CPU machines; GPUs run tests/gpu", allow_module_level=True)

from moe_oracle.triton.interpreter import load_interpreted_kernels

_why_not = load_interpreted_kernels()
if _why_not:
    pytest.skip(_why_not, allow_module_level=True)
