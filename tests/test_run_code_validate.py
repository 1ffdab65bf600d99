"""run-code before anything runs: the submit-time check and the frames to and from a child.

``check_code`` compiles and inspects the code (nothing is executed); the
registry applies it to internal callers too.  The frame protocol between
the runtime and a child is tested on a plain ``StreamReader``.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from runyard.actors.code import protocol
from runyard.actors.code.validate import InvalidCode, check_code
from runyard.actors.errors import InvalidRequest
from runyard.actors.messages import StartRun
from tests.run_code_helpers import code_runtime
from tests.runtime_helpers import ALICE

# --------------------------------------------------------------------------
# Submit-time checks (compile + ast, nothing executed)


@pytest.mark.timeout(10)
def test_syntax_error_names_the_line() -> None:
    code = "import asyncio\n\nasync def run(input_dict, ctx)\n    return 1\n"
    with pytest.raises(InvalidCode) as err:
        check_code(code)
    assert err.value.line == 3
    assert err.value.http_status == 422
    assert err.value.code == "invalid_code"
    assert "line 3" in err.value.message
    assert err.value.reason


@pytest.mark.timeout(10)
def test_compiler_errors_are_caught_too() -> None:
    with pytest.raises(InvalidCode) as err:
        check_code("async def run(input_dict, ctx):\n    pass\n\nawait run(1, 2)\n")
    assert err.value.line == 4
    assert "await" in err.value.reason


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("code", "line", "words"),
    [
        ("x = 1\n", None, "no top-level"),
        ("def helper():\n    pass\n\ndef run(input_dict, ctx):\n    return 1\n", 4, "async"),
        ("async def run(input_dict):\n    return 1\n", 1, "two arguments"),
        ("async def run(a, b, c):\n    return 1\n", 1, "requires 3"),
        ("async def run(a, b, *, c):\n    return 1\n", 1, "keyword-only"),
        ("async def run(a, b):\n    pass\nrun = 5\n", 3, "async def"),
        ("if True:\n    async def run(a, b):\n        pass\n", None, "no top-level"),
        ("x = 'a\x00b'\x00\n", None, "null"),
    ],
)
def test_code_without_a_usable_async_run_is_refused(
    code: str, line: int | None, words: str
) -> None:
    with pytest.raises(InvalidCode) as err:
        check_code(code)
    assert err.value.line == line, err.value.message
    assert words in err.value.message


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "code",
    [
        "async def run(input_dict, ctx):\n    return 1\n",
        "async def run(*args):\n    return 1\n",
        "async def run(i, c, extra=1, *, flag=False, **kw):\n    return 1\n",
        "def run(a, b):\n    pass\n\nasync def run(a, b):\n    return 2\n",
    ],
)
def test_valid_agents_pass(code: str) -> None:
    check_code(code)


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_registry_refuses_bad_code_and_env_for_internal_callers() -> None:
    async with code_runtime() as runtime:
        with pytest.raises(InvalidCode):
            await runtime.ask(StartRun(ALICE, "run-code", code="def run(a, b): pass"))
        with pytest.raises(InvalidRequest, match="env"):
            await runtime.ask(
                StartRun(
                    ALICE,
                    "run-code",
                    code="async def run(a, b): pass",
                    env={"BAD-NAME": "x"},
                )
            )


# --------------------------------------------------------------------------
# Framing


@pytest.mark.timeout(10)
def test_oversized_event_is_truncated_with_a_marker_not_dropped() -> None:
    message = protocol.event_message("big", {"blob": "x" * 1000}, max_bytes=100)
    data = message["data"]
    assert message["type"] == "big"
    assert data["truncated"] is True
    assert data["original_bytes"] == len(json.dumps({"blob": "x" * 1000}, separators=(",", ":")))
    assert data["preview"].startswith('{"blob":"xxx')
    small = protocol.event_message("small", {"n": 1}, max_bytes=100)
    assert small["data"] == {"n": 1}


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_frames_round_trip_and_refuse_garbage() -> None:
    reader = asyncio.StreamReader()
    frame = protocol.encode({"t": "event", "type": "x", "data": {"s": "h\u00e9 \u2603"}})
    reader.feed_data(frame + protocol.HEADER.pack(10**9))
    reader.feed_eof()
    assert await protocol.read_message(reader, 1000) == {
        "t": "event",
        "type": "x",
        "data": {"s": "h\u00e9 \u2603"},
    }
    with pytest.raises(protocol.ProtocolError, match="larger than the limit"):
        await protocol.read_message(reader, 1000)
