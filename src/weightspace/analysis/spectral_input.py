"""What the spectral analyzer reads: any source as batched tensors, and checkpoints or Hugging Face
folders a few tensors at a time (:data:`STREAM_BYTES` of float32 matrices), so that a model larger
than memory is analysed one layer after another."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor

from ..errors import ConfigError, WeightspaceError
from ..space import WeightSpace

STREAM_BYTES = 256 << 20  # a model read from a path is analysed this much (as float32) at a time


def open_model(path: Path, key: str | None = None):
    """A checkpoint or Hugging Face folder with ``specs`` and ``read(names)``: safetensors lazily,
    anything else (pickle checkpoints, their entry ``key``) read whole."""
    from ..io import load_weights
    from ..shards import SafetensorsSource, TensorSpec

    if key is None and SafetensorsSource.is_source(path):
        return SafetensorsSource(path)
    tensors, _ = load_weights(path, key)
    return _Loaded(tensors, {n: TensorSpec(tuple(t.shape), t.dtype) for n, t in tensors.items()})


class _Loaded(NamedTuple):
    tensors: dict[str, Tensor]
    specs: dict

    def read(self, names):
        return {n: self.tensors[n] for n in names}


def analysable(t: Tensor) -> Tensor:
    """bfloat16 as its float32 values (exact; numpy and LAPACK take no bfloat16), else as it is."""
    return t.float() if t.dtype == torch.bfloat16 else t


def stream_groups(specs: Mapping, limit: int) -> Iterator[list[str]]:
    """Tensor names in order, in groups of at most ``limit`` bytes as float32 (a larger tensor alone)."""
    group, size = [], 0
    for name, spec in specs.items():
        nbytes = spec.numel * 4
        if group and size + nbytes > limit:
            yield group
            group, size = [], 0
        group.append(name)
        size += nbytes
    if group:
        yield group


def describe_source(source) -> str:
    return repr(str(source)) if isinstance(source, (str, os.PathLike)) else f"a {type(source).__name__}"


def as_batched(source, *, where: str | None = None, key: str | None = None
               ) -> tuple[dict[str, Tensor], list[str], pd.DataFrame | None]:
    """``{name: Tensor[B, *shape]}``, model names and (for a zoo) its index rows, from any source
    (``key``: see :meth:`SpectralAnalyzer.fit`)."""
    from ..io import load_weights
    from ..zoo import Zoo

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir() and (path / "zoo.json").is_file():
            if key is not None:
                raise ConfigError(f"--key {key!r}: {path} is a zoo; --key picks an entry of a training checkpoint file")
            source = Zoo.open(path)
        else:
            sd, _ = load_weights(path, key)
            return {k: v.unsqueeze(0) for k, v in sd.items()}, [path.name], None
    if isinstance(source, Zoo):
        weights, table = source.load(where)
        if len(table) == 0:
            raise WeightspaceError(f"zoo {source.root}: no models" + (f" match {where!r}" if where else ""))
        batched, _, _ = as_batched((weights, source.space))
        return batched, [str(m) for m in table["model_id"]], table
    if isinstance(source, Mapping):
        return {k: v.unsqueeze(0) for k, v in source.items()}, ["model"], None
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[1], WeightSpace):
        weights, space = source
        if weights.dim() != 2 or weights.shape[1] != space.num_params:
            raise WeightspaceError(
                f"expected weights [N, {space.num_params}] for layout {space.name!r}, got {tuple(weights.shape)}")
        n = weights.shape[0]
        batched = {k: weights[:, space.slice(k)].reshape(n, *space.spec(k).shape) for k in space.names}
        return batched, [str(i) for i in range(n)], None
    raise WeightspaceError(
        f"cannot analyse a {type(source).__name__}: expected a state dict, a checkpoint path, an HF folder, "
        "a zoo or (weights [N, P], WeightSpace)")
