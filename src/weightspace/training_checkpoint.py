"""The model's tensors inside a training checkpoint.

Training scripts save more than the model: ``{"step", "model_state", "optimizer_state"}``
(resemblyzer), ``{"epoch", "model_state_dict", "optimizer_state_dict", "loss"}`` (PyTorch's
tutorials), Lightning's ``{"state_dict", "loops", "callbacks", "optimizer_states", ...}``,
``{"model", "ema", "optimizer", ...}``. :func:`find_state_dict` finds the state dict among the plain
containers torch's weights-only unpickler returns (it never sees any other object), or takes the one
a key names, and says in one line what it took.

Without a key, the candidates are the dicts with string keys (the file itself included) that hold
tensors and, below them, nothing but tensors, nested dicts of them and plain values (numbers,
strings); lists, optimizer states (keyed by parameter number) and the like rule a dict out. Of a
candidate nested in another, the inner one is taken when it is named like a container
(:data:`CONTAINER_NAMES`: ``state_dict``, ``model``, ``ema``, ...) or has a sibling with the same
tensor names and shapes (``{"student": ..., "teacher": ...}``), else the outer one (a nested state
dict, like ``{"encoder": {...}, "head.weight": ...}``). Of the rest the largest by parameter count
wins, unless another holds at least :data:`AMBIGUOUS_SHARE` of its parameters (a model and its EMA
copy): then the choice is the user's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import AmbiguousCheckpointError, CheckpointError

StateDict = dict[str, torch.Tensor]

# Names under which training scripts keep a model's state dict (or its EMA copy).
CONTAINER_NAMES = frozenset({
    "state_dict", "model_state_dict", "model_state", "model", "net", "network", "params", "weights",
    "ema", "model_ema", "ema_model", "state_dict_ema", "ema_state_dict", "ema_state", "ema_params",
    "ema_weights",
})
AMBIGUOUS_SHARE = 0.9
# What wrappers add to every name, removed: DataParallel and DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = {"module.": "DataParallel", "_orig_mod.": "torch.compile"}
MAX_DEPTH = 32
MAX_ENTRIES = 100_000  # shared sub-dicts count at every use, so a pickle cannot expand without bound
_SHOWN = 4


@dataclass(frozen=True)
class FoundStateDict:
    state_dict: StateDict
    key: str | None  # where it was in the file ('a.b' for nested keys); None: the file itself
    note: str | None  # one line on what was taken, left out or renamed; None for a plain state dict


@dataclass(frozen=True)
class _Candidate:
    path: tuple
    node: dict
    tensors: int
    params: int

    @property
    def key(self) -> str:
        return ".".join(str(p) for p in self.path)

    def describe(self) -> str:
        return f"'{self.key}' ({_size(self.tensors, self.params)})"


def find_state_dict(tree, key: str | None = None) -> FoundStateDict:
    """The state dict in ``tree`` (what ``torch.load(..., weights_only=True)`` returned): the one at
    ``key`` (``'a.b'`` or ``'a/b'`` for nested entries; a part that is no entry selects the names that
    start with it, and removes it from them), else the one the module docstring's rule finds.

    Raises :class:`CheckpointError` (without the file's name) when there is none, or
    :class:`AmbiguousCheckpointError` when two are about the same size."""
    if not isinstance(tree, dict):
        raise CheckpointError(f"holds {_a(type(tree).__name__)}, not a dict of tensors")
    budget = [MAX_ENTRIES]
    if key is not None:
        found_key, state_dict, left_out = _at_key(tree, key, budget)
        return _found(state_dict, found_key, left_out, others=[], chosen_by_user=True)
    candidates = _candidates(tree, budget)
    if not candidates:
        raise CheckpointError(f"holds no dict of tensors (top-level entries: {_entries(tree)})")
    best, *others = sorted(candidates, key=lambda c: -c.params)
    rivals = [c for c in others if c.params >= AMBIGUOUS_SHARE * best.params]
    if rivals:
        tied = [best, *rivals]
        raise AmbiguousCheckpointError(
            f"holds {len(tied)} dicts of tensors of about the same size, "
            f"{' and '.join(c.describe() for c in tied[:_SHOWN])} (a model and its EMA copy?); "
            f"choose one with --key, e.g. --key {tied[0].key}", [c.key for c in tied])
    state_dict, left_out = _flatten(best.node, budget)
    return _found(state_dict, best.key if best.path else None, left_out, others, chosen_by_user=False)


def _found(state_dict: StateDict, key: str | None, left_out: list[str], others: list[_Candidate],
           chosen_by_user: bool) -> FoundStateDict:
    if not state_dict:
        raise CheckpointError(f"holds no tensors under '{key}'" if key else "holds no tensors")
    notes = []
    if key is not None:
        where = "under --key" if chosen_by_user else "under"
        params = sum(t.numel() for t in state_dict.values())
        notes.append(f"read the state dict {where} '{key}' ({_size(len(state_dict), params)})")
    if others:
        notes.append("also there: " + ", ".join(c.describe() for c in others[:_SHOWN])
                     + (", ..." if len(others) > _SHOWN else "") + "; --key NAME reads another")
    if left_out:
        what = "entry that is not a tensor" if len(left_out) == 1 else "entries that are not tensors"
        notes.append(f"left out {len(left_out)} {what} ({_listed(left_out)})")
    removed = []
    while prefix := next((p for p in WRAPPER_PREFIXES if all(n.startswith(p) for n in state_dict)), None):
        state_dict = {name.removeprefix(prefix): t for name, t in state_dict.items()}
        removed.append(f"'{prefix}' (added by {WRAPPER_PREFIXES[prefix]})")
    if removed:
        notes.append(f"removed {' and '.join(removed)} from every name")
    first = {name.split(".", 1)[0] for name in state_dict}
    if key is not None and len(first) == 1 and first <= CONTAINER_NAMES and all("." in n for n in state_dict):
        prefix = next(iter(first))  # Lightning's self.model, say
        notes.append(f"every name starts with '{prefix}.' (--key {key}.{prefix} reads them without it)")
    return FoundStateDict(state_dict, key, "; ".join(notes) or None)


# ---------------------------------------------------------------------------------- automatic choice
def _candidates(tree: dict, budget: list[int]) -> list[_Candidate]:
    """Every dict of tensors and plain values (see the module docstring), less those nested in
    another, outer before inner, in the file's order."""
    seen: set[int] = set()

    def visit(node: dict, path: tuple) -> tuple[int, int, bool, list[_Candidate]]:
        """(tensors, parameters, plain, candidates) at and below ``node``; plain: nothing but
        tensors, plain values and dicts of them with string keys."""
        if len(path) > MAX_DEPTH:
            raise CheckpointError(f"nested more than {MAX_DEPTH} dicts deep (at '{'.'.join(map(str, path[:8]))}...')")
        tensors = params = 0
        plain = True
        below: list[_Candidate] = []
        sizes: dict[tuple[int, int], list[dict]] = {}  # of the dicts in node that hold tensors
        for name, value in node.items():
            _spend(budget)
            if name == "_metadata":  # torch's record of module versions, not a tensor
                continue
            if not isinstance(name, str):
                plain = False
            elif isinstance(value, torch.Tensor):
                tensors, params = tensors + 1, params + value.numel()
            elif isinstance(value, dict):
                t, p, inner_plain, inner = visit(value, (*path, name))
                tensors, params, plain = tensors + t, params + p, plain and inner_plain
                below += inner
                if t:
                    sizes.setdefault((t, p), []).append(value)
            elif not _is_plain_value(value):
                plain = False
        if not (plain and tensors):
            return tensors, params, plain, below
        named = [c for c in below if c.path[-1] in CONTAINER_NAMES]
        if named or any(_copies(same_size, budget) for same_size in sizes.values()):
            return tensors, params, plain, named or below
        return tensors, params, plain, [_Candidate(path, node, tensors, params)]

    unique = []
    for c in visit(tree, ())[3]:  # one dict saved under two names is one candidate
        if id(c.node) not in seen:
            seen.add(id(c.node))
            unique.append(c)
    return unique


def _copies(dicts: list[dict], budget: list[int]) -> bool:
    """Whether two of ``dicts`` hold tensors of the same names and shapes (a model and its EMA, a
    student and its teacher: copies of one network, not parts of one)."""
    shapes = set()
    for d in dicts:
        flat, _ = _flatten(d, budget)
        signature = tuple((name, tuple(t.shape)) for name, t in flat.items())
        if signature in shapes:
            return True
        shapes.add(signature)
    return False


def _is_plain_value(value) -> bool:
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(isinstance(v, (bool, int, float, str, type(None))) for v in value)
    return not isinstance(value, dict)


# ---------------------------------------------------------------------------------- --key
def _at_key(tree: dict, key: str, budget: list[int]) -> tuple[str, StateDict, list[str]]:
    """Follow ``key`` through nested dicts (and lists, by index); a part that is no entry selects the
    flattened names that start with it."""
    if not isinstance(key, str) or not key.strip("./"):
        raise CheckpointError(f"--key {key!r}: expected an entry name such as 'model_state' or 'model/ema'")
    node, taken, rest = tree, [], [p for p in key.split("/") if p]
    while rest:
        part = rest.pop(0)
        entry = _entry(node, part)
        if entry is None:
            if not isinstance(node, dict):
                raise CheckpointError(f"no entry '{key}' (--key): '{'.'.join(taken)}' is "
                                      f"{_a(type(node).__name__)}, not a dict; {_suggest(tree, budget)}")
            state_dict, left_out = _flatten(node, budget)
            prefix = ".".join([part, *rest]) + "."
            selected = {name[len(prefix):]: t for name, t in state_dict.items() if name.startswith(prefix)}
            if not selected:
                raise CheckpointError(f"no entry '{key}' (--key); {_suggest(tree, budget)}")
            return key, selected, [n[len(prefix):] for n in left_out if n.startswith(prefix)]
        name, node, part_rest = entry
        taken.append(str(name))
        if part_rest:
            rest.insert(0, part_rest)
    if isinstance(node, torch.Tensor):
        raise CheckpointError(f"--key '{key}' names one tensor; give the dict that holds the model's tensors")
    if not isinstance(node, dict):
        raise CheckpointError(f"--key '{key}' is {_a(type(node).__name__)}, not a dict of tensors; "
                              f"{_suggest(tree, budget)}")
    state_dict, left_out = _flatten(node, budget)
    if not state_dict:
        raise CheckpointError(f"--key '{key}' names a dict that holds no tensors; {_suggest(tree, budget)}")
    return key, state_dict, left_out


def _entry(node, part: str):
    """``(name, value, what is left of part)`` of the longest entry of ``node`` that ``part`` starts
    with (entries may themselves hold dots), or None."""
    if isinstance(node, dict):
        best = None
        for name in node:
            text = str(name)
            if (part == text or part.startswith(text + ".")) and (best is None or len(text) > len(str(best))):
                best = name
        return None if best is None else (best, node[best], part[len(str(best)) + 1:])
    if isinstance(node, (list, tuple)):
        index, _, rest = part.partition(".")
        if index.isdigit() and int(index) < len(node):
            return int(index), node[int(index)], rest
    return None


def _suggest(tree: dict, budget: list[int]) -> str:
    try:
        candidates = _candidates(tree, budget)
    except CheckpointError:
        candidates = []
    found = f"dicts of tensors: {', '.join(c.describe() for c in candidates[:_SHOWN])}; " if candidates else ""
    return f"{found}top-level entries: {_entries(tree)}"


# ---------------------------------------------------------------------------------- flattening
def _flatten(tree: dict, budget: list[int]) -> tuple[StateDict, list[str]]:
    """Tensors under nested dicts with '.'-joined names, and the names of the entries left out
    (anything else; torch's ``_metadata`` silently)."""
    flat: StateDict = {}
    left_out: list[str] = []

    def visit(node: dict, prefix: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise CheckpointError(f"nested more than {MAX_DEPTH} dicts deep (at '{prefix[:200]}')")
        for key, value in node.items():
            _spend(budget)
            if key == "_metadata":
                continue
            name = f"{prefix}{key}"
            if isinstance(value, dict) and all(isinstance(k, str) for k in value):
                visit(value, f"{name}.", depth + 1)
            elif isinstance(value, torch.Tensor):
                if name in flat:
                    raise CheckpointError(f"two entries flatten to the same name {name!r}")
                flat[name] = value
            else:
                left_out.append(name)

    visit(tree, "", 0)
    return flat, left_out


def _spend(budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise CheckpointError(f"holds more than {MAX_ENTRIES:,} entries (counting shared ones at every use)")


def _entries(tree: dict) -> str:
    names = [str(k) for k in tree]
    return _listed(names) if names else "none"


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(n)[1:-1] if isinstance(n, str) else str(n) for n in names[:8])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 8 else "")


def _size(tensors: int, params: int) -> str:
    return f"{tensors} tensor{'s' * (tensors != 1)}, {params:,} parameter{'s' * (params != 1)}"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"
