"""What the merge methods share: the dtype they compute in."""

from __future__ import annotations

import torch
from torch import Tensor


def work_dtype(t: Tensor) -> torch.dtype:
    """float64 stays float64; everything else (float16, bfloat16, float32) is computed in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32
