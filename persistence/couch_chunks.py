"""A run's trace as CouchDB documents of bounded size: the trace chunks.

A chunk ``<run_id>:trace:<first>-<last>`` holds the events ``first..last`` as
``[seq, ts, type, data]`` lists; an event too big for one chunk is split into
text parts ``<run_id>:trace:<seq>-<seq>:<i>of<k>`` whose concatenation is that
list's JSON. A run doc names its chunks by their ``ref`` (``[first, last]``,
or ``[seq, seq, i, k]`` for a part), in order.

Sizes are bytes of compact UTF-8 JSON (:func:`actors.jsonsafe.dumps`), the
encoding CouchStore's HTTP session sends. No I/O here: the store writes and
reads what these functions build (see :mod:`persistence.couch_layout`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from actors.jsonsafe import dumps, dumps_safe
from actors.records import Event

__all__ = [
    "TRACE_TYPE",
    "Chunk",
    "chunk_id",
    "event_entry",
    "event_from_entry",
    "events_from_chunks",
    "pack_chunks",
    "split_text",
    "utf8_len",
]

TRACE_TYPE: Final = "runyard.trace"

_encode_str: Callable[[str], str] = json.encoder.encode_basestring


def utf8_len(text: str) -> int:
    """The bytes ``text`` takes in UTF-8; a lone surrogate counts 3, more than its ``?``."""
    return len(text.encode("utf-8", "surrogatepass"))


def split_text(text: str, budget: int) -> list[str]:
    """Split ``text`` into pieces whose JSON string encoding is at most ``budget`` bytes."""
    pieces: list[str] = []
    pos = 0
    step = max(1, budget // 2)
    while pos < len(text):
        piece = text[pos : pos + step]
        size = utf8_len(dumps(piece))
        while size > budget:
            step = max(1, min(len(piece) - 1, len(piece) * budget // size - 8))
            piece = text[pos : pos + step]
            size = utf8_len(dumps(piece))
        pieces.append(piece)
        pos += len(piece)
    return pieces


@dataclass(frozen=True, slots=True)
class Chunk:
    """One trace chunk document to be (or already) stored."""

    ref: list[Any]
    """What the run doc stores: ``[first, last]`` or ``[seq, seq, i, k]`` for a part."""
    body: dict[str, Any] = field(compare=False)
    """The document without ``_id``/``_rev``."""
    size: int = field(compare=False)
    """Its encoded size, at most the budget."""


def chunk_id(run_id: str, ref: Sequence[Any]) -> str:
    """The ``_id`` of the chunk (or event part) a run doc names by ``ref``."""
    if len(ref) == 2:
        return f"{run_id}:trace:{ref[0]}-{ref[1]}"
    return f"{run_id}:trace:{ref[0]}-{ref[1]}:{ref[2]}of{ref[3]}"


def event_entry(event: Event) -> tuple[list[Any], int, str, str]:
    """``([seq, ts, type, data], encoded size, head, data_json)``.

    The event's own data encoding is reused for the size: nothing is encoded twice.
    """
    data_json, data = event.data_json, event.data
    try:
        data_size = len(data_json.encode("utf-8"))
    except UnicodeEncodeError:  # a data_json given by the caller, with lone surrogates
        data, data_json = dumps_safe(data)
        data_size = len(data_json.encode("utf-8"))
    # Lone surrogates cannot travel as UTF-8: the type gets them replaced, as data has.
    type_ = event.type if event.type.isascii() else dumps_safe(event.type)[0]
    seq, ts = event.seq, event.ts
    if type(seq) is int and type(ts) is float and math.isfinite(ts):
        # What the encoder writes for them (int and float repr), without a call to it.
        head = f"[{seq!r},{ts!r},{_encode_str(type_)}]"
    else:
        head = dumps([seq, ts, type_])  # '[seq,ts,"type"]'
    # The entry is head without its ']' + ',' + data + ']'.
    return (
        [event.seq, event.ts, type_, data],
        len(head.encode("utf-8")) + data_size + 1,
        head,
        data_json,
    )


def pack_chunks(run_id: str, events: Sequence[Event], budget: int) -> list[Chunk]:
    """Greedy packing of the events, in order, into chunks of at most ``budget`` bytes.

    Deterministic: the same trace prefix always gives the same full chunks, so a
    longer trace only changes the last chunk and adds new ones. An event too big
    for a chunk of its own is split into text parts, each a chunk.
    """
    chunks: list[Chunk] = []
    batch: list[list[Any]] = []
    size = 0
    first = 0

    def close() -> None:
        nonlocal batch, size
        if batch:
            ref = [first, batch[-1][0]]
            body = {"type": TRACE_TYPE, "run_id": run_id, "events": batch}
            chunks.append(Chunk(ref, body, size))
        batch, size = [], 0

    for event in events:
        entry, entry_size, head, data_json = event_entry(event)
        entry_size += 1  # the comma
        if entry_size > budget:
            close()
            texts = split_text(f"{head[:-1]},{data_json}]", budget - 64)
            for i, text in enumerate(texts):
                ref = [event.seq, event.seq, i, len(texts)]
                body = {"type": TRACE_TYPE, "run_id": run_id, "part": text}
                chunks.append(Chunk(ref, body, budget))
            continue
        if batch and size + entry_size > budget:
            close()
        if not batch:
            first = event.seq
        batch.append(entry)
        size += entry_size
    close()
    return chunks


def event_from_entry(entry: Sequence[Any]) -> Event:
    """The event a stored ``[seq, ts, type, data]`` list holds."""
    seq, ts, type_, data = entry
    return Event(seq=seq, ts=float(ts), type=type_, data=data)


def events_from_chunks(
    refs: Sequence[Sequence[Any]], docs: Sequence[Mapping[str, Any]]
) -> list[Event]:
    """The events of the chunks ``docs`` that a run doc names by ``refs`` (same order)."""
    events: list[Event] = []
    parts: list[str] = []
    for ref, doc in zip(refs, docs, strict=True):
        if len(ref) == 2:
            events += [
                event_from_entry(entry) for entry in doc["events"] if ref[0] <= entry[0] <= ref[1]
            ]
            continue
        parts.append(doc["part"])
        if ref[2] == ref[3] - 1:
            events.append(event_from_entry(json.loads("".join(parts))))
            parts = []
    return events
