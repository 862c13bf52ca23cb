"""Authentication: an API key (`X-API-Key`) for the v1 endpoints, a bearer token for the admin ones.

With AUTH_ENABLED=false every check is off. Secrets are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache, wraps

from flask import request
from flask_smorest import abort

from model_service.state import services


def matches(given: str, secrets: tuple[str, ...]) -> bool:
    """Constant-time: digests of equal length are compared (no length leak), and every configured
    secret is compared whatever matched before."""
    given_d = hashlib.sha256(given.encode()).digest()
    found = False
    for secret_d in _digests(secrets):
        found |= hmac.compare_digest(given_d, secret_d)
    return found


@lru_cache(maxsize=16)
def _digests(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    """The configured secrets' digests, computed once per settings (not on every request)."""
    return tuple(hashlib.sha256(s.encode()).digest() for s in secrets)


def require_api_key(view):
    """401 without an X-API-Key header, 403 with a key that is not in API_KEYS."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        settings = services().settings
        if settings.auth_enabled:
            key = request.headers.get("X-API-Key")
            if not key:
                abort(401, message="missing API key: send it in the X-API-Key header")
            if not matches(key, settings.api_keys):
                abort(403, message="invalid API key")
        return view(*args, **kwargs)

    return wrapper


def require_admin(view):
    """401 without a bearer token, 403 when ADMIN_TOKEN is unset or the token differs."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        settings = services().settings
        if settings.auth_enabled:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                abort(
                    401,
                    message="missing admin token: send 'Authorization: Bearer <ADMIN_TOKEN>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if settings.admin_token is None:
                abort(403, message="admin endpoints are disabled: ADMIN_TOKEN is not set")
            if not matches(token.strip(), (settings.admin_token,)):
                abort(403, message="invalid admin token")
        return view(*args, **kwargs)

    return wrapper
