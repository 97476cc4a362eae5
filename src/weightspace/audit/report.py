"""A self-contained HTML report (figures embedded as PNG data URIs) plus results.json and CSV tables."""

from __future__ import annotations

import base64
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.9em;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.92em}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}.verdict{font-weight:600}
"""


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

    def add_figure(self, section: str, png: bytes, caption: str, name: str) -> None:
        self.figures.append(ReportFigure(section, png, caption, name))


def _json_default(o):
    if isinstance(o, (np.integer, np.floating, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _table_html(df: pd.DataFrame, table_id: str) -> str:
    return df.to_html(index=False, table_id=table_id, float_format=lambda v: f"{v:.4g}", border=0,
                      escape=True, na_rep="–")


def write_report(report: Report, out_dir: str | Path) -> Path:
    """Write ``report.html``, ``results.json``, ``summary.csv`` (+ one CSV per table); returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(report.title)}</h1>"]
    if report.intro:
        parts.append(f"<p>{html.escape(report.intro)}</p>")
    parts += ["<h2>Summary</h2>", _table_html(report.summary, "summary")]
    for name, df in report.tables.items():
        parts += [f"<h2>{html.escape(name)}</h2>", _table_html(df, f"table-{_slug(name)}")]
    section = None
    for fig in report.figures:
        if fig.section != section:
            section = fig.section
            parts.append(f"<h2>{html.escape(section)}</h2>")
        data = base64.b64encode(fig.png).decode()
        parts.append(f"<figure id='fig-{html.escape(fig.name)}'><img alt='{html.escape(fig.caption)}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{html.escape(fig.caption)}</figcaption></figure>")
    parts += ["<h2>Configuration and seeds</h2>",
              f"<pre>{html.escape(json.dumps(report.configs, indent=2, default=_json_default))}</pre>",
              "</body></html>"]
    path = out / "report.html"
    _write(path, "\n".join(parts).encode())
    _write(out / "results.json", json.dumps({"title": report.title, "summary": report.summary.to_dict("records"),
                                              "results": report.results, "configs": report.configs},
                                             indent=2, default=_json_default).encode())
    _write(out / "summary.csv", report.summary.to_csv(index=False).encode())
    for name, df in {**report.tables, **report.data}.items():
        _write(out / f"{_slug(name)}.csv", df.to_csv(index=False).encode())
    return path
