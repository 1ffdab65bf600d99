"""What every benchmark shares: sizes, servers as subprocesses, metrics, statistics.

Every server runs under the same ``python -m uvicorn --factory`` command with
the same options (:data:`UVICORN_OPTS`) on 127.0.0.1 and a free port; only
the factory differs.  Three kinds (:data:`KINDS`): ``baseline`` (plain
asyncio, nothing stored), ``durable`` (the same plus group-committed SQLite:
it answers and delivers only what is committed) and ``runyard``.  Every
benchmark runs ``baseline`` and ``runyard``; those where keeping one's word
costs something (starts, live delivery, first event) run ``durable`` too.
Each measurement gets fresh servers, one at a time (a server that is not
being measured is not running), and the order alternates between
repetitions so drift on a noisy machine does not favour one side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.rawhttp import Connection, SSEStream, StreamResult, open_stream

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
USER = "bench"
TOKEN = "bench-token"
TOKENS_ENV = f"{USER}:{TOKEN}:admin,other:other-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

KINDS = ("baseline", "durable", "runyard")
PAIR = ("baseline", "runyard")
"""The kinds every benchmark runs; :data:`KINDS` is all of them."""
FACTORIES = {
    "baseline": "bench.baseline_app:create_app",
    "durable": "bench.durable_app:create_app",
    "runyard": "bench.runyard_app:create_app",
}
UVICORN_OPTS = ("--log-level", "warning", "--no-access-log", "--timeout-keep-alive", "60")


# --------------------------------------------------------------------------
# Sizes


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is; FULL, QUICK and TINY (tests) below."""

    start_seq_runs: int = 3000
    start_conc_runs: int = 6000
    start_clients: int = 20
    live_events: int = 20_000
    replay_events: int = 100_000
    replay_reads: int = 2
    resume_chains: int = 20
    resume_cuts: int = 50  # reconnects per chain: chains * cuts reconnects in all
    resume_events: int = 3000
    resume_interval_s: float = 0.001
    fanout_subs: int = 1000
    fanout_events: int = 500
    conc_runs: int = 100_000
    conc_clients: int = 32
    conc_gets: int = 2000
    conc_budget_s: float = 150.0
    conc_quiet_s: float = 6.0
    """Wait after starting the runs before reading RSS: runyard checkpoints each run 5 s in."""
    persist_runs: int = 10_000
    emit_events: int = 20_000
    emit_subs: int = 100
    first_runs: int = 300
    """Sequential start-then-follow rounds for the first-event latency."""
    stalled_events: int = 300_000
    stalled_readers: int = 300
    """Stalled SSE readers of one stored run of ``stalled_events`` events."""
    cross_ticks: int = 400
    """Scale-out: events of the paced run whose delivery latency is measured ..."""
    cross_tick_s: float = 0.025
    """... emitted this far apart."""
    cross_stops: int = 40
    """Scale-out: runs stopped one after another, per side and repetition."""
    cross_clients: int = 10
    """Scale-out: SSE clients following one fast run."""
    cross_burst: int = 100_000
    """Scale-out: events of that fast run (``chatty``) ..."""
    cross_batch: int = 10
    """... which yields to the event loop every this many events."""
    server_reps_cap: dict[str, int] = field(
        default_factory=lambda: {"concurrency": 1, "stalled": 1}
    )
    """Benchmarks that run fewer repetitions than ``--reps`` (too heavy to repeat)."""


FULL = Sizes()
QUICK = replace(
    FULL,
    start_seq_runs=300,
    start_conc_runs=600,
    live_events=5000,
    replay_events=10_000,
    resume_chains=5,
    resume_cuts=20,
    resume_events=400,
    fanout_subs=100,
    fanout_events=200,
    conc_runs=2000,
    conc_gets=300,
    conc_budget_s=30.0,
    persist_runs=2000,
    emit_events=5000,
    first_runs=100,
    stalled_events=30_000,
    stalled_readers=100,
    cross_ticks=80,
    cross_stops=8,
    cross_clients=4,
    cross_burst=30_000,
)
TINY = replace(
    QUICK,
    start_seq_runs=20,
    start_conc_runs=40,
    start_clients=4,
    live_events=300,
    replay_events=1000,
    replay_reads=1,
    resume_chains=3,
    resume_cuts=8,
    resume_events=120,
    resume_interval_s=0.002,
    fanout_subs=20,
    fanout_events=50,
    conc_runs=200,
    conc_clients=8,
    conc_gets=50,
    conc_budget_s=20.0,
    conc_quiet_s=0.5,
    persist_runs=200,
    emit_events=500,
    emit_subs=20,
    first_runs=10,
    stalled_events=2000,
    stalled_readers=10,
    cross_ticks=40,
    cross_tick_s=0.02,
    cross_stops=4,
    cross_clients=3,
    cross_burst=5000,
)


# --------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str = ""
    better: str = "higher"  # "higher", "lower" or "zero" (a count that must be 0)
    agg: str = "median"  # "median" over repetitions, or "sum"/"max" for counts
    fmt: str = "{:,.0f}"


class BenchFailure(AssertionError):
    """A benchmark's own correctness claim did not hold."""


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return float("nan")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------
# Servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def raise_fd_limit(wanted: int = 20_000) -> int:
    """Raise this process's soft fd limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Server:
    """One server subprocess: ``python -m uvicorn --factory <app>``."""

    def __init__(self, kind: str, env: dict[str, str] | None = None) -> None:
        if kind not in FACTORIES:
            raise ValueError(f"unknown server kind {kind!r}")
        self.kind = kind
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
            "RUNYARD_TOKENS": TOKENS_ENV,
            "RUNYARD_DATA_DIR": str(self.tmp / "data"),
            "RUNYARD_MAX_LIVE_RUNS_PER_USER": "10000000",
            "RUNYARD_SHUTDOWN_GRACE_S": "0",
            "RUNYARD_STOP_GRACE_S": "1",
            **(env or {}),
        }
        self.env.pop("RUNYARD_COUCHDB_URL", None)
        self.env.pop("RUNYARD_TOKENS_FILE", None)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def connection(self) -> Connection:
        return Connection(HOST, self.port, AUTH)

    async def stream(self, run_id: str) -> SSEStream:
        """Open ``/runs/{run_id}/stream`` from the start as the bench user (ids mode)."""
        return await open_stream(HOST, self.port, f"/runs/{run_id}/stream", headers=AUTH)

    async def follow(self, run_id: str, timeout: float) -> StreamResult:
        """Read the run's stream to its end (``done`` or a hang-up) within ``timeout`` s.

        Raises ``TimeoutError`` when the stream is still open after ``timeout``.
        """
        stream = await self.stream(run_id)
        return await asyncio.wait_for(stream.finished, timeout)

    def _profile_prefix(self) -> list[str]:
        """``BENCH_PYSPY=DIR``: run the runyard server under ``py-spy record`` (raw stacks).

        A profiling aid, not part of the measurement (py-spy costs CPU, and
        the RSS numbers then belong to py-spy's child); needs py-spy in the venv.
        """
        out = os.environ.get("BENCH_PYSPY")
        if not out or self.kind not in os.environ.get("BENCH_PYSPY_KINDS", "runyard").split(","):
            return []
        Path(out).mkdir(parents=True, exist_ok=True)
        name = f"{self.kind}-{os.environ.get('BENCH_PYSPY_TAG', 'run')}-{int(time.time() * 1000)}"
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        return [spy, "record", "--format", "raw", "--rate", "250", "-o", f"{out}/{name}.txt", "--"]

    async def start(self, timeout: float = 30.0) -> Server:
        for _attempt in range(3):
            self.port = free_port()
            log = (self.tmp / "server.log").open("ab")
            factory = os.environ.get(f"BENCH_{self.kind.upper()}_FACTORY", FACTORIES[self.kind])
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - spawning is instant
                [
                    *self._profile_prefix(),
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    factory,
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                    *UVICORN_OPTS,
                ],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            if await self._wait_ready(timeout):
                return self
            self.kill()
        raise RuntimeError(f"{self.kind} server did not start:\n{self.log_tail()}")

    async def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError, RuntimeError):
                async with Connection(HOST, self.port) as conn:
                    if (await conn.request("GET", "/healthz")).status == 200:
                        return True
            await asyncio.sleep(0.05)
        return False

    def log_tail(self, lines: int = 30) -> str:
        path = self.tmp / "server.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(10)

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s`` (a server with 100k live runs takes long)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            # py-spy writes its profile on SIGINT; uvicorn treats it like SIGTERM.
            proc.send_signal(signal.SIGINT if os.environ.get("BENCH_PYSPY") else signal.SIGTERM)
            try:
                proc.wait(grace_s * 5 if os.environ.get("BENCH_PYSPY") else grace_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.asynccontextmanager
async def serving(
    kind: str, env: dict[str, str] | None = None, *, kill: bool = False
) -> AsyncIterator[Server]:
    """A fresh server for the block; stopped (or with ``kill``, killed at once) after it."""
    server = Server(kind, env)
    try:
        await server.start()
        yield server
    finally:
        if kill and not os.environ.get("BENCH_PYSPY"):
            server.kill()
        else:
            server.stop()
        server.cleanup()


# --------------------------------------------------------------------------
# Client helpers used by several benchmarks


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal counts (the first takes the remainder)."""
    per = [total // parts] * parts
    per[0] += total - sum(per)
    return per


async def start_run(conn: Connection, agent: str, input_dict: dict[str, Any]) -> str:
    resp = await conn.request("POST", "/runs", json_body={"agent": agent, "input_dict": input_dict})
    if resp.status != 202:
        raise BenchFailure(f"POST /runs answered {resp.status}: {resp.body[:300]!r}")
    run_id: str = resp.json()["run_id"]
    return run_id


async def wait_finished(conn: Connection, run_id: str, timeout: float = 120.0) -> None:
    """Poll the run list (cheap) until the run is no longer running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await conn.request("GET", f"/runs/{run_id}")
        if resp.status == 200 and b'"status":"running"' not in resp.body[:400]:
            return
        await asyncio.sleep(0.05)
    raise BenchFailure(f"run {run_id} still running after {timeout} s")


async def settle(server: Server, timeout: float = 60.0) -> None:
    """Wait until runyard's persistence backlog is empty (the baseline has none)."""
    if server.kind != "runyard":
        return
    deadline = time.monotonic() + timeout
    async with server.connection() as conn:
        while time.monotonic() < deadline:
            resp = await conn.request("GET", "/readyz")
            if resp.status == 200:
                store = resp.json()["detail"].get("store") or {}
                if store.get("backlog", 0) == 0:
                    return
            await asyncio.sleep(0.1)


# --------------------------------------------------------------------------
# The driver


Measure = Callable[[str, Sizes], Awaitable[dict[str, float]]]
Around = Callable[[Sizes], AbstractAsyncContextManager[object]]


@dataclass
class Benchmark:
    name: str
    title: str
    metrics: list[Metric]
    measure: Measure
    """One repetition for one side (one of :data:`KINDS`)."""
    goals: list[str] = field(default_factory=list)
    """``key OP target``: absolute (``get_p99<10``), a ratio to a kind's value
    (``seq_rate>=0.9x@durable``; the kind defaults to ``baseline``) or a margin
    over it (``first_p50<=+10@baseline``: at most 10 units more)."""
    kinds: tuple[str, ...] = PAIR
    """The servers it measures, in the order of the first repetition."""
    around: Around | None = None
    """Set-up entered once around every repetition of every side, for servers
    that take seconds to start and serve both sides (the scale-out benchmark's
    CouchDB and three nodes); ``measure`` is bound to what it started."""


@dataclass
class Outcome:
    bench: Benchmark
    values: dict[str, dict[str, list[float]]]  # kind -> metric key -> one value per rep
    notes: list[str] = field(default_factory=list)

    def value(self, kind: str, key: str) -> float | None:
        vals = self.values.get(kind, {}).get(key)
        if not vals:
            return None
        metric = next((m for m in self.bench.metrics if m.key == key), None)
        if metric is None:
            return median(vals)
        if metric.agg == "sum":
            return float(sum(vals))
        if metric.agg == "max":
            return float(max(vals))
        return median(vals)


async def run_benchmark(bench: Benchmark, sizes: Sizes, reps: int) -> Outcome:
    reps = max(1, min(reps, sizes.server_reps_cap.get(bench.name, reps)))
    outcome = Outcome(bench, {kind: {} for kind in bench.kinds})
    async with bench.around(sizes) if bench.around else contextlib.nullcontext():
        for rep in range(reps):
            order = bench.kinds if rep % 2 == 0 else tuple(reversed(bench.kinds))
            for kind in order:
                values = await bench.measure(kind, sizes)
                for key, value in values.items():
                    if key.startswith("note:"):
                        note = f"{kind}: {value}"
                        if note not in outcome.notes:
                            outcome.notes.append(note)
                        continue
                    outcome.values[kind].setdefault(key, []).append(value)
    return outcome
