"""Weight synthesis: merge methods (one registry), averaging (SWA, EMA, soups), interpolation, loss
barriers and REPAIR."""

from .api import merge_state_dicts, merge_weights
from .registry import METHODS, MergeMethod, get_method

__all__ = ["METHODS", "MergeMethod", "get_method", "merge_state_dicts", "merge_weights"]
