"""Which threshold decides "new individual": one rule for the CLI, the service and evaluation."""

import math

import pytest

from wildtrack.decide.policy import Thresholds, choose_thresholds


def test_a_reranking_catalogue_decides_on_its_fitted_thresholds():
    assert choose_thresholds(None, True, 0.4, 0.7, stored_cosine=0.3) == Thresholds(0.4, 0.7)


def test_without_an_encounter_threshold_encounters_use_the_photo_one():
    assert choose_thresholds(None, True, 0.4, None) == Thresholds(0.4, 0.4)


def test_a_global_catalogue_decides_on_the_cosine_stored_with_the_index():
    assert choose_thresholds(None, False, 0.4, 0.7, stored_cosine=0.3) == Thresholds(0.3, 0.3)
    assert choose_thresholds(None, False) == Thresholds(None, None)  # always name the closest turtle


def test_an_explicit_threshold_overrides_photos_and_encounters_alike():
    assert choose_thresholds(0.55, True, 0.4, 0.7) == Thresholds(0.55, 0.55)
    assert choose_thresholds(0.55, False, stored_cosine=0.3) == Thresholds(0.55, 0.55)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_threshold_that_is_not_a_finite_number_is_refused(bad):
    with pytest.raises(ValueError, match="finite"):
        choose_thresholds(bad, True)
    with pytest.raises(ValueError, match="finite"):
        choose_thresholds(None, False, stored_cosine=bad)
