"""model_service.bodies: request bodies read whole, within the limit, by a bounded number of threads.

The streams here behave as granian's WSGI input does (measured in issue 24): `read(n)` blocks until n
bytes or the end of the body, and a body that breaks off just ends. The real server's answers to the
same edges are tested in tests/integration/test_service_api.py and test_service_slow_clients.py."""

from __future__ import annotations

import io
import threading

import pytest

from model_service.bodies import BodyReader, BodyRefused

LIMIT = 1024


class Stalled:
    """A body whose client sent `head` and stopped: reads block until `release` is set."""

    def __init__(self, head: bytes = b'{"records": ['):
        self.data = io.BytesIO(head)
        self.release = threading.Event()

    def read(self, n: int) -> bytes:
        piece = self.data.read(n)
        if len(piece) < n:
            self.release.wait(30)
        return piece


def _environ(stream, length: int | None = None, chunked: bool = False) -> dict:
    env = {"wsgi.input": stream}
    if length is not None:
        env["CONTENT_LENGTH"] = str(length)
    if chunked:
        env["HTTP_TRANSFER_ENCODING"] = "chunked"
    return env


def _refused(reader: BodyReader, environ: dict) -> BodyRefused:
    with pytest.raises(BodyRefused) as info:
        reader.read(environ)
    assert info.value.headers["Connection"] == "close"
    return info.value


@pytest.fixture
def reader() -> BodyReader:
    return BodyReader(LIMIT, readers=2, wait=0.1)


def test_a_body_within_the_limit_is_read_whole(reader):
    assert reader.read(_environ(io.BytesIO(b"x" * LIMIT), LIMIT)) == b"x" * LIMIT
    assert reader.read(_environ(io.BytesIO(b"y" * LIMIT), chunked=True)) == b"y" * LIMIT
    assert reader.read(_environ(io.BytesIO(b"ignored"))) == b""  # neither length nor chunked: no body


def test_a_chunked_body_over_the_limit_is_413_not_cut(reader):
    """werkzeug read LIMIT bytes of it and parsed them as if whole."""
    assert _refused(reader, _environ(io.BytesIO(b"x" * (LIMIT + 1)), chunked=True)).status == 413


def test_a_content_length_over_the_limit_is_413_unread(reader):
    stream = io.BytesIO(b"x" * 10)
    assert _refused(reader, _environ(stream, LIMIT + 1)).status == 413
    assert stream.tell() == 0


def test_a_body_shorter_than_its_content_length_is_400(reader):
    refused = _refused(reader, _environ(io.BytesIO(b'{"records": []}'), 100))
    assert refused.status == 400 and refused.kind == "incomplete"


def test_past_the_readers_a_body_is_503_unread(reader):
    """Two threads hold bodies whose clients stopped sending: a third request waits `wait` seconds for a
    reader, then is answered 503, its body unread; once the clients leave, the readers are free again."""
    stalled = [Stalled(), Stalled()]
    done: list[int] = []

    def hold(body: Stalled) -> None:
        with pytest.raises(BodyRefused) as info:
            reader.read(_environ(body, 100))
        done.append(info.value.status)

    threads = [threading.Thread(target=hold, args=(body,)) for body in stalled]
    try:
        for t in threads:
            t.start()
        while reader._readers._value:  # both readers taken
            threading.Event().wait(0.01)
        stream = io.BytesIO(b"{}")
        busy = _refused(reader, _environ(stream, 2))
        assert busy.status == 503 and busy.kind == "busy" and busy.headers["Retry-After"]
        assert stream.tell() == 0
    finally:
        for body in stalled:
            body.release.set()  # the clients leave: their bodies end short
        for t in threads:
            t.join(10)
    assert done == [400, 400]
    assert reader.read(_environ(io.BytesIO(b"{}"), 2)) == b"{}"
