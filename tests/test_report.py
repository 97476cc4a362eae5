import json

import numpy as np
import pandas as pd
import pytest
import torch

from weightspace.audit.figures import (
    min_distance_histogram,
    novelty_quality_scatter,
    parameter_heatmap,
    png_bytes,
)
from weightspace.audit.report import Report, write_report

from .browser import inspect_page


def _report():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"group": ["training"] * 20 + ["pdiff"] * 20,
                          "max_similarity": rng.uniform(0.3, 1, 40), "quality": rng.uniform(0.8, 1, 40),
                          "min_l2": rng.uniform(0, 2, 40)})
    frontier = pd.DataFrame({"sigma": [0.01, 0.1], "max_similarity": [0.9, 0.5], "quality": [0.95, 0.7]})
    summary = pd.DataFrame({"method": ["pdiff", "hyperrep"], "quality": [0.9, 0.8], "verdict": ["replicates", "novel"]})
    report = Report("Memorization audit <test>", summary, intro="synthetic", configs={"seed": 0},
                    results={"pdiff": {"fraction_beyond": np.float64(0.25)}})
    report.add_figure("Novelty vs quality", png_bytes(novelty_quality_scatter(table, frontier)), "up-left is better",
                      "scatter")
    report.add_figure("Distances", png_bytes(min_distance_histogram(table)), "left of training = replicas", "hist")
    report.add_figure("Distances", png_bytes(parameter_heatmap(torch.randn(50), torch.randn(3, 50))), "copies",
                      "heatmap")
    return report


def test_report_files(tmp_path):
    path = write_report(_report(), tmp_path)
    text = path.read_text()
    assert text.count("<img") == 3 and "data:image/png;base64," in text
    assert "&lt;test&gt;" in text  # escaped
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["results"]["pdiff"]["fraction_beyond"] == 0.25
    assert [r["method"] for r in results["summary"]] == ["pdiff", "hyperrep"]
    assert pd.read_csv(tmp_path / "summary.csv").shape == (2, 3)


def test_report_renders_in_headless_chromium(tmp_path):
    seen = inspect_page(write_report(_report(), tmp_path))
    assert {k: seen[k] for k in ("images", "decoded", "summary_rows", "title")} == {
        "images": 3, "decoded": 3, "summary_rows": 2, "title": "Memorization audit <test>"}


@pytest.mark.parametrize("width", [900, 1400])
def test_wide_tables_scroll_inside_their_box(tmp_path, width):
    report = _report()
    report.tables["wide"] = pd.DataFrame({f"a_rather_long_column_name_{i}": [0.123456789] for i in range(15)})
    seen = inspect_page(write_report(report, tmp_path), width=width)
    assert seen["width"] == width and seen["overflowing"] == [] and seen["page_overflow"] <= 0, seen
    assert seen["headings"].count("wide") == 1


def test_a_column_of_sentences_wraps_instead_of_scrolling(tmp_path):
    report = _report()
    reason = "the generated models sit at 0.925 × the reference's spacing; exact copies sit at 0.52 " * 6
    report.tables["Verdicts against the paper's"] = pd.DataFrame(
        {"method": ["HyperDiffusion"], "paper": ["replicates"], "where they differ, measured": [reason]})
    report.tables["wide"] = pd.DataFrame({f"a_rather_long_column_name_{i}": [0.123456789] for i in range(15)})
    seen = inspect_page(write_report(report, tmp_path), width=900)
    assert seen["scrolled"] == ["table-wide"], seen  # the numbers table scrolls, the sentences wrap


def test_the_overflow_check_catches_a_wide_element(tmp_path):
    """Guards the check itself: a wide element outside a scroll box is reported."""
    path = write_report(_report(), tmp_path)
    path.write_text(path.read_text().replace("</body>", "<div id='wide' style='width:2000px'>x</div></body>"))
    seen = inspect_page(path, width=900)
    assert "div#wide" in seen["overflowing"] and seen["page_overflow"] > 0


def test_one_number_format_and_readable_config(tmp_path):
    report = _report()
    report.summary = pd.DataFrame({"method": ["a"], "x": [0.9597500000000002], "y": [1.0], "z": [7.771]})
    report.configs = {"σ": [0.001234, 0.5], "name": "P-diff"}
    text = write_report(report, tmp_path).read_text()
    assert ">0.960<" in text and ">1.00<" in text and ">7.77<" in text
    assert "σ: [0.00123, 0.500]" in text and "\\u03c3" not in text
    assert pd.read_csv(tmp_path / "summary.csv")["x"].tolist() == [0.96]


def test_a_broken_image_is_caught(tmp_path):
    """Guards the browser check itself: a corrupt PNG must not count as decoded."""
    report = _report()
    report.figures[1].png = b"\x89PNG\r\n\x1a\n" + b"garbage"
    seen = inspect_page(write_report(report, tmp_path))
    assert seen["images"] == 3 and seen["decoded"] == 2
