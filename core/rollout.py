"""The one rollback path, shared by `churnops rollback` (a person) and the post-promotion guard
(monitoring.guard): move `champion` back (core.registry.rollback: registry tags and history), write the
audit row of the `rollbacks` table (who, why, from, to), ask the service to reload, and wait until it
serves the version; plus the service calls both need (GET /v1/model, POST /v1/admin/reload).

`alias_lock` makes every move of a model's `champion` (a person's rollback, the guard's, a promotion)
one at a time: a second mover is refused at once with who holds it and since when.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import requests
import sqlalchemy as sa

from core import registry, store


class AliasBusy(RuntimeError):
    """Another move of the model's `champion` alias is in progress (the message says whose, since when)."""


@contextmanager
def alias_lock(
    engine: sa.Engine, name: str, holder: str, purpose: str, hold_seconds: float
) -> Iterator[None]:
    """Hold the move lock of model `name` for the block (a row of `alias_locks`, so across processes and
    hosts sharing the store). Raises AliasBusy at once when another holder has it. A holder that dies
    leaves the row until `hold_seconds` after it took it; the next mover then takes it over."""
    locks = store.alias_locks
    token = secrets.token_hex(16)
    now = store.utcnow()
    with engine.begin() as conn:
        conn.execute(sa.delete(locks).where(locks.c.model_name == name, locks.c.expires_at < now))
    try:
        with engine.begin() as conn:
            conn.execute(
                locks.insert().values(
                    model_name=name,
                    holder=holder,
                    purpose=purpose,
                    token=token,
                    acquired_at=now,
                    expires_at=now + timedelta(seconds=hold_seconds),
                )
            )
    except sa.exc.IntegrityError:
        with engine.connect() as conn:
            held = conn.execute(sa.select(locks).where(locks.c.model_name == name)).mappings().first()
        since = f"{store.as_utc(held['acquired_at']):%Y-%m-%d %H:%M:%S}Z" if held else "a moment ago"
        who = f"{held['purpose']} by {held['holder']}" if held else "another move"
        raise AliasBusy(
            f"another move of '{name}' champion is in progress: {who} since {since}; try again when it ends"
        ) from None
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(sa.delete(locks).where(locks.c.model_name == name, locks.c.token == token))


@dataclass(frozen=True)
class Service:
    """Where the model service answers, and the credentials the rollback path uses."""

    url: str
    api_key: str = ""
    admin_token: str = ""


def served_version(service: Service, timeout: float = 3.0) -> str | None:
    """The version GET /v1/model reports, or None when the service does not answer."""
    try:
        response = requests.get(
            f"{service.url}/v1/model", headers={"X-API-Key": service.api_key}, timeout=timeout
        )
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    body = response.json()
    for key in ("version", "model_version"):
        if body.get(key) is not None:
            return str(body[key])
    model = body.get("model")
    return str(model.get("version")) if isinstance(model, dict) and model.get("version") is not None else None


def request_reload(service: Service) -> str:
    try:
        response = requests.post(
            f"{service.url}/v1/admin/reload",
            headers={"Authorization": f"Bearer {service.admin_token}"},
            timeout=30,
        )
    except requests.RequestException as exc:
        return f"reload request failed ({type(exc).__name__}); waiting for the service's own poll"
    return f"reload requested: HTTP {response.status_code}"


def wait_served(
    service: Service, version: str, timeout: float, confirmations: int = 4
) -> tuple[bool, str | None, float]:
    """Until `confirmations` answers in a row (separate connections, so several workers) report `version`."""
    started = time.monotonic()
    seen, streak = None, 0
    while time.monotonic() - started < timeout:
        seen = served_version(service)
        streak = streak + 1 if seen == str(version) else 0
        if streak >= confirmations:
            return True, seen, time.monotonic() - started
        time.sleep(0.25 if streak else 0.5)
    return False, seen, time.monotonic() - started


@dataclass(frozen=True)
class Rollback:
    row_id: int
    move: registry.AliasMove

    def line(self, name: str) -> str:
        m = self.move
        return (
            f"rollback {self.row_id}: champion of '{name}' v{m.from_version} -> v{m.to_version} "
            f"by {m.by} at {m.at} ({m.reason})"
        )


def roll_back(engine: sa.Engine, name: str, to_version: str | None, reason: str, by: str) -> Rollback:
    """Move `champion` back (to the version it replaced, or `to_version`) and write the audit row.
    Raises registry.RegistryError when refused (nothing to roll back to, unknown or blocked version)."""
    move = registry.rollback(name, to_version, reason=reason, by=by)
    with engine.begin() as conn:
        row_id = conn.execute(
            store.rollbacks.insert().values(
                at=store.utcnow(),
                by=by,
                reason=reason,
                model_name=name,
                from_version=None if move.from_version is None else str(move.from_version),
                to_version=str(move.to_version),
            )
        ).inserted_primary_key[0]
    return Rollback(int(row_id), move)


def record_served(engine: sa.Engine, row_id: int, served: bool, detail: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(store.rollbacks)
            .where(store.rollbacks.c.id == row_id)
            .values(served=served, detail=detail)
        )


def follow(engine: sa.Engine, service: Service, done: Rollback, timeout: float) -> tuple[bool, str]:
    """Ask the service to reload, wait until it serves the rolled-back-to version, record the outcome."""
    request_reload(service)
    ok, seen, waited = wait_served(service, str(done.move.to_version), timeout)
    detail = (
        f"served v{seen} after {waited:.1f} s"
        if ok
        else f"service at {service.url} reports {'v' + seen if seen else 'nothing'} after {timeout:.0f} s"
    )
    record_served(engine, done.row_id, ok, detail)
    return ok, detail
