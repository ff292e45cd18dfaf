"""decisions.csv: what a person edits between `survey run` and `survey apply`."""

from __future__ import annotations

import csv
import io

import pytest

from wildtrack.survey.decisions import (
    ACCEPT,
    RENAME,
    initial_decisions,
    read_decisions,
    set_decision,
    write_decisions,
)
from wildtrack.survey.files import DECISIONS_FILE, SurveyError, load_survey, save_survey

SURVEY = {"encounters": [
    {"encounter": "E001", "photos": ["a/1.jpg", "a/2.jpg"], "proposed_identity": "t004", "score": 0.97,
     "verdict": "confident"},
    {"encounter": "E002", "photos": ["b/3.jpg"], "proposed_identity": "t007", "score": 0.41, "verdict": "review"},
    {"encounter": "E003", "photos": ["c/4.jpg"], "proposed_identity": "new-001", "score": 0.1, "verdict": "review"},
]}


@pytest.fixture()
def survey_dir(tmp_path):
    write_decisions(tmp_path, initial_decisions(SURVEY))
    return tmp_path


def sheet(path):
    return (path / DECISIONS_FILE).read_text(encoding="utf-8")


def test_confident_verdicts_come_accepted_and_the_rest_blank(survey_dir):
    assert sheet(survey_dir).splitlines() == [
        "encounter,photos,proposed_identity,score,verdict,decision,final_identity",
        "E001,a/1.jpg;a/2.jpg,t004,0.970000,confident,accept,t004",
        "E002,b/3.jpg,t007,0.410000,review,,",
        "E003,c/4.jpg,new-001,0.100000,review,,",
    ]
    rows = read_decisions(survey_dir, SURVEY)
    assert [(r.encounter, r.decision, r.final_identity, r.enrols) for r in rows] == [
        ("E001", ACCEPT, "t004", True), ("E002", "", "", False), ("E003", "", "", False)]


def test_a_spreadsheet_edit_round_trips(survey_dir):
    text = sheet(survey_dir).replace("E002,b/3.jpg,t007,0.410000,review,,", "E002,b/3.jpg,t007,0.41,review,Accept,")
    text = text.replace("E003,c/4.jpg,new-001,0.100000,review,,", "E003,c/4.jpg,new-001,0.1,review,rename,Mira")
    rows = list(csv.reader(io.StringIO(text)))
    european = io.StringIO()
    csv.writer(european, delimiter=";").writerows(rows)  # a spreadsheet set to ";" quotes the photo lists
    (survey_dir / DECISIONS_FILE).write_bytes(("\ufeff" + european.getvalue()).encode("utf-8"))  # with Excel's BOM
    rows = read_decisions(survey_dir, SURVEY)
    assert [(r.decision, r.final_identity) for r in rows] == [(ACCEPT, "t004"), (ACCEPT, "t007"), (RENAME, "Mira")]


@pytest.mark.parametrize(("old", "new", "message"), [
    ("E002,b/3.jpg,t007", "E002,b/9.jpg,t007", "photos differ"),
    ("E002,b/3.jpg,t007", "E002,b/3.jpg,t009", "proposed identity was changed"),
    ("E002,b/3.jpg,t007,0.410000,review,,", "E002,b/3.jpg,t007,0.410000,review,maybe,", "not one of accept"),
    ("E002,b/3.jpg,t007,0.410000,review,,", "E002,b/3.jpg,t007,0.410000,review,rename,", "rename needs"),
    ("E002,b/3.jpg,t007,0.410000,review,,", "E002,b/3.jpg,t007,0.410000,review,accept,t009", "write rename"),
    ("E003,c/4.jpg,new-001,0.100000,review,,\n", "", "E003 have no row"),
    ("E001,", "E009,", "not one of this survey's"),
])
def test_a_sheet_that_no_longer_matches_the_run_is_refused_with_its_line(survey_dir, old, new, message):
    (survey_dir / DECISIONS_FILE).write_text(sheet(survey_dir).replace(old, new), encoding="utf-8")
    with pytest.raises(SurveyError, match=message):
        read_decisions(survey_dir, SURVEY)


@pytest.mark.parametrize(("old", "new"), [
    ("E002,b/3.jpg,t007,0.410000,review,,", "E002,b/3.jpg,t007,0.410000,review,acept,"),  # a typo
    ("E002,b/3.jpg,t007", "E002,b/9.jpg,t007"),  # edited photos
])
def test_a_row_that_cannot_be_used_is_one_problem_not_also_a_missing_row(survey_dir, old, new):
    (survey_dir / DECISIONS_FILE).write_text(sheet(survey_dir).replace(old, new), encoding="utf-8")
    with pytest.raises(SurveyError) as refused:
        read_decisions(survey_dir, SURVEY)
    assert "line 3: E002" in str(refused.value) and "have no row" not in str(refused.value)


def test_the_page_sets_one_decision_with_the_same_rules(survey_dir):
    set_decision(survey_dir, SURVEY, "E003", "rename", "Mira")
    assert "E003,c/4.jpg,new-001,0.100000,review,rename,Mira" in sheet(survey_dir)
    with pytest.raises(SurveyError, match="rename needs"):
        set_decision(survey_dir, SURVEY, "E002", "rename")
    with pytest.raises(SurveyError, match="not one of this survey's"):
        set_decision(survey_dir, SURVEY, "E042", "accept")


def test_survey_json_is_found_or_the_error_says_what_to_run(tmp_path):
    with pytest.raises(SurveyError, match="survey run"):
        load_survey(tmp_path)
    save_survey(tmp_path, {"encounters": []})
    assert load_survey(tmp_path)["format"] == "wildtrack-survey"
