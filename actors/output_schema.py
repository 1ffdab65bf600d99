"""A run's output schema: the JSON Schema a start request may give its result.

Checked twice, with the ``jsonschema`` library: the schema itself when the
run starts (:func:`check_schema`: a bad schema is refused before a run
exists, so a typo is not found out only at the end of a long run), and the
result against it when the run ends ``success`` (:func:`result_warnings`).
The second check is advisory: mismatches become the record's
``schema_warnings`` and the run's status stays ``success`` (the agent did its
work; what the caller does with a result that does not fit is the caller's
call).

The validator class is the one the schema's ``$schema`` names (Draft 4 to
2020-12), Draft 2020-12 when it names none.  Remote ``$ref``\\ s are never
fetched: a result checked against one gets a warning saying it could not be
checked.
"""

from __future__ import annotations

import functools
import json
from itertools import islice
from typing import Any, cast

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator

from runyard.actors.errors import RunyardError
from runyard.actors.jsonsafe import dumps_safe
from runyard.actors.records import JSON

__all__ = [
    "MAX_SCHEMA_BYTES",
    "MAX_WARNINGS",
    "InvalidOutputSchema",
    "check_schema",
    "result_warnings",
]

MAX_SCHEMA_BYTES = 64 * 1024
"""The largest ``output_schema`` (bytes of compact JSON): it is kept in the run's options."""
MAX_WARNINGS = 50
"""Mismatches listed per run; one more entry (path ``""``) says when there were more."""
MAX_MESSAGE_CHARS = 500
"""A mismatch's message quotes the value: a long one is cut."""


class InvalidOutputSchema(RunyardError):
    """The start request's ``output_schema`` is not a JSON Schema this server can use."""

    code = "invalid_output_schema"
    http_status = 422


def pointer(path: Any) -> str:
    """The JSON Pointer (RFC 6901) of a path of keys and indexes: ``/items/0/name``;
    ``""`` for the whole document."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _validator_class(schema: dict[str, JSON]) -> type[Validator] | None:
    """The validator ``$schema`` names (Draft 2020-12 if none); None: one we do not know."""
    if "$schema" not in schema:
        return Draft202012Validator
    # default=None (the stubs want a class): None means "not a $schema we know".
    found: type[Validator] | None = validators.validator_for(schema, default=cast(Any, None))
    return found


def check_schema(schema: object) -> dict[str, JSON]:
    """``schema`` if it is a JSON Schema object this server can check results against.

    Up to a second or so for a big schema on first sight (then cached): call
    it in a worker thread before sending ``StartRun`` from a loop that others
    share, as the web layer does.

    Raises :class:`InvalidOutputSchema` (422) naming the problem: not an
    object, over :data:`MAX_SCHEMA_BYTES`, an unknown ``$schema``, or not valid
    under its draft's metaschema (with the JSON Pointer of the bad part).
    """
    if not isinstance(schema, dict):
        raise InvalidOutputSchema(
            f"output_schema must be a JSON Schema object, not {type(schema).__name__}"
        )
    safe, encoded = dumps_safe(schema)
    if safe is not schema:
        raise InvalidOutputSchema("output_schema must hold only JSON values")
    size = len(encoded.encode("utf-8", "surrogatepass"))
    if size > MAX_SCHEMA_BYTES:
        raise InvalidOutputSchema(
            f"output_schema is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are accepted"
        )
    problem = _problem(encoded)
    if problem is not None:
        raise InvalidOutputSchema(problem)
    return cast(dict[str, JSON], schema)


@functools.lru_cache(maxsize=64)
def _problem(encoded: str) -> str | None:
    """What is wrong with the schema whose JSON is ``encoded``; None: nothing.

    Cached by its text: checking against the Draft 2020-12 metaschema costs
    about a millisecond per property (over a second for a schema near the
    size bound), so the web layer checks in a worker thread first and the
    registry's check of the same schema, on the loop every run shares, is a
    cache hit; so is every start of a service that always sends one schema.
    """
    schema = json.loads(encoded)
    cls = _validator_class(schema)
    if cls is None:
        return (
            f"output_schema names an unknown $schema {schema['$schema']!r}; use a JSON Schema "
            "draft's URI (Draft 4 to 2020-12) or leave $schema out for Draft 2020-12"
        )
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = pointer(exc.absolute_path)
        return f"output_schema is not a valid JSON Schema: {_cut(exc.message)}" + (
            f" (at {where})" if where else ""
        )
    return None


def result_warnings(schema: dict[str, JSON], result: JSON) -> list[dict[str, str]]:
    """Where ``result`` does not match ``schema``: ``[{"path", "message"}]``, ``path``
    a JSON Pointer into the result; empty when it matches.

    At most :data:`MAX_WARNINGS`, in the validator's order, plus one entry
    with path ``""`` saying that more were left out.  Never raises: a schema
    that cannot be applied (an unresolvable ``$ref``) gives one warning
    saying so.
    """
    cls = _validator_class(schema) or Draft202012Validator
    try:
        found: list[ValidationError] = list(
            islice(cls(schema).iter_errors(result), MAX_WARNINGS + 1)
        )
    except Exception as exc:  # referencing errors, a recursion too deep, ...
        message = f"the result could not be checked against output_schema: {exc}"
        return [{"path": "", "message": _cut(message)}]
    warnings = [
        {"path": pointer(error.absolute_path), "message": _cut(error.message)}
        for error in found[:MAX_WARNINGS]
    ]
    if len(found) > MAX_WARNINGS:
        warnings.append(
            {
                "path": "",
                "message": f"more mismatches were left out: only the first {MAX_WARNINGS} "
                "are listed",
            }
        )
    return warnings


def _cut(text: str) -> str:
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[: MAX_MESSAGE_CHARS - 1] + "…"
