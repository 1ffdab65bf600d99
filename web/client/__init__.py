"""runyard's Python client: talk to a runyard server over HTTP (docs/client.md).

``Client`` (blocking) and ``AsyncClient`` (asyncio) start, list, read, stop,
delete and stream runs; answers are the server's own models, errors are
typed exceptions carrying the server's ``code`` and ``message``.  This is
for talking to a shared server; embedding the runtime in a process is
docs/internals.md.
"""

from __future__ import annotations

from runyard.web.client.async_client import AsyncClient
from runyard.web.client.connection import DEFAULT_URL, TOKEN_ENV, URL_ENV, RetryPolicy
from runyard.web.client.errors import (
    AlreadyFinished,
    ApiError,
    BadRequest,
    ClientConfigError,
    ClientError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RunNotFound,
    ServerError,
    ServiceUnavailable,
    ShuttingDown,
    StillRunning,
    StoreUnavailable,
    TooManyLiveRuns,
    Unauthorized,
    UnknownAgent,
    Unprocessable,
)
from runyard.web.client.sync_client import Client
from runyard.web.models import (
    AgentModel,
    EventModel,
    RunDetail,
    RunListResponse,
    RunStartedResponse,
    RunSummaryModel,
    StopResponse,
)

__all__ = [
    "DEFAULT_URL",
    "TOKEN_ENV",
    "URL_ENV",
    "AgentModel",
    "AlreadyFinished",
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientConfigError",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "EventModel",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RetryPolicy",
    "RunDetail",
    "RunListResponse",
    "RunNotFound",
    "RunStartedResponse",
    "RunSummaryModel",
    "ServerError",
    "ServiceUnavailable",
    "ShuttingDown",
    "StillRunning",
    "StopResponse",
    "StoreUnavailable",
    "TooManyLiveRuns",
    "Unauthorized",
    "UnknownAgent",
    "Unprocessable",
]
