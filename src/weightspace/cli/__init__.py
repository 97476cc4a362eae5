"""The ``weightspace`` command: parse, call the library, print. Errors become one line, not a traceback.

Each command family lives in its own module with a ``register(subparsers)`` function; this file only
assembles them and turns errors into one line.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import WeightspaceError
from . import generate, merge, study, zoo

COMMANDS = (study, zoo, generate, merge)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="weightspace", description="Trained neural-network weights as data.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except WeightspaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished checkpoints are kept; run the same command to resume", file=sys.stderr)
        return 130
    return 0

