"""docs/api.md's error table holds every error code the server can send, with its status.

The codes come from the code itself, so a new refusal cannot ship undocumented:

* every :class:`~runyard.actors.errors.RunyardError` subclass in ``actors`` and
  ``web`` (each carries its ``code`` and ``http_status``);
* the codes the web layer writes literally (``error_response(403,
  REFUSED_CODE, ...)``, ``"malformed_json"``, ``"internal_error"``...), read
  from its source;
* the codes of the HTTP errors routing, auth and the body-size guard raise
  (401, 404, 405, 413), through ``code_for_status``.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

from runyard import actors, web
from runyard.actors.errors import RunyardError
from runyard.web.errors import code_for_status
from runyard.web.same_origin import REFUSED_CODE

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "api.md"
HTTP_ERRORS = (401, 404, 405, 413)
"""Statuses raised as ``HTTPException``: auth (401), routing (404, 405), the body guard (413)."""


def documented() -> set[tuple[int, str]]:
    text = DOC.read_text(encoding="utf-8")
    section = re.search(r"^## Errors\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "docs/api.md has no '## Errors' section"
    rows = re.findall(r"^\| (\d{3}) \| `(\w+)` \|", section.group(1), re.M)
    assert rows, "no error table in the Errors section"
    return {(int(status), code) for status, code in rows}


def refusal_classes() -> set[tuple[int, str]]:
    for package in (actors, web):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(info.name)
    found: set[tuple[int, str]] = set()
    todo = list(RunyardError.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith(("runyard.actors.", "runyard.web.")):
            found.add((cls.http_status, cls.code))
    return found


def literal_codes() -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    for path in (ROOT / "web").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        for status, code in re.findall(r"error_response\(\s*(\d{3}),\s*\"(\w+)\"", source):
            found.add((int(status), code))
        for status in re.findall(r"HTTPException\(\s*(\d{3})", source):
            # raised as HTTPException: the code is the status's generic one
            found.add((int(status), code_for_status(int(status))))
        if "REFUSED_CODE" in source:
            found.add((403, REFUSED_CODE))
    found.add((413, "payload_too_large"))  # the body guard's own answer (error_payload)
    return found


@pytest.mark.timeout(30)
def test_every_error_code_the_server_can_send_is_in_the_table() -> None:
    table = documented()
    sent = refusal_classes() | literal_codes()
    sent |= {(status, code_for_status(status)) for status in HTTP_ERRORS}
    assert {(503, "store_unavailable"), (422, "invalid_code"), (400, "malformed_json")} <= sent
    missing = sorted(sent - table)
    assert missing == [], f"docs/api.md's error table lacks {missing}"
    unknown = sorted(table - sent)
    assert unknown == [], f"docs/api.md's error table lists codes nothing sends: {unknown}"
