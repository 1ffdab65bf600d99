"""A short schemathesis run against a real server: no 5xx (``make fuzz`` runs the long one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz_api import fuzz

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]


def test_a_short_fuzz_of_the_api_gets_no_server_error(tmp_path: Path) -> None:
    assert fuzz(tmp_path / "data", seconds=25, max_examples=5, seed=1) == 0
