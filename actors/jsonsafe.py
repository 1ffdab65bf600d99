"""One canonical JSON encoding, and a defensive fallback for values that have none.

Agents hand the runtime arbitrary Python values.  A non-JSON value must never
break a stream frame or a stored record (docs/design.md, "Lessons we apply"),
so every event payload is encoded exactly once, at emit time, with
:func:`dumps`; what cannot be encoded is replaced by its ``repr`` inside a
marker object, visibly, never dropped.
"""

from __future__ import annotations

import json
import math
from typing import Any

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_encode = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)
"""``_encoder``'s own C encoder, made once: ``JSONEncoder.encode`` builds it anew on
every call, which was half the cost of encoding an event's small payload (every
emit encodes one).  No circular-reference table: a cycle ends in
``RecursionError``, turned into ``ValueError`` below."""


def dumps(value: Any) -> str:
    """Compact JSON; raises ``TypeError``/``ValueError`` for non-JSON values."""
    if _encode is None:
        return _encoder.encode(value)
    try:
        return "".join(_encode(value, 0))
    except RecursionError:
        raise ValueError("circular reference, or nesting too deep for JSON") from None


def make_safe(value: Any) -> Any:
    """A JSON version of ``value``: non-JSON leaves become ``{"__repr__": "..."}``."""
    return _safe(value, set())


def _safe(value: Any, active: set[int]) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__repr__": repr(value)}
    if isinstance(value, dict | list | tuple):
        if id(value) in active or len(active) > 100:
            return {"__repr__": "<cycle>" if id(value) in active else "<nested too deep>"}
        active.add(id(value))
        try:
            if isinstance(value, dict):
                return {
                    k if isinstance(k, str) else _repr(k): _safe(v, active)
                    for k, v in value.items()
                }
            return [_safe(v, active) for v in value]
        finally:
            active.discard(id(value))
    return {"__repr__": _repr(value)}


def _repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break the run either
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text[:10_000]


def dumps_safe(value: Any) -> tuple[Any, str]:
    """``(json_value, encoded)``: the value itself when it is JSON, else its safe copy.

    Lone surrogates (``"\\ud800"``) are valid in a Python ``str`` but not in
    UTF-8: they would fail later, in a socket write or a store's encoder, far
    from their cause.  They become ``?`` here, once.
    """
    try:
        encoded = dumps(value)
    except (TypeError, ValueError, RecursionError):
        value = make_safe(value)
        encoded = dumps(value)
    if not encoded.isascii():
        try:
            encoded.encode("utf-8")
        except UnicodeEncodeError:
            encoded = encoded.encode("utf-8", "replace").decode("utf-8")
            value = json.loads(encoded)
    return value, encoded
