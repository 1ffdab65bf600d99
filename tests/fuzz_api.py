"""Fuzz the HTTP API from its own OpenAPI schema; no answer may be a 5xx.

``python -m tests.fuzz_api [--seconds S] [--max-examples N]`` (``make fuzz``):
a real ``runyard serve`` (SQLite, a fresh data dir) and schemathesis
against its ``/openapi.json``, authenticated with a bearer token, every
phase (examples, coverage, fuzzing, stateful), the one check
``not_a_server_error``, within a time budget.  The SSE endpoints are left
out: a stream of a live run answers for as long as the run lives.  Exit
status 0 when no request got a 5xx; schemathesis prints any that did, with
a ``curl`` line to reproduce it.  ``tests/test_fuzz_smoke.py`` runs a short
version in the suite.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.live_server import TOKENS, ServerProcess

EXCLUDED_PATHS = r"(/stream$|^/runs/feed$)"


def fuzz(data_dir: Path, *, seconds: int, max_examples: int, seed: int | None = None) -> int:
    """Run schemathesis against a fresh server; its exit status (0: no 5xx)."""
    server = ServerProcess(data_dir, RUNYARD_MAX_LIVE_RUNS_PER_USER="20").start()
    try:
        server.drain_output()
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.base_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKENS['root']}",
            "--checks",
            "not_a_server_error",
            "--exclude-path-regex",
            EXCLUDED_PATHS,
            "--max-time",
            str(seconds),
            "--max-examples",
            str(max_examples),
            "--request-timeout",
            "20",
            "--workers",
            "2",
            "--suppress-health-check",
            "all",
        ]
        if seed is not None:
            command += ["--seed", str(seed)]
        # Its working directory gets a `.schemathesis/` cache: kept out of the checkout.
        return subprocess.run(
            command, check=False, timeout=seconds + 120, cwd=data_dir.parent
        ).returncode
    finally:
        server.kill()
        server.listener.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=180, help="time budget (default 180)")
    parser.add_argument("--max-examples", type=int, default=100, help="per operation")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runyard-fuzz-") as tmp:
        return fuzz(
            Path(tmp) / "data",
            seconds=args.seconds,
            max_examples=args.max_examples,
            seed=args.seed,
        )


if __name__ == "__main__":
    raise SystemExit(main())
