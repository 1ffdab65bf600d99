"""Browser sessions: HMAC-signed cookies that survive restarts.

A browser's ``EventSource`` cannot set headers, so ``POST /auth/session``
trades a bearer token for an HttpOnly, SameSite=Strict cookie holding an
HMAC-signed ``(user_id, issued, expires)``.  The key lives in
``<data_dir>/session.key`` (0600) so sessions survive restarts; deleting that
file signs everyone out.  The cookie carries no privileges: the admin flag is
read from the current configuration at every request.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from runyard.web.config import ConfigError

log = logging.getLogger(__name__)

SESSION_TTL_S: Final = 7 * 24 * 3600.0
SECRET_FILE_NAME: Final = "session.key"

# --------------------------------------------------------------------------
# Sessions


def load_or_create_secret(data_dir: Path) -> bytes:
    """The session HMAC key from ``<data_dir>/session.key``, created 0600 if missing.

    Created under a temporary name and hard-linked into place, so two
    processes starting together agree on one key and nobody reads a
    half-written file.
    """
    path = data_dir / SECRET_FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f".{SECRET_FILE_NAME}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise ConfigError(
            f"{path}: expected a hex-encoded key; delete it to make a new one"
        ) from None
    if len(key) < 32:
        raise ConfigError(f"{path}: key is shorter than 32 bytes; delete it to make a new one")
    return key


@dataclass(frozen=True, slots=True)
class IssuedSession:
    value: str
    """The cookie value."""
    expires_at: float


class SessionSigner:
    """Signs and verifies session cookie values: ``v1.<user b64>.<issued>.<expires>.<mac b64>``.

    Stateless on purpose: no session table to persist or replicate; the
    price is that one session cannot be revoked alone (remove the user or
    rotate the key).
    """

    VERSION: Final = "v1"

    def __init__(
        self, key: bytes, ttl_s: float = SESSION_TTL_S, clock: Callable[[], float] = time.time
    ) -> None:
        if len(key) < 32:
            raise ValueError("session key must be at least 32 bytes")
        self._key = key
        self.ttl_s = ttl_s
        self._clock = clock

    def issue(self, user_id: str) -> IssuedSession:
        issued = int(self._clock())
        expires = issued + int(self.ttl_s)
        body = f"{self.VERSION}.{_b64(user_id.encode())}.{issued}.{expires}"
        return IssuedSession(f"{body}.{_b64(self._mac(body))}", float(expires))

    def verify(self, value: str) -> str | None:
        """The user id if ``value`` is ours, untampered and unexpired; else ``None``."""
        parts = value.split(".")
        if len(parts) != 5 or parts[0] != self.VERSION:
            return None
        body, mac = ".".join(parts[:4]), parts[4]
        try:
            presented = _unb64(mac)
            user_id = _unb64(parts[1]).decode("utf-8")
            expires = int(parts[3])
        except ValueError:
            return None
        if not hmac.compare_digest(presented, self._mac(body)):
            return None
        if expires <= self._clock():
            return None
        return user_id

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, f"runyard-session|{body}".encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
