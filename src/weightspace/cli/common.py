"""What several commands share: a zoo's readable summary and ``--set key=value`` options."""

from __future__ import annotations

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
    ]
    metric_cols = [c for c in ("train_acc", "val_acc", "test_acc", "test_loss") if c in df and df[c].notna().any()]
    if len(df) and metric_cols:
        key = next((k for k in ("epoch", "step") if df[k].notna().any()), None)
        by = df.groupby(key) if key else df.assign(all="all").groupby("all")
        table = by[metric_cols].agg(["mean", "min", "max"]).round(3)
        table.insert(0, ("models", "n"), by.size())
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            lines += ["", f"metrics by {key or 'zoo'}:", table.to_string()]
        hp = [c for c in df.columns if c.startswith("hp_") and df[c].nunique() > 1]
        if hp:
            lines += ["", "varied hyper-parameters: " + ", ".join(
                f"{c[3:]} ({df[c].nunique()} values)" for c in hp)]
    return "\n".join(lines)


def parse_sets(items: list[str]) -> dict:
    """``key=value`` options; values are read as YAML scalars (numbers, booleans, lists)."""
    import yaml

    from ..errors import ConfigError

    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


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
