"""What several commands share: a zoo's readable summary, ``--set key=value`` options, outputs,
``--key``, ``--backend`` and ``--threads``."""

from __future__ import annotations

import argparse
import contextlib
import os

import numpy as np
import pandas as pd


def zoo_summary(zoo) -> str:
    """A readable description of a zoo: layout, data, and metrics per checkpoint epoch/step."""
    df = zoo.index()
    task = zoo.info.get("task", {})
    lines = [
        f"zoo        {zoo.root}",
        f"layout     {zoo.space.name}: {zoo.space.num_params} parameters in {len(zoo.space.entries)} tensors, "
        f"{len(zoo.space.groups)} permutation groups",
        f"data       {task.get('name')} {task.get('sizes', '')}",
        f"models     {len(df)} checkpoints from {df['run_id'].nunique() if len(df) else 0} runs",
        *([(f"ids        like {df['model_id'].iloc[-1]}; one model, as merge, align and barrier take it: "
            f"{zoo.root}::{df['model_id'].iloc[-1]}")] if len(df) else []),
        f"--where    {where_columns(df)}",
    ]
    metric_cols = [c for c in ("train_acc", "val_acc", "test_acc", "test_loss") if c in df and df[c].notna().any()]
    if len(df) and metric_cols:
        key = next((k for k in ("epoch", "step") if df[k].notna().any()), None)
        by = df.groupby(key) if key else df.assign(all="all").groupby("all")
        with np.errstate(all="ignore"):  # metrics near the float limits: shown as they are, no warning
            table = by[metric_cols].agg(["mean", "min", "max"]).round(3)
        table.insert(0, ("models", "n"), by.size())
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            lines += ["", f"metrics by {key or 'zoo'}:", table.to_string()]
        hp = [c for c in df.columns if c.startswith("hp_") and df[c].nunique() > 1]
        if hp:
            lines += ["", "varied hyper-parameters: " + ", ".join(
                f"{c[3:]} ({df[c].nunique()} values)" for c in hp)]
    return "\n".join(lines)


def where_columns(index: pd.DataFrame) -> str:
    """What ``--where`` filters on, as one line: the index columns, and this zoo's hyper-parameters."""
    from ..zoo.store import METRICS

    hp = [c[3:] for c in index.columns if c.startswith("hp_")]
    key = next((k for k in ("epoch", "step") if index[k].notna().any()), None)
    last = f'; e.g. "{key} = {index[key].max()}"' if key else ""
    return (f"SQL over model_id, run_id, seed, epoch, step, {', '.join(METRICS)}; hyper-parameters as "
            f"json_extract(hparams, '$.{hp[0] if hp else 'NAME'}')" + (f" ({', '.join(hp)})" if hp else "") + last)


def parse_sets(items: list[str]) -> dict:
    """``key=value`` options; values are YAML scalars (numbers, booleans, strings, null) or flat
    lists of them."""
    from ..errors import ConfigError
    from ..safe_input import parse_yaml

    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--set {item!r}: expected key=value with a plain key")
        parsed = parse_yaml(value, f"--set {key}", max_nodes=1000, max_depth=2)
        scalars = parsed if isinstance(parsed, list) else [parsed]
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in scalars):
            raise ConfigError(f"--set {key}: expected a number, boolean, string or list of them, got {value!r}")
        out[key] = parsed
    return out


def add_output(parser, command: str, *, positional: bool = False, default: str | None = None,
               required: bool = False, help: str = "output directory") -> None:
    """The output-directory argument of a command, claimed by ``weightspace.cli.main`` before the
    command runs (see :func:`weightspace.safe_input.claimed_output`) and removed again if it fails:
    a directory must be new or made by the same command, unless ``--force``."""
    if positional:
        parser.add_argument("out", help=help)
    else:
        parser.add_argument("--out", default=default, required=required, help=help)
    parser.add_argument("--force", action="store_true",
                        help="write into an existing directory this command did not make")
    parser.set_defaults(output_command=command)


def add_output_file(parser, command: str, *, positional: bool = False, default: str | None = None,
                    required: bool = False, help: str = "output .safetensors file, or a folder") -> None:
    """The output of a command that writes one model: a ``.safetensors`` file, never replacing an
    existing one unless ``--force``, or a folder, claimed as :func:`add_output` claims it."""
    add_output(parser, command, positional=positional, default=default, required=required, help=help)
    parser.set_defaults(output_is_file=True)


def add_key_option(parser, applies_to: str = "the checkpoint file") -> None:
    """``--key NAME``: the entry of a training checkpoint that holds the model's state dict."""
    parser.add_argument("--key", metavar="NAME", help=f"the entry of {applies_to} (.pt, .pth, .bin, .ckpt) that "
                        "holds the model's state dict, e.g. model_state, ema or state_dict.model (nested: a.b or "
                        "a/b); default: found, and named in a note")


def add_backend_options(parser) -> None:
    """``--backend local|ray`` and ``--address``, for commands whose heavy parts can run on Ray."""
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: run here; ray: in blocks as Ray tasks (pip install 'weightspace[ray]')")
    parser.add_argument("--address", help="with --backend ray: a running Ray cluster's head (host:port); "
                        "default: start a local Ray")


def backend_from(args):
    """The backend the options name (``None`` for local), checked before any work starts."""
    from ..parallel import resolve_backend

    return resolve_backend(args.backend, args.address)


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_count(text: str) -> int:
    """``--threads N``: an integer in the range a zoo config's ``threads`` takes."""
    from ..zoo.config import MAX_THREADS

    n = int(text) if text.strip().isdigit() else 0
    if not 1 <= n <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected an integer in [1, {MAX_THREADS}] (this machine has {cores()} "
                                         f"cores), got {text!r}")
    return n


def add_threads(parser, *, default: int | None = 1, help: str | None = None) -> None:
    """``--threads N``: the CPU threads a command computes with, set by ``weightspace.cli.main`` before
    it runs (see :func:`threads_set`). One by default, as each study worker: these small models gain
    little from more threads, and lose most of their speed to a busy neighbour when torch's threads
    wait on each other."""
    parser.add_argument("--threads", type=thread_count, default=default, metavar="N", help=help or (
        "CPU threads for torch, BLAS and OpenMP (default 1: small models gain little from more, and "
        "slow down badly beside another busy process)"))


@contextlib.contextmanager
def threads_set(n: int):
    """torch's intra-op threads, and every BLAS and OpenMP library loaded, at ``n`` threads; the
    previous counts come back on exit. torch's inter-op pool can be sized only once per process,
    before it has been used: it is set where that is still possible."""
    import torch
    from threadpoolctl import threadpool_limits

    if torch.get_num_interop_threads() != n:
        with contextlib.suppress(RuntimeError):  # already used or set in this process: it stays as it is
            torch.set_num_interop_threads(n)
    previous = torch.get_num_threads()
    with threadpool_limits(limits=n):
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(previous)
