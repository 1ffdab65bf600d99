"""Opaque list cursors.

A cursor is the sort key of the last run on a page, (started_at, run_id),
which never changes for a run: a page boundary stays put while runs start and
finish, so pagination neither skips nor repeats.  It is opaque to clients
(base64url) so its form can change without breaking them.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

from runyard.actors.errors import InvalidRequest

PageKey = tuple[float, str]


def encode_cursor(key: PageKey) -> str:
    raw = json.dumps([key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> PageKey:
    bad = InvalidRequest("cursor is not one this server gave out; start again without a cursor")
    if len(cursor) > 200:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started_at, run_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise bad from exc
    if (
        not isinstance(started_at, int | float)
        or isinstance(started_at, bool)
        or not isinstance(run_id, str)
        or not run_id.isascii()  # run ids are hex; a lone surrogate would not reach a store
    ):
        raise bad
    try:
        key = float(started_at)
    except OverflowError:  # an integer of hundreds of digits
        raise bad from None
    if not math.isfinite(key):  # json.loads reads NaN, Infinity and 1e999
        raise bad
    return key, run_id
