"""A run's events as CouchDB documents of bounded size: the event chunks.

Each commit of a run appends its new events as one or more **event chunks**
``<run_id>:e:<last_seq>:<first_seq>:<gen>`` (seqs zero-padded to 12 digits),
each holding ``first_seq, last_seq`` and the events ``first_seq..last_seq`` as
``[seq, ts, type, data]`` lists. An event too big for one chunk is split into
text parts ``<...>:<i>of<k>`` (6 digits each) whose concatenation is that
list's JSON. Chunks are never rewritten: a commit's cost is what is new.

Why the id starts with ``last_seq``: the chunks holding the events after
``seq`` are exactly those whose id sorts at or after ``<run_id>:e:<seq+1>``,
so a replay page is one ``_all_docs`` range read, and a ``_changes`` follower
can tell a chunk's range from its id alone.

``gen`` names the writer (a store instance) that wrote the chunk. The run doc
lists ``writers``: ``[[gen, from_seq], ...]``; seq ``s`` is read from the
chunks of the last writer with ``from_seq <= s``. So chunks that a dead or
out-raced writer left behind (written in the same ``_bulk_docs`` as a run doc
that was refused, or never followed by one) are ignored, and a writer taking
over a run never collides with them: a retried identical write reuses its ids
(deterministic), a different writer's never do.

Sizes are bytes of compact UTF-8 JSON (:func:`runyard.actors.jsonsafe.dumps`), the
encoding CouchStore's HTTP session sends. No I/O here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from runyard.actors.jsonsafe import dumps, dumps_safe
from runyard.actors.records import Event

__all__ = [
    "CHUNK_OVERHEAD",
    "EVENTS_TYPE",
    "EventDoc",
    "assemble_events",
    "assemble_prefix",
    "event_doc_id",
    "event_entry",
    "event_from_entry",
    "events_range",
    "pack_event_docs",
    "split_text",
    "utf8_len",
    "writer_of",
]

EVENTS_TYPE: Final = "runyard.events"
CHUNK_OVERHEAD: Final = 160
"""Room in a chunk for its id's suffix, ``gen``, ``first_seq``, ``last_seq``, part numbers."""

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


def event_doc_id(
    run_id: str, first: int, last: int, gen: str, part: tuple[int, int] | None = None
) -> str:
    """The ``_id`` of the chunk holding events ``first..last`` (or part ``i`` of ``k``)."""
    base = f"{run_id}:e:{last:012d}:{first:012d}:{gen}"
    return base if part is None else f"{base}:{part[0]:06d}of{part[1]:06d}"


def events_range(run_id: str, from_seq: int) -> tuple[str, str]:
    """``(startkey, endkey)`` of the ``_all_docs`` range holding every chunk of
    ``run_id`` with an event at ``from_seq`` or later (and possibly a few before)."""
    return f"{run_id}:e:{max(from_seq, 0):012d}", f"{run_id}:e:\ufff0"


@dataclass(frozen=True, slots=True)
class EventDoc:
    """One event chunk to be written."""

    doc_id: str
    body: dict[str, Any] = field(compare=False)
    """The document without ``_id``/``_rev``."""
    size: int = field(compare=False)
    """Its encoded payload size, at most the budget."""


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


def pack_event_docs(run_id: str, gen: str, events: Sequence[Event], budget: int) -> list[EventDoc]:
    """Greedy packing of contiguous ``events``, in order, into chunks of at most
    ``budget`` payload bytes; an event too big for a chunk of its own is split
    into text parts, each a chunk.

    Deterministic: the same events always give the same ids and bodies, which
    makes a retried write idempotent.
    """
    docs: list[EventDoc] = []
    batch: list[list[Any]] = []
    size = 0

    def close() -> None:
        nonlocal batch, size
        if batch:
            first, last = batch[0][0], batch[-1][0]
            body = {
                "type": EVENTS_TYPE,
                "run_id": run_id,
                "gen": gen,
                "first_seq": first,
                "last_seq": last,
                "events": batch,
            }
            docs.append(EventDoc(event_doc_id(run_id, first, last, gen), body, size))
        batch, size = [], 0

    for event in events:
        entry, entry_size, head, data_json = event_entry(event)
        entry_size += 1  # the comma
        if entry_size > budget:
            close()
            texts = split_text(f"{head[:-1]},{data_json}]", budget - 64)
            for i, text in enumerate(texts):
                seq = event.seq
                body = {
                    "type": EVENTS_TYPE,
                    "run_id": run_id,
                    "gen": gen,
                    "first_seq": seq,
                    "last_seq": seq,
                    "part": text,
                    "i": i,
                    "k": len(texts),
                }
                doc_id = event_doc_id(run_id, seq, seq, gen, (i, len(texts)))
                docs.append(EventDoc(doc_id, body, budget))
            continue
        if batch and size + entry_size > budget:
            close()
        batch.append(entry)
        size += entry_size
    close()
    return docs


def event_from_entry(entry: Sequence[Any]) -> Event:
    """The event a stored ``[seq, ts, type, data]`` list holds."""
    seq, ts, type_, data = entry
    return Event(seq=seq, ts=float(ts), type=type_, data=data)


def writer_of(writers: Sequence[Sequence[Any]], seq: int) -> str | None:
    """The ``gen`` whose chunks hold ``seq``: the last ``[gen, from_seq]`` from at most ``seq``."""
    found = None
    for gen, from_seq in writers:
        if from_seq <= seq:
            found = gen
    return found


def assemble_events(
    run_id: str,
    writers: Sequence[Sequence[Any]],
    inline: Sequence[Sequence[Any]],
    chunks: Iterable[Mapping[str, Any]],
    after_seq: int,
    stop_seq: int,
) -> list[Event] | None:
    """The events ``after_seq+1 .. stop_seq`` that ``inline`` (the run doc's own
    ``events``) and ``chunks`` (event chunk documents in any order, other runs'
    and strays allowed) hold, each seq taken from the chunks ``writers`` assigns it to.

    None if one is missing: a chunk not written yet (a concurrent commit, or a
    commit that failed and will be retried; on a CouchDB cluster, a chunk not
    yet on the shard copy that answered): read again. Chunks may overlap (a
    retry that joined two commits): events never change once written, so any
    chunk of the right writer holding a seq serves.
    """
    events = assemble_prefix(run_id, writers, inline, chunks, after_seq, stop_seq)
    return events if len(events) == stop_seq - after_seq else None


def assemble_prefix(
    run_id: str,
    writers: Sequence[Sequence[Any]],
    inline: Sequence[Sequence[Any]],
    chunks: Iterable[Mapping[str, Any]],
    after_seq: int,
    stop_seq: int,
) -> list[Event]:
    """What :func:`assemble_events` finds, up to the first missing seq: a gap-free
    prefix of ``after_seq+1 .. stop_seq`` (empty if ``after_seq+1`` is missing)."""
    found: dict[int, Sequence[Any]] = {}
    parts: dict[tuple[str, int], dict[int, str]] = {}
    sizes: dict[tuple[str, int], int] = {}
    for chunk in chunks:
        if chunk.get("type") != EVENTS_TYPE or chunk.get("run_id") != run_id:
            continue
        gen = chunk["gen"]
        if "part" in chunk:
            seq = chunk["first_seq"]
            if after_seq < seq <= stop_seq and writer_of(writers, seq) == gen:
                parts.setdefault((gen, seq), {})[chunk["i"]] = chunk["part"]
                sizes[(gen, seq)] = chunk["k"]
            continue
        for entry in chunk["events"]:
            seq = entry[0]
            if after_seq < seq <= stop_seq and writer_of(writers, seq) == gen:
                found.setdefault(seq, entry)
    for key, texts in parts.items():
        if len(texts) == sizes[key]:
            found.setdefault(key[1], json.loads("".join(texts[i] for i in range(sizes[key]))))
    for entry in inline:
        if after_seq < entry[0] <= stop_seq:
            found[entry[0]] = entry
    events: list[Event] = []
    for seq in range(after_seq + 1, stop_seq + 1):
        entry = found.get(seq)
        if entry is None:
            break
        events.append(event_from_entry(entry))
    return events
