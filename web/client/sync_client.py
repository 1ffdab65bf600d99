"""``Client``: runyard's HTTP API from blocking code (scripts, the CLI, thread-based services).

Every method is one request except :meth:`Client.list`, which follows the
server's cursors, and :meth:`Client.stream`, which follows a run's SSE
stream across dropped connections.  Answers are the server's own pydantic
models (:mod:`runyard.web.models`); errors are :mod:`runyard.web.client.errors`.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import httpx
from httpx_sse import SSEError, connect_sse

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


class Client:
    """A blocking client of one runyard server, as one user.

    ``url`` defaults to ``RUNYARD_URL`` (else ``http://127.0.0.1:8000``),
    ``token`` to ``RUNYARD_TOKEN`` (required: ``ClientConfigError``).
    ``timeout_s`` bounds each plain request; a stream that hears nothing
    (not even a heartbeat) for ``stream_read_timeout_s`` reconnects.
    ``transport`` is passed to httpx (a custom transport, or a mounted app).

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        stream_read_timeout_s: float = 35.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.connection = Connection.resolve(url, token)
        self.retry = retry or RetryPolicy()
        self._stream_timeout = stream_timeout(stream_read_timeout_s)
        self._http = httpx.Client(transport=transport, **self.connection.client_kwargs(timeout_s))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- runs --------------------------------------------------------------

    def start(
        self,
        agent: str,
        input_dict: dict[str, Any] | None = None,
        *,
        max_duration_s: float | None = None,
        max_restarts: int | None = None,
        backoff_s: float | None = None,
    ) -> RunStartedResponse:
        """Start catalog ``agent``; answers once the run is on record (``run_id``, ``running``).

        Raises ``UnknownAgent``, ``Unprocessable``, ``TooManyLiveRuns``,
        ``ShuttingDown``, ``StoreUnavailable``...
        """
        body = start_body(agent, input_dict, max_duration_s, max_restarts, backoff_s)
        return decode(self._send("POST", "/runs", json=body), RunStartedResponse)

    def start_code(
        self,
        code: str,
        input_dict: dict[str, Any] | None = None,
        *,
        agent_name: str | None = None,
        env: dict[str, str] | None = None,
        max_duration_s: float | None = None,
    ) -> RunStartedResponse:
        """Start submitted agent ``code`` (``async def run(input_dict, ctx)``, docs/run-code.md).

        Code that cannot run is refused at once: ``Unprocessable`` (``invalid_code``).
        """
        body = code_body(code, input_dict, agent_name, env, max_duration_s)
        return decode(self._send("POST", "/agents/run-code/start", json=body), RunStartedResponse)

    def page(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunListResponse:
        """One page of the caller's runs, newest first; ``next_cursor`` is ``None`` at the end."""
        params = list_params(status, agent, limit, cursor)
        return decode(self._send("GET", "/runs", params=params), RunListResponse)

    def list(
        self, *, status: str | None = None, agent: str | None = None, page_size: int = 50
    ) -> Iterator[RunSummaryModel]:
        """Every run of the caller, newest first, fetching pages of ``page_size`` as it goes.

        Cursors are positions, so runs that start or finish meanwhile never
        make a run repeat or go missing.
        """
        cursor: str | None = None
        while True:
            page = self.page(status=status, agent=agent, limit=page_size, cursor=cursor)
            yield from page.runs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get(self, run_id: str) -> RunDetail:
        """The run's whole record, events included; ``RunNotFound``, ``Forbidden``."""
        return decode(self._send("GET", f"/runs/{run_id}"), RunDetail)

    def stop(self, run_id: str) -> StopResponse:
        """Ask the run to stop (on record when this returns); ``AlreadyFinished`` if it ended."""
        return decode(self._send("POST", f"/runs/{run_id}/stop"), StopResponse)

    def delete(self, run_id: str) -> None:
        """Delete a finished run everywhere; ``StillRunning`` if it has not finished."""
        check(self._send("DELETE", f"/runs/{run_id}"))

    def agents(self) -> builtins.list[AgentModel]:
        """The catalog agents a run can be started with."""
        response = self._send("GET", "/agents")
        check(response)
        return [AgentModel.model_validate(item) for item in response.json()]

    # -- streaming ---------------------------------------------------------

    def stream(self, run_id: str, after: int | None = None) -> Iterator[EventModel]:
        """The run's events from seq ``after + 1`` (``None``: from the first), live, to ``done``.

        Reconnects by itself with ``Last-Event-ID`` after a dropped
        connection, a ``lagged`` cut-off or a ``closing`` frame, so the
        events are exactly ``after + 1 .. done``, no gap, no duplicate.  The
        last event is ``done`` (``data``: ``status``, ``result``, ``error``).
        Raises ``RunNotFound``/``Forbidden`` at once, and ``ConnectionFailed``
        after ``retry.give_up_after_s`` without reaching the server.
        Leaving the loop early closes the connection; it never stops the run.
        """
        cursor = StreamCursor(after)
        backoff = Backoff(self.retry, self.connection.url)
        while True:
            try:
                for item in self._connect_once(run_id, cursor, backoff):
                    yield item
                    if item.type == "done":
                        return
            except httpx.TransportError as exc:
                backoff.failed(str(unreachable(self.connection.url, exc)))
            time.sleep(backoff.next_delay())

    def _connect_once(
        self, run_id: str, cursor: StreamCursor, backoff: Backoff
    ) -> Iterator[EventModel]:
        """One connection's events, until it ends, drops or the server says reconnect."""
        with connect_sse(
            self._http,
            "GET",
            f"/runs/{run_id}/stream",
            headers=cursor.headers(),
            timeout=self._stream_timeout,
        ) as source:
            if source.response.status_code != 200:
                source.response.read()
                _retry_or_raise(error_from_response(source.response), backoff)
                return
            try:
                for sse in source.iter_sse():
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

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.connection.url, exc) from exc


def _retry_or_raise(error: ApiError, backoff: Backoff) -> None:
    if not error.retryable:
        raise error
    backoff.failed(f"{error.status} {error.code}: {error.message}")
