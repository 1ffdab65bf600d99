"""The open endpoints: docs/api.md lists them once, and a real server agrees.

The table between the ``open-endpoints`` markers in docs/api.md's
"Authentication" section is the one list of what answers without a token.
Against a real server: each listed endpoint answers without one, and every
other route in the app's route table answers 401, so neither the server nor
the docs can open (or close) an endpoint without the other saying so.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from tests.api_helpers import assert_error
from tests.live_server import LiveServer

pytestmark = pytest.mark.server

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
RUN_ID = "0" * 32
EXAMPLES = {"/static/{path}": "/static/app.js", "/ui/{path}": "/ui/admin"}
"""A concrete address for a documented path with a placeholder other than a run id."""


def documented_open() -> set[tuple[str, str]]:
    """(method, path) pairs of the table, paths as the docs write them (``{run_id}``)."""
    text = DOC.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- open-endpoints: begin -->\n(.*?)<!-- open-endpoints: end -->", text, re.S
    )
    assert found, "docs/api.md has no open-endpoints table"
    pairs: set[tuple[str, str]] = set()
    for line in found.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue  # the header and its rule
        methods = re.findall(r"`([A-Z]+)`", cells[0])
        paths = re.findall(r"`(/[^`]*)`", cells[1])
        assert methods, line
        assert len(paths) == 1, line
        pairs.update((method, paths[0]) for method in methods)
    assert pairs
    return pairs


def concrete(path: str) -> str:
    if path in EXAMPLES:
        return EXAMPLES[path]
    return re.sub(r"\{[^}]+\}", RUN_ID, path)


def route_table(live: LiveServer) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves; a mount as ``/prefix/{path}``.

    ``iter_route_contexts`` sees through FastAPI's included routers (which
    ``app.routes`` lists unexpanded), with the paths as they are served.
    """
    routes: set[tuple[str, str]] = set()
    for context in iter_route_contexts(live.app.routes):
        if isinstance(context.original_route, Mount):
            routes.add(("GET", f"{context.path}/{{path}}"))
        elif context.methods and context.path:
            path = re.sub(r"\{(\w+):path\}", r"{\1}", context.path)
            routes.update((method, path) for method in context.methods)
    return routes


@pytest.mark.timeout(30)
def test_the_open_endpoints_in_the_docs_answer_without_a_token(live: LiveServer) -> None:
    served = route_table(live)
    for method, path in sorted(documented_open()):
        assert (method, path) in served, (
            f"docs/api.md lists {method} {path}, the app has no such route"
        )
        resp = httpx.request(method, f"{live.base_url}{concrete(path)}")
        assert resp.status_code < 400, (method, path, resp.status_code, resp.text[:200])


@pytest.mark.timeout(60)
def test_every_other_route_answers_401_without_a_token(live: LiveServer) -> None:
    closed = sorted(route_table(live) - documented_open())
    assert ("GET", "/metrics") in closed
    assert ("GET", "/docs") in closed
    with httpx.Client(base_url=live.base_url) as anonymous:
        for method, path in closed:
            body = {} if method in ("POST", "PUT", "PATCH") else None
            resp = anonymous.request(method, concrete(path), json=body)
            if method == "HEAD":
                assert resp.status_code == 401, (method, path, resp.status_code)
                continue
            assert_error(resp, 401, "unauthorized")
