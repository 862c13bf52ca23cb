"""core.agreement: how far two models' scores agree on the same records, without labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.agreement import agreement


def test_the_same_scores_agree_fully():
    s = np.random.default_rng(0).random(200)
    a = agreement(s, s, 0.5, 0.5)
    assert a.n == 200 and a.rank_agreement == pytest.approx(1.0) and a.disagreement == 0.0


def test_flipped_scores_rank_in_reverse_and_decide_the_opposite():
    s = np.random.default_rng(1).random(200)
    a = agreement(1 - s, s, 0.5, 0.5)
    assert a.rank_agreement == pytest.approx(-1.0)
    assert a.disagreement == pytest.approx(np.mean((1 - s >= 0.5) != (s >= 0.5))) and a.disagreement > 0.95


def test_each_model_decides_at_its_own_threshold():
    new = np.array([0.1, 0.2, 0.3, 0.4])
    old = new / 2  # same order, half the scale
    assert agreement(new, old, 0.25, 0.125).disagreement == 0.0  # the same cut on each scale
    assert agreement(new, old, 0.25, 0.25).disagreement == 0.5  # old calls 0.3 and 0.4 negative
    assert agreement(new, old, 0.25, 0.25).rank_agreement == pytest.approx(1.0)


def test_nothing_to_rank_is_nan_not_an_error():
    assert math.isnan(agreement([0.3, 0.3, 0.3], [0.1, 0.5, 0.9], 0.5, 0.5).rank_agreement)
    empty = agreement([], [], 0.5, 0.5)
    assert empty.n == 0 and math.isnan(empty.rank_agreement) and math.isnan(empty.disagreement)


def test_scores_of_different_records_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        agreement([0.1, 0.2], [0.1], 0.5, 0.5)
