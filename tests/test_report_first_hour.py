"""report.html and the pictures as a new user reads them: each kind of picture explained once, file names that
wrap whole, rates with a rate's unit, both thresholds named, a t-SNE caption, a training-curves axis that fits
mAP, and a Grad-CAM that says when its map is flat."""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from wildtrack.visualize.report import CAPTIONS, write_report

METRICS = {
    "split": "time-aware", "R@1": 0.9, "mAP": 0.8,
    "operating_point": {"sentence": "new individual below P(same) 0.303 for a photo; fitted on the catalogue at 5 % "
                                    "false accepts"},
    "timings_s": {"embed": 4.2, "embed_images_per_s": 38.5},
}
PICTURES = [f"retrieval_example_{n}.png" for n in range(4)] + [f"match_{n}.png" for n in range(4)] + [
    "tsne.png", "gradcam_0.png", "gradcam_1.png"]


def test_each_kind_of_picture_is_explained_once_and_file_names_wrap_whole(tmp_path):
    page = write_report(tmp_path, METRICS, PICTURES).read_text()
    for kind in ("retrieval_example", "match", "gradcam", "tsne"):
        assert page.count(CAPTIONS[kind][:60]) == 1, kind
    assert CAPTIONS["tsne"]  # the t-SNE has a caption of its own
    assert "break-all" not in page  # a file name moves to the next line whole, never split mid-word
    assert page.count("<figure>") == len(PICTURES)


def test_a_rate_is_not_given_in_seconds(tmp_path):
    page = write_report(tmp_path, METRICS, []).read_text()
    row = re.search(r"embed_images_per_s</th><td class='n'>([^<]*)<", page).group(1)
    assert row == "38.5 per s", row
    assert re.search(r"<th>embed</th><td class='n'>4\.2 s<", page)


def test_without_a_served_index_the_report_says_the_served_threshold_differs(tmp_path):
    page = write_report(tmp_path, METRICS, []).read_text()
    assert "This evaluation: new individual below P(same) 0.303" in page
    assert "The same thresholds decide" not in page  # the old claim: untrue, the index fits on the catalogue
    assert "/health" in page and "whole catalogue" in page


def test_both_thresholds_are_shown_and_named_when_an_index_serves(tmp_path):
    served = {"index": "demo_out/index", "score": "match_probability", "photo_threshold": 0.32,
              "encounter_threshold": 0.58}
    page = write_report(tmp_path, METRICS, [], served=served).read_text()
    assert "This evaluation: new individual below P(same) 0.303" in page
    assert "Served by the index <code>demo_out/index</code>: new individual below P(same) 0.320 for a photo, 0.580 " \
           "for an encounter" in page


def test_training_curves_axis_fits_recall_and_map(tmp_path):
    from wildtrack.visualize import curves

    history = [{"epoch": e, "loss": 1.0 / (e + 1), "val_R@1": 0.5, "val_mAP": 0.4, "phase": "all"} for e in range(3)]
    labels = []
    original = curves.Figure.savefig

    def keep_label(fig, *args, **kwargs):
        labels.append(fig.axes[1].get_ylabel())
        return original(fig, *args, **kwargs)

    curves.Figure.savefig = keep_label
    try:
        curves.plot_training_curves(history, tmp_path / "c.png")
    finally:
        curves.Figure.savefig = original
    assert labels and "share of queries" not in labels[0] and "0" in labels[0] and "1" in labels[0], labels


def test_gradcam_pair_shares_one_scale_and_says_when_a_map_is_flat(tmp_path):
    from wildtrack.visualize.gradcam import is_flat, save_gradcam_pair

    hot = np.zeros((7, 7), np.float32)
    hot[2:4, 3:5] = 3.0
    assert not is_flat(hot, 3.0) and is_flat(np.zeros((7, 7)), 3.0) and is_flat(hot * 0.01, 3.0)
    photo = np.full((96, 96, 3), 120, np.uint8)
    out = save_gradcam_pair(photo, hot, photo, np.zeros((7, 7), np.float32), tmp_path / "g.png", "query", "match")
    png = np.asarray(Image.open(out).convert("RGB")).astype(int)
    h, w = png.shape[:2]
    left, right = png[int(h * 0.45):int(h * 0.8), : w // 2], png[int(h * 0.45):int(h * 0.8), w // 2:]

    def share(region: np.ndarray, warm: bool) -> float:
        r, b = region[..., 0], region[..., 2]
        return float(((r - b > 60) if warm else (b - r > 40)).mean())

    assert share(left, warm=True) > 0.001 and share(left, warm=False) > 0.1  # the hot map: a red spot in blue
    assert share(right, warm=False) < 0.001  # the flat one is not drawn as a blank blue square
    bar = png[int(h * 0.83):int(h * 0.9)]  # the colour bar under the maps
    assert (np.abs(bar - np.array([128, 0, 0])).sum(axis=2) < 120).any()
