"""Where the client connects and how: the server URL, the token, timeouts, answers.

Shared by :class:`~runyard.web.client.sync_client.Client` and
:class:`~runyard.web.client.async_client.AsyncClient`, so both find the server the
same way and turn answers into models and errors the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from runyard.web.client.errors import ClientConfigError, ConnectionFailed, error_from_response

URL_ENV = "RUNYARD_URL"
TOKEN_ENV = "RUNYARD_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8000"
"""Where ``runyard serve`` listens by default."""

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class RetryPolicy:
    """How a stream reconnects: delays double from ``first_delay_s`` up to
    ``max_delay_s``; it gives up (``ConnectionFailed``) after ``give_up_after_s``
    seconds in which no connection got as far as the server's ``run`` frame."""

    first_delay_s: float = 0.1
    max_delay_s: float = 5.0
    give_up_after_s: float = 60.0


@dataclass(frozen=True)
class Connection:
    """The resolved target: ``url`` (no trailing slash) and ``token``."""

    url: str
    token: str

    @classmethod
    def resolve(cls, url: str | None, token: str | None) -> Connection:
        """The arguments, else ``RUNYARD_URL`` / ``RUNYARD_TOKEN``.

        The URL defaults to ``http://127.0.0.1:8000``; a token is required
        (``ClientConfigError`` says where to put it).
        """
        url = url or os.environ.get(URL_ENV) or DEFAULT_URL
        token = token or os.environ.get(TOKEN_ENV)
        if not token:
            msg = f"no token: set {TOKEN_ENV} (or pass --token, or token= in Python)"
            raise ClientConfigError(msg)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            msg = f"the server URL must look like http://host:port, got {url!r} (set {URL_ENV})"
            raise ClientConfigError(msg)
        return cls(url=url.rstrip("/"), token=token)

    def client_kwargs(self, timeout_s: float) -> dict[str, Any]:
        """The keyword arguments for ``httpx.Client`` / ``httpx.AsyncClient``."""
        return {
            "base_url": self.url,
            "headers": {"Authorization": f"Bearer {self.token}", "User-Agent": user_agent()},
            "timeout": httpx.Timeout(timeout_s),
        }


def stream_timeout(read_timeout_s: float) -> httpx.Timeout:
    """A stream's timeout: a server sends a heartbeat every 10 s by default, so a
    silence of ``read_timeout_s`` means the path is dead and it is time to reconnect."""
    return httpx.Timeout(30.0, read=read_timeout_s)


def user_agent() -> str:
    try:
        version = metadata.version("runyard")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"runyard-client/{version}"


def decode(response: httpx.Response, model: type[ModelT]) -> ModelT:
    """``response``'s JSON as ``model``; the typed :class:`ApiError` for a non-2xx answer."""
    check(response)
    return model.model_validate_json(response.content)


def check(response: httpx.Response) -> None:
    """Raise the typed error of a non-2xx ``response`` (whose body has been read)."""
    if response.is_error:
        raise error_from_response(response)


def unreachable(url: str, exc: httpx.TransportError) -> ConnectionFailed:
    """The client's error for a transport failure, naming the server."""
    detail = str(exc) or type(exc).__name__
    return ConnectionFailed(f"cannot reach {url}: {detail}")
