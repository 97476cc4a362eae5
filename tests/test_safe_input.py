"""weightspace.safe_input: the bounded readers, path confinement, read-only index and output claims."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from weightspace.errors import CheckpointError, ConfigError, InputError, OutputError
from weightspace.safe_input import (
    OUTPUT_MARKER,
    SQLITE_STEPS,
    check_bool,
    check_float,
    check_int,
    check_list,
    check_sqlite_schema,
    claimed_output,
    connect_sqlite,
    inside_root,
    parse_yaml,
    prepare_output,
    read_bytes,
    read_json,
    read_safetensors_header,
    sqlite_affinity,
    sqlite_over_budget,
)


def test_yaml_within_bounds_loads_as_safe_load_does():
    text = "base: &b {lr: 0.1, widths: [8, 8]}\nrun:\n  <<: *b\n  epochs: 3\nlist: [*b, *b]\n"
    import yaml

    assert parse_yaml(text, "t") == yaml.safe_load(text)


def test_yaml_alias_count_is_exact_at_the_bound():
    # a list of 10 aliases of a 10-number list: 1 + 10 * 11 nodes under the list, plus the mapping's 2
    text = "a: &x [" + ",".join(["1"] * 10) + "]\nb: [" + ",".join(["*x"] * 9) + "]\n"
    assert len(parse_yaml(text, "t", max_nodes=1 + 2 + 11 + 1 + 9 * 11)["b"]) == 9
    with pytest.raises(ConfigError, match="expands to more than"):
        parse_yaml(text, "t", max_nodes=1 + 2 + 11 + 1 + 9 * 11 - 1)


@pytest.mark.parametrize("text", ["!!python/object/apply:os.system ['true']", "!!python/name:os.system", "a: !!binary x"])
def test_yaml_unsafe_tags_are_refused(text):
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_yaml(text, "t")


def test_read_bytes_refuses_directories_fifos_and_oversize(tmp_path):
    import os

    with pytest.raises(InputError, match="expected a regular file, got a directory"):
        read_bytes(tmp_path, 10, "x")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="special file"):
        read_bytes(tmp_path / "fifo", 10, "x")  # would block forever if opened
    (tmp_path / "big").write_bytes(b"x" * 11)
    with pytest.raises(InputError, match="11 bytes, more than the 10 allowed"):
        read_bytes(tmp_path / "big", 10, "x")
    (tmp_path / "nan.json").write_text('{"a": NaN}')
    with pytest.raises(InputError, match="not a valid thing"):
        read_json(tmp_path / "nan.json", "thing")


def test_inside_root(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a")
    (tmp_path / "secret").write_text("s")
    (tmp_path / "in" / "link").symlink_to(tmp_path / "secret")
    (tmp_path / "in" / "inner").symlink_to(tmp_path / "in" / "a.txt")
    assert inside_root(tmp_path / "in", "a.txt", "f") == tmp_path / "in" / "a.txt"
    assert inside_root(tmp_path / "in", "inner", "f") == tmp_path / "in" / "inner"  # a link that stays inside
    for rel, message in [("../secret", "outside"), (str(tmp_path / "secret"), "outside"), ("link", "is a link to"),
                         ("", "expected a relative"), (7, "expected a relative"), ("a\x00b", "expected a relative"),
                         ("a/../../secret", "outside")]:
        with pytest.raises(InputError, match=message):
            inside_root(tmp_path / "in", rel, "entry 3")


def test_checks_name_the_key():
    assert check_int(3, "k", 1, 5) == 3
    for bad in (True, 2.0, "3", 0, 6, None):
        with pytest.raises(ConfigError, match=r"^k: expected an integer in \[1, 5\]"):
            check_int(bad, "k", 1, 5)
    assert check_int(None, "k", none=True) is None
    assert check_float(1, "f", 0.0, open_lo=True) == 1.0
    for bad in (float("nan"), float("inf"), 0.0, "1", False):
        with pytest.raises(ConfigError, match="^f: expected a finite number > 0.0"):
            check_float(bad, "f", 0.0, open_lo=True)
    with pytest.raises(ConfigError, match="^w: expected a list"):
        check_list("32", "w", check_int)
    # what the data loaders take from Python callers: NumPy integers and bools, open intervals
    assert type(check_int(np.int64(4), "k", 1, 5)) is int and check_int(np.int64(4), "k", 1, 5) == 4
    assert check_bool(np.bool_(True), "b") is True
    for bad in (0.0, 1.0, 1):
        with pytest.raises(ConfigError, match=r"^f: expected a finite number > 0.0 and < 1.0, got"):
            check_float(bad, "f", 0.0, 1.0, open_lo=True, open_hi=True)
    assert check_float(0.5, "f", 0.0, 1.0, open_lo=True, open_hi=True) == 0.5
    with pytest.raises(ConfigError, match=r"^w\[1\]: expected an integer"):
        check_list([1, 2.5], "w", check_int)


def test_readers_cannot_write_and_side_files_go(tmp_path):
    db = tmp_path / "i.sqlite"
    con = connect_sqlite(db, write=True)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.close()
    con = connect_sqlite(db)
    assert con.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        con.execute("INSERT INTO t VALUES (1)")
    con.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.sqlite"]
    with pytest.raises(sqlite3.OperationalError):
        connect_sqlite(tmp_path / "absent.sqlite")
    assert not (tmp_path / "absent.sqlite").exists()


ENDLESS = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r"


def test_a_statement_past_the_budget_is_stopped_and_told_apart(tmp_path):
    db = tmp_path / "i.sqlite"
    connect_sqlite(db, write=True).close()
    con = connect_sqlite(db)
    assert con.budget == SQLITE_STEPS + db.stat().st_size
    con.budget = 1_000_000
    with pytest.raises(sqlite3.OperationalError, match="interrupted") as info:
        con.execute(ENDLESS).fetchall()
    assert sqlite_over_budget(con, info.value) and 1_000_000 < con.steps <= 1_010_000
    other = sqlite3.OperationalError("no such table: models")
    assert not sqlite_over_budget(con, other)
    con.close()


def test_ctrl_c_during_a_statement_stays_a_keyboard_interrupt(tmp_path):
    import _thread
    import signal
    import threading

    # interrupt_main does nothing where an earlier test left SIGINT to another handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    db = tmp_path / "i.sqlite"
    con = connect_sqlite(db, write=True)
    # far past 0.2 s even on a fast machine (20M steps take about 0.8 s on one core), so only the
    # Ctrl-C can end the statement first, however late a loaded machine schedules the timer
    con.budget = 50 * SQLITE_STEPS
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                con.execute(ENDLESS).fetchall()
            except sqlite3.OperationalError as e:
                sqlite_over_budget(con, e)
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
    assert not con.over_budget
    con.close()


COLUMNS = (("id", "TEXT"), ("n", "INTEGER"), ("x", "REAL"))


@pytest.mark.parametrize("script, message", [
    ("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL, x REAL); CREATE INDEX t_n ON t (n);", None),
    ("CREATE TABLE t (id VARCHAR(9), n BIGINT, x DOUBLE PRECISION);", None),
    ("CREATE TABLE t (id TEXT, n INTEGER, x REAL); CREATE TABLE other (y);", None),
    ("CREATE TABLE u (id TEXT, n INTEGER, x REAL); CREATE VIEW t AS SELECT * FROM u;", "holds view 't'"),
    ("CREATE TABLE t (id TEXT, n INTEGER, x REAL); CREATE VIEW v AS SELECT 1;", "holds view 'v'"),
    ("CREATE TABLE t (id TEXT, n INTEGER, x REAL); CREATE TRIGGER g AFTER DELETE ON t BEGIN SELECT 1; END;",
     "holds trigger 'g', which would run statements on every write"),
    ("CREATE TABLE t (id TEXT, n INTEGER, x REAL); CREATE VIRTUAL TABLE f USING fts5(a);", "holds virtual table 'f'"),
    ("CREATE TABLE u (id TEXT, n INTEGER, x REAL);", "has no table 't' (with columns id TEXT, n INTEGER, x REAL)"),
    ("CREATE TABLE t (id TEXT, x REAL, n INTEGER);", "table 't' has columns id, x, n; expected id TEXT"),
    ("CREATE TABLE t (id TEXT, n INTEGER);", "table 't' has columns id, n;"),
    ("CREATE TABLE t (id TEXT, n INTEGER, x REAL, y GENERATED ALWAYS AS (n + 1));", "has columns id, n, x, y;"),
    ("CREATE TABLE t (id TEXT, n TEXT, x REAL);", "column t.n is declared 'TEXT' (TEXT affinity); expected INTEGER"),
    ("CREATE TABLE t (id, n INTEGER, x REAL);", "column t.id is declared 'without a type' (BLOB affinity)"),
])
def test_sqlite_schema_is_plain_tables_of_the_expected_columns(tmp_path, script, message):
    con = sqlite3.connect(tmp_path / "i.sqlite")
    con.executescript(script)
    if message is None:
        check_sqlite_schema(con, "i.sqlite", {"t": COLUMNS})
    else:
        with pytest.raises(InputError, match="^i.sqlite: ") as info:
            check_sqlite_schema(con, "i.sqlite", {"t": COLUMNS})
        assert message in str(info.value)
    con.close()


@pytest.mark.parametrize("declared", ["INT", "INTEGER", "BIGINT", "FLOATING POINT", "VARCHAR(20)", "CLOB", "TEXT",
                                      "BLOB", "", "REAL", "DOUBLE", "FLOAT", "NUMERIC", "DECIMAL(10,5)", "BOOLEAN",
                                      "DATE"])
def test_affinity_is_the_one_sqlite_gives(declared):
    """What SQLite stores for an integer, a text of digits and a text with a decimal point tells its
    affinity apart (INTEGER and NUMERIC differ only in CAST, so they are told apart by name)."""
    con = sqlite3.connect(":memory:")
    con.execute(f"CREATE TABLE t (c {declared})")
    con.executemany("INSERT INTO t VALUES (?)", [(1,), ("1",), ("1.5",)])
    stored = tuple(r[0] for r in con.execute("SELECT typeof(c) FROM t ORDER BY rowid"))
    expected = {"INTEGER": ("integer", "integer", "real"), "NUMERIC": ("integer", "integer", "real"),
                "REAL": ("real", "real", "real"), "TEXT": ("text", "text", "text"), "BLOB": ("integer", "text", "text")}
    assert stored == expected[sqlite_affinity(declared)]
    con.close()


def test_safetensors_header_checked_before_read(tmp_path):
    path = tmp_path / "h.safetensors"
    header = json.dumps({"__metadata__": {"a": "b"}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    assert read_safetensors_header(path) == ({"__metadata__": {"a": "b"}}, 0)
    path.write_bytes((1000).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match="header length 1000 exceeds file size"):
        read_safetensors_header(path)
    with pytest.raises(CheckpointError, match="more than the 10 bytes allowed"):
        read_safetensors_header(path, limit=10)


def test_prepare_output(tmp_path):
    out = prepare_output(tmp_path / "a" / "b", "cmd")
    assert json.loads((out / OUTPUT_MARKER).read_text()) == {"command": "cmd"}
    assert prepare_output(out, "cmd") == out  # its own
    with pytest.raises(OutputError, match="was made by 'weightspace cmd'"):
        prepare_output(out, "other")
    (tmp_path / "empty").mkdir()
    prepare_output(tmp_path / "empty", "other")  # empty: as good as new
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes").write_text("mine")
    with pytest.raises(OutputError, match="--force"):
        prepare_output(tmp_path / "user", "cmd")
    prepare_output(tmp_path / "user", "cmd", force=True)
    assert (tmp_path / "user" / "notes").read_text() == "mine"


def test_claimed_output_removes_only_what_it_made(tmp_path):
    with pytest.raises(RuntimeError), claimed_output(tmp_path / "new" / "deep", "cmd"):
        raise RuntimeError
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(RuntimeError), claimed_output(tmp_path / "old" / "deep", "cmd"):
        raise RuntimeError
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == []
    with pytest.raises(RuntimeError), claimed_output(tmp_path / "zoo", "cmd") as out:
        (out / "zoo.json").write_text("{}")  # a zoo by now: kept for other writers and reruns
        raise RuntimeError
    assert (tmp_path / "zoo" / "zoo.json").exists()
    with pytest.raises(KeyboardInterrupt), claimed_output(tmp_path / "stop", "cmd"):
        raise KeyboardInterrupt
    assert (tmp_path / "stop").exists()  # interrupted work is kept to resume
