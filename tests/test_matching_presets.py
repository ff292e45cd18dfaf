"""`--matching fast|best`: one word picks every matching setting; single options still override it, and what
was fitted records which preset it was."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from wildtrack.cli import app
from wildtrack.config import DEFAULT_MATCHING, MATCHING_PRESETS, EvalConfig, IndexConfig, MatchingConfig

runner = CliRunner()


def test_best_is_the_default_wherever_a_catalogue_is_matched():
    assert DEFAULT_MATCHING == "best"
    for cfg in (MatchingConfig(), EvalConfig(), IndexConfig()):
        assert cfg.matching == "best" and cfg.preset_in_effect() == "best"
        assert cfg.rerank == "local"


@pytest.mark.parametrize("name", sorted(MATCHING_PRESETS))
def test_a_preset_sets_every_value_it_names(name):
    cfg = MatchingConfig(matching=name)
    for field, value in MATCHING_PRESETS[name].items():
        assert getattr(cfg, field) == value, field
    assert cfg.preset_in_effect() == name


def test_best_matches_more_of_the_catalogue_than_fast():
    assert MatchingConfig(matching="best").rerank_k > MatchingConfig(matching="fast").rerank_k


def test_an_option_given_explicitly_overrides_the_preset_and_the_result_says_custom():
    cfg = EvalConfig(matching="fast", rerank_k=7, local_focus="frame")
    assert cfg.rerank_k == 7 and cfg.local_focus == "frame"
    assert cfg.local_keypoints == MATCHING_PRESETS["fast"]["local_keypoints"]  # the rest still from the preset
    assert cfg.preset_in_effect() == "custom (fast with local_focus, rerank_k)"


def test_an_unknown_preset_is_refused_naming_the_valid_ones():
    with pytest.raises(ValidationError, match="'fast' or 'best'"):
        MatchingConfig(matching="fastest")


def test_cli_help_lists_the_presets():
    for command in (["evaluate"], ["index", "build"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "--matching" in result.output and "fast" in result.output


def test_cli_refuses_an_unknown_preset(synth_data, tiny_artifacts, tmp_path):
    result = runner.invoke(app, ["index", "build", "--data", str(synth_data), "--artifacts", str(tiny_artifacts),
                                 "--out", str(tmp_path / "i"), "--matching", "fastest"])
    assert result.exit_code == 2 and "fastest" in result.output


def test_index_build_records_the_preset_it_fitted_and_search_matches_as_it_says(synth_data, tiny_artifacts,
                                                                               tmp_path):
    """End to end on a generated catalogue: `fast` and `best` fit different shortlists, fusion.json and the search
    follow them, and `best` matches a catalogue smaller than its shortlist whole."""
    from wildtrack.index import GalleryIndex
    from wildtrack.matching.pipeline import committed_pipeline
    from wildtrack.search import open_catalogue

    photos = sum(1 for _ in synth_data.rglob("*.jpg"))
    fitted = {}
    for preset in ("fast", "best"):
        out = tmp_path / preset
        result = runner.invoke(app, ["index", "build", "--data", str(synth_data), "--artifacts", str(tiny_artifacts),
                                     "--out", str(out), "--matching", preset, "--local-focus", "frame",
                                     "--local-max-side", "96", "--local-keypoints", "200"])
        assert result.exit_code == 0, result.output
        assert f"custom ({preset} with local_focus, local_keypoints, local_max_side)" in result.output
        fusion = committed_pipeline(GalleryIndex.load(out), out)
        doc = json.loads(GalleryIndex.load(out).read_extra("fusion.json") or b"{}")
        assert doc["preset"] == fusion.preset and doc["matcher"]["name"] == "ratio-test"
        fitted[preset] = fusion
    assert fitted["fast"].k == MATCHING_PRESETS["fast"]["rerank_k"]
    assert fitted["best"].k == MATCHING_PRESETS["best"]["rerank_k"] > photos

    embedder, searcher = open_catalogue(tmp_path / "best", tiny_artifacts)
    photo = synth_data / "t004" / "t004_007.jpg"
    from wildtrack.embed import embed_image

    hits = searcher.search(embed_image(embedder, photo), photo, k=photos)
    assert len(hits) == photos and all(h.inliers is not None for h in hits)  # every catalogue photo matched
