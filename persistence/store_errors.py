"""Store failures that are configuration errors, not outages.

Most store failures are transient (a server down, a full disk, a locked
file) and the persistence actor retries them with backoff until they pass.
A refusal of the credentials is different: no retry will fix it, and
retrying is harmful, because CouchDB locks an account out (for every client
of that server, for minutes) after a few failed logins.
"""

from __future__ import annotations

__all__ = ["CredentialsRefused"]


class CredentialsRefused(PermissionError):
    """The store refused the credentials it was given (CouchDB's 401).

    ``user`` is the user name that was refused (None: no credentials were
    sent); ``server`` the server's address without credentials.  The
    message never holds the password.
    """

    def __init__(self, message: str, *, user: str | None, server: str) -> None:
        super().__init__(message)
        self.user = user
        self.server = server

    def __str__(self) -> str:
        return str(self.args[0])
