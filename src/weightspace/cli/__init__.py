"""The ``weightspace`` command: parse, call the library, print. Errors become one line, not a traceback.

Each command family lives in its own module with a ``register(subparsers)`` function; this file only
assembles them and turns errors into one line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections import Counter

from ..errors import WeightspaceError
from ..safe_input import claim_output_file, claimed_output
from . import analyze, generate, merge, predict_accuracy, regions, study, zoo
from .common import threads_set

COMMANDS = (study, zoo, generate, merge, analyze, predict_accuracy, regions)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (argparse's own exit status, 2), like every other error."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="weightspace", description="Trained neural-network weights as data.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def _claimed(args):
    """The command's output directory, claimed for it (see ``common.add_output``), or nothing. A
    command whose output may be one ``.safetensors`` file (``common.add_output_file``) refuses to
    replace an existing file unless ``--force``; given a folder, it claims the folder."""
    command = getattr(args, "output_command", None)
    if command is None or getattr(args, "out", None) is None:
        return contextlib.nullcontext()
    if getattr(args, "output_is_file", False) and str(args.out).endswith(".safetensors"):
        claim_output_file(args.out, force=args.force)
        return contextlib.nullcontext()
    return claimed_output(args.out, command, force=args.force)


def _threads(args):
    """The threads a command computes with (``common.add_threads``), set before it runs; a command
    without ``--threads`` (nothing to compute) leaves them alone."""
    if not hasattr(args, "threads"):
        return contextlib.nullcontext()
    return threads_set(args.threads or 1)  # None: a zoo config's own count, else one


class _Notes(logging.Handler):
    """The library's notes (which entry of a training checkpoint was read, ...) on stderr, one line
    each, as ``note: FILE: ...``; a note repeated for other files is shown once, and counted."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.seen[text] += 1
        if self.seen[text] == 1:
            source = getattr(record, "checkpoint", None)
            print(f"note: {f'{source}: ' if source else ''}{text}", file=sys.stderr)

    def repeats(self) -> int:
        return sum(n - 1 for n in self.seen.values())


@contextlib.contextmanager
def _notes_on_stderr():
    logger, notes = logging.getLogger("weightspace"), _Notes()
    level = logger.level
    logger.addHandler(notes)
    logger.setLevel(logging.INFO)
    try:
        yield notes
    finally:
        logger.removeHandler(notes)
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success; 2 with one line on stderr for bad input (files, arguments, values); 1
    with one line for an unexpected error (``WEIGHTSPACE_TRACEBACK=1`` shows its traceback).
    Notes (``note: ...`` lines on stderr) may come before either."""
    args = build_parser().parse_args(argv)
    with _notes_on_stderr() as notes:
        return _run(args, notes)


def _run(args, notes: _Notes) -> int:
    try:
        with _claimed(args), _threads(args):
            args.func(args)
        sys.stdout.flush()
        if notes.repeats():
            print(f"note: the same for {notes.repeats()} more files", file=sys.stderr)
    except WeightspaceError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished checkpoints are kept; run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`weightspace zoo info | head -1`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or _one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if os.environ.get("WEIGHTSPACE_TRACEBACK"):
            raise
        print(f"error: unexpected {type(e).__name__}: {_one_line(e)} (a bug in weightspace; "
              "WEIGHTSPACE_TRACEBACK=1 shows where)", file=sys.stderr)
        return 1
    return 0


def _one_line(error: BaseException) -> str:
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())[:2000]
