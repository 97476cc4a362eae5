import json

import numpy as np
import pandas as pd
import torch

from weightspace.audit.figures import min_distance_histogram, novelty_quality_scatter, parameter_heatmap, png_bytes
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
    assert seen == {"images": 3, "decoded": 3, "summary_rows": 2, "title": "Memorization audit <test>"}


def test_a_broken_image_is_caught(tmp_path):
    """Guards the browser check itself: a corrupt PNG must not count as decoded."""
    report = _report()
    report.figures[1].png = b"\x89PNG\r\n\x1a\n" + b"garbage"
    seen = inspect_page(write_report(report, tmp_path))
    assert seen["images"] == 3 and seen["decoded"] == 2
