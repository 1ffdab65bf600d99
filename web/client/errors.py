"""What the runyard client raises: one exception per way a call can fail.

Every error the server answers (4xx/5xx with ``{"error": {"code",
"message"}}``, docs/api.md "Errors") becomes an :class:`ApiError` subclass
chosen by its ``code`` (``RunNotFound``, ``AlreadyFinished``...) or, for a
code this client does not know, by its HTTP status (``NotFound``,
``Conflict``...).  So a caller can catch as narrowly as it likes, and always
has ``status``, ``code`` and the server's ``message`` to show a person.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = [
    "AlreadyFinished",
    "ApiError",
    "BadRequest",
    "ClientConfigError",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RunNotFound",
    "ServerError",
    "ServiceUnavailable",
    "ShuttingDown",
    "StillRunning",
    "StoreUnavailable",
    "TooManyLiveRuns",
    "Unauthorized",
    "UnknownAgent",
    "Unprocessable",
    "error_from_response",
]


class ClientError(Exception):
    """Base of everything the client raises (never a bare httpx exception)."""


class ClientConfigError(ClientError):
    """The client cannot be built: no token, or a server URL that is not http(s)."""


class ConnectionFailed(ClientError):
    """The server could not be reached (refused, reset, timed out), or a stream
    could not be resumed within the client's ``give_up_after_s``."""


class ApiError(ClientError):
    """The server answered with an error.

    ``status`` is the HTTP status, ``code`` the stable machine-readable reason
    (branch on it), ``message`` the server's explanation for people.
    """

    retryable = False
    """Whether trying again later may succeed (503s); a stream retries these itself."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, {self.message!r})"


class BadRequest(ApiError):
    """400: malformed JSON, a bad resume cursor, a list cursor this server did not give."""


class Unauthorized(ApiError):
    """401: no token, or a wrong one."""


class Forbidden(ApiError):
    """403: another user's run, or an admin endpoint."""


class NotFound(ApiError):
    """404: no such route or resource."""


class RunNotFound(NotFound):
    """404 ``run_not_found``: an unknown or deleted run."""


class Conflict(ApiError):
    """409: the run is not in a state that allows this verb."""


class AlreadyFinished(Conflict):
    """409 ``already_finished``: stop on a finished run; the message says how it ended."""


class StillRunning(Conflict):
    """409 ``still_running``: delete on a running run (stop it first)."""


class PayloadTooLarge(ApiError):
    """413: the request body is over the server's limit."""


class Unprocessable(ApiError):
    """422: a field is missing, of the wrong type or out of range (the message names it)."""


class UnknownAgent(Unprocessable):
    """422 ``unknown_agent``: the message lists the agents the server knows."""


class TooManyLiveRuns(ApiError):
    """429 ``too_many_live_runs``: the caller's live-run quota is full."""


class ServerError(ApiError):
    """500 or another 5xx: the server failed (a bug, or a proxy in front of it)."""


class ServiceUnavailable(ServerError):
    """503: the server cannot take this now; try again later."""

    retryable = True


class ShuttingDown(ServiceUnavailable):
    """503 ``shutting_down``: the server is draining; start the run again shortly."""


class StoreUnavailable(ServiceUnavailable):
    """503 ``store_unavailable``: the store did not confirm in time; nothing was acknowledged."""


_BY_CODE: dict[str, type[ApiError]] = {
    "run_not_found": RunNotFound,
    "already_finished": AlreadyFinished,
    "still_running": StillRunning,
    "unknown_agent": UnknownAgent,
    "too_many_live_runs": TooManyLiveRuns,
    "shutting_down": ShuttingDown,
    "store_unavailable": StoreUnavailable,
}

_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: TooManyLiveRuns,
    503: ServiceUnavailable,
}


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error for a non-2xx ``response`` whose body has been read.

    A body that is not runyard's error JSON (a proxy's HTML 502, say) still
    gives an error: code ``http_<status>``, the start of the body as message.
    """
    code, message = _parse_error_body(response)
    cls = _BY_CODE.get(code) or _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else ApiError
    return cls(response.status_code, code, message)


def _parse_error_body(response: httpx.Response) -> tuple[str, str]:
    try:
        body: Any = json.loads(response.content)
        error = body["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().replace("\n", " ")[:200]
        reason = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        return f"http_{response.status_code}", f"{reason}: {text}" if text else reason
