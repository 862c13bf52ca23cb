"""observe_many (one increment per bucket) gives the same histogram as one observe per value; `child`
is the metric's own labelled child."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from model_service.metrics import child, observe_many


def _samples(h: Histogram) -> dict:
    return {
        (s.name, s.labels.get("le")): s.value
        for metric in h.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_matches_observe():
    values = np.concatenate([np.random.default_rng(0).random(997), [0.0, 0.05, 0.1, 1.0]])
    a = Histogram("a", "a", buckets=[i / 20 for i in range(1, 21)], registry=CollectorRegistry())
    b = Histogram("a", "a", buckets=[i / 20 for i in range(1, 21)], registry=CollectorRegistry())
    for v in values.tolist():
        a.observe(v)
    observe_many(b, values)
    sa, sb = _samples(a), _samples(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert abs(sa[key] - sb[key]) < 1e-9, key


def test_observe_many_of_a_few_values_matches_observe():
    values = np.array([0.0, 0.05, 0.5, 1.0])
    a = Histogram("a", "a", buckets=[i / 20 for i in range(1, 21)], registry=CollectorRegistry())
    b = Histogram("a", "a", buckets=[i / 20 for i in range(1, 21)], registry=CollectorRegistry())
    for v in values.tolist():
        a.observe(v)
    observe_many(b, values)
    assert _samples(a) == _samples(b)


def test_child_is_the_labelled_child_of_its_metric():
    h = Histogram("h", "h", ["version"], registry=CollectorRegistry())
    g = Histogram("g", "g", ["version"], registry=CollectorRegistry())
    assert child(h, "1") is h.labels("1") and child(h, "1") is child(h, "1")
    assert child(h, "2") is h.labels("2") and child(h, "2") is not child(h, "1")
    assert child(g, "1") is g.labels("1") and child(g, "1") is not child(h, "1")
