"""The one JSON fallback: NumPy and torch values and paths become JSON; anything else is named."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from weightspace.jsonable import json_default, jsonable


def test_numpy_torch_and_paths_become_json():
    value = {"a": np.float32(0.5), "b": np.int64(3), "c": np.bool_(True), "d": torch.tensor(2.5),
             "e": np.arange(3), "f": torch.ones(2, 2), "g": Path("/x/y"), 1: (1, 2)}
    assert jsonable(value) == {"a": 0.5, "b": 3, "c": True, "d": 2.5, "e": [0, 1, 2], "f": [[1.0, 1.0], [1.0, 1.0]],
                               "g": "/x/y", "1": [1, 2]}
    assert json.loads(json.dumps(np.float64(0.1), default=json_default)) == 0.1


def test_anything_else_is_refused_by_type():
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        json.dumps({"x": object()}, default=json_default)


def test_jsonable_is_a_copy():
    info = {"nested": {"k": [1, 2]}}
    out = jsonable(info)
    out["nested"]["k"].append(3)
    assert info == {"nested": {"k": [1, 2]}}
