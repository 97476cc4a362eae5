"""WeightSpace: the layout of an architecture's tensors, and the neuron permutations it admits.

A model is a state dict; a population of models is a ``Tensor[N, P]`` of flattened weights. The
layout records which slice of a vector is which tensor, so both views convert exactly and cheaply
(``unflatten`` returns views, not copies).
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .errors import LayoutError

StateDict = dict[str, Tensor]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class PermutationGroup:
    """Hidden neurons that may be reordered together without changing the function.

    ``axes`` lists every (tensor name, axis) indexed by these neurons: the producing layer's output
    axis, its bias, BatchNorm parameters and running statistics, and the next layer's input axis.
    """

    name: str
    size: int
    axes: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class WeightSpace:
    entries: tuple[TensorSpec, ...]
    groups: tuple[PermutationGroup, ...] = ()
    name: str = "custom"
    _offsets: dict[str, tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.entries:
            raise LayoutError(f"layout '{self.name}' has no floating-point tensors")
        offsets, start = {}, 0
        for e in self.entries:
            if e.name in offsets:
                raise LayoutError(f"layout '{self.name}': tensor name '{e.name}' appears twice")
            offsets[e.name] = (start, start + e.numel)
            start += e.numel
        object.__setattr__(self, "_offsets", offsets)
        for g in self.groups:
            for tname, axis in g.axes:
                if tname not in offsets:
                    raise LayoutError(f"permutation group '{g.name}' names unknown tensor '{tname}'")
                shape = self.spec(tname).shape
                if axis >= len(shape) or shape[axis] != g.size:
                    raise LayoutError(
                        f"permutation group '{g.name}' (size {g.size}) does not match axis {axis} "
                        f"of '{tname}' with shape {tuple(shape)}"
                    )

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, Tensor], groups: Sequence[PermutationGroup] = (), name: str = "custom"
    ) -> WeightSpace:
        """Layout of every floating-point tensor, in state-dict order.

        Integer buffers such as BatchNorm's ``num_batches_tracked`` carry no weight information and
        are left out.
        """
        entries = tuple(
            TensorSpec(k, tuple(v.shape), v.dtype) for k, v in state_dict.items() if v.is_floating_point()
        )
        return cls(entries, tuple(groups), name)

    @classmethod
    def from_module(cls, module: nn.Module, groups: Sequence[PermutationGroup] = (), name: str | None = None):
        return cls.from_state_dict(module.state_dict(), groups, name or type(module).__name__.lower())

    # ---------------------------------------------------------------- properties
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    @property
    def num_params(self) -> int:
        return sum(e.numel for e in self.entries)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of flat vectors: the promotion of every entry's dtype (float32 for usual nets)."""
        dt = self.entries[0].dtype
        for e in self.entries[1:]:
            dt = torch.promote_types(dt, e.dtype)
        return dt

    def spec(self, name: str) -> TensorSpec:
        for e in self.entries:
            if e.name == name:
                return e
        raise LayoutError(f"layout '{self.name}' has no tensor '{name}'; it has {list(self.names)}")

    def slice(self, name: str) -> slice:
        if name not in self._offsets:
            raise LayoutError(f"layout '{self.name}' has no tensor '{name}'; it has {list(self.names)}")
        return slice(*self._offsets[name])

    def group(self, name: str) -> PermutationGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise LayoutError(f"layout '{self.name}' has no permutation group '{name}'")

    # ---------------------------------------------------------------- conversions
    def flatten(self, state_dict: Mapping[str, Tensor]) -> Tensor:
        """One model's tensors → ``Tensor[P]`` in layout order (extra integer buffers are ignored)."""
        self._check(state_dict)
        dt = self.dtype
        return torch.cat([state_dict[e.name].detach().reshape(-1).to(dt) for e in self.entries])

    def unflatten(self, vector: Tensor, *, cast: bool = True) -> StateDict:
        """``Tensor[..., P]`` → state dict of ``[..., *shape]`` tensors (views when dtypes agree).

        ``cast=False`` keeps the vector's dtype (batched computation in float64, say).
        """
        if vector.shape[-1] != self.num_params:
            raise LayoutError(
                f"expected {self.num_params} parameters for layout '{self.name}', got {vector.shape[-1]}"
            )
        lead = tuple(vector.shape[:-1])
        out = {}
        for e in self.entries:
            a, b = self._offsets[e.name]
            t = vector[..., a:b].reshape(*lead, *e.shape)
            out[e.name] = t.to(e.dtype) if cast else t
        return out

    def stack(self, state_dicts: Iterable[Mapping[str, Tensor]]) -> Tensor:
        """N models → ``Tensor[N, P]``."""
        vecs = [self.flatten(sd) for sd in state_dicts]
        if not vecs:
            return torch.zeros(0, self.num_params, dtype=self.dtype)
        return torch.stack(vecs)

    def unstack(self, weights: Tensor) -> list[StateDict]:
        """``Tensor[N, P]`` → N state dicts (each holding its own contiguous copies)."""
        return [{k: v.clone() for k, v in self.unflatten(w).items()} for w in weights]

    def mask(self, patterns: Sequence[str]) -> Tensor:
        """Boolean ``Tensor[P]``: True on the coordinates of tensors whose names match a glob pattern."""
        m = torch.zeros(self.num_params, dtype=torch.bool)
        matched = set()
        for e in self.entries:
            if any(fnmatch.fnmatchcase(e.name, p) for p in patterns):
                m[self.slice(e.name)] = True
                matched.add(e.name)
        if not matched:
            raise LayoutError(f"no tensor of layout '{self.name}' matches {list(patterns)}; names: {list(self.names)}")
        return m

    def _check(self, state_dict: Mapping[str, Tensor]) -> None:
        missing = [e.name for e in self.entries if e.name not in state_dict]
        if missing:
            raise LayoutError(f"state dict lacks tensors {missing} of layout '{self.name}'")
        for e in self.entries:
            shape = tuple(state_dict[e.name].shape)
            if shape != e.shape:
                raise LayoutError(f"tensor '{e.name}' has shape {shape}, layout '{self.name}' expects {e.shape}")

    # ---------------------------------------------------------------- permutations
    def coordinate_permutation(self, perms: Mapping[str, Tensor]) -> Tensor:
        """Index ``Tensor[..., P]`` such that ``w[..., idx]`` applies the given neuron permutations.

        ``perms[g]`` is ``LongTensor[..., size]``: new neuron i of group g is old neuron ``perms[g][i]``.
        Leading dims give one permutation per model. Permuting neurons only reorders coordinates, so a
        whole population is permuted by one gather.
        """
        unknown = set(perms) - {g.name for g in self.groups}
        if unknown:
            raise LayoutError(f"unknown permutation groups {sorted(unknown)} for layout '{self.name}'")
        lead = next((tuple(p.shape[:-1]) for p in perms.values()), ())
        base = torch.arange(self.num_params).expand(*lead, self.num_params)
        pieces = {e.name: base[..., slice(*self._offsets[e.name])].reshape(*lead, *e.shape) for e in self.entries}
        for g in self.groups:
            if g.name not in perms:
                continue
            p = perms[g.name]
            if p.shape[-1] != g.size:
                raise LayoutError(f"permutation for group '{g.name}' has length {p.shape[-1]}, expected {g.size}")
            for tname, axis in g.axes:
                t = pieces[tname]
                ax = len(lead) + axis
                shape = [1] * t.dim()
                shape[: len(lead)] = lead
                shape[ax] = g.size
                index = p.reshape(shape).expand_as(t)
                pieces[tname] = torch.gather(t, ax, index)
        return torch.cat([pieces[e.name].reshape(*lead, -1) for e in self.entries], dim=-1)

    # ---------------------------------------------------------------- serialisation
    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "entries": [[e.name, list(e.shape), str(e.dtype).removeprefix("torch.")] for e in self.entries],
                "groups": [[g.name, g.size, [list(a) for a in g.axes]] for g in self.groups],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WeightSpace:
        """The layout :meth:`to_json` wrote; anything else (another dtype than a floating-point one,
        negative or oversized shapes, malformed groups) is a :class:`LayoutError`."""
        try:
            d = json.loads(text)
            entries = tuple(TensorSpec(_name(n), _shape(s), _dtype(dt)) for n, s, dt in d["entries"])
            groups = tuple(PermutationGroup(_name(n), _dim(size), tuple((_name(t), _dim(a)) for t, a in axes))
                           for n, size, axes in d["groups"])
            name = _name(d["name"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LayoutError(f"malformed layout: {type(e).__name__}: {str(e)[:200]}") from None
        if sum(e.numel for e in entries) > MAX_PARAMS:
            raise LayoutError(f"layout '{name}' has more than {MAX_PARAMS} parameters")
        return cls(entries, groups, name)


MAX_PARAMS = 1 << 34  # per model; far above the nets weights-as-data work studies
_DTYPES = {str(t).removeprefix("torch."): t for t in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def _name(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a name string, got {value!r}")
    return value


def _dim(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PARAMS:
        raise ValueError(f"expected a size in [0, {MAX_PARAMS}], got {value!r}")
    return value


def _shape(value) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > 8:
        raise ValueError(f"expected a shape of at most 8 sizes, got {value!r}")
    return tuple(_dim(v) for v in value)


def _dtype(value) -> torch.dtype:
    if value not in _DTYPES:
        raise ValueError(f"dtype {value!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[value]
