"""Request ids: UUIDv7 (RFC 9562), unique per process and sortable by time; the feedback endpoint looks
for an id it does not find in the database in the spool only when it is one of these."""

from __future__ import annotations

import os
import random
import secrets
import time
import uuid

_RNG: tuple[int, random.Random] | None = None


def _rng() -> random.Random:
    """A per-process generator seeded from os.urandom (reseeded after a fork): ids must be unique, not secret."""
    global _RNG
    if _RNG is None or _RNG[0] != os.getpid():
        _RNG = (os.getpid(), random.Random(secrets.token_bytes(32)))
    return _RNG[1]


def new_request_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits; sortable by time."""
    ms = time.time_ns() // 1_000_000
    rand = _rng().getrandbits(80)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64  # version 7, rand_a
    value |= 0b10 << 62 | (rand & ((1 << 62) - 1))  # variant, rand_b
    h = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, without building the UUID
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def request_id_age(request_id: str) -> float | None:
    """Seconds since a UUIDv7 request id was issued (None when it is not one)."""
    try:
        u = uuid.UUID(request_id)
    except ValueError:
        return None
    if u.version != 7:
        return None
    return time.time() - (u.int >> 80) / 1000.0
