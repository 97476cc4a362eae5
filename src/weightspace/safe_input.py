"""Untrusted input, checked in one place: bounded readers, paths confined to a root, claimed outputs.

Every file weightspace reads from a user (configs, zoo descriptions and indexes, checkpoint headers,
Hugging Face index files, IDX data) goes through a reader here that checks a size before it reads,
expands or decompresses more, and every path taken from such a file is resolved inside its root.
Commands write only into a directory that is new or carries their own marker. Each refusal is a
:class:`~weightspace.errors.WeightspaceError` whose one-line message names the file, key or
argument and what was expected.
"""

from __future__ import annotations

import gzip
import json
import math
import numbers
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np
import yaml

from .errors import (
    CheckpointError,
    ConfigError,
    DataNotFoundError,
    IdxFormatError,
    InputError,
    OutputError,
    WeightspaceError,
)

# Bounds. A real config is a few hundred bytes and a few dozen nodes; a zoo.json a few kilobytes.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000  # after alias expansion: what the loaded document would hold
MAX_CONFIG_DEPTH = 32
MAX_JSON_BYTES = 64 << 20
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on its JSON header
MAX_IDX_BYTES = 1 << 30  # Fashion-MNIST's training images are 47 MB
SQLITE_BUSY_TIMEOUT_S = 60.0
# SQLite virtual-machine steps one connection may run (one operation on an index, a few queries): a
# second or two, plus one step per byte of the database, so that an index of any size can be read
# whole (about 52 steps per row of some 210 bytes) while the work a hostile file can cause grows
# only with its size. Measured in benchmarks/hostile_input.py.
SQLITE_STEPS = 20_000_000
_SQLITE_STEPS_PER_CHECK = 10_000

OUTPUT_MARKER = ".weightspace-output.json"


# ---------------------------------------------------------------------------------------- files
def read_bytes(path: str | os.PathLike, limit: int, what: str, error: type[WeightspaceError] = InputError) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (no directories, FIFOs or devices)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except OSError as e:
        raise error(f"{what} {path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path}: expected a regular file, got a {'directory' if stat.S_ISDIR(st.st_mode) else 'special file'}")
    if st.st_size > limit:
        raise error(f"{what} {path}: {st.st_size} bytes, more than the {limit} allowed")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"{what} {path}: cannot read it ({e.strerror})") from None
    if len(data) > limit:  # grew since stat
        raise error(f"{what} {path}: more than the {limit} bytes allowed")
    return data


def read_json(path: str | os.PathLike, what: str, *, limit: int = MAX_JSON_BYTES,
              error: type[WeightspaceError] = InputError):
    """A JSON file of at most ``limit`` bytes; NaN and infinities are refused."""
    return parse_json(read_bytes(path, limit, what, error), f"{path}: not a valid {what}", error)


def parse_json(data: bytes | str, what: str, error: type[WeightspaceError] = InputError):
    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    try:
        return json.loads(data, parse_constant=refuse)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{what}: not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None


def read_yaml(path: str | os.PathLike, what: str = "config", *, max_bytes: int = MAX_CONFIG_BYTES,
              max_nodes: int = MAX_CONFIG_NODES, max_depth: int = MAX_CONFIG_DEPTH):
    """A YAML document (safe tags only), refused before it is built if the file, the document it
    expands to (anchors and aliases counted at every use) or its nesting is too large."""
    text = read_bytes(path, max_bytes, what, ConfigError)
    return parse_yaml(text, f"{what} {path}", max_nodes=max_nodes, max_depth=max_depth)


def parse_yaml(text: str | bytes, what: str, *, max_nodes: int = MAX_CONFIG_NODES, max_depth: int = MAX_CONFIG_DEPTH):
    """:func:`read_yaml` for text already in hand (a ``--set`` value, say)."""
    try:
        loader = yaml.SafeLoader(text)
    except (yaml.YAMLError, UnicodeDecodeError) as e:  # the reader checks the characters first
        raise ConfigError(f"{what}: not valid YAML: {' '.join(str(e).split())[:300]}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_size(node, what, max_nodes, max_depth)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what}: not valid YAML: {' '.join(str(e).split())[:300]}") from None
    except RecursionError:
        raise ConfigError(f"{what}: nested too deeply (at most {max_depth} levels)") from None
    finally:
        loader.dispose()


def _check_yaml_size(root: yaml.Node, what: str, max_nodes: int, max_depth: int) -> None:
    """Count the nodes the document expands to; an alias counts its whole subtree every time."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) → (expanded nodes, depth)
    active: set[int] = set()

    def visit(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(f"{what}: an anchor refers to itself (a recursive document)")
        active.add(key)
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        count, depth = 1, 0
        for child in children:
            c, d = visit(child)
            count, depth = count + c, max(depth, d)
            if count > max_nodes:
                raise ConfigError(f"{what}: expands to more than {max_nodes} values (anchors and aliases "
                                  "count at every use); write the values out or shorten the file")
        depth += 1
        if depth > max_depth:
            raise ConfigError(f"{what}: nested more than {max_depth} levels deep")
        active.discard(key)
        sizes[key] = (count, depth)
        return count, depth

    visit(root)


# ---------------------------------------------------------------------------------------- paths
def inside_root(root: str | os.PathLike, rel, what: str) -> Path:
    """``root / rel`` for a relative path ``rel`` taken from an untrusted file, refused when it is not
    a plain relative path or when it (through symlinks too) resolves outside ``root``."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
        raise InputError(f"{what}: expected a relative file path inside {root}, got {rel!r}")
    parts = PurePosixPath(rel)
    if parts.is_absolute() or ".." in parts.parts:
        raise InputError(f"{what}: {rel!r} points outside {root}; only paths inside it are read")
    base = Path(root).resolve()
    target = (base / parts).resolve()
    if not target.is_relative_to(base):
        raise InputError(f"{what}: {rel!r} is a link to {target}, outside {root}; only files inside it are read")
    return Path(root) / parts


def safe_name(value, what: str) -> str:
    """A name that becomes one path component: letters, digits, '.', '_', '-', not starting with '.'."""
    import re

    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}", value):
        raise ConfigError(f"{what}: expected a plain name of 1-128 characters from [A-Za-z0-9._-] not starting "
                          f"with '.', got {value!r}")
    return value


# ---------------------------------------------------------------------------------------- SQLite
class BoundedConnection(sqlite3.Connection):
    """An SQLite connection whose statements together run at most ``budget`` steps of SQLite's
    virtual machine, so that a query over an untrusted index (an endless recursive view or
    condition) ends. A statement stopped for it raises ``sqlite3.OperationalError`` ("interrupted")
    with :attr:`over_budget` set; see :func:`sqlite_over_budget`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0
        self.budget = SQLITE_STEPS
        self.set_progress_handler(self._count, _SQLITE_STEPS_PER_CHECK)

    def _count(self) -> bool:
        self.steps += _SQLITE_STEPS_PER_CHECK
        return self.over_budget

    @property
    def over_budget(self) -> bool:
        return self.steps > self.budget


def sqlite_over_budget(con: BoundedConnection, error: sqlite3.Error) -> bool:
    """Whether ``error`` is a statement stopped for running past its budget. A Ctrl-C also stops a
    statement this way (Python hands it to the progress handler, which cannot raise): that one is
    raised again as ``KeyboardInterrupt``."""
    if getattr(error, "sqlite_errorname", None) != "SQLITE_INTERRUPT":
        return False
    if not con.over_budget:
        raise KeyboardInterrupt from None
    return True


def connect_sqlite(path: str | os.PathLike, *, write: bool = False) -> BoundedConnection:
    """A connection to an index whose statements together may run :data:`SQLITE_STEPS` steps plus one
    per byte of the database and its write-ahead log (:class:`BoundedConnection`).
    Readers cannot write through it (``query_only``). Where the storage is writable they open it as
    writers do, so that SQLite removes its WAL side files when the last connection closes (a
    ``mode=ro`` connection leaves them behind in the zoo); where it is not, ``mode=ro``, and if the
    side files cannot be made there either, ``immutable=1``: nothing can write to such storage anyway."""
    path = Path(path)
    if not write and not path.is_file():  # sqlite3 would create an empty database there
        raise sqlite3.OperationalError(f"no index file {path}")
    options = {"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None, "factory": BoundedConnection}
    if write or (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK) and not _read_only_mount(path)):
        con = sqlite3.connect(path, **options)
        if not write:
            con.execute("PRAGMA query_only = 1")
        return _budgeted(con, path)
    uri = f"file:{quote(str(path.resolve()))}"
    con = sqlite3.connect(f"{uri}?mode=ro", uri=True, **options)
    try:
        con.execute("PRAGMA schema_version").fetchone()
        return _budgeted(con, path)
    except sqlite3.OperationalError:
        con.close()
    return _budgeted(sqlite3.connect(f"{uri}?immutable=1", uri=True, **options), path)


def _budgeted(con: BoundedConnection, path: Path) -> BoundedConnection:
    size = 0
    for file in (path, path.with_name(f"{path.name}-wal")):
        try:
            size += os.stat(file).st_size
        except OSError:
            pass
    con.steps, con.budget = 0, SQLITE_STEPS + size
    return con


def check_sqlite_schema(con: sqlite3.Connection, what: str, tables: Mapping[str, Sequence[tuple[str, str]]],
                        *, error: type[WeightspaceError] = InputError) -> None:
    """Before the first query: the database holds plain tables and their indexes only (no view,
    whose query its author wrote runs on every read; no trigger, whose statements run on every write;
    no virtual table, which is code, not rows), and each table of ``tables`` has exactly the columns
    ``(name, type)`` given, in order, each declared with the type's affinity (as SQLite derives it
    from the declared type: ``INT`` is an INTEGER column, a ``CREATE TABLE ... AS SELECT`` copy keeps
    its columns' affinities)."""
    objects = con.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    for kind, name, sql in objects:
        if kind in ("view", "trigger"):
            runs = "a query its author wrote on every read" if kind == "view" else "statements on every write"
            raise error(f"{what}: holds {kind} {name!r}, which would run {runs}; only plain tables are read")
        if kind == "table" and (sql or "").startswith("CREATE VIRTUAL TABLE"):
            raise error(f"{what}: holds virtual table {name!r} (code of a module, not stored rows); only plain "
                        "tables are read")
    present = {name for kind, name, _ in objects if kind == "table"}
    for table, columns in tables.items():
        expected = ", ".join(f"{c} {t}" for c, t in columns)
        if table not in present:
            raise error(f"{what}: has no table {table!r} (with columns {expected})")
        found = [(r[1], r[2], r[6]) for r in con.execute("SELECT * FROM pragma_table_xinfo(?)", (table,))]
        names = [n for n, _, _ in found]
        if names != [c for c, _ in columns] or any(hidden for _, _, hidden in found):
            raise error(f"{what}: table {table!r} has columns {', '.join(names)}; expected {expected}")
        for (column, declared, _), (_, wanted) in zip(found, columns):
            if sqlite_affinity(declared) != sqlite_affinity(wanted):
                raise error(f"{what}: column {table}.{column} is declared {declared or 'without a type'!r} "
                            f"({sqlite_affinity(declared)} affinity); expected {wanted}")


def sqlite_affinity(declared: str) -> str:
    """The type affinity SQLite gives a column of this declared type (its rules, in their order)."""
    upper = (declared or "").upper()
    if "INT" in upper:
        return "INTEGER"
    if any(s in upper for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper:
        return "BLOB"
    if any(s in upper for s in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------- headers
def read_safetensors_header(path: str | os.PathLike, *, limit: int = MAX_HEADER_BYTES) -> tuple[dict, int]:
    """The JSON header of a .safetensors file and the size of the data after it, reading no more
    than the header's length once that length is checked against ``limit`` and the file's size."""
    path = Path(path)

    size = os.stat(path).st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: file is {size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(prefix, "little")
        if n > limit:
            raise CheckpointError(f"{path}: header length {n} is more than the {limit} bytes allowed")
        if n > size - 8:
            raise CheckpointError(f"{path}: header length {n} exceeds file size {size}")
        raw = f.read(n)
    header = parse_json(raw, f"{path}: malformed header", CheckpointError)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: malformed header (a JSON {type(header).__name__}, not an object)")
    return header, size - 8 - n


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path, *, limit: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) with its header fully checked before the data is read:
    a ``.gz`` is decompressed only as far as its header says (plus one byte, to catch extra data)."""

    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise IdxFormatError(f"IDX file {path} is too short ({len(head)} bytes) to hold a header")
            zero0, zero1, code, ndim = head
            if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES or ndim == 0:
                raise IdxFormatError(
                    f"IDX file {path} has bad magic number 0x{int.from_bytes(head, 'big'):08X}; expected 0x0000TTNN "
                    f"with type TT in {{{', '.join(f'{c:02X}' for c in _IDX_DTYPES)}}} and NN >= 1 dimensions "
                    "(e.g. 0x00000803 for images, 0x00000801 for labels)"
                )
            raw_dims = fh.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise IdxFormatError(f"IDX file {path} is truncated inside its header ({4 + len(raw_dims)} bytes)")
            dims = tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            dtype = _IDX_DTYPES[code]
            n_bytes = math.prod(dims) * dtype.itemsize
            if n_bytes > limit:
                raise IdxFormatError(f"IDX file {path}: header says shape {dims} of {dtype.name} ({n_bytes} bytes), "
                                     f"more than the {limit} allowed")
            data = fh.read(n_bytes + 1)
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"IDX file not found: {path}") from exc
    except (EOFError, OSError, gzip.BadGzipFile, ValueError) as exc:
        raise IdxFormatError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) != n_bytes:
        total = 4 + 4 * ndim + n_bytes
        found = "more" if len(data) > n_bytes else f"{4 + 4 * ndim + len(data)} bytes"
        what = "longer than its header says" if len(data) > n_bytes else "truncated"
        raise IdxFormatError(f"IDX file {path} is {what}: header says shape {dims} of {dtype.name} "
                             f"({total} bytes in all), file has {found}")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=True)


# ---------------------------------------------------------------------------------------- values
def check_int(value, key: str, lo: int | None = None, hi: int | None = None, *, none: bool = False) -> int | None:
    """An integer (not a bool, not a float; a NumPy integer is one) in ``[lo, hi]``, as an ``int``;
    ``None`` when ``none`` allows it."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (lo is not None and value < lo) or (
            hi is not None and value > hi):
        raise ConfigError(f"{key}: expected an integer{_range(lo, hi)}{' or null' if none else ''}, got {value!r}")
    return int(value)


def check_float(value, key: str, lo: float | None = None, hi: float | None = None, *, open_lo: bool = False,
                open_hi: bool = False) -> float:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``, ``[lo, hi)`` with ``open_hi``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if open_lo else value >= lo
    if ok and hi is not None:
        ok = value < hi if open_hi else value <= hi
    if not ok:
        low = "" if lo is None else f"{'>' if open_lo else '≥'} {lo}"
        high = "" if hi is None else f"{'<' if open_hi else '≤'} {hi}"
        bounds = " and ".join(b for b in (low, high) if b)
        raise ConfigError(f"{key}: expected a finite number{' ' + bounds if bounds else ''}, got {value!r}")
    return float(value)


def check_list(value, key: str, item, *, min_len: int = 0, max_len: int = 10_000) -> list:
    """A YAML list (a string is not a list of its characters), each item checked by ``item(v, key[i])``."""
    if not isinstance(value, (list, tuple)) or not min_len <= len(value) <= max_len:
        raise ConfigError(f"{key}: expected a list of {min_len} to {max_len} items, got {value!r}")
    return [item(v, f"{key}[{i}]") for i, v in enumerate(value)]


def check_str(value, key: str, choices=None) -> str:
    if not isinstance(value, str) or (choices is not None and value not in choices):
        expected = f"one of {list(choices)}" if choices is not None else "a string"
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    return value


def check_bool(value, key: str) -> bool:
    """A bool (or a NumPy bool), as a ``bool``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return bool(value)


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    return f" ≥ {lo}" if lo is not None else (f" ≤ {hi}" if hi is not None else "")


# ---------------------------------------------------------------------------------------- outputs
def prepare_output(path: str | os.PathLike, command: str, *, force: bool = False, what: str = "--out") -> Path:
    """Claim ``path`` for ``command``: it must be new (or empty), or carry the marker ``command``
    left there; anything else is refused unless ``force``. The marker is then (re)written."""
    _claim(Path(path), command, force, what)
    return Path(path)


def _claim(out: Path, command: str, force: bool, what: str) -> Path | None:
    """:func:`prepare_output`; returns the topmost directory this call created (None if ``out``
    existed). Each level is made with one ``mkdir``, so of two processes racing only one owns it."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputError(f"{what} {out}: exists and is not a directory")
        owner = output_owner(out)
        if owner != command and not force and any(out.iterdir()):
            made_by = f"was made by 'weightspace {owner}'" if owner else f"has files and no {OUTPUT_MARKER}"
            raise OutputError(f"{what} {out}: not an output of 'weightspace {command}' (it {made_by}); choose a new "
                              "directory, or pass --force to write into it")
    created = None
    try:
        for level in [*reversed(out.absolute().parents), out.absolute()]:
            try:
                level.mkdir()
                created = created or level
            except FileExistsError:
                if not level.is_dir():
                    raise OutputError(f"{what} {out}: {level} exists and is not a directory") from None
        (out / OUTPUT_MARKER).write_text(json.dumps({"command": command}) + "\n")
    except OSError as e:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise OutputError(f"{what} {out}: cannot create it ({e.strerror or e})") from None
    return created


def output_owner(directory: Path) -> str | None:
    """The command named by a directory's marker, if it has a readable one."""
    try:
        data = json.loads(read_bytes(directory / OUTPUT_MARKER, 4096, "marker"))
    except (WeightspaceError, ValueError):
        return None
    return data.get("command") if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def claim_output_file(path: str | os.PathLike, *, force: bool = False, what: str = "--out") -> Path:
    """A single output file (and its settings ``.yaml`` beside it): refused if either already exists,
    unless ``force``; its folder must be a directory (created if missing)."""
    out = Path(path)
    for existing in (out, out.with_suffix(".yaml")):
        if (existing.exists() or existing.is_symlink()) and not force:
            raise OutputError(f"{what} {out}: {existing} exists; choose a new file, or pass --force to replace it")
    if out.is_dir():
        raise OutputError(f"{what} {out}: is a directory, not a file")
    if out.parent.exists() and not out.parent.is_dir():
        raise OutputError(f"{what} {out}: {out.parent} is not a directory")
    return out


@contextmanager
def claimed_output(path: str | os.PathLike, command: str, *, force: bool = False, what: str = "--out"
                   ) -> Iterator[Path]:
    """:func:`prepare_output`, and if the work inside fails (not when interrupted), remove the
    directories this call created, so a failed command leaves no half-made output. A directory that
    holds a zoo by then is kept: other writers may share it, and a rerun resumes it."""
    out = Path(path)
    created = _claim(out, command, force, what)
    try:
        yield out
    except Exception:
        if created is not None and not any(created.rglob("zoo.json")):
            shutil.rmtree(created, ignore_errors=True)
        raise
