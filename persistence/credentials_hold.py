"""``CredentialsHold``: after a refused login, keep away from the store for a while.

CouchDB counts failed logins per user and, past a threshold (5 by
default), refuses that user for every client of the server for several
minutes.  A persistence actor that retried every write and answered every
read by trying again would trip that lockout within a second.  So once the
store refuses the credentials, every store call fails at once, without a
request, until ``hold_s`` has passed; then one call may try again.  At the
default of 120 s that is at most three attempts in CouchDB's 5-minute
lockout window.
"""

from __future__ import annotations

import time

from runyard.persistence.store_errors import CredentialsRefused

__all__ = ["CredentialsHold"]


class CredentialsHold:
    """Remembers the last :class:`CredentialsRefused` for ``hold_s`` seconds."""

    def __init__(self, hold_s: float = 120.0) -> None:
        self.hold_s = hold_s
        self._refused: CredentialsRefused | None = None
        self._until = 0.0

    def trip(self, refused: CredentialsRefused) -> None:
        """The store just refused the credentials: hold every call for ``hold_s``."""
        self._refused = refused
        self._until = time.monotonic() + self.hold_s

    def refusal(self) -> CredentialsRefused | None:
        """A fresh error to raise instead of calling the store, or None: go ahead."""
        refused = self._refused
        if refused is None:
            return None
        remaining = self._until - time.monotonic()
        if remaining <= 0:
            return None  # one call may try again; a new refusal trips the hold again
        return CredentialsRefused(
            f"{refused} (not retried for another {remaining:.0f} s, to keep the "
            "account from being locked out)",
            user=refused.user,
            server=refused.server,
        )

    def clear(self) -> None:
        """The store accepted the credentials again."""
        self._refused = None
