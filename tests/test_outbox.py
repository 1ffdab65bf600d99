"""The outbox bound counts what the consumer has not taken; ``limit`` keeps takes small."""

from __future__ import annotations

import asyncio

import pytest

from runyard.actors.records import Event
from runyard.actors.stream_items import Lagged
from runyard.actors.subscription import Subscription


def event(seq: int) -> Event:
    return Event(seq, 0.0, "tick", {"i": seq})


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_a_limited_take_leaves_the_rest_queued_and_bounded() -> None:
    sub = Subscription("r", asyncio.get_running_loop(), max_queue=10)
    assert all(sub.push(event(i)) for i in range(1, 11))
    taken = await sub.next_batch(4)
    assert [e.seq for e in taken if isinstance(e, Event)] == [1, 2, 3, 4]
    assert sub.pending == 6
    # Room for exactly what was taken, then the reader is cut off.
    assert all(sub.push(event(i)) for i in range(11, 15))
    assert not sub.push(event(15))
    rest = await sub.next_batch()
    assert [e.seq for e in rest if isinstance(e, Event)] == list(range(5, 15))
    assert rest[-1] == Lagged(last_seq=14)
    assert await sub.next_batch() == []


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_an_unlimited_take_empties_the_queue() -> None:
    sub = Subscription("r", asyncio.get_running_loop(), max_queue=10)
    for i in range(1, 6):
        sub.push(event(i))
    assert len(await sub.next_batch()) == 5
    assert sub.pending == 0
