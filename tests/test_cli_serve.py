"""``runyard serve`` as operators meet it: a port already taken, and what a SIGTERM drain says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.live_server import TOKENS_ENV, ServerProcessFactory, bind_loopback
from tests.waiting import wait_until

pytestmark = pytest.mark.server

SCRIPT = Path(sys.executable).parent / "runyard"


@pytest.mark.timeout(60)
def test_a_port_in_use_is_named_with_the_way_to_choose_another(tmp_path: Path) -> None:
    taken = bind_loopback()  # listening: the port is in use for as long as the test runs
    port = taken.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RUNYARD_")}
    env.update(RUNYARD_TOKENS=TOKENS_ENV, RUNYARD_DATA_DIR=str(tmp_path / "data"))
    try:
        result = subprocess.run(
            [str(SCRIPT), "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        taken.close()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--port" in result.stderr
    assert "RUNYARD_PORT" in result.stderr


@pytest.mark.timeout(60)
def test_sigterm_logs_what_the_drain_found_and_what_it_stopped(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    proc = server_process(tmp_path, RUNYARD_SHUTDOWN_GRACE_S="0.3")
    with proc.client() as alice:
        slow = alice.post("/runs", json={"agent": "sleeper", "input_dict": {"seconds": 60}})
        slow_id = slow.json()["run_id"]
        with alice.stream("GET", f"/runs/{slow_id}/stream") as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("event: run")

            def one_stream_open() -> bool:
                with httpx.Client(
                    base_url=proc.base_url, headers={"Authorization": "Bearer root-token"}
                ) as root:
                    live = root.get("/ops/registry").json()["live"]
                return [run["subscribers"] for run in live] == [1]

            wait_until(one_stream_open, 10, "the stream to be subscribed")
            proc.signal(signal.SIGTERM)
            rest = "\n".join(lines)  # the stream ends with the run's done
        assert '"status":"stopped"' in rest
    assert proc.wait(30) == 0
    out = proc.output()
    assert "draining started: 1 live run(s), 1 open stream(s)" in out, out
    assert "live runs get up to 0.3 s to finish" in out
    assert f"drained: 0 run(s) finished within the grace, 1 stopped at its end ({slow_id})" in out
