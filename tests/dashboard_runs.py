"""Runs a browser test starts, reads or disturbs on the server, beside the page.

Over the API as ``user`` (alice by default), or on the server's own loop for
what no API can do (cutting a run's open streams).
"""

from __future__ import annotations

import asyncio
from typing import Any

from runyard.actors.stream_items import Lagged
from runyard.actors.subscription import Subscription
from tests import api_helpers
from tests.live_server import LiveServer


def start(server: LiveServer, agent: str, user: str = "alice", **input_dict: Any) -> str:
    with server.client(user) as client:
        return api_helpers.start(client, agent, **input_dict)


def run_json(server: LiveServer, run_id: str, user: str = "alice") -> dict[str, Any]:
    with server.client(user) as client:
        return api_helpers.get_run(client, run_id)


def cut_run_streams(server: LiveServer, run_id: str) -> int:
    """Drop the server side of ``run_id``'s open streams, as a lagging reader's is."""

    async def cut() -> int:  # on the server's loop, which owns the streams
        subs = [s for s in server.gateway.streams if isinstance(s, Subscription)]
        subs = [s for s in subs if s.run_id == run_id]
        for sub in subs:
            sub.close(Lagged(last_seq=sub.last_seq))
        return len(subs)

    loop = server.gateway.runtime.loop
    return asyncio.run_coroutine_threadsafe(cut(), loop).result(5)
