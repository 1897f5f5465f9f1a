"""The generic oracle, the scheme oracles, reports and overrides."""

from moe_oracle.oracle.base import MoEKernelOracle
from moe_oracle.oracle.report import CandidateReport, HintRecord, Selection, SelectionReport
from moe_oracle.oracle.schemes import (
    ORACLE_CLASSES,
    Fp8Oracle,
    Int8Oracle,
    Mxfp4Oracle,
    Mxfp8Oracle,
    Nvfp4Oracle,
    UnquantizedOracle,
    W4A8Fp8Oracle,
    W4A8Int8Oracle,
    WNA16Oracle,
    oracle_for,
)

__all__ = [
    "ORACLE_CLASSES", "CandidateReport", "Fp8Oracle", "HintRecord", "Int8Oracle", "MoEKernelOracle",
    "Mxfp4Oracle", "Mxfp8Oracle", "Nvfp4Oracle", "Selection", "SelectionReport", "UnquantizedOracle",
    "W4A8Fp8Oracle", "W4A8Int8Oracle", "WNA16Oracle", "oracle_for",
]
