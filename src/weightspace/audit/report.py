"""A self-contained HTML report (figures embedded as PNG data URIs) plus results.json and CSV tables."""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write
from ..jsonable import json_default, jsonable

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.scale{color:#555}
.scroll{overflow-x:auto;max-width:100%;margin:1em 0}
table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
td{white-space:nowrap}th{background:#f3f3f3;vertical-align:bottom}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.prose{white-space:normal;min-width:16em}td.words{white-space:normal;min-width:9em}
ul.notes{font-size:.9em;color:#333;margin-top:-.4em}ul.notes li{margin:.2em 0}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#555;font-size:.92em}
pre{background:#f7f7f7;padding:1em;overflow:auto;max-height:32em;font-size:.8em;white-space:pre}
ol.rule li{margin:.3em 0}
"""
DIGITS = 3  # significant digits of every number on the page and in summary.csv


def fmt(value) -> str:
    """The one number format of reports: 3 significant digits, trailing zeros kept (0.960, 7.77,
    1.00), integers as they are; NaN as an en dash."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "–"
        if np.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:#.{DIGITS}g}".rstrip(".")
    return str(value)


def interval(value, low, high) -> str:
    """A value and its interval in one cell: ``0.520 [0.410, 0.630]``."""
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def rounded(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with every float column rounded to ``DIGITS`` significant digits (for CSV files)."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = [float(f"{v:.{DIGITS}g}") if np.isfinite(v) else v for v in out[c]]
    return out


@dataclass
class ReportFigure:
    section: str
    png: bytes
    caption: str
    name: str


@dataclass
class Report:
    """What the study or an audit found. ``summary`` has one row per method."""

    title: str
    summary: pd.DataFrame
    intro: str = ""
    figures: list[ReportFigure] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # shown in the page and written as CSV
    data: dict[str, pd.DataFrame] = field(default_factory=dict)  # written as CSV only (e.g. per-model rows)
    results: dict = field(default_factory=dict)
    configs: dict = field(default_factory=dict)
    rule: list[str] = field(default_factory=list)  # how the verdicts are decided, one sentence per item
    notes: dict[str, list[str]] = field(default_factory=dict)  # short explanations under a table ("summary": the first)
    scale: str = ""  # one line on the size of what was run

    def add_figure(self, section: str, png: bytes, caption: str, name: str) -> None:
        self.figures.append(ReportFigure(section, png, caption, name))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _table_html(df: pd.DataFrame, table_id: str) -> str:
    """A table in a horizontal scroll box, headers with spaces instead of underscores, text left-aligned
    and numbers right-aligned in one format; columns of sentences (any cell over 60 characters) and of
    long phrases (over 30) wrap instead of stretching the table."""
    shown = df.rename(columns=lambda c: str(c).replace("_", " "))
    def longest(c):
        return shown[c].map(lambda v: len(v) if isinstance(v, str) else 0).max() if len(shown) else 0

    prose = {c for c in shown.columns if longest(c) > 60}
    words = {c for c in shown.columns if 30 < longest(c) <= 60}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = []
    for record in shown.itertuples(index=False):
        cells = []
        for c, v in zip(shown.columns, record):
            cls = "prose" if c in prose else "words" if c in words else ("num" if isinstance(v, (int, float, np.integer, np.floating))
                                                and not isinstance(v, (bool, np.bool_)) else "")
            cells.append(f"<td class='{cls}'>{html.escape(fmt(v))}</td>" if cls else f"<td>{html.escape(fmt(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table id='{table_id}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _notes_html(notes) -> str:
    return ("<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>") if notes else ""


def _config_text(configs: dict) -> str:
    """Configuration as indented ``key: value`` lines (lists of numbers on one line), unescaped."""
    lines = []

    def walk(value: dict, indent: int) -> None:
        for k, v in value.items():
            pad = "  " * indent
            if isinstance(v, dict) and v:
                lines.append(f"{pad}{k}:")
                walk(v, indent + 1)
            elif isinstance(v, list) and v and all(isinstance(x, float) for x in v):
                lines.append(f"{pad}{k}: [" + ", ".join(fmt(x) for x in v) + "]")
            elif isinstance(v, float):
                lines.append(f"{pad}{k}: {fmt(v)}")
            else:
                lines.append(f"{pad}{k}: {json.dumps(v, ensure_ascii=False)}")

    walk(jsonable(configs), 0)
    return "\n".join(lines)


def write_report(report: Report, out_dir: str | Path) -> Path:
    """Write ``report.html``, ``results.json``, ``summary.csv`` (+ one CSV per table); returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(report.title)}</h1>"]
    if report.scale:
        parts.append(f"<p class='scale'>{html.escape(report.scale)}</p>")
    if report.intro:
        parts.append(f"<p>{html.escape(report.intro)}</p>")
    parts += ["<h2>Summary</h2>", _table_html(report.summary, "summary"), _notes_html(report.notes.get("summary"))]
    if report.rule:
        parts += ["<h3>How the verdict is decided</h3><ol class='rule'>",
                  *[f"<li>{html.escape(line)}</li>" for line in report.rule], "</ol>"]
    sections = {f.section for f in report.figures}
    for name, df in report.tables.items():
        if name not in sections:  # a table named like a figure section is shown in that section
            parts += [f"<h2>{html.escape(name)}</h2>", _table_html(df, f"table-{_slug(name)}"),
                      _notes_html(report.notes.get(name))]
    section = None
    for fig in report.figures:
        if fig.section != section:
            section = fig.section
            parts.append(f"<h2>{html.escape(section)}</h2>")
            if section in report.tables:
                parts += [_table_html(report.tables[section], f"table-{_slug(section)}"),
                          _notes_html(report.notes.get(section))]
        data = base64.b64encode(fig.png).decode()
        parts.append(f"<figure id='fig-{html.escape(fig.name)}'><img alt='{html.escape(fig.caption)}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{html.escape(fig.caption)}</figcaption></figure>")
    parts += ["<h2>Configuration and seeds</h2>",
              f"<pre>{html.escape(_config_text(report.configs))}</pre>",
              "</body></html>"]
    path = out / "report.html"
    atomic_write(path, "\n".join(parts).encode())
    atomic_write(out / "results.json", json.dumps({"title": report.title, "summary": report.summary.to_dict("records"),
                                              "results": report.results, "configs": report.configs,
                                              "rule": report.rule},
                                             indent=2, default=json_default).encode())
    atomic_write(out / "summary.csv", rounded(report.summary).to_csv(index=False).encode())
    for name, df in report.tables.items():
        atomic_write(out / f"{_slug(name)}.csv", rounded(df).to_csv(index=False).encode())
    for name, df in report.data.items():  # per-model data at full precision
        atomic_write(out / f"{_slug(name)}.csv", df.to_csv(index=False).encode())
    return path
