"""The submit-time check of long code, in a child process: never on the server's loop.

``compile()`` is C code that holds the GIL from start to end: about 0.3 s
for 250 KB of code ending in a syntax error (the parser then parses it a
second time to name the error).  On the event loop that stalls every run
and request; in a thread it stalls them just the same, for want of the GIL.
So code longer than :data:`~runyard.actors.code.validate.INLINE_CHARS` is checked by
``python -I -c CHECKER`` (:func:`runyard.actors.code.validate.problem_of`, nothing
executed), the source on its stdin, the verdict as JSON on its stdout, under
a memory and CPU limit of its own and at a lower priority (``nice`` 10), so
that on a busy machine the server's loop gets the CPU first.  At most :data:`CONCURRENT` such checks
run at once per loop; more wait their turn (awaiting, not blocking).

The verdict is remembered (:func:`runyard.actors.code.validate.remember`), so the
registry's own check of the same start is a look-up.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from weakref import WeakKeyDictionary

from runyard.actors.code.validate import (
    INLINE_CHARS,
    InvalidCode,
    Problem,
    check_code,
    known_verdict,
    remember,
)

__all__ = ["CONCURRENT", "TIMEOUT_S", "check_code_off_loop"]

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
CONCURRENT = 2
TIMEOUT_S = 20.0
MEMORY_BYTES = 1024 * 1024 * 1024
CPU_S = 15

CHECKER = f"""
import json, os, resource, sys
os.nice(10)
resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_BYTES}, {MEMORY_BYTES}))
resource.setrlimit(resource.RLIMIT_CPU, ({CPU_S}, {CPU_S}))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
sys.path.insert(0, sys.argv[1])
from runyard.actors.code.validate import problem_of
code = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
sys.stdout.write(json.dumps(problem_of(code)))
"""

_gates: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()


async def check_code_off_loop(code: str, *, python: str = sys.executable) -> None:
    """Raise :class:`~runyard.actors.code.validate.InvalidCode` (422) unless ``code`` is a
    run-code agent; long code is compiled in a child process, short code here.

    ``python``: the interpreter of the child (the server's own by default).
    """
    if len(code) <= INLINE_CHARS:
        check_code(code)
        return
    known, problem = known_verdict(code)
    if not known:
        loop = asyncio.get_running_loop()
        gate = _gates.get(loop)
        if gate is None:
            gate = _gates[loop] = asyncio.Semaphore(CONCURRENT)
        async with gate:
            problem = await _in_child(code, python)
        remember(code, problem)
    if problem is not None:
        raise InvalidCode(*problem)


async def _in_child(code: str, python: str) -> Problem | None:
    proc = await asyncio.create_subprocess_exec(
        python,
        "-I",
        "-X",
        "utf8",
        "-c",
        CHECKER,
        PACKAGE_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(TIMEOUT_S):
            out, _ = await proc.communicate(code.encode("utf-8", "surrogatepass"))
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return (f"the compiler did not finish within {TIMEOUT_S:g} s", None, None)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    status = proc.returncode or 0
    if status != 0:
        how = f"signal {-status}" if status < 0 else f"status {status}"
        return (f"the compiler gave up on this code (it exited with {how})", None, None)
    verdict = json.loads(out)
    if verdict is None:
        return None
    reason, line, column = verdict
    return (str(reason), line, column)
