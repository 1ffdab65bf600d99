"""docs/internals.md stays true: its example runs and prints what the page says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.actors import errors
from runyard.actors.context import RESERVED_TYPES, RunContext
from runyard.actors.registry import RegistryActor

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "internals.md"
INTERNAL_MESSAGES = {
    "RunEnded",
    "RunsPersisted",
    # the cluster backend, membership and mirrors -> registry
    "RunDocChanged",
    "RunDeleted",
    "StopRequested",
    "MirrorEnded",
    "TakeOverNode",
}  # never sent by a user of the runtime


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", _doc(), re.S | re.M)
    assert len(blocks) == 1, "docs/internals.md must hold exactly one ```python block"
    return blocks[0]


def _expected_output() -> str:
    match = re.search(r"It prints:\n\n```text\n(.*?)^```", _doc(), re.S | re.M)
    assert match, "the example's output block ('It prints:') is missing"
    return match.group(1)


@pytest.mark.timeout(60)
def test_the_example_runs_and_prints_what_the_doc_says(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_example(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == _expected_output()
    lines = done.stdout.splitlines()
    assert "finished stopped result=None error=no longer needed" in lines
    assert "stop again: stopped" in lines
    assert lines[-1] == "threads left ['MainThread']"


@pytest.mark.timeout(10)
def test_the_message_table_covers_every_message_the_registry_answers() -> None:
    table = _doc().split("## Messages", 1)[1].split("## Following a run", 1)[0]
    public = {cls.__name__ for cls in RegistryActor._handlers} - INTERNAL_MESSAGES
    missing = {name for name in public if f"| `{name}(" not in table}
    assert not missing, f"docs/internals.md message table lacks {sorted(missing)}"


@pytest.mark.timeout(10)
def test_the_error_table_covers_every_refusal() -> None:
    table = _doc().split("## Errors", 1)[1]
    refusals = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, errors.RunyardError)
        and value is not errors.RunyardError
    }
    missing = {name for name in refusals if f"| `{name}` |" not in table}
    assert not missing, f"docs/internals.md error table lacks {sorted(missing)}"
    for name in refusals:
        status = getattr(errors, name).http_status
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        assert row.rstrip().endswith(f"| {status} |"), row


@pytest.mark.timeout(10)
def test_the_agent_contract_section_matches_run_context() -> None:
    section = _doc().split("## Writing an agent", 1)[1].split("## Stopping", 1)[0]
    for member in ("emit", "stopping", "check_stop", "sleep", "wait_stop", "attempt", "run_id"):
        assert hasattr(RunContext, member)
        assert f"ctx.{member}" in section, member
    for reserved in RESERVED_TYPES:
        assert f"`{reserved}`" in section, reserved
