"""Zoo: a directory of checkpoints of one WeightSpace, indexed by SQLite.

::

    ZOO/
      zoo.json                        format version, layout, architecture, task, training config
      index.sqlite                    one row per checkpoint (WAL mode)
      models/<model_id>.safetensors   the model's state dict; its metadata repeats the row's fields
      .staging/                       files being written, not yet indexed

Writers may run in many processes at once. A file is written and fsynced in ``.staging/`` first
(no lock held), then, inside one SQLite write transaction, its row is inserted with
``INSERT OR IGNORE`` and the file is renamed into ``models/`` only if the row went in. So two
writers racing on one id keep exactly one row *and* the file that row's checksum describes, and a
kill leaves either nothing visible or an unindexed file in ``models/`` that :meth:`Zoo.verify`
reports as an orphan. SQLite's WAL needs a local file system (not NFS).

A zoo may come from someone else, so every connection to its index first checks the schema (plain
tables, no views or triggers, the expected columns), and its queries run within a budget of steps
(:func:`~weightspace.safe_input.connect_sqlite`).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from ..errors import CheckpointError, InputError, LayoutError, ZooError
from ..io import (
    atomic_write,
    fsync_dir,
    load_checkpoint,
    save_checkpoint,
    sha256_file,
)
from ..jsonable import json_default
from ..safe_input import (
    check_sqlite_schema,
    connect_sqlite,
    inside_root,
    prepare_output,
    read_json,
    sqlite_over_budget,
)
from ..space import StateDict, WeightSpace
from .check import clean, inspect, verify
from .layout import FORMAT, FORMAT_VERSION, INDEX, MODELS, STAGING, ZOO_JSON

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
COLUMN_TYPES = (("model_id", "TEXT"), ("run_id", "TEXT"), ("seed", "INTEGER"), ("epoch", "INTEGER"),
                ("step", "INTEGER"), ("hparams", "TEXT"), *((m, "REAL") for m in METRICS), ("file", "TEXT"),
                ("sha256", "TEXT"), ("created", "REAL"), ("extra", "TEXT"))
COLUMNS = tuple(name for name, _ in COLUMN_TYPES)
# Record keys the store fills in itself; a record may not set them.
_RESERVED = {"model_id", "file", "sha256", "created", "extra"}
_ORDER = "ORDER BY run_id, epoch, step, model_id"
_HINT_IDS = 20_000  # an unknown id is matched against the known ones up to this many

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    seed INTEGER NOT NULL,
    epoch INTEGER,
    step INTEGER,
    hparams TEXT NOT NULL,
    {", ".join(f"{m} REAL" for m in METRICS)},
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created REAL NOT NULL,
    extra TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS models_by_run ON models (run_id, epoch, step);
"""

# A file name on every common file system, with room for the staging and temp-file suffixes.
_MODEL_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
# A staged file (``stage_many``), or the temporary file it is written through (``save_checkpoint``).
_STAGED = re.compile(r"\.?(.+)\.\d+\.[0-9a-f]{8}\.safetensors(?:\.\d+\.[0-9a-f]{8}\.tmp)?")


def check_model_id(model_id: str) -> str:
    """Model ids become file names, so they are restricted to a portable, path-free alphabet."""
    if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id):
        raise ValueError(
            f"model id {model_id!r} is not a safe file name: use 1-128 characters from "
            "[A-Za-z0-9._-], not starting with '.'"
        )
    return model_id


class Zoo:
    """A checkpoint directory of one layout; build it with :meth:`create` or :meth:`open`."""

    def __init__(self, root: Path, space: WeightSpace, info: dict):
        self.root = Path(root)
        self.space = space
        self.info = info
        self.checksums = True  # load() checks each file against the index's checksum

    def __repr__(self) -> str:
        return f"Zoo({str(self.root)!r}, layout={self.space.name!r}, models={len(self)})"

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls, root: str | os.PathLike, space: WeightSpace, *, architecture: dict, task: dict, config: dict | None = None
    ) -> Zoo:
        """Make a new zoo, or open the one already at ``root`` if its layout is ``space``.

        An existing zoo.json is never rewritten, so resuming a job cannot change a zoo's recorded
        configuration; between concurrent creators the first one's zoo.json wins.
        """
        root = Path(root)
        if (root / ZOO_JSON).exists():
            return cls.open(root)._require_layout(space)
        info = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "layout": json.loads(space.to_json()),
            "architecture": architecture,
            "task": task,
            "config": config or {},
            "created": time.time(),
        }
        text = _dumps(info, "zoo.json", indent=2)  # fail on unserialisable configs before touching disk
        for d in (root, root / MODELS, root / STAGING):
            d.mkdir(parents=True, exist_ok=True)
        try:
            con = connect_sqlite(root / INDEX, write=True)
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(_SCHEMA)
            finally:
                con.close()
        except sqlite3.Error as e:
            raise ZooError(f"{root / INDEX}: cannot make the zoo's index there ({e})") from None
        # zoo.json last: its presence is what makes the directory a zoo.
        if not atomic_write(root / ZOO_JSON, text.encode(), replace=False):
            return cls.open(root)._require_layout(space)
        return cls(root, space, json.loads(text))  # as open() would read it: tuples become lists

    @classmethod
    def open(cls, root: str | os.PathLike, *, verify: bool = False, checksums: bool = True) -> Zoo:
        """The zoo at ``root``. ``verify`` checks every file now; ``checksums=False`` skips the
        check of each file's checksum as :meth:`load` reads it (for storage one trusts)."""
        root = Path(root)
        missing = [n for n in (ZOO_JSON, INDEX) if not (root / n).is_file()]
        if missing:
            raise ZooError(f"{root} is not a zoo: it has no {' or '.join(missing)} (make one with Zoo.create)")
        info = read_json(root / ZOO_JSON, "zoo description", error=ZooError)
        if not isinstance(info, dict):
            raise ZooError(f"{root / ZOO_JSON}: not a readable zoo description (a JSON {type(info).__name__})")
        fmt, version = info.get("format"), info.get("version")
        if fmt != FORMAT or not isinstance(version, int) or version > FORMAT_VERSION:
            raise ZooError(
                f"{root / ZOO_JSON}: format {fmt!r} version {version!r} is not one this weightspace reads "
                f"({FORMAT!r} up to version {FORMAT_VERSION})"
            )
        try:
            space = WeightSpace.from_json(json.dumps(info["layout"]))
        except (KeyError, LayoutError) as e:
            raise ZooError(f"{root / ZOO_JSON}: the layout is missing or malformed ({e})") from None
        for key in ("architecture", "task", "config"):
            if not isinstance(info.get(key, {}), dict):
                raise ZooError(f"{root / ZOO_JSON}: '{key}' must be a JSON object, got {info[key]!r:.80}")
        zoo = cls(root, space, info)
        zoo.checksums = checksums
        zoo._check_index()
        if verify:
            problems, _ = zoo.inspect()
            if problems:
                raise ZooError(f"zoo {root} has {len(problems)} bad entries:\n  " + "\n  ".join(problems))
        return zoo

    def _require_layout(self, space: WeightSpace) -> Zoo:
        if self.space.entries == space.entries:
            return self
        ours, theirs = self.space, space
        diff = next(
            (f"first difference: {a} vs {b}" for a, b in zip(ours.entries, theirs.entries) if a != b),
            f"{len(ours.entries)} vs {len(theirs.entries)} tensors",
        )
        raise ZooError(
            f"zoo {self.root} holds layout '{ours.name}' ({ours.num_params} parameters) but layout "
            f"'{theirs.name}' ({theirs.num_params} parameters) was given; {diff}. Use another directory."
        )

    # ------------------------------------------------------------------ writing
    def add(self, model_id: str, weights: Tensor | Mapping[str, Tensor], record: dict) -> bool:
        """Add one checkpoint; False (nothing written) if ``model_id`` is already in the index."""
        return self.add_many([(model_id, weights, record)]) == 1

    def add_many(self, items: Iterable[tuple[str, Tensor | Mapping[str, Tensor], dict]]) -> int:
        """Add checkpoints whose ids are not indexed yet; returns how many were added.

        Every item is checked before any file is written, all files are written, then every row
        goes in in one transaction. Repeated ids within ``items`` keep the first.
        """
        return self.commit_staged(self.stage_many(items))

    def stage_many(self, items: Iterable[tuple[str, Tensor | Mapping[str, Tensor], dict]], *,
                   skip_indexed: bool = True) -> list[tuple[Path, dict]]:
        """The first half of :meth:`add_many`: checkpoint files written and fsynced in ``.staging/``
        with their rows, ready for :meth:`commit_staged` — here or in another process that sees the
        same directory, so that one process can be the index's only writer while many write files
        (SQLite's WAL wants every process that opens the index on one host). With
        ``skip_indexed=False`` the index is not read at all; ids it already has are ignored at commit.
        """
        items = list(items)
        for model_id, _, _ in items:
            check_model_id(model_id)
        existing = self._existing([m for m, _, _ in items]) if skip_indexed else set()
        created = time.time()
        todo, seen = [], set(existing)
        for model_id, weights, record in items:
            if model_id in seen:
                continue
            seen.add(model_id)
            todo.append((self._state_dict(model_id, weights), self._row(model_id, record, created)))
        if not todo:
            return []
        staging = self.root / STAGING
        staging.mkdir(exist_ok=True)
        staged = []
        try:
            for state_dict, row in todo:
                path = staging / f"{row['model_id']}.{os.getpid()}.{secrets.token_hex(4)}.safetensors"
                save_checkpoint(path, state_dict, self._file_metadata(row))
                staged.append((path, row))
                row["sha256"] = sha256_file(path)
        except BaseException:
            _unlink(staged)
            raise
        return staged

    def commit_staged(self, staged: list[tuple[Path, dict]]) -> int:
        """Index staged checkpoints (from :meth:`stage_many`); returns how many were new. Staged
        files not taken (their id was indexed meanwhile) are deleted."""
        try:
            return self._commit(staged) if staged else 0
        finally:
            _unlink(staged)

    def _commit(self, staged: list[tuple[Path, dict]]) -> int:
        """Insert rows and move their files into models/ under one write lock (see module doc)."""
        placeholders = ", ".join(f":{c}" for c in COLUMNS)
        insert = f"INSERT OR IGNORE INTO models ({', '.join(COLUMNS)}) VALUES ({placeholders})"
        added = 0
        with self._db(write=True) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                for path, row in staged:
                    if con.execute(insert, row).rowcount == 1:
                        os.replace(path, self.root / row["file"])
                        added += 1
                if added:
                    fsync_dir(self.root / MODELS)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return added

    def _state_dict(self, model_id: str, weights: Tensor | Mapping[str, Tensor]) -> StateDict:
        """The model as the layout's state dict, so every file in a zoo has the same tensors and dtypes."""
        space = self.space
        if isinstance(weights, Tensor):
            if weights.dim() != 1 or weights.shape[0] != space.num_params:
                raise LayoutError(
                    f"model {model_id!r}: expected a Tensor[{space.num_params}] for layout '{space.name}', "
                    f"got shape {tuple(weights.shape)}"
                )
            vector = weights.detach().cpu()
        elif isinstance(weights, Mapping):
            try:
                vector = space.flatten(weights).cpu()
            except LayoutError as e:
                raise LayoutError(f"model {model_id!r}: {e}") from e
        else:
            kind = type(weights).__name__
            raise TypeError(f"model {model_id!r}: weights must be a Tensor or a state dict, got {kind}")
        return space.unflatten(vector)

    def _row(self, model_id: str, record: Mapping, created: float) -> dict:
        rec = dict(record)
        reserved = sorted(_RESERVED & rec.keys())
        if reserved:
            raise ValueError(f"model {model_id!r}: record keys {reserved} are set by the zoo, not the caller")
        for key in ("run_id", "seed"):
            if key not in rec:
                raise ValueError(f"model {model_id!r}: record lacks '{key}'")
        run_id = rec.pop("run_id")
        if not isinstance(run_id, str):
            raise ValueError(f"model {model_id!r}: record['run_id'] must be a str, got {type(run_id).__name__}")  # noqa: TRY004
        hparams = rec.pop("hparams", None) or {}
        if not isinstance(hparams, Mapping):
            raise ValueError(f"model {model_id!r}: record['hparams'] must be a dict, got {type(hparams).__name__}")  # noqa: TRY004
        row = {
            "model_id": model_id,
            "run_id": run_id,
            "seed": _as_int(model_id, "seed", rec.pop("seed")),
            "epoch": _as_int(model_id, "epoch", rec.pop("epoch", None)),
            "step": _as_int(model_id, "step", rec.pop("step", None)),
            "hparams": _dumps(dict(hparams), f"model {model_id!r}: record['hparams']"),
        }
        for m in METRICS:
            value = rec.pop(m, None)
            try:
                row[m] = None if value is None else float(value)
            except (TypeError, ValueError) as e:
                raise ValueError(f"model {model_id!r}: record[{m!r}] must be a number or None, got {value!r}") from e
        row["file"] = f"{MODELS}/{model_id}.safetensors"
        row["sha256"] = None
        row["created"] = created
        row["extra"] = _dumps(rec, f"model {model_id!r}: extra record keys {sorted(rec)}")
        return row

    def _file_metadata(self, row: dict) -> dict[str, str]:
        """The row (less its checksum) and the layout as strings: a file alone says what it is."""
        meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in row.items() if k != "sha256"}
        meta["layout"] = self.space.to_json()
        meta["architecture"] = json.dumps(self.info.get("architecture", {}))
        return meta

    # ------------------------------------------------------------------ reading
    @contextmanager
    def _db(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection per operation: nothing to share wrongly across threads, forks or processes.
        Readers open the index read-only, so a zoo on read-only storage can be read. The schema is
        checked before the first query, and the operation's queries share one budget of work."""
        index = self.root / INDEX
        try:
            con = connect_sqlite(index, write=write)
        except sqlite3.Error as e:
            raise ZooError(f"{index}: cannot open the index ({e})") from None
        try:
            check_sqlite_schema(con, f"{index}: not a zoo index", {"models": COLUMN_TYPES}, error=ZooError)
            yield con
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise
            if sqlite_over_budget(con, e):
                raise ZooError(f"{index}: a query ran past its budget of {con.budget:,} SQLite steps; the index is "
                               "damaged or not a zoo index") from None
            raise ZooError(f"{index}: not a readable zoo index ({e})") from None
        finally:
            con.close()

    def _check_index(self) -> None:
        """The index is an SQLite database of the zoo's schema (a corrupt, foreign or hostile file is
        named here, not as a query error later)."""
        with self._db():
            pass

    def _existing(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        unique = sorted(set(ids))
        with self._db() as con:
            for i in range(0, len(unique), 500):  # below SQLite's limit on bound variables
                chunk = unique[i : i + 500]
                sql = f"SELECT model_id FROM models WHERE model_id IN ({', '.join('?' * len(chunk))})"
                found.update(r[0] for r in con.execute(sql, chunk))
        return found

    def files(self) -> set[str]:
        """The file of every indexed model, as the index names it (relative to the zoo)."""
        with self._db() as con:
            return {r[0] for r in con.execute("SELECT file FROM models")}

    def ids(self) -> set[str]:
        with self._db() as con:
            return {r[0] for r in con.execute("SELECT model_id FROM models")}

    def __len__(self) -> int:
        with self._db() as con:
            return con.execute("SELECT COUNT(*) FROM models").fetchone()[0]

    def index(self, where: str | None = None, params: Sequence = ()) -> pd.DataFrame:
        """The index as a DataFrame, with each hyperparameter also in its own ``hp_<name>`` column.

        ``where`` is an SQL condition over the index columns with ``?`` placeholders for ``params``;
        hyperparameters are JSON in the ``hparams`` column, e.g. ``json_extract(hparams, '$.lr') > ?``.
        """
        sql = f"SELECT {', '.join(COLUMNS)} FROM models"
        if where:
            sql += f" WHERE ({where})"
        with self._db() as con:
            try:
                rows = con.execute(f"{sql} {_ORDER}", tuple(params)).fetchall()
            except sqlite3.Error as e:
                if not where:  # a corrupt index: _db names it
                    raise
                if sqlite_over_budget(con, e):
                    raise ZooError(f"where condition {where!r}: the query ran past its budget of {con.budget:,} "
                                   "SQLite steps (an endless or very costly condition, such as an unbounded WITH "
                                   "RECURSIVE); simplify it") from None
                raise ZooError(
                    f"bad where clause {where!r} with params {tuple(params)!r}: {e}. Columns: {', '.join(COLUMNS)}; "
                    "hyperparameters are filtered with json_extract(hparams, '$.name')"
                ) from e
        self._check_rows(rows)  # before pandas turns a column of ints and NULLs into floats and NaN
        df = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
        for c in ("seed", "epoch", "step"):
            df[c] = df[c].astype("Int64")
        for c in (*METRICS, "created"):
            df[c] = df[c].astype("float64")
        hp = pd.json_normalize([json.loads(h) for h in df["hparams"]]).add_prefix("hp_")
        hp.index = df.index
        return pd.concat([df, hp], axis=1)

    def _check_rows(self, rows: Sequence[tuple]) -> None:
        """Every value of the index, as SQLite returns it (one tuple per row, in ``COLUMNS`` order), has
        the type the store writes; a row that does not is named."""
        at = {c: i for i, c in enumerate(COLUMNS)}

        def bad(column: str, ok) -> None:
            wrong = [(r[at["model_id"]], r[at[column]]) for r in rows if not ok(r[at[column]])]
            if wrong:
                raise ZooError(f"{self.root / INDEX}: model {wrong[0][0]!r} has {column} = {wrong[0][1]!r:.80}; "
                               "the index is damaged; fix that row or rebuild the zoo")

        def is_int(v, none=False):
            return (none and v is None) or (isinstance(v, int) and not isinstance(v, bool))

        def is_json_object(v):
            try:
                return isinstance(v, str) and isinstance(json.loads(v), dict)
            except ValueError:
                return False

        bad("model_id", lambda v: isinstance(v, str))
        bad("run_id", lambda v: isinstance(v, str))
        bad("seed", is_int)
        bad("epoch", lambda v: is_int(v, none=True))
        bad("step", lambda v: is_int(v, none=True))
        bad("hparams", is_json_object)
        bad("extra", is_json_object)
        bad("file", lambda v: isinstance(v, str))
        bad("sha256", lambda v: isinstance(v, str) and len(v) == 64)
        for m in (*METRICS, "created"):
            bad(m, lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))

    def path_of(self, file) -> Path:
        """A file named by the index, refused unless it lies inside the zoo (no absolute paths,
        no '..', no symlinks out)."""
        try:
            return inside_root(self.root, file, f"{self.root / INDEX}: file")
        except InputError as e:
            raise ZooError(str(e)) from None

    def load(
        self, where: str | None = None, params: Sequence = (), *, ids: Sequence[str] | None = None,
        verify: bool | None = None,
    ) -> tuple[Tensor, pd.DataFrame]:
        """``Tensor[N, P]`` of the selected models and their index rows, in the same order.

        With ``ids``, rows come in that order (those not matching ``where`` are left out); ids not
        in the zoo are an error. Each file is checked against its checksum as it is read
        (``verify=False``, or a zoo opened with ``checksums=False``, skips that).
        """
        df = self.index(where, params)
        if ids is not None:
            order = {m: i for i, m in enumerate(dict.fromkeys(ids))}
            known = self.ids()
            unknown = sorted(set(order) - known)
            if unknown:
                raise ZooError(f"zoo {self.root} has no models {unknown[:10]}{' ...' if len(unknown) > 10 else ''}; "
                               f"{_id_hint(unknown[0], known)}")
            df = df[df["model_id"].isin(order)]
            df = df.iloc[df["model_id"].map(order).argsort()].reset_index(drop=True)
        return self.load_rows(df, verify=verify), df

    def load_rows(self, rows: pd.DataFrame, *, verify: bool | None = None) -> Tensor:
        """``Tensor[N, P]`` of the models in ``rows`` (index rows, as :meth:`index` gives them), read
        from their files without opening the index; every path is checked before any file is read,
        and each file against its checksum unless ``verify=False`` (or the zoo's ``checksums=False``)."""
        verify = self.checksums if verify is None else verify
        paths = [self.path_of(f) for f in rows["file"]]
        weights = torch.empty(len(rows), self.space.num_params, dtype=self.space.dtype)
        for i, (model_id, file, path, sha) in enumerate(zip(rows["model_id"], rows["file"], paths, rows["sha256"])):
            try:
                state_dict, _ = load_checkpoint(path, sha256=sha if verify else None)
                weights[i] = self.space.flatten(state_dict)
            except (CheckpointError, LayoutError) as e:
                raise ZooError(f"model {model_id!r}: cannot load {file}: {e} (Zoo.verify lists every problem)") from e
        return weights

    # ------------------------------------------------------------------ checking (zoo/check.py)
    def verify(self) -> list[str]:
        """Problems with indexed files (missing, unreadable, checksum mismatch), then orphan files
        (:func:`~weightspace.zoo.check.verify`)."""
        return verify(self)

    def inspect(self) -> tuple[list[str], list[str]]:
        """``(problems, leftovers)`` (:func:`~weightspace.zoo.check.inspect`)."""
        return inspect(self)

    def clean(self) -> list[str]:
        """Remove what interrupted writes left behind (:func:`~weightspace.zoo.check.clean`)."""
        return clean(self)

    def drop_stale_staged(self) -> list[str]:
        """Remove ``.staging`` files of models the index already has; returns what was removed.

        A writer that dies (a killed worker, a lost node) leaves the files it was staging; once
        another attempt has indexed those models the files can never be taken, since a commit
        ignores ids it has. Safe while others write: their files of new ids are kept.
        """
        staging = self.root / STAGING
        if not staging.is_dir():
            return []
        named = {p: m.group(1) for p in staging.iterdir() if p.is_file() and (m := _STAGED.fullmatch(p.name))}
        indexed = self._existing(list(named.values()))
        removed = []
        for path, model_id in sorted(named.items()):
            if model_id in indexed:
                path.unlink(missing_ok=True)
                removed.append(f"{STAGING}/{path.name}")
        return removed

    # ------------------------------------------------------------------ export
    def export(self, out_dir: str | os.PathLike, where: str | None = None, params: Sequence = (), *,
               force: bool = False) -> Path:
        """One-file copy of the selected models: ``weights.safetensors`` (``weights`` [N, P] with the
        layout and model ids as metadata), ``models.csv`` (their index rows) and ``zoo.json``.
        ``out_dir`` must be new or an earlier export (unless ``force``)."""
        weights, df = self.load(where, params)
        if len(df) == 0:
            raise ZooError(f"no model of zoo {self.root} matches {where!r} with {tuple(params)!r}; nothing exported")
        out = prepare_output(out_dir, "zoo export", force=force, what="export directory")
        atomic_write(out / "models.csv", df.to_csv(index=False).encode())
        atomic_write(out / ZOO_JSON, (self.root / ZOO_JSON).read_bytes())
        meta = {"layout": self.space.to_json(), "model_ids": json.dumps(list(df["model_id"]))}
        save_checkpoint(out / "weights.safetensors", {"weights": weights}, meta)
        return out


def _id_hint(wrong: str, known: set[str]) -> str:
    """How a zoo's ids look: the closest to the one asked for, or an example."""
    if not known:
        return "the zoo is empty"
    close = difflib.get_close_matches(wrong, known, n=1) if len(known) <= _HINT_IDS else []
    return (f"did you mean {close[0]!r}? " if close else "") + f"its ids look like {max(known)!r} (see " \
        "'weightspace zoo info'; every id: the model_id column of Zoo.index())"


def _as_int(model_id: str, key: str, value) -> int | None:
    if value is None:
        return None
    try:
        return int(value.__index__())
    except (AttributeError, TypeError) as e:
        raise ValueError(f"model {model_id!r}: record[{key!r}] must be an int, got {value!r}") from e


def _dumps(value, what: str, **kwargs) -> str:
    try:
        return json.dumps(value, default=json_default, **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {e}") from e


def _unlink(staged: list[tuple[Path, dict]]) -> None:
    for path, _ in staged:
        path.unlink(missing_ok=True)
