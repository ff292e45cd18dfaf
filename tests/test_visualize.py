"""Pictures: retrieval panels, t-SNE, Grad-CAM and the HTML report render and say what they should."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wildtrack.evaluate import MetricsReport, retrieval_metrics
from wildtrack.visualize import panels
from wildtrack.visualize.panels import PanelItem, choose_examples, retrieval_panel
from wildtrack.visualize.report import write_report
from wildtrack.visualize.tsne import plot_tsne


def _photo(path, size, colour):
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def photos(tmp_path):
    return {
        "wide": _photo(tmp_path / "wide.jpg", (120, 60), (60, 90, 200)),
        "tall": _photo(tmp_path / "tall.png", (50, 100), (230, 200, 40)),
        "square": _photo(tmp_path / "sq.jpg", (80, 80), (128, 128, 128)),
    }


def _border_pixel(png: np.ndarray, column: int) -> np.ndarray:
    """Middle of the left frame edge of a panel column, from the layout constants."""
    x = round((column * panels.COLUMN_IN + panels.MARGIN_IN) * panels.DPI) + panels.BORDER_PX // 2
    y = round((panels.HEIGHT_IN - panels.BOTTOM_IN - panels.CELL_IN / 2) * panels.DPI)
    return png[y, x, :3].astype(int)


def test_retrieval_panel_colours_and_size(tmp_path, photos):
    query = PanelItem(photos["wide"], "T-001")
    results = [
        PanelItem(photos["tall"], "T-001", 0.91),
        PanelItem(photos["square"], "T-007", 0.85),
        PanelItem(tmp_path / "missing.jpg", "T-001", 0.80),  # unreadable: grey tile, no crash
    ]
    out = retrieval_panel(query, results, tmp_path / "panels" / "q0.png")
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape == (385, 300 * 4, 3)
    green, red = _border_pixel(png, 1), _border_pixel(png, 2)
    assert green[1] > 120 and green[0] < 60 and green[2] < 90, green
    assert red[0] > 180 and red[1] < 80 and red[2] < 80, red
    assert _border_pixel(png, 3)[1] > 120  # identity equals the query's -> green
    assert tuple(_border_pixel(png, 0)) != tuple(green)


def test_panel_explicit_correct_flag_wins(tmp_path, photos):
    out = retrieval_panel(PanelItem(photos["wide"], "T-001"),
                          [PanelItem(photos["tall"], "T-001", 0.5, correct=False)], tmp_path / "p.png")
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape == (385, 600, 3)
    assert _border_pixel(png, 1)[0] > 180


def test_choose_examples_mixes_successes_and_failures():
    ranks = np.array([0, 0, 0, 0, 0, 0, 3, 1, -1, 7, 0, 2])
    picked = choose_examples(ranks, 6, seed=0)
    assert picked == choose_examples(ranks, 6, seed=0)
    assert len(picked) == len(set(picked)) == 6
    assert sum(ranks[picked] == 0) == 3 and sum(ranks[picked] > 0) == 3
    assert 8 not in picked  # no gallery match: never shown
    # Only two failures exist: successes fill in.
    picked = choose_examples(np.array([0, 0, 0, 0, 2, 5]), 5)
    assert len(picked) == 5 and picked[-2:] == [4, 5]
    assert choose_examples(ranks, 100) == sorted(i for i in range(12) if ranks[i] == 0) + [6, 7, 9, 11]
    assert choose_examples(ranks, 0) == []


@pytest.mark.parametrize("n, n_ids", [(6, 3), (50, 25)])
def test_tsne_png_written(tmp_path, n, n_ids):
    rng = np.random.default_rng(0)
    ids = [f"T-{i % n_ids:03d}" for i in range(n)]
    emb = rng.normal(size=(n, 16)).astype(np.float32)
    out = plot_tsne(emb, ids, tmp_path / f"tsne_{n}.png", max_points=40)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 300


def _tiny_conv_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3)(x)
    x = keras.layers.ReLU(name="last_relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16)(x)
    outputs = keras.layers.UnitNormalization()(x)
    return keras.Model(inputs, outputs)


def test_gradcam_heatmap_and_overlay(tmp_path):
    from wildtrack.visualize.gradcam import find_last_conv_layer, gradcam_heatmap, save_gradcam_overlay

    model = _tiny_conv_model()
    assert find_last_conv_layer(model) == "last_relu"
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    image[8:20, 8:20] = 255  # some structure so the map has something to find
    target = np.asarray(model(image[None].astype(np.float32)))[0]
    heat = gradcam_heatmap(model, image, target)
    assert heat.shape == (28, 28) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0 and heat.max() == pytest.approx(1.0)
    assert heat.std() > 0.01  # not constant

    # A photo of another size is resized to the model input; the overlay keeps the photo's aspect.
    photo = _photo(tmp_path / "photo.jpg", (90, 60), (200, 180, 150))
    heat2 = gradcam_heatmap(model, np.asarray(Image.open(photo)), target)
    assert heat2.shape == (28, 28)
    out = save_gradcam_overlay(photo, heat2, tmp_path / "cam.png", title="T-001 vs its top match")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width == 1000


def test_find_last_conv_layer_none_without_conv():
    import keras

    from wildtrack.visualize.gradcam import find_last_conv_layer, gradcam_heatmap

    inputs = keras.Input((10,))
    dense_only = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Dense(8)(inputs)))
    assert find_last_conv_layer(dense_only) is None

    image_in = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(image_in))
    no_conv = keras.Model(image_in, keras.layers.Dense(4)(flat))
    assert find_last_conv_layer(no_conv) is None  # the 4-D Rescaling output is not a conv map
    with pytest.raises(ValueError, match="no convolutional"):
        gradcam_heatmap(no_conv, np.zeros((8, 8, 3), np.uint8), np.ones(4))


def test_gradcam_through_nested_backbone():
    import keras

    from wildtrack.visualize.gradcam import find_last_conv_layer, gradcam_heatmap

    keras.utils.set_random_seed(1)
    inner = keras.Input((16, 16, 3))
    backbone = keras.Model(inner, keras.layers.Conv2D(4, 3, activation="relu")(inner), name="backbone")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(6)(x))
    assert find_last_conv_layer(model) == "backbone"
    image = np.random.default_rng(1).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    target = np.asarray(model(image[None].astype(np.float32)))[0]
    heat = gradcam_heatmap(model, image, target)
    assert heat.shape == (14, 14) and 0.0 <= heat.min() <= heat.max() <= 1.0


def test_report_html_has_metrics_and_links_every_picture(tmp_path, photos):
    sim = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.4]], dtype=np.float32)
    result = retrieval_metrics(sim, ["A", "B"], ["A", "B", "C"])
    metrics = MetricsReport.from_result(
        result, split="val", model_fingerprint="deadbeef", dataset_fingerprint={"files_sha256": "ab12"},
        timings_s={"embed": 2.25}, open_set={"threshold": 0.42, "TAR": 0.9, "FAR": 0.05},
        extra={"reranked": {"R@1": 0.75}},
    ).model_dump(mode="json", by_alias=True)
    panel = retrieval_panel(PanelItem(photos["wide"], "A"), [PanelItem(photos["tall"], "A", 0.9)],
                            tmp_path / "panel 0.png")
    pictures = [str(panel), "tsne.png"]
    path = write_report(tmp_path, metrics, pictures, title="Turtles <test>")
    page = path.read_text()
    assert path.name == "report.html"
    assert "Turtles &lt;test&gt;" in page
    for text in ("100.0%", "R@10", "mAP", "top-1 identity", "deadbeef", "ab12", "val", "2.25", "0.42",
                 "false-accept rate", "reranked", "75.0%"):
        assert text in page, text
    assert "href='panel%200.png'" in page and "src='panel%200.png'" in page
    assert "href='tsne.png'" in page
    assert "width=device-width" in page
    assert page.count("<tr><td>") == 2  # per-identity rows for A and B


def test_a_failed_query_gets_a_red_panel_with_identity_date_and_verdict(tmp_path, photos):
    from wildtrack.visualize.panels import RED, panel_title

    # Built to fail: the first hit is another turtle, the query's own photo only second.
    results = [PanelItem(photos["tall"], "T-007", 0.91), PanelItem(photos["square"], "T-001", 0.85)]
    title = panel_title("T-001", "2021-09-20", 1)
    assert "T-001" in title and "2021-09-20" in title and "WRONG" in title and "rank 2" in title
    png = np.asarray(Image.open(retrieval_panel(PanelItem(photos["wide"], "T-001"), results, tmp_path / "f.png",
                                                title=title)).convert("RGB")).astype(int)
    assert np.abs(png[2, png.shape[1] // 2] - RED).sum() < 60  # the whole panel is framed red
    right = np.asarray(Image.open(retrieval_panel(PanelItem(photos["wide"], "T-001"), results[::-1],
                                                  tmp_path / "r.png", title=panel_title("T-001", None, 0)))
                       .convert("RGB")).astype(int)
    assert np.abs(right[2, right.shape[1] // 2] - RED).sum() > 200


def test_tsne_gives_every_identity_its_own_style_and_marks_queries(tmp_path):
    from wildtrack.visualize.tsne import identity_styles

    styles = identity_styles([f"T{i}" for i in range(25)])
    assert len(set(styles.values())) == 25  # no two turtles drawn alike
    assert len({colour for colour, _ in styles.values()}) == 20 and len({m for _, m in styles.values()}) == 2
    assert len({styles[f"T{i}"][0] for i in range(20)}) == 20  # the first twenty differ by colour alone (t000, t010)
    rng = np.random.default_rng(0)
    out = plot_tsne(rng.normal(size=(30, 8)), [f"T{i % 5}" for i in range(30)], tmp_path / "t.png",
                    queries=(rng.normal(size=(5, 8)), [f"T{i}" for i in range(5)]))
    assert Image.open(out).height == 800  # room for the caption under the map


def test_training_curves_shade_the_frozen_warm_up(tmp_path):
    from wildtrack.visualize.curves import plot_training_curves

    history = [{"epoch": e, "phase": "head" if e <= 2 else "finetune", "loss": 5.0 - e, "val_R@1": 0.1 * e,
                "val_mAP": 0.05 * e} for e in range(1, 6)]
    png = np.asarray(Image.open(plot_training_curves(history, tmp_path / "c.png")).convert("RGB")).astype(int)
    grey = (np.abs(png - 221).sum(axis=2) < 6).sum()  # the #dddddd band of the frozen epochs
    assert grey > 2000
