"""``CodeSettings``: the limits and knobs of run-code children, one set per runtime.

A module of its own because both the agent (:mod:`runyard.actors.code.agent`) and the
pool of pre-started children (:mod:`runyard.actors.code.pool`) read it; neither has
to import the other for it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from runyard.actors.code import protocol

__all__ = ["CodeSettings"]


@dataclass(frozen=True, slots=True)
class CodeSettings:
    """Limits and knobs for run-code children (one set per runtime)."""

    memory_mib: int = 1024
    """Address-space limit (RLIMIT_AS) of a child; allocations past it fail."""
    cpu_s: int | None = None
    """CPU-seconds limit (RLIMIT_CPU).  None: ``max_duration_s`` + ``cpu_margin_s``
    for runs with a wall-time limit, ``default_cpu_s`` for runs without one."""
    cpu_margin_s: int = 5
    default_cpu_s: int = 3600
    file_size_mib: int = 256
    """Largest file a child may write (RLIMIT_FSIZE)."""
    open_files: int = 256
    """File descriptors a child may hold (RLIMIT_NOFILE)."""
    max_event_bytes: int = protocol.DEFAULT_MAX_EVENT_BYTES
    """An event whose data encodes to more is truncated with a marker."""
    max_result_bytes: int = protocol.DEFAULT_MAX_RESULT_BYTES
    python: str = sys.executable
    """The interpreter children run on (the server's own by default)."""
    exit_grace_s: float = 2.0
    """How long a child that reported its outcome may take to exit before it is killed."""
    landlock: Literal["auto", "require", "off"] = "auto"
    """Landlock in the child (:mod:`runyard.actors.code.sandbox`): ``"auto"`` applies it when the
    kernel can and runs without it otherwise (the run gets a ``sandbox`` event saying
    why); ``"require"`` ends such runs as ``error`` instead; ``"off"`` never applies it."""
    private_paths: tuple[str, ...] = ()
    """Paths the sandbox must keep out of reach on top of the server's source root
    (e.g. the data directory): a read-only grant that would contain one is dropped."""
    announce_sandbox: bool = False
    """Give every run a ``sandbox`` event, not only the runs without Landlock."""
    pool_size: int = 2
    """Idle, pre-started single-use children kept ready (:mod:`runyard.actors.code.pool`);
    0 spawns a fresh child for each run instead."""
