"""Inputs an attacker tried: each refused with the documented 4xx, nothing stored.

A real server (uvicorn in a thread), real HTTP, raw bodies where the point
is a body no JSON encoder of a well-behaved client would write.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.api_helpers import assert_error
from tests.live_server import TOKENS

pytestmark = [pytest.mark.server, pytest.mark.timeout(30)]

JSON_HEADERS = {"Content-Type": "application/json"}


def _runs(client: httpx.Client) -> set[str]:
    return {r["run_id"] for r in client.get("/runs", params={"limit": 1000}).json()["runs"]}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/runs", {"GET", "POST"}),
        ("PATCH", "/runs", {"GET", "POST"}),
        ("PUT", "/runs/0123456789abcdef0123456789abcdef", {"GET", "DELETE"}),
        ("GET", "/runs/0123456789abcdef0123456789abcdef/stop", {"POST"}),
        ("PUT", "/auth/session", {"GET", "POST", "DELETE"}),
    ],
)
def test_405_lists_every_allowed_method(
    alice: httpx.Client, method: str, path: str, allowed: set[str]
) -> None:
    resp = alice.request(method, path)
    assert_error(resp, 405, "method_not_allowed")
    listed = {m.strip() for m in resp.headers["allow"].split(",")}
    assert allowed <= listed, resp.headers["allow"]
    assert method not in listed


@pytest.mark.parametrize(
    "raw",
    [b'[NaN,"x"]', b'[1e999,"x"]', b'[-Infinity,"x"]', b'[-1e999,"x"]'],
)
def test_hand_made_cursors_with_impossible_times_are_400(alice: httpx.Client, raw: bytes) -> None:
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    resp = alice.get("/runs", params={"cursor": cursor})
    assert_error(resp, 400, "invalid_request")


def test_a_cursor_with_a_lone_surrogate_is_400(alice: httpx.Client) -> None:
    cursor = base64.urlsafe_b64encode(b'[1.5,"\\ud800"]').decode().rstrip("=")
    assert_error(alice.get("/runs", params={"cursor": cursor}), 400, "invalid_request")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"agent":"echo","input_dict":' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
        (b'{"agent":"echo","input_dict":{"n":' + b"7" * 5000 + b"}}", "4300 digits"),
        (b'{"agent":"echo","input_dict":{"s":"\xff\xfe"}}', "UTF-8"),
    ],
)
def test_bodies_json_cannot_read_are_malformed_json(
    alice: httpx.Client, body: bytes, words: str
) -> None:
    before = _runs(alice)
    resp = alice.post("/runs", content=body, headers=JSON_HEADERS)
    message = assert_error(resp, 400, "malformed_json")
    assert words in message
    assert _runs(alice) == before


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/runs", '{"agent":"echo","input_dict":{"a":["ok","\\ud800"]}}', "input_dict"),
        ("/runs", '{"agent":"echo","input_dict":{"a":["ok","\\ud800"]}}', "['a'][1]"),
        ("/runs", '{"agent":"echo","input_dict":{"\\udc00k":1}}', "a key"),
        ("/runs", '{"agent":"echo","input_dict":{"x":NaN}}', "not a JSON number"),
        ("/runs", '{"agent":"echo","input_dict":{"x":[1e999]}}', "['x'][0]"),
        ("/runs", '{"agent":"ech\\ud800o"}', "agent"),
        ("/agents/run-code/start", '{"code":"x = \\"\\udfff\\"\\n"}', "code"),
        ("/agents/run-code/start", '{"code":"x=1","env":{"A":"\\ud800"}}', "env"),
    ],
)
def test_text_that_is_not_unicode_and_numbers_that_are_not_json_are_422(
    alice: httpx.Client, path: str, body: str, words: str
) -> None:
    before = _runs(alice)
    resp = alice.post(path, content=body.encode(), headers=JSON_HEADERS)
    message = assert_error(resp, 422, "validation_error")
    assert words in message
    assert _runs(alice) == before


def test_an_input_with_a_surrogate_pair_is_kept_and_echoed(alice: httpx.Client) -> None:
    body = '{"agent":"echo","input_dict":{"smile":"\\ud83d\\ude00"}}'
    resp = alice.post("/runs", content=body.encode(), headers=JSON_HEADERS)
    assert resp.status_code == 202, resp.text
    assert json.loads(body)["input_dict"]["smile"] == "\U0001f600"


def test_two_authorization_headers_are_400(live_url: str) -> None:
    headers = [
        ("Authorization", f"Bearer {TOKENS['alice']}"),
        ("Authorization", f"Bearer {TOKENS['bob']}"),
    ]
    resp = httpx.get(f"{live_url}/runs", headers=headers)
    message = assert_error(resp, 400, "bad_request")
    assert "one Authorization header" in message


def test_agent_inputs_past_their_limits_are_422_naming_the_limit(alice: httpx.Client) -> None:
    before = _runs(alice)
    for body, words in [
        ({"agent": "chatty", "input_dict": {"n": 1_000_000, "batch": 10**9}}, "batch must be <="),
        ({"agent": "ticker", "input_dict": {"n": 10**8, "interval": 0}}, "input_dict.n must be"),
    ]:
        message = assert_error(alice.post("/runs", json=body), 422, "validation_error")
        assert words in message
    assert _runs(alice) == before


@pytest.fixture
def live_url(live: object) -> str:
    url: str = getattr(live, "base_url")  # noqa: B009 - the module's shared LiveServer
    return url
