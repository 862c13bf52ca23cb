"""Edges every answer shares: bounded request-metric labels and the security headers.

- Request metrics (prometheus-flask-exporter) are labelled by method, endpoint and status. The method
  and the path come from the client, so each is reduced to a bounded set: a method outside
  `KNOWN_METHODS` is labelled `other`, a path no route matches `unmatched` (`ServiceRequest`,
  `endpoint`). Routing still sees the real method (werkzeug reads it from the WSGI environ), so such a
  request is answered 405 or 404 as before.
- Security headers on every answer (`security_headers`): `X-Content-Type-Options: nosniff`,
  `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`, a Content-Security-Policy (`default-src
  'none'; frame-ancestors 'none'` on the API; on the Swagger UI page the scripts, styles and images it
  loads from this origin, plus the inline script that starts it), and `Cache-Control: no-store` unless
  the view set its own (the Swagger UI assets are cached).
"""

from __future__ import annotations

from flask import Request, Response, request

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED = "unmatched"

API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class ServiceRequest(Request):
    """`method` is one of KNOWN_METHODS or `other` (it labels the request metrics); routing reads the
    method the client sent from the WSGI environ."""

    def __init__(self, environ, *args, **kwargs):
        super().__init__(environ, *args, **kwargs)
        if self.method not in KNOWN_METHODS:
            self.method = OTHER_METHOD


def endpoint(req: Request) -> str:
    """The `endpoint` label of the request metrics: the Flask endpoint, or `unmatched` (named so: the
    exporter names the label after this function)."""
    return req.endpoint or UNMATCHED


_DEFAULTS = [(name.lower(), name, value) for name, value in HEADERS.items()]


def security_headers(resp: Response) -> Response:
    """The headers above, each unless the view set its own (one pass over the response's headers)."""
    headers = resp.headers
    present = {name.lower() for name, _ in headers.items()}
    for lower, name, value in _DEFAULTS:
        if lower not in present:
            headers.add(name, value)
    if "content-security-policy" not in present:
        path = request.path
        docs = path == "/docs" or path.startswith("/docs/")
        headers.add("Content-Security-Policy", DOCS_CSP if docs else API_CSP)
    if "cache-control" not in present:
        headers.add("Cache-Control", "no-store")
    return resp
