"""``/openapi.json`` declares every route's response model and error codes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.live_server import LiveServer

pytestmark = pytest.mark.server

ERROR_BODY = "#/components/schemas/ErrorBody"

# (method, path): (success status, its schema ref or media type, error codes at least)
EXPECTED: dict[tuple[str, str], tuple[str, str, set[str]]] = {
    ("post", "/runs"): ("202", "RunStartedResponse", {"400", "401", "413", "422", "429", "503"}),
    ("get", "/runs"): ("200", "RunListResponse", {"400", "401", "422"}),
    ("get", "/runs/{run_id}"): ("200", "RunDetail", {"401", "403", "404"}),
    ("get", "/runs/{run_id}/stream"): ("200", "text/event-stream", {"400", "401", "403", "404"}),
    ("post", "/runs/{run_id}/stop"): ("202", "StopResponse", {"401", "403", "404", "409"}),
    ("delete", "/runs/{run_id}"): ("204", "", {"401", "403", "404", "409"}),
    ("get", "/agents"): ("200", "AgentModel", {"401"}),
    ("post", "/auth/session"): ("200", "SessionInfo", {"401"}),
    ("get", "/auth/session"): ("200", "WhoAmIResponse", {"401"}),
    ("delete", "/auth/session"): ("204", "", set()),
    ("get", "/ops/registry"): ("200", "RegistryView", {"401", "403"}),
    ("get", "/healthz"): ("200", "HealthResponse", set()),
    ("get", "/readyz"): ("200", "HealthResponse", {"503"}),
}


@pytest.fixture(scope="module")
def schema(live: LiveServer) -> dict[str, Any]:
    assert httpx.get(f"{live.base_url}/openapi.json").status_code == 401
    # The browsable reference (/docs) needs a caller too; FastAPI's other viewer is off.
    assert httpx.get(f"{live.base_url}/docs").status_code == 401
    assert httpx.get(f"{live.base_url}/redoc").status_code == 404
    with live.client("alice") as alice:
        resp = alice.get("/openapi.json")
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("method", "path"), list(EXPECTED))
def test_route_declares_its_response_model_and_error_codes(
    schema: dict[str, Any], method: str, path: str
) -> None:
    success, model, errors = EXPECTED[(method, path)]
    operation = schema["paths"][path][method]
    responses = operation["responses"]
    assert success in responses, sorted(responses)
    assert errors <= set(responses), (sorted(responses), sorted(errors))
    assert operation.get("summary"), f"{method} {path} has no summary"
    content = responses[success].get("content", {})
    if model == "text/event-stream":
        assert list(content) == ["text/event-stream"]
        assert "Last-Event-ID" in responses[success]["description"]
    elif model:
        assert model in json.dumps(content["application/json"]["schema"])
    else:
        assert not content  # 204: no body
    for status in errors:
        if (path, status) == ("/readyz", "503"):
            continue  # readiness answers its own shape either way
        ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == ERROR_BODY, (method, path, status, ref)


@pytest.mark.timeout(20)
def test_every_error_response_is_the_error_body(schema: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in json.dumps(schema)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) < 400 or (path, status) == ("/readyz", "503"):
                    continue
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == ERROR_BODY, (method, path, status)
    body = schema["components"]["schemas"]["ErrorBody"]
    assert body["required"] == ["error"]
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message"}


@pytest.mark.timeout(20)
def test_every_documented_route_needs_a_token_except_health(schema: dict[str, Any]) -> None:
    open_routes = {("get", "/healthz"), ("get", "/readyz"), ("delete", "/auth/session")}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if (method, path) in open_routes:
                continue
            assert "401" in operation["responses"], (method, path)


@pytest.mark.timeout(20)
def test_request_and_record_models_are_complete(schema: dict[str, Any]) -> None:
    models = schema["components"]["schemas"]
    start = models["StartRunRequest"]
    assert set(start["properties"]) == {
        "agent",
        "input_dict",
        "max_duration_s",
        "restart",
        "output_schema",
        "workspace",
    }
    assert start["required"] == ["agent"]
    assert start.get("additionalProperties") is False
    detail = models["RunDetail"]["properties"]
    for field in ("run_id", "owner", "agent", "status", "started_at", "finished_at", "events"):
        assert field in detail
    assert "workspace" in detail
    for field in ("options", "schema_warnings", "ops_log"):
        assert field in models["RunDetail"]["required"], field
    assert set(models["RunListResponse"]["properties"]) == {"runs", "next_cursor"}
    params = {
        p["name"]: p["in"] for p in schema["paths"]["/runs/{run_id}/stream"]["get"]["parameters"]
    }
    assert params == {"run_id": "path", "after": "query", "Last-Event-ID": "header"}
    names = {p["name"] for p in schema["paths"]["/runs"]["get"]["parameters"]}
    assert names == {"status", "agent", "limit", "cursor", "workspace"}
    feed = {p["name"] for p in schema["paths"]["/runs/feed"]["get"]["parameters"]}
    assert feed == {"workspace"}
