"""Errors the runtime answers with.

Each is a refusal a caller can act on; the web layer maps them one to one to
HTTP status codes (the ``http_status`` attribute), so the mapping lives with
the meaning instead of in a table somewhere else.
"""

from __future__ import annotations


class RunyardError(Exception):
    """Base of every refusal the runtime gives; ``code`` is stable for clients."""

    code = "error"
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RunNotFound(RunyardError):
    code = "run_not_found"
    http_status = 404


class NotOwner(RunyardError):
    code = "forbidden"
    http_status = 403


class NotAdmin(RunyardError):
    code = "forbidden"
    http_status = 403


class NotMember(RunyardError):
    """A start, list or feed in a workspace the caller does not belong to."""

    code = "forbidden"
    http_status = 403


class UnknownAgent(RunyardError):
    code = "unknown_agent"
    http_status = 422


class InvalidRequest(RunyardError):
    """A message field is out of range (limit, cursor, options)."""

    code = "invalid_request"
    http_status = 400


class InvalidInput(RunyardError):
    """A start's input is out of what its agent accepts; the message names the field and limit."""

    code = "validation_error"
    http_status = 422


class AlreadyFinished(RunyardError):
    """Stop on a run that is over: says how it ended, never a silent 202."""

    code = "already_finished"
    http_status = 409

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class StillRunning(RunyardError):
    code = "still_running"
    http_status = 409


class TooManyLiveRuns(RunyardError):
    code = "too_many_live_runs"
    http_status = 429


class ShuttingDown(RunyardError):
    code = "shutting_down"
    http_status = 503


class StoreUnavailable(RunyardError):
    code = "store_unavailable"
    http_status = 503
