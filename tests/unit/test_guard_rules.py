"""The post-promotion guard's judgement (pure: figures in, breaches out), its bounds in the data set config
and the service metrics it reads the error rate from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from core.agreement import Agreement
from core.dataset import GUARD_DEFAULTS, ConfigError, load_config
from monitoring import guard
from tests.conftest import REPO

BOUNDS = dict(GUARD_DEFAULTS)


def figures(version: str, records=300, errors=0.0, p99=5.0, auc=0.84, recall=0.75, labelled=300):
    return guard.Figures(
        version,
        records=records,
        requests=records,
        errors=errors,
        scored=float(records),
        p99_ms=p99,
        quality={"n_labelled": labelled, "roc_auc": auc, "recall": recall},
    )


def test_a_champion_within_the_bounds_has_no_breach():
    breaches, pending = guard.judge(figures("2", auc=0.82, p99=9.0), figures("1"), BOUNDS)
    assert breaches == [] and pending == []


@pytest.mark.parametrize(
    ("new", "figure"),
    [
        (figures("2", errors=10.0), "error_rate"),  # 10 of 310 records: 3.2% > 0% + 2%
        (figures("2", p99=16.0), "latency_p99"),  # above 2 x 5 ms and 5 + 10 ms
        (figures("2", auc=0.70), "roc_auc"),
        (figures("2", recall=0.50), "recall"),
    ],
)
def test_each_bound_breached_names_its_figure(new, figure):
    breaches, _ = guard.judge(new, figures("1"), BOUNDS)
    assert [b.figure for b in breaches] == [figure]


def test_latency_needs_both_the_ratio_and_the_slack():
    # 3x a 1 ms p99 is only 2 ms more: noise at that size, not a breach
    breaches, _ = guard.judge(figures("2", p99=3.0), figures("1", p99=1.0), BOUNDS)
    assert breaches == []


def test_too_few_records_or_labels_are_not_judged_yet():
    breaches, pending = guard.judge(
        figures("2", records=50, errors=40.0, auc=0.1, labelled=50), figures("1"), BOUNDS
    )
    assert breaches == []
    assert any("after 100 records" in p for p in pending)
    assert any("after 100 labels" in p for p in pending)


def test_unreadable_service_metrics_leave_the_error_rate_unjudged():
    new = figures("2")
    new.errors = new.scored = None
    breaches, pending = guard.judge(new, figures("1"), BOUNDS)
    assert breaches == [] and any("not readable" in p for p in pending)


def test_figures_take_one_latency_per_request_and_quality_at_the_threshold():
    frame = pd.DataFrame(
        {
            "request_id": ["a"] * 99 + [f"r{i}" for i in range(100)],
            "score": np.r_[np.full(99, 0.9), np.linspace(0, 1, 100)],
            "latency_ms": np.r_[np.full(99, 500.0), np.full(100, 2.0)],
            "label": np.r_[np.ones(99), (np.linspace(0, 1, 100) > 0.5).astype(float)],
        }
    )
    out = guard.figures_of(frame, "3", 0.5, {"3": (190.0, 10.0)})
    assert out.requests == 101 and out.records == 199
    assert out.p99_ms == 2.0  # one slow request of 101 (its 99 records would make p99 500 ms)
    assert out.quality["roc_auc"] == pytest.approx(1.0) and out.error_rate == pytest.approx(0.05)


def test_service_counts_sum_workers_by_version(monkeypatch):
    text = (
        "# TYPE model_service_predictions counter\n"
        'model_service_predictions_total{label="0",model_version="1"} 70.0\n'
        'model_service_predictions_total{label="1",model_version="1"} 30.0\n'
        'model_service_predictions_total{label="0",model_version="2"} 5.0\n'
        'model_service_predictions_created{label="0",model_version="2"} 1.7e9\n'
        'model_service_prediction_errors_total{model_version="2"} 15.0\n'  # untyped: named by its sample
    )

    class Answer:
        def raise_for_status(self):
            pass

    answer = Answer()
    answer.text = text
    monkeypatch.setattr(guard.requests, "get", lambda *a, **k: answer)
    counts = guard.service_counts(guard.rollout.Service("http://service"))
    assert counts == {"1": (100.0, 0.0), "2": (5.0, 15.0)}


def config_with(tmp_path: Path, guard_spec) -> Path:
    raw = yaml.safe_load((REPO / "config" / "telco_churn.yaml").read_text())
    raw["guard"] = guard_spec
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_guard_bounds_come_from_the_config(tmp_path):
    config = load_config(config_with(tmp_path, {"watch_seconds": 60, "max_quality_drop": {"roc_auc": 0.1}}))
    assert config.guard["watch_seconds"] == 60 and config.guard["max_quality_drop"] == {"roc_auc": 0.1}
    assert config.guard["min_records"] == GUARD_DEFAULTS["min_records"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"watch_minutes": 5}, "guard has unknown key"),
        ({"min_records": -1}, "guard.min_records must be a number >= 0"),
        ({"max_latency_p99_ratio": 0.5}, "max_latency_p99_ratio must be >= 1"),
        ({"max_quality_drop": {"auc": 0.1}}, "guard.max_quality_drop maps"),
        ({"min_rank_agreement": 1.5}, "guard.min_rank_agreement must be a number from 0 to 1"),
    ],
)
def test_a_bad_guard_bound_names_the_key(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config_with(tmp_path, spec))


# --------------------------------------------------------------------------- agreement, no labels
def with_agreement(fig: guard.Figures, rank: float, differ: float, n=300, measured=None) -> guard.Figures:
    fig.agreement = Agreement(n, rank, differ)
    fig.agreement_bounds = guard.agreement_bounds(BOUNDS, measured)
    return fig


def test_a_model_ranking_in_reverse_is_a_breach_without_any_label():
    new = with_agreement(figures("9", labelled=0), rank=-0.8, differ=0.7)
    breaches, pending = guard.judge(new, figures("1", labelled=0), BOUNDS)
    assert {b.figure for b in breaches} == {"rank_agreement", "disagreement"}
    assert "rank agreement with v1 -0.80 < 0.50 on 300 records, no labels" in breaches[0].detail
    assert any(p.startswith("live quality after") for p in pending)  # no label was needed


def test_agreement_is_judged_only_after_min_records():
    new = with_agreement(figures("9"), rank=-0.8, differ=0.7, n=BOUNDS["min_records"] - 1)
    breaches, pending = guard.judge(new, figures("1"), BOUNDS)
    assert not breaches and any(p.startswith("agreement after") for p in pending)


def test_the_gates_figures_tighten_the_bounds_but_never_excuse_a_bad_pair():
    close = {"against": "1", "rank_agreement": 0.97, "disagreement": 0.04}
    tight = guard.agreement_bounds(BOUNDS, close)
    assert tight["min_rank_agreement"] == pytest.approx(0.97 - BOUNDS["agreement_slack"])
    assert tight["max_disagreement"] == pytest.approx(0.04 + BOUNDS["agreement_slack"])
    # the same live figures pass with the config's bounds and breach with the gate's
    loose = with_agreement(figures("2"), rank=0.7, differ=0.1)
    assert guard.judge(loose, figures("1"), BOUNDS)[0] == []
    strict = with_agreement(figures("2"), rank=0.7, differ=0.1, measured=close)
    assert [b.figure for b in guard.judge(strict, figures("1"), BOUNDS)[0]] == ["rank_agreement"]
    # a forced bad model the gate measured as reversed is held to the config's floor all the same
    reversed_pair = {"against": "1", "rank_agreement": -0.85, "disagreement": 0.8}
    bounds = guard.agreement_bounds(BOUNDS, reversed_pair)
    assert bounds["min_rank_agreement"] == BOUNDS["min_rank_agreement"]
    assert bounds["max_disagreement"] == BOUNDS["max_disagreement"]
