"""``TcpProxy``: a real TCP relay on 127.0.0.1 that a test can cut, freeze and heal.

A client pointed at the proxy reaches the server through real sockets; the
test then plays the network's failures on that path only, while other
clients keep talking to the server directly:

- ``cut()``: every open connection is closed, new ones are closed at once
  (a server gone, a connection reset);
- ``freeze()``: new connections are accepted and never answered, open ones
  stop relaying (a hung server, a black-holed network);
- ``heal()``: relaying again.

``downloaded`` counts the bytes relayed from the server to its clients.

It runs on the test's event loop (``async with TcpProxy(port) as proxy``).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Literal, Self

__all__ = ["TcpProxy"]

Mode = Literal["relay", "cut", "freeze"]


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self._target = (host, target_port)
        self._host = host
        self._server: asyncio.Server | None = None
        self._mode: Mode = "relay"
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0
        self.downloaded = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self._host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self._mode = "cut"
        self._flowing.set()  # frozen pipes wake up to end
        self._close_all()

    def freeze(self) -> None:
        self._mode = "freeze"
        self._flowing.clear()

    def heal(self) -> None:
        self._mode = "relay"
        self._flowing.set()

    def _close_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "cut":
            writer.transport.abort()
            return
        self._open.add(writer)
        if self._mode == "freeze":
            return  # held open, never answered
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._open.add(up_writer)
        for source, sink, down in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(source, sink, down))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, down: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()  # a frozen path moves nothing
                if self._mode == "cut":
                    break
                if down:
                    self.downloaded += len(data)
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.transport.abort()
            self._open.discard(sink)
