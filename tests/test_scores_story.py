"""One score story and one threshold story, the same in the CLI, the JSON and the index build."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from wildtrack.cli import app
from wildtrack.decide.policy import operating_point

runner = CliRunner()

FIT = {"open_set": {"threshold": 0.381, "TAR": 1.0, "FAR": 0.0467, "num_known": 150, "num_unknown": 150,
                    "target_far": 0.05},
       "encounter_open_set": {"threshold": 0.579, "TAR": 0.98, "FAR": 0.035, "num_known": 57, "num_unknown": 57,
                              "target_far": 0.05}}


def test_the_operating_point_says_where_the_thresholds_come_from():
    fitted = operating_point("match_probability", 0.381, 0.579, FIT)
    assert fitted.source == "fitted" and fitted.photo_rates["FAR"] == 0.0467
    assert fitted.encounter_rates["TAR"] == 0.98
    assert fitted.sentence() == ("new individual below P(same) 0.381 for a photo, 0.579 for an encounter; fitted on "
                                 "the catalogue at 5 % false accepts (there: 100 % of known turtles accepted, 4.7 % "
                                 "false accepts)")
    given = operating_point("match_probability", 0.5, 0.5, FIT, overridden=True)
    assert given.source == "given" and given.photo_rates is None
    assert given.sentence() == ("new individual below P(same) 0.500 for a photo or an encounter (threshold given by "
                                "the user)")
    assert operating_point("cosine", 0.43, 0.43).sentence().endswith("(threshold stored with the index)")
    assert operating_point("cosine", None, None).source == "none"


def test_a_fitted_policy_states_its_confident_operating_point_and_applies_it():
    from wildtrack.decide.identity import Decision

    sure = {**FIT, "confident_open_set": {"threshold": 0.9, "TAR": 0.7, "FAR": 0.0, "num_known": 150,
                                          "num_unknown": 150, "target_far": 0.01},
            "confident_encounter_open_set": {"threshold": 0.93, "TAR": 0.8, "FAR": 0.0, "num_known": 57,
                                             "num_unknown": 57, "target_far": 0.01}}
    fitted = operating_point("match_probability", 0.381, 0.579, sure)
    assert (fitted.confident_photo_threshold, fitted.confident_encounter_threshold) == (0.9, 0.93)
    assert fitted.confident_far == 0.01 and fitted.confident_rates["TAR"] == 0.8
    assert fitted.sentence().endswith("; named automatically (confident) above P(same) 0.900 for a photo, 0.930 for "
                                      "an encounter, fitted at 1 % false accepts (there: 80 % of known turtles "
                                      "accepted, 0 % false accepts)")
    assert fitted.to_dict()["confident_encounter_threshold"] == 0.93
    named = Decision("t001", 0.95, False, ())
    assert fitted.is_confident(named, encounter=True) and fitted.is_confident(named, encounter=False)
    assert not fitted.is_confident(Decision("t001", 0.92, False, ()), encounter=True)
    assert fitted.is_confident(Decision("t001", 0.92, False, ()), encounter=False)
    assert not fitted.is_confident(Decision(None, 0.99, True, ()), encounter=True)  # a new individual never is
    given = operating_point("match_probability", 0.5, 0.5, sure, overridden=True)
    assert given.confident_encounter_threshold is None and not given.is_confident(named, encounter=True)
    assert "confident" not in given.sentence()


def test_search_lists_turtles_by_the_score_it_shows(synth_data, tiny_artifacts, reranked_index):
    photo = synth_data / "t009" / "t009_002.jpg"
    base = ["search", str(photo), "--index", str(reranked_index), "--artifacts", str(tiny_artifacts), "--topk", "6"]
    answer = json.loads(runner.invoke(app, [*base, "--json"]).output)
    turtles = answer["identities"]
    scores = [t["score"] for t in turtles]
    assert answer["decision"]["score_kind"] == "match_probability"
    assert len(scores) > 1 and scores == sorted(scores, reverse=True) and scores[0] == answer["decision"]["score"]
    assert all(0 <= t["score"] <= 1 and t["inliers"] is not None and abs(t["cosine"]) <= 1 + 1e-5
               for t in turtles)
    assert all(t["best_image_path"] for t in turtles)
    text = runner.invoke(app, base, terminal_width=200).output
    assert "turtles, best first" in text and "P(same)" in text
    plain = json.loads(runner.invoke(app, [*base, "--json", "--no-rerank"]).output)
    cosines = [t["score"] for t in plain["identities"]]
    assert cosines == sorted(cosines, reverse=True) and [t["cosine"] for t in plain["identities"]] == cosines


def test_index_build_fits_the_threshold_at_the_false_accept_rate_asked(synth_data, tiny_artifacts, tmp_path):
    args = ["index", "build", "--data", str(synth_data), "--artifacts", str(tiny_artifacts), "--rerank", "local",
            "--rerank-k", "10"]
    strict = runner.invoke(app, [*args, "--out", str(tmp_path / "strict"), "--false-accept-rate", "0.01"])
    assert strict.exit_code == 0, strict.output
    report = json.loads((tmp_path / "strict" / "fusion.json").read_text())["fit_report"]["open_set"]
    assert report["target_far"] == 0.01 and report["FAR"] <= 0.01
    assert "fitted on the catalogue at 1 % false accepts" in " ".join(strict.output.split())
    loose = runner.invoke(app, [*args, "--out", str(tmp_path / "loose"), "--false-accept-rate", "0.3"])
    assert loose.exit_code == 0, loose.output
    looser = json.loads((tmp_path / "loose" / "fusion.json").read_text())
    assert looser["fit_report"]["open_set"]["target_far"] == 0.3
    assert looser["decision_threshold"] <= json.loads((tmp_path / "strict" / "fusion.json").read_text())[
        "decision_threshold"]
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--false-accept-rate", "1.5"])
    assert bad.exit_code == 2 and "--false-accept-rate" in bad.output
