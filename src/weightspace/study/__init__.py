"""The paper's experiment end to end: presets, per-method runs, the ablation and the symmetry check.
Each method's data setting comes from the registry (:mod:`weightspace.registry`)."""

from .ablation import ABLATIONS, Relative, ablation_figure, run_ablation
from .presets import PRESETS
from .pipeline import (
    MethodPart,
    MethodResult,
    method_part,
    run_ablation_study,
    run_method,
    run_study,
    verdict_lines,
)
from .symmetry_check import symmetry_check, symmetry_figure

__all__ = [
    "ABLATIONS",
    "PRESETS",
    "MethodPart",
    "MethodResult",
    "Relative",
    "ablation_figure",
    "method_part",
    "run_ablation",
    "run_ablation_study",
    "run_method",
    "run_study",
    "symmetry_check",
    "symmetry_figure",
    "verdict_lines",
]
