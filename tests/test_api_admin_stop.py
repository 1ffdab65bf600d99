"""An admin stops another user's runaway run through a real server, and still
cannot read it.

Stopping is the one act an admin may take on someone else's run; its record
says who stopped it (``"stopped by admin root"``), and ``GET /runs/{id}`` and
its stream stay owner-only.  Others still get 403.
"""

from __future__ import annotations

import pytest

from tests.api_helpers import assert_error, get_run, start, wait_finished
from tests.live_server import LiveServer

pytestmark = pytest.mark.server


@pytest.mark.timeout(30)
def test_an_admin_stops_another_users_live_run_and_the_record_says_so(live: LiveServer) -> None:
    with live.client("alice") as alice, live.client("root") as root, live.client("bob") as bob:
        run_id = start(alice, "sleeper", seconds=300)

        # A non-admin who does not own it is refused, and nothing changes.
        assert_error(bob.post(f"/runs/{run_id}/stop"), 403, "forbidden")
        assert get_run(alice, run_id)["status"] == "running"

        resp = root.post(f"/runs/{run_id}/stop")
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"run_id": run_id, "status": "stopping"}

        run = wait_finished(alice, run_id)
        assert run["status"] == "stopped"
        assert run["error"] == "stopped by admin root"
        requested = [e for e in run["events"] if e["type"] == "stop_requested"]
        assert [e["data"] for e in requested] == [{"reason": "stopped by admin root"}]

        # Stopping did not open the trace to the admin.
        for path in (f"/runs/{run_id}", f"/runs/{run_id}/stream"):
            message = assert_error(root.get(path), 403, "forbidden")
            assert "another user" in message
        # Nor does a finished run of someone else answer how it ended.
        assert_error(root.post(f"/runs/{run_id}/stop"), 403, "forbidden")


@pytest.mark.timeout(30)
def test_an_admin_stopping_its_own_run_keeps_the_usual_reason(live: LiveServer) -> None:
    with live.client("root") as root:
        run_id = start(root, "sleeper", seconds=300)
        assert root.post(f"/runs/{run_id}/stop").status_code == 202
        run = wait_finished(root, run_id)
        assert run["status"] == "stopped"
        assert run["error"] == "stopped by user"
