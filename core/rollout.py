"""The one rollback path, shared by `churnops rollback` (a person) and the post-promotion guard
(monitoring.guard): move `champion` back (core.registry.rollback: registry tags and history), write the
audit row of the `rollbacks` table (who, why, from, to), ask the service to reload, and wait until it
serves the version; plus the service calls both need (GET /v1/model, POST /v1/admin/reload).

`alias_lock` makes every move of a model's `champion` (a person's rollback, the guard's, a promotion)
one at a time: a second mover is refused at once with who holds it and since when.

The champion timeline: `promote` (the gate, so a retrain's promotion and a forced one too) and
`roll_back` (a person, the guard) move the alias and then call `record_move`, the one writer of the
`champion_moves` table, while the caller holds `alias_lock`. The registry (MLflow) and the store are
two databases, so no transaction spans both: `reconcile` compares the timeline's last move with the
registry's `champion` alias and its champion_history, and says where they disagree.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

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


def record_move(
    conn: sa.Connection,
    name: str,
    move: registry.AliasMove,
    kind: str,
    details: dict[str, Any] | None = None,
) -> int:
    """Write one move of `name`'s champion to the timeline (`champion_moves`); its id. The one writer:
    `promote` and `roll_back` call it right after the registry moved the alias, under `alias_lock`."""
    _known(kind)
    return int(
        conn.execute(
            store.champion_moves.insert().values(
                at=store.utcnow(),
                model_name=name,
                from_version=None if move.from_version is None else str(move.from_version),
                to_version=str(move.to_version),
                kind=kind,
                by=move.by,
                reason=move.reason,
                details=details,
            )
        ).inserted_primary_key[0]
    )


def _known(kind: str) -> None:
    if kind not in store.MOVE_KINDS:
        raise ValueError(f"unknown kind of champion move {kind!r} (one of: {', '.join(store.MOVE_KINDS)})")


def promote(
    engine: sa.Engine,
    name: str,
    version: str | int,
    reason: str,
    by: str | None = None,
    forced: bool = False,
    details: dict[str, Any] | None = None,
) -> registry.AliasMove:
    """Move `champion` to `version` (core.registry.promote) and write the move to the timeline (kind
    `forced_promotion` past a failed gate, else `promotion`); nothing is written when the version already
    is the champion. Call it under `alias_lock`. Raises registry.RegistryError when refused."""
    move = registry.promote(name, version, reason=reason, by=by, forced=forced)
    if move.from_version != move.to_version:
        with engine.begin() as conn:
            record_move(conn, name, move, "forced_promotion" if forced else "promotion", details)
    return move


def roll_back(
    engine: sa.Engine,
    name: str,
    to_version: str | None,
    reason: str,
    by: str,
    kind: str = "rollback",
    details: dict[str, Any] | None = None,
) -> Rollback:
    """Move `champion` back (to the version it replaced, or `to_version`) and write the audit row and the
    timeline's move (`kind`: rollback, or guard_rollback with the guard's figures in `details`) in one
    transaction. Raises registry.RegistryError when refused (nothing to roll back to, unknown or blocked
    version)."""
    _known(kind)  # before anything moves
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
        record_move(conn, name, move, kind, {**(details or {}), "rollback_id": int(row_id)})
    return Rollback(int(row_id), move)


@dataclass(frozen=True)
class Reconciliation:
    """The timeline against the registry: `agree`, and the sentence saying what was compared."""

    agree: bool
    line: str
    registry_version: str | None
    timeline_version: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "agree": self.agree,
            "line": self.line,
            "registry_version": self.registry_version,
            "timeline_version": self.timeline_version,
        }


def reconcile(engine: sa.Engine, name: str) -> Reconciliation:
    """Compare the timeline's last move of `name` with the registry: its `champion` alias and the last
    entry of its champion_history (from and to). Called where a process starts (the guard's loop,
    `churnops history`); a disagreement is a move made outside core.rollout, or one whose timeline write
    failed after the alias moved. Raises what the registry raises when it cannot be asked."""
    last = store.last_champion_move(engine, name)
    champion = registry.version_by_alias(name, registry.CHAMPION, strict=True)
    current = None if champion is None else str(champion.version)
    moved_to = None if last is None else str(last["to_version"])
    if current is None and last is None:
        return Reconciliation(True, f"'{name}' has no champion and the timeline no move", None, None)
    if current != moved_to:
        where = f"v{moved_to} ({last['kind']} at {last['at']:%Y-%m-%d %H:%M:%S}Z)" if last else "no move"
        return Reconciliation(
            False,
            f"DISAGREE: the registry's champion of '{name}' is {'v' + current if current else 'unset'}, "
            f"the timeline's last move is to {where}: a move made outside core.rollout or not recorded",
            current,
            moved_to,
        )
    history = registry.champion_history(name)
    if history:
        h = history[-1]
        pair = (h.get("from_version"), str(h.get("to_version")))
        if pair != (last["from_version"], moved_to):
            return Reconciliation(
                False,
                f"DISAGREE: '{name}' champion_history's last move is v{pair[0] or '-'} -> v{pair[1]} "
                f"at {h.get('at')}, the timeline's is v{last['from_version'] or '-'} -> v{moved_to}",
                current,
                moved_to,
            )
    return Reconciliation(
        True,
        f"agree: champion of '{name}' v{current}, the timeline's last move {last['kind']} "
        f"v{last['from_version'] or '-'} -> v{moved_to} at {last['at']:%Y-%m-%d %H:%M:%S}Z",
        current,
        moved_to,
    )


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
