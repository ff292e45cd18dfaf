"""Retrieval and open-set metrics against numbers worked out by hand and against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from wildtrack.evaluate import (
    MetricsReport,
    calibrate_threshold,
    cosine_similarity,
    genuine_impostor_scores,
    metrics_json_schema,
    open_set_metrics,
    rank_gallery,
    retrieval_metrics,
    write_metrics_json,
)

# Hand-computed example. Gallery: index 0..4 = A, B, A, C, B.
GALLERY = ["A", "B", "A", "C", "B"]
QUERIES = ["A", "B", "C", "D", "A"]
SIM = np.array(
    [
        # q0 (A): ranking 0A 1B 2A 4B 3C -> hits at ranks 1, 3: AP = (1/1 + 2/3) / 2 = 5/6; first rank 0
        [0.9, 0.8, 0.3, 0.1, 0.2],
        # q1 (B): ranking 0A 2A 3C 4B 1B -> hits at ranks 4, 5: AP = (1/4 + 2/5) / 2 = 0.325; first rank 3
        [0.7, 0.2, 0.6, 0.5, 0.4],
        # q2 (C): ranking 4B 3C 2A 1B 0A -> hit at rank 2: AP = 1/2; first rank 1
        [0.1, 0.2, 0.3, 0.4, 0.5],
        # q3 (D): no D in the gallery -> excluded from R@K / mAP, counted as without match
        [0.6, 0.1, 0.1, 0.1, 0.1],
        # q4 (A): all tied -> stable order 0A 1B 2A 3C 4B -> same as q0: AP = 5/6; first rank 0
        [0.5, 0.5, 0.5, 0.5, 0.5],
    ],
    dtype=np.float32,
)


def test_hand_computed_example():
    r = retrieval_metrics(SIM, QUERIES, GALLERY, ks=(1, 3, 5, 10))
    # First correct ranks: q0 0, q1 3, q2 1, q3 none, q4 0.
    assert r.first_correct_rank.tolist() == [0, 3, 1, -1, 0]
    # R@1: q0, q4 of the 4 evaluated queries = 0.5; R@3: q1 (rank 3) misses = 3/4; R@5 = R@10 = 1.
    assert r.recall_at_k == pytest.approx({1: 0.5, 3: 0.75, 5: 1.0, 10: 1.0})
    # mAP = (5/6 + 0.325 + 0.5 + 5/6) / 4 = 0.6229166…
    assert r.mAP == pytest.approx((5 / 6 + 0.325 + 0.5 + 5 / 6) / 4)
    assert r.average_precision[:3] == pytest.approx([5 / 6, 0.325, 0.5])
    assert np.isnan(r.average_precision[3])
    # Best image per identity: q0 A .9 > B .8 ✓; q1 A .7 > C .5 > B .4 ✗; q2 B .5 > C .4 ✗;
    # q4 all .5, tie goes to the first name, A ✓  -> 2/4.
    assert r.top1_identity.tolist() == ["A", "A", "B", "A", "A"]
    assert r.top1_identity_accuracy == pytest.approx(0.5)
    assert (r.num_queries, r.num_queries_without_match, r.num_gallery, r.num_ids) == (4, 1, 5, 4)
    assert r.headline()["R@1"] == 0.5


def test_per_identity_figures():
    r = retrieval_metrics(SIM, QUERIES, GALLERY)
    # A: q0, q4 both rank 0 -> R@1 1, mAP 5/6.  B: q1 rank 3 -> R@1 0, R@5 1.  C: q2 rank 1.  D: absent.
    assert set(r.per_identity) == {"A", "B", "C"}
    assert r.per_identity["A"] == pytest.approx({"R@1": 1.0, "R@5": 1.0, "mAP": 5 / 6, "num_queries": 2})
    assert r.per_identity["B"] == pytest.approx({"R@1": 0.0, "R@5": 1.0, "mAP": 0.325, "num_queries": 1})
    assert r.per_identity["C"] == pytest.approx({"R@1": 0.0, "R@5": 1.0, "mAP": 0.5, "num_queries": 1})


def test_queries_without_match_do_not_change_metrics():
    with_d = retrieval_metrics(SIM, QUERIES, GALLERY)
    keep = [0, 1, 2, 4]
    without_d = retrieval_metrics(SIM[keep], [QUERIES[i] for i in keep], GALLERY)
    assert with_d.recall_at_k == without_d.recall_at_k
    assert with_d.mAP == without_d.mAP
    assert with_d.num_queries_without_match == 1 and without_d.num_queries_without_match == 0


def test_ap_matches_sklearn_on_random_data():
    rng = np.random.default_rng(42)
    q_ids = rng.integers(0, 8, size=30).astype(str)
    g_ids = rng.integers(0, 8, size=60).astype(str)
    sim = rng.random((30, 60)).astype(np.float32)
    r = retrieval_metrics(sim, q_ids, g_ids)
    checked = 0
    for i in range(30):
        y_true = g_ids == q_ids[i]
        if not y_true.any():
            assert np.isnan(r.average_precision[i])
            continue
        assert r.average_precision[i] == pytest.approx(average_precision_score(y_true, sim[i]), abs=1e-6)
        checked += 1
    assert checked == r.num_queries > 0


def test_ties_are_broken_by_gallery_index():
    sim = np.array([[0.5, 0.9, 0.5, 0.9, 0.1]], dtype=np.float32)
    assert rank_gallery(sim).tolist() == [[1, 3, 0, 2, 4]]
    # The correct B at index 3 ties with the wrong A at index 1 and loses deterministically.
    r = retrieval_metrics(sim, ["B"], ["A", "C", "C", "B", "C"])
    assert r.first_correct_rank.tolist() == [1]
    assert all(retrieval_metrics(sim, ["B"], ["A", "C", "C", "B", "C"]).recall_at_k == r.recall_at_k
               for _ in range(3))


def test_cosine_similarity_renormalises():
    q = np.array([[3.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    g = np.array([[2.0, 0.0], [0.0, 5.0]], dtype=np.float32)
    assert cosine_similarity(q, g) == pytest.approx(np.array([[1.0, 0.0], [2**-0.5, 2**-0.5]]), abs=1e-6)
    assert cosine_similarity(q, g).dtype == np.float32


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: retrieval_metrics(SIM, QUERIES[:4], GALLERY), "does not match"),
        (lambda: retrieval_metrics(SIM, QUERIES, GALLERY[:4]), "does not match"),
        (lambda: retrieval_metrics(np.zeros((0, 5)), [], GALLERY), "empty"),
        (lambda: retrieval_metrics(SIM[:1], ["Z"], GALLERY), "no query identity"),
        (lambda: retrieval_metrics(SIM, QUERIES, GALLERY, ks=(0,)), "positive"),
        (lambda: cosine_similarity(np.zeros((2, 3)), np.zeros((2, 4))), "embedding sizes"),
        (lambda: cosine_similarity(np.zeros((0, 3)), np.zeros((2, 3))), "empty"),
    ],
)
def test_invalid_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_genuine_and_impostor_scores():
    genuine, impostor = genuine_impostor_scores(SIM, QUERIES, GALLERY)
    # q0: own A best .9, other best B .8; q1: B .4 / A .7; q2: C .4 / B .5; q3 (D): — / A .6; q4: .5 / .5
    assert genuine == pytest.approx([0.9, 0.4, 0.4, 0.5])
    assert impostor == pytest.approx([0.8, 0.7, 0.5, 0.6, 0.5])


def test_calibrate_threshold_respects_target_and_is_monotone():
    rng = np.random.default_rng(0)
    genuine = rng.normal(0.8, 0.1, 300)
    impostor = rng.normal(0.4, 0.15, 500)
    previous = np.inf
    for target in np.linspace(0.0, 0.99, 34):
        t = calibrate_threshold(genuine, impostor, target_far=target)
        far = np.mean(impostor >= t)
        assert far <= target + 1e-12
        # Smallest: at the first rejected impostor score itself the target would be exceeded.
        assert np.mean(impostor >= np.max(impostor[impostor < t])) > target
        assert t <= previous
        previous = t
    assert calibrate_threshold(genuine, impostor, 1.0) == min(genuine.min(), impostor.min())


def test_calibrate_threshold_hand_example():
    # Impostors .9 .7 .5 .3 .1; 20 % FAR allows 1 of 5 -> threshold just above .7 (rejects .7 and below).
    t = calibrate_threshold([0.8], [0.1, 0.5, 0.9, 0.3, 0.7], target_far=0.2)
    assert 0.7 < t < 0.7 + 1e-9
    with pytest.raises(ValueError, match="impostor"):
        calibrate_threshold([0.8], [], 0.1)


def test_open_set_metrics():
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2])
    known = np.array([True, True, True, False, False])
    out = open_set_metrics(scores, known, threshold=0.5)
    # Known .9 .8 accepted, .3 rejected -> TAR 2/3; unknown .7 accepted, .2 rejected -> FAR 1/2.
    assert out["TAR"] == pytest.approx(2 / 3) and out["FAR"] == pytest.approx(0.5)
    assert (out["num_known"], out["num_unknown"]) == (3, 2)
    assert open_set_metrics(scores[:3], known[:3], 0.5)["FAR"] is None


def _report() -> MetricsReport:
    r = retrieval_metrics(SIM, QUERIES, GALLERY)
    return MetricsReport.from_result(
        r,
        split="test",
        model_fingerprint="abc123",
        dataset_fingerprint={"num_images": 10, "files_sha256": "ff00"},
        timings_s={"embed": 1.5},
        open_set={"threshold": 0.5, "TAR": 0.9, "FAR": 0.05},
        extra={"rerank": {"R@1": 0.6}},
    )


def _check_type(value, schema: dict, defs: dict) -> bool:
    """Just enough JSON Schema (type/anyOf/$ref) for this report; jsonschema is not a dependency."""
    if "$ref" in schema:
        return _check_type(value, defs[schema["$ref"].split("/")[-1]], defs)
    if "anyOf" in schema:
        return any(_check_type(value, s, defs) for s in schema["anyOf"])
    kind = schema.get("type")
    checks = {
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "object": lambda v: isinstance(v, dict),
        "null": lambda v: v is None,
    }
    if kind is None:
        return True
    ok = checks[kind](value)
    if ok and kind == "number":
        ok = schema.get("minimum", -np.inf) <= value <= schema.get("maximum", np.inf)
    return ok


def test_metrics_json_has_original_keys_and_matches_schema(tmp_path):
    path = write_metrics_json(_report(), tmp_path / "out" / "metrics.json")
    data = json.loads(path.read_text())
    for key in ("R@1", "R@5", "R@10", "mAP", "num_queries", "num_gallery", "num_ids"):
        assert key in data
    assert data["R@1"] == 0.5 and data["num_gallery"] == 5 and data["split"] == "test"
    assert data["per_identity"]["A"]["num_queries"] == 2

    schema = metrics_json_schema()
    assert set(data) == set(schema["properties"])
    assert set(schema["required"]) <= set(data)
    for key, value in data.items():
        assert _check_type(value, schema["properties"][key], schema.get("$defs", {})), key
    assert MetricsReport.model_validate(data) == _report()
    assert not list(path.parent.glob(".*tmp"))


def test_metrics_json_validates_with_jsonschema_when_available(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    data = json.loads(write_metrics_json(_report(), tmp_path / "metrics.json").read_text())
    jsonschema.validate(data, metrics_json_schema())


def test_report_rejects_extra_keys_and_bad_rates():
    data = _report().model_dump(by_alias=True)
    with pytest.raises(ValueError):
        MetricsReport.model_validate({**data, "R@1": 1.5})
    with pytest.raises(ValueError):
        MetricsReport.model_validate({**data, "surprise": 1})


def test_blockwise_ranking_matches_single_block():
    from wildtrack.evaluate import _rank_statistics

    rng = np.random.default_rng(3)
    q_ids, g_ids = rng.integers(0, 5, 23).astype(str), rng.integers(0, 5, 17).astype(str)
    sim = rng.random((23, 17)).astype(np.float32)
    one = _rank_statistics(sim, q_ids, g_ids)
    blocks = _rank_statistics(sim, q_ids, g_ids, max_cells=17 * 4)  # 4 queries per block, last one short
    assert (one[0] == blocks[0]).all()
    assert np.allclose(one[1], blocks[1], equal_nan=True)
