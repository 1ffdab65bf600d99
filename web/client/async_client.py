"""``AsyncClient``: runyard's HTTP API from asyncio code, method for method as :class:`Client`.

The decisions (what a frame means, when to reconnect, which error to raise)
live in :mod:`runyard.web.client.resume`, :mod:`runyard.web.client.connection` and
:mod:`runyard.web.client.errors`, shared with the blocking client; this module only
awaits the I/O.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
from httpx_sse import SSEError, aconnect_sse

from runyard.web.client.connection import (
    Connection,
    RetryPolicy,
    check,
    decode,
    stream_timeout,
    unreachable,
)
from runyard.web.client.errors import ApiError, ClientError, error_from_response
from runyard.web.client.requests import code_body, list_params, start_body
from runyard.web.client.resume import Backoff, Reconnect, StreamCursor
from runyard.web.models import (
    AgentModel,
    EventModel,
    RunDetail,
    RunListResponse,
    RunStartedResponse,
    RunSummaryModel,
    StopResponse,
)


class AsyncClient:
    """An asyncio client of one runyard server, as one user (see :class:`Client` for the arguments).

    Use it as an async context manager, or ``await`` :meth:`aclose`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        stream_read_timeout_s: float = 35.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.connection = Connection.resolve(url, token)
        self.retry = retry or RetryPolicy()
        self._stream_timeout = stream_timeout(stream_read_timeout_s)
        self._http = httpx.AsyncClient(
            transport=transport, **self.connection.client_kwargs(timeout_s)
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- runs --------------------------------------------------------------

    async def start(
        self,
        agent: str,
        input_dict: dict[str, Any] | None = None,
        *,
        max_duration_s: float | None = None,
        max_restarts: int | None = None,
        backoff_s: float | None = None,
    ) -> RunStartedResponse:
        """As :meth:`Client.start`."""
        body = start_body(agent, input_dict, max_duration_s, max_restarts, backoff_s)
        return decode(await self._send("POST", "/runs", json=body), RunStartedResponse)

    async def start_code(
        self,
        code: str,
        input_dict: dict[str, Any] | None = None,
        *,
        agent_name: str | None = None,
        env: dict[str, str] | None = None,
        max_duration_s: float | None = None,
    ) -> RunStartedResponse:
        """As :meth:`Client.start_code`."""
        body = code_body(code, input_dict, agent_name, env, max_duration_s)
        response = await self._send("POST", "/agents/run-code/start", json=body)
        return decode(response, RunStartedResponse)

    async def page(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunListResponse:
        """As :meth:`Client.page`."""
        params = list_params(status, agent, limit, cursor)
        return decode(await self._send("GET", "/runs", params=params), RunListResponse)

    async def list(
        self, *, status: str | None = None, agent: str | None = None, page_size: int = 50
    ) -> AsyncIterator[RunSummaryModel]:
        """As :meth:`Client.list`: ``async for run in client.list(): ...``."""
        cursor: str | None = None
        while True:
            page = await self.page(status=status, agent=agent, limit=page_size, cursor=cursor)
            for run in page.runs:
                yield run
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get(self, run_id: str) -> RunDetail:
        """As :meth:`Client.get`."""
        return decode(await self._send("GET", f"/runs/{run_id}"), RunDetail)

    async def stop(self, run_id: str) -> StopResponse:
        """As :meth:`Client.stop`."""
        return decode(await self._send("POST", f"/runs/{run_id}/stop"), StopResponse)

    async def delete(self, run_id: str) -> None:
        """As :meth:`Client.delete`."""
        check(await self._send("DELETE", f"/runs/{run_id}"))

    async def agents(self) -> builtins.list[AgentModel]:
        """As :meth:`Client.agents`."""
        response = await self._send("GET", "/agents")
        check(response)
        return [AgentModel.model_validate(item) for item in response.json()]

    # -- streaming ---------------------------------------------------------

    async def stream(self, run_id: str, after: int | None = None) -> AsyncIterator[EventModel]:
        """As :meth:`Client.stream`: ``async for event in client.stream(run_id): ...``."""
        cursor = StreamCursor(after)
        backoff = Backoff(self.retry, self.connection.url)
        while True:
            try:
                async for item in self._connect_once(run_id, cursor, backoff):
                    yield item
                    if item.type == "done":
                        return
            except httpx.TransportError as exc:
                backoff.failed(str(unreachable(self.connection.url, exc)))
            await anyio.sleep(backoff.next_delay())

    async def _connect_once(
        self, run_id: str, cursor: StreamCursor, backoff: Backoff
    ) -> AsyncIterator[EventModel]:
        async with aconnect_sse(
            self._http,
            "GET",
            f"/runs/{run_id}/stream",
            headers=cursor.headers(),
            timeout=self._stream_timeout,
        ) as source:
            if source.response.status_code != 200:
                await source.response.aread()
                _retry_or_raise(error_from_response(source.response), backoff)
                return
            try:
                async for sse in source.aiter_sse():
                    if sse.event == "run":
                        backoff.progress()
                    step = cursor.accept(sse)
                    if isinstance(step, Reconnect):
                        backoff.server_asked(step)
                        return
                    if step is not None:
                        backoff.progress()
                        yield step
            except SSEError as exc:
                msg = f"{self.connection.url} did not answer with a stream: {exc}"
                raise ClientError(msg) from exc
            backoff.failed("the stream ended before the run's done")

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.connection.url, exc) from exc


def _retry_or_raise(error: ApiError, backoff: Backoff) -> None:
    if not error.retryable:
        raise error
    backoff.failed(f"{error.status} {error.code}: {error.message}")
