"""The paper's experiment end to end: presets, per-method runs, the ablation and the symmetry check.

It sits above the audit and the generators and is what joins them: importing it registers the four
built-in methods with the audit (:func:`weightspace.audit.register_zoo_method`), so zoos their data
settings built are scored their way.
"""

from functools import partial

from ..audit.zoo_methods import register_zoo_method
from ..generative import methods as _methods
from .ablation import ABLATIONS, Relative, ablation_figure, run_ablation
from .presets import AS_PUBLISHED, PAPER_SIGMAS, PRESETS
from .run import method_part, run_ablation_study, run_method, run_study, verdict_lines
from .symmetry_check import symmetry_check, symmetry_figure

for _name in _methods.METHODS:
    register_zoo_method(_name, partial(_methods.method_module, _name))

__all__ = [
    "ABLATIONS",
    "AS_PUBLISHED",
    "PAPER_SIGMAS",
    "PRESETS",
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
