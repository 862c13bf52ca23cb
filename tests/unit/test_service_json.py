"""model_service.jsonfast: orjson where it answers like the standard library, json where it would not."""

from __future__ import annotations

import json
import math

import pytest

from model_service import jsonfast

RECORD = {"tenure": 1, "monthly_charges": 95.25, "contract": "Month-to-month", "total_charges": None}

BODIES = [
    json.dumps({"records": [RECORD] * 1000}),
    '{"records":[{"a":1e400}]}',  # json: inf
    '{"records":[{"a":Infinity,"b":-Infinity}]}',
    '{"a":100000000000000000000}',  # beyond 64 bits: json keeps the int (orjson would give 1e20)
    '{"a":-9223372036854775809,"b":18446744073709551615}',
    '{"a":' + "1" * 400 + "}",
    '{"a":0.1234567890123456789012}',
    '{"a":-0,"b":-0.0,"c":1E2,"d":5e-324,"e":1.7976931348623157e308}',
    '{"a":"\\u00e9 \\u2028 \\ud83d\\ude00","b":"Müller"}',
    '{"a":1,"a":2}',  # duplicate keys: the last wins
    "[1, 2.5, true, false, null]",
    '  {"x" : [ ] }  ',
]
BAD = ['{"a":NaN', '{"a":1,}', "", "{", '{"a":"\\ud800"}', '{"a": 01}', "\x00", '{"a":"x"} junk']


@pytest.mark.parametrize("body", BODIES)
def test_loads_reads_what_json_reads(body):
    expected = json.loads(body)
    for raw in (body, body.encode()):
        got = jsonfast.loads(raw)
        assert repr(got) == repr(expected)  # same types too (int stays int, -0.0 stays -0.0)


def test_loads_reads_nan_like_json():
    assert math.isnan(jsonfast.loads('{"a":NaN}')["a"])


@pytest.mark.parametrize("body", BAD)
def test_loads_rejects_what_json_rejects(body):
    try:
        json.loads(body)
    except ValueError:
        pass
    else:  # a lone surrogate escape: json accepts it, and so must we
        assert jsonfast.loads(body) == json.loads(body)
        return
    with pytest.raises(ValueError):
        jsonfast.loads(body)


def test_dumps_round_trips_like_json():
    values = [RECORD, {"a": 10**30, "b": [1.5, None, "é"]}, {"p": 1 / 3, "q": 2.5e-7, "r": -0.0}]
    for value in values:
        text = jsonfast.dumps(value)
        assert isinstance(text, str)
        assert json.loads(text) == value
        assert repr(json.loads(text)) == repr(json.loads(json.dumps(value)))


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": {"c": 2}}',
        '{"records": [{"x": "a:b"}, {"x": 1}]}',
        '{"records": [{"x": {"y": 1, "z": 2}}]}',
        '{"a" : 1}',
        "[1, 2]",
    ],
)
def test_loads_unique_reads_what_loads_reads(text):
    assert jsonfast.loads_unique(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('{"a": 1, "a": 2}', "a"),
        ('{"records": [{"x": 1}, {"y": 1, "y": 2}]}', "y"),
        ('{"a" : 1, "a"\n: 2}', "a"),
        ('{"r": {"s": {"t": 1, "t": 1}}}', "t"),
        ('{"v": "a:b", "w": 1, "w": 2}', "w"),
    ],
)
def test_loads_unique_rejects_a_repeated_key(text, key):
    with pytest.raises(jsonfast.DuplicateKeyError) as err:
        jsonfast.loads_unique(text.encode())
    assert err.value.key == key
