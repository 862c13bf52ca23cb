"""Request bodies read whole, within the size limit, by a bounded number of app threads per worker.

granian reads a request's line and headers in Rust (a client that takes over 10 s is shed), but a WSGI
app reads the body itself: `wsgi.input.read(n)` blocks the calling thread, in Rust, until n bytes or
the end of the body arrive, with no timeout of its own. Found in issue 24 and measured with granian 2.8.9:

- a client that announces a body and stops sending held an app thread for as long as it liked: 40 such
  connections (2 workers x 16 threads) made `/health` and predict time out;
- werkzeug limits a chunked body (no Content-Length) by reading MAX_REQUEST_BYTES of it and stopping,
  so a longer body was cut and parsed as if whole (valid JSON followed by junk: 200 and the record
  logged);
- granian reports a broken body (the connection ends before it is complete) as its end: through
  `read(n)` a Content-Length body comes back short, a chunked one looks complete.

`BodyReader.read` is what the JSON endpoints use instead of `request.get_data`:

- size: a Content-Length over the limit is refused before reading (413); otherwise at most
  limit + 1 bytes are read, and a body that has more is refused (413) before any parsing, chunked or not;
- whole: a Content-Length body that ends early is refused (400); a chunked body cut short is refused
  by the JSON parser (400) unless the cut falls right after a complete JSON document (granian does not
  tell the app, see above);
- bound: at most `readers` app threads of a worker read bodies at once (BODY_READERS, default half of
  SERVICE_THREADS), so the others are always free for `/health` and requests whose body has come.
  A request that finds them all taken waits up to `wait` seconds (READER_WAIT_SECONDS: reads of bodies
  that have come take microseconds, so concurrent clients do not see this), then is answered 503
  without its body being read, and its connection closed. Measured: with 4 threads (2 readers) and
  no wait, 1 of 663 predictions under the reload test's load got 503.

No deadline: a body read cannot be timed out under granian 2.8.9. Measured: when the app answers
(408) while another thread is still blocked reading that request's body, granian blocks the worker
(it waits for the body with the GIL held) until the client sends or leaves: every thread of the
worker, `/health` included, stopped for as long as the stalled client wanted. So a client that stops
sending holds its reader (an app thread) until it sends or leaves; the bound keeps such clients from
taking more than BODY_READERS threads.

Every refusal carries `Connection: close`: the connection is not reused after a body that was not read
whole. A refused request whose body is not read (413 by Content-Length, 503) is closed at once.
"""

from __future__ import annotations

import threading
from typing import Any

PIECE = 256 * 1024  # bytes per read call
READER_WAIT_SECONDS = 1.0  # how long a request waits for a free reader before its 503


class BodyRefused(Exception):
    """A body not read whole: the HTTP status, a message and why (the validation-error kind)."""

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.headers = {"Connection": "close", **(headers or {})}


def content_length(environ: dict[str, Any]) -> int | None:
    value = environ.get("CONTENT_LENGTH")
    if value in (None, ""):
        return None
    try:
        return max(0, int(value))
    except ValueError:
        return None


class BodyReader:
    """Reads request bodies for one worker process (see the module's docstring)."""

    def __init__(self, limit: int, readers: int, wait: float = READER_WAIT_SECONDS):
        self.limit, self.wait = limit, wait
        self._readers = threading.BoundedSemaphore(readers)

    def read(self, environ: dict[str, Any]) -> bytes:
        length = content_length(environ)
        if length is not None and length > self.limit:
            raise BodyRefused(413, f"request body over {self.limit} bytes", "too_large")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if length == 0 or (length is None and not chunked):
            return b""
        if not self._readers.acquire(timeout=self.wait):
            raise BodyRefused(
                503,
                "server busy: every thread that may read a request body is reading one; retry",
                "busy",
                {"Retry-After": "1"},
            )
        try:
            data = _read(environ["wsgi.input"], self.limit + 1 if length is None else length)
        finally:
            self._readers.release()
        if len(data) > self.limit:
            raise BodyRefused(413, f"request body over {self.limit} bytes", "too_large")
        if length is not None and len(data) < length:
            raise BodyRefused(
                400, f"incomplete body: {len(data)} of {length} bytes (Content-Length)", "incomplete"
            )
        return data


def _read(stream: Any, want: int) -> bytes:
    """Up to `want` bytes, fewer if the body ends first."""
    out = bytearray()
    while len(out) < want:
        piece = stream.read(min(PIECE, want - len(out)))
        if not piece:
            break
        out += piece
    return bytes(out)
