"""A catalog agent's input is described and checked before any run exists:
``GET /agents`` gives it as JSON Schema, a bad value is a 422 naming the field,
and a misspelt top-level field gets a suggestion (real server)."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest

from tests.live_server import LiveServer, LiveServerFactory, bearer

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def live(live_server: LiveServerFactory) -> LiveServer:
    return live_server()


@pytest.fixture
def alice(live: LiveServer) -> Any:
    with httpx.Client(base_url=live.base_url, headers=bearer("alice"), timeout=30) as client:
        yield client


def test_every_agent_gives_its_input_as_a_json_schema(alice: httpx.Client) -> None:
    agents = {a["name"]: a for a in alice.get("/agents").json()}
    for agent in agents.values():
        jsonschema.Draft202012Validator.check_schema(agent["input_schema"])
    ticker = agents["ticker"]["input_schema"]
    assert ticker["properties"]["n"]["type"] == "integer"
    assert ticker["properties"]["n"]["maximum"] == 1_000_000
    validator = jsonschema.Draft202012Validator(ticker)
    assert not validator.is_valid({"n": "lots"})
    assert validator.is_valid({"n": 3, "interval": 0.01})


def test_a_bad_value_is_a_422_naming_the_field_and_no_run_exists(alice: httpx.Client) -> None:
    before = alice.get("/runs").json()["runs"]
    answer = alice.post("/runs", json={"agent": "ticker", "input_dict": {"n": "lots"}})
    assert answer.status_code == 422, answer.text
    assert "input_dict.n" in answer.json()["error"]["message"]
    assert alice.get("/runs").json()["runs"] == before


def test_a_misspelt_field_gets_a_suggestion(alice: httpx.Client) -> None:
    answer = alice.post("/runs", json={"agent": "ticker", "input": {"n": 3}})
    assert answer.status_code == 422, answer.text
    assert "did you mean 'input_dict'?" in answer.json()["error"]["message"]
    answer = alice.post("/runs", json={"agent": "ticker", "zzz": 1})
    assert answer.status_code == 422
    assert "did you mean" not in answer.json()["error"]["message"]
