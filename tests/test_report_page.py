"""report.html as a biologist opens it: rendered by a real headless Chromium, the synthetic-data banner on top,
the model named, every picture loaded, no raw JSON. Set ``WILDTRACK_SCREENSHOT_DIR`` to keep the screenshot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_web_page import CHROMIUM_ARGS, _chromium

from wildtrack.evaluate import MetricsReport, retrieval_metrics
from wildtrack.visualize.curves import plot_training_curves
from wildtrack.visualize.panels import PanelItem, retrieval_panel
from wildtrack.visualize.report import write_report


def _report(folder: Path, synth_data: Path) -> Path:
    sim = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.9]], dtype=np.float32)
    metrics = MetricsReport.from_result(
        retrieval_metrics(sim, ["t000", "t001"], ["t000", "t001", "t002"]), split="time-aware",
        model_fingerprint="cafe1234", dataset_fingerprint={"root": str(synth_data), "num_images": 3, "num_ids": 3,
                                                           "files_sha256": "ab12"},
        timings_s={"embed": 2.25}, open_set={"threshold": 0.4242, "TAR": 0.9, "FAR": 0.05},
        extra={"rerank": {"fusion": {"w_global": 7.58249781, "features": ["cosine", "log1p(inliers)"]}}},
    ).model_dump(mode="json", by_alias=True)
    photo = synth_data / "t000" / "t000_000.jpg"
    retrieval_panel(PanelItem(photo, "t000"), [PanelItem(synth_data / "t001" / "t001_000.jpg", "t001", 0.9)],
                    folder / "retrieval_example_0.png")
    artifacts = folder / "artifacts"
    artifacts.mkdir()
    (artifacts / "model_config.yaml").write_text("created: '2026-01-02T03:04:05+00:00'\nbackbone: mobilenetv2\n"
                                                 "loss: arcface+triplet\nimage_size: 96\n")
    plot_training_curves([{"epoch": 1, "phase": "head", "loss": 3.0, "val_R@1": 0.4, "val_mAP": 0.3},
                          {"epoch": 2, "phase": "finetune", "loss": 2.0, "val_R@1": 0.6, "val_mAP": 0.5}],
                         artifacts / "training_curves.png")
    return write_report(folder / "results", metrics, ["../retrieval_example_0.png"], artifacts=artifacts)


def test_report_reads_as_evidence(tmp_path, synth_data):
    page = _report(tmp_path, synth_data).read_text()
    assert "say nothing about field accuracy" in page
    for text in ("mobilenetv2", "arcface+triplet", "2026-01-02", "cafe1234", "ab12", "training_curves.png"):
        assert text in page, text
    assert "7.58</td>" in page and "7.5824" not in page  # 3 significant digits
    assert '{"' not in page and "[&quot;" not in page  # no raw JSON blobs
    assert (tmp_path / "results" / "training_curves.png").is_file()  # copied: the folder stands alone


def test_report_without_synthetic_data_has_no_banner(tmp_path):
    metrics = {"split": "official", "R@1": 0.5, "dataset_fingerprint": {"root": str(tmp_path)}}
    assert "banner" not in write_report(tmp_path, metrics, []).read_text().split("</style>")[1]


def test_report_renders_in_chromium(tmp_path, synth_data):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    report = _report(tmp_path, synth_data)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(report.as_uri())
        assert page.locator("#synthetic").is_visible()
        images = page.locator("img")
        assert images.count() == 2
        for i in range(images.count()):
            images.nth(i).scroll_into_view_if_needed()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=images.nth(i).element_handle())
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("WILDTRACK_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report_test.png")
