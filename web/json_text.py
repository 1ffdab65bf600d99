"""Request fields that must be text and numbers JSON can carry back.

``json.loads`` accepts two things a run cannot keep:

- a lone UTF-16 surrogate (``"\\ud800"``): a ``str`` no UTF-8 encoder takes,
  so a store would keep it mangled (``?``) and an echo of it would fail;
- ``NaN``, ``Infinity`` and numbers past the float range (``1e999``), which
  are not JSON: what was stored could not be answered as JSON.

The annotated types below refuse them where a request's model reads its
fields, so the 422 names the field and the place inside it (``input_dict:
at ['a'][0]: ...``) before a run exists.  Checking is a walk over the value;
ASCII strings (nearly all) cost one C call each.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator

__all__ = ["JSONObject", "Text", "json_problem"]


def _text_problem(text: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        return (
            f"contains a lone surrogate ({char!a}) at character {exc.start}, which is not "
            "Unicode text; send the character itself, or a complete UTF-16 pair"
        )
    return None


def json_problem(value: Any, path: str = "") -> str | None:
    """Where and why ``value`` (parsed JSON) holds something a run cannot keep, or None."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
        elif isinstance(item, float):
            problem = None if math.isfinite(item) else f"{item} is not a JSON number"
        elif isinstance(item, dict):
            problem = None
            for key, child in item.items():
                key_problem = _text_problem(key) if isinstance(key, str) else None
                if key_problem is not None:
                    return f"at {where or 'the top'}: a key {key_problem}"
                stack.append((f"{where}[{key!a}]", child))
        elif isinstance(item, list):
            problem = None
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))
        else:
            problem = None
        if problem is not None:
            return f"at {where}: {problem}" if where else problem
    return None


def _checked(value: Any) -> Any:
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


JSONObject = Annotated[dict[str, Any], AfterValidator(_checked)]
"""A JSON object of text, numbers, booleans, nulls, arrays and objects only."""

Text = Annotated[str, AfterValidator(_checked)]
"""A string that is Unicode text (no lone surrogate)."""
