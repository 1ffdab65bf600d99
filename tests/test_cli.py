"""The ``runyard`` console script (runyard.web.cli), run as operators run it: a subprocess."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from runyard.web.cli import graceful_timeout_s, print_sign_in, sign_in_url
from runyard.web.config import Settings, describe_settings

pytestmark = pytest.mark.server

# The fixed names (docs/design.md, "Configuration"); scripts and operators
# rely on them.
DOCUMENTED = [
    ("RUNYARD_HOST", "127.0.0.1"),
    ("RUNYARD_PORT", "8000"),
    ("RUNYARD_DATA_DIR", "./runyard-data"),
    ("RUNYARD_NODE_ID", "unset"),
    ("RUNYARD_COUCHDB_URL", "unset"),
    ("RUNYARD_COUCHDB_DB", "runyard_runs"),
    ("RUNYARD_COUCHDB_USER", "unset"),
    ("RUNYARD_COUCHDB_PASSWORD", "unset"),
    ("RUNYARD_TOKENS", "unset"),
    ("RUNYARD_SESSION_SECRET", "unset"),
    ("RUNYARD_PUBLIC_ORIGIN", "unset"),
    ("RUNYARD_TOKENS_FILE", "unset"),
    ("RUNYARD_METRICS_TOKEN", "unset"),
    ("RUNYARD_RETENTION_S", "3600"),
    ("RUNYARD_STORE_RETENTION_S", "604800"),
    ("RUNYARD_STOP_GRACE_S", "5"),
    ("RUNYARD_SHUTDOWN_GRACE_S", "30"),
    ("RUNYARD_MAX_LIVE_RUNS_PER_USER", "100"),
    ("RUNYARD_MAX_BODY_BYTES", "1048576"),
    ("RUNYARD_MAX_CODE_CHARS", "262144"),
    ("RUNYARD_MAX_EVENT_BYTES", "262144"),
    ("RUNYARD_MAX_RUN_EVENTS", "1000000"),
    ("RUNYARD_MAX_RUN_BYTES", "134217728"),
    ("RUNYARD_CACHE_BYTES", "268435456"),
    ("RUNYARD_STORE_TIMEOUT_S", "5.0"),
    ("RUNYARD_LEASE_S", "15.0"),
    ("RUNYARD_HEARTBEAT_S", "10"),
]


def runyard(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "runyard"
    if not script.exists():
        pytest.fail(f"console script missing: {script} (pip install -e . declares it)")
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("RUNYARD_")}
    return subprocess.run(
        [str(script), *args],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.timeout(60)
def test_serve_help_lists_every_setting_with_default(tmp_path: Path) -> None:
    result = runyard(["serve", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "--host" in out
    assert "--port" in out
    assert "--fd" in out
    for name, default in DOCUMENTED:
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(name + " ")), None)
        assert line is not None, f"{name} missing from --help"
        assert default in line, f"{name}: default {default!r} not in {line!r}"
    for info in describe_settings():
        assert info.env_var in out
        assert info.description.split()[0] in out
    assert {info.env_var for info in describe_settings()} == {name for name, _ in DOCUMENTED}


@pytest.mark.timeout(60)
def test_bad_setting_exits_2_with_a_readable_message(tmp_path: Path) -> None:
    result = runyard(["serve"], tmp_path, RUNYARD_PORT="eighty")
    assert result.returncode == 2
    assert "RUNYARD_PORT" in result.stderr
    assert "'eighty'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_bad_tokens_exit_2_naming_the_entry_not_the_token(tmp_path: Path) -> None:
    result = runyard(["serve"], tmp_path, RUNYARD_TOKENS="alice:ok,bob:s3cr3t:root")
    assert result.returncode == 2
    assert "RUNYARD_TOKENS entry 2 ('bob')" in result.stderr
    assert "s3cr3t" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_fd_that_is_no_socket_exits_2_naming_it(tmp_path: Path) -> None:
    result = runyard(["serve", "--fd", "987"], tmp_path, RUNYARD_TOKENS="alice:tok")
    assert result.returncode == 2
    assert "--fd 987 is not an open socket" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(10)
def test_sign_in_url_carries_the_token_in_the_fragment() -> None:
    # The fragment never reaches the server, so the token is in no access log.
    assert sign_in_url("127.0.0.1", 8000, "tok") == "http://127.0.0.1:8000/#token=tok"
    assert sign_in_url("0.0.0.0", 9000, "t") == "http://127.0.0.1:9000/#token=t"
    assert sign_in_url("::", 80, "t") == "http://[::1]:80/#token=t"
    assert sign_in_url("fe80::1", 80, "t") == "http://[fe80::1]:80/#token=t"
    assert sign_in_url("127.0.0.1", 80, "a+b/c&d") == "http://127.0.0.1:80/#token=a%2Bb%2Fc%26d"
    out = io.StringIO()
    print_sign_in("0.0.0.0", 8123, "abc_DEF-1", out)
    printed = out.getvalue()
    assert "http://127.0.0.1:8123/#token=abc_DEF-1" in printed
    assert "?token=" not in printed
    assert "Authorization: Bearer abc_DEF-1' http://127.0.0.1:8123/runs" in printed


@pytest.mark.timeout(10)
def test_graceful_timeout_covers_shutdown_and_stop_grace() -> None:
    assert graceful_timeout_s(Settings(shutdown_grace_s=30, stop_grace_s=5)) == 40
    assert graceful_timeout_s(Settings(shutdown_grace_s=0.5, stop_grace_s=0)) == 6


STUB_APP = """
import sys, types
from fastapi import FastAPI
from runyard.web.auth import Authenticator, CallerDep, install_auth
from runyard.web.errors import install_error_handlers

def create_app(settings, data_dir_lock=None):
    app = FastAPI()
    install_error_handlers(app, settings)
    install_auth(app, Authenticator.from_settings(settings))

    @app.get("/me")
    async def me(caller: CallerDep) -> dict:
        return {"user_id": caller.user_id, "admin": caller.admin}

    return app

stub = types.ModuleType("runyard.web.app")
stub.create_app = create_app
stub.probe_store = lambda settings: None  # no store to open here
sys.modules["runyard.web.app"] = stub  # stands in for the real app: this tests the CLI only
from runyard.web.cli import main
sys.exit(main(["serve", "--port", "0"]))
"""


@pytest.mark.timeout(60)
def test_serve_without_users_prints_a_working_sign_in_url(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("RUNYARD_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", STUB_APP],
        env={**clean, "RUNYARD_DATA_DIR": str(tmp_path / "data")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:  # the banner comes before uvicorn serves
            if "#token=" in line and line.strip().startswith("http://"):
                url = line.strip()
                break
        assert url.startswith("http://127.0.0.1:"), "no sign-in URL printed"
        base, token = url.split("/#token=")
        assert not base.endswith(":0")  # the bound port, not the requested 0
        response = httpx.get(f"{base}/me", headers={"Authorization": f"Bearer {token}"})
        assert response.json() == {"user_id": "admin", "admin": True}
        assert httpx.get(f"{base}/me").status_code == 401
        assert (tmp_path / "data" / "session.key").exists()
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it captured,
        # so the exit status is "killed by SIGTERM" after a clean shutdown.
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
        assert proc.stderr is not None
        assert "Finished server process" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
