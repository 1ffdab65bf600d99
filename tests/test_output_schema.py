"""The output schema: checked at start, the result checked against it at the end.

The library calls (no runtime here); the runtime and the API are in
``tests/test_run_record.py`` and ``tests/test_api_record.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from runyard.actors.config import RuntimeConfig
from runyard.actors.live_run import RunSettings
from runyard.actors.messages import Caller, StartRun
from runyard.actors.output_schema import (
    MAX_SCHEMA_BYTES,
    MAX_WARNINGS,
    InvalidOutputSchema,
    _problem,
    check_schema,
    pointer,
    result_warnings,
)
from runyard.actors.records import RunRecord

PERSON = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
        }
    },
    "required": ["items"],
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ([1, 2], "must be a JSON Schema object, not list"),
        ("string", "must be a JSON Schema object, not str"),
        ({"type": "strin"}, "output_schema is not a valid JSON Schema"),
        ({"properties": {"a": {"minimum": "x"}}}, "(at /properties/a/minimum)"),
        ({"$schema": "https://example.com/my-draft"}, "unknown $schema"),
        ({"description": "x" * MAX_SCHEMA_BYTES}, f"at most {MAX_SCHEMA_BYTES} are accepted"),
    ],
)
def test_a_bad_schema_is_refused_naming_the_problem(schema: Any, words: str) -> None:
    with pytest.raises(InvalidOutputSchema) as caught:
        check_schema(schema)
    assert words in caught.value.message
    assert caught.value.http_status == 422
    assert caught.value.code == "invalid_output_schema"


@pytest.mark.timeout(10)
def test_a_mismatch_is_a_warning_with_a_json_pointer() -> None:
    assert result_warnings(PERSON, {"items": [{"name": "a"}]}) == []
    warnings = result_warnings(PERSON, {"items": [{"name": "a"}, {"name": 7}]})
    assert warnings == [{"path": "/items/1/name", "message": "7 is not of type 'string'"}]
    assert result_warnings(PERSON, "nope") == [
        {"path": "", "message": "'nope' is not of type 'object'"}
    ]
    assert pointer(["a/b", "c~d", 0]) == "/a~1b/c~0d/0"


@pytest.mark.timeout(10)
def test_at_most_fifty_warnings_then_one_saying_more_were_left_out() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    warnings = result_warnings(schema, ["x"] * 80)
    assert len(warnings) == MAX_WARNINGS + 1
    assert [w["path"] for w in warnings[:3]] == ["/0", "/1", "/2"]
    assert warnings[-1]["path"] == ""
    assert "only the first 50 are listed" in warnings[-1]["message"]
    assert len(result_warnings(schema, ["x"] * MAX_WARNINGS)) == MAX_WARNINGS


@pytest.mark.timeout(10)
def test_the_draft_named_by_dollar_schema_is_the_one_applied() -> None:
    # Draft 7's array form of `items` checks by position; 2020-12 has prefixItems
    # for that and refuses `items` as an array.
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}]}
    assert check_schema(draft7) is draft7
    assert result_warnings(draft7, ["a", 1]) == []
    assert result_warnings(draft7, [1]) == [{"path": "/0", "message": "1 is not of type 'string'"}]
    with pytest.raises(InvalidOutputSchema):
        check_schema({"items": [{"type": "string"}]})


@pytest.mark.timeout(10)
def test_a_schema_that_cannot_be_applied_gives_one_warning_never_an_error() -> None:
    remote = {"$ref": "https://example.com/never-fetched.json"}
    assert check_schema(remote) is remote
    [warning] = result_warnings(remote, {"a": 1})
    assert warning["path"] == ""
    assert "could not be checked" in warning["message"]
    assert "never-fetched.json" in warning["message"]


@pytest.mark.timeout(10)
def test_a_long_message_is_cut() -> None:
    [warning] = result_warnings({"type": "integer"}, "y" * 5000)
    assert len(warning["message"]) <= 500
    assert warning["message"].endswith("…")


@pytest.mark.timeout(10)
def test_the_schema_is_kept_in_the_options_and_a_resumed_run_has_it_again() -> None:
    config = RuntimeConfig()
    msg = StartRun(Caller("alice"), "echo", output_schema=PERSON, code=None)
    settings = RunSettings.of(msg, config)
    assert settings.options == {"output_schema": PERSON}
    assert settings.output_schema == PERSON
    record = RunRecord("r", "alice", "echo", "running", {}, 0.0, options=settings.options)
    assert RunSettings.stored(record, config).output_schema == PERSON
    assert RunSettings.of(StartRun(Caller("alice"), "echo"), config).output_schema is None
    with pytest.raises(InvalidOutputSchema):
        RunSettings.of(StartRun(Caller("alice"), "echo", output_schema={"type": 3}), config)


@pytest.mark.timeout(10)
def test_a_schema_seen_before_is_not_checked_against_its_metaschema_again() -> None:
    # The web layer checks in a worker thread; the registry's check on the shared
    # loop is then a cache hit (a big 2020-12 schema takes up to a second).
    schema = {"type": "object", "properties": {"unique-6c1e": {"type": "string"}}}
    before = _problem.cache_info()
    check_schema(schema)
    check_schema(dict(schema))
    after = _problem.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
