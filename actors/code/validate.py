"""Submit-time checks for run-code: ``compile()`` and ``ast`` only.

The server never executes submitted code (docs/design.md, "Lessons we apply":
user code in the API process could read every user's runs and the server's
secrets).  What can be known without running it is checked here, so a typo is
a 422 naming the line instead of a run that starts and fails:

- the code compiles (syntax errors, and compiler errors such as ``await``
  outside an async function), with the line and the compiler's message;
- it defines a top-level ``run``, as ``async def``;
- ``run`` can be called as ``run(input_dict, ctx)``.

Only the *last* top-level binding of ``run`` counts (that is the one the
child will find), and only top-level statements are looked at: a ``run``
defined inside an ``if`` or produced by an assignment is refused, because
whether it is an ``async def`` cannot be told without executing the code.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping

from runyard.actors.errors import InvalidRequest, RunyardError

FILENAME = "<agent>"
"""The file name the submitted code compiles under, here and in the child's tracebacks."""

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_ENV_VARS = 64
MAX_ENV_BYTES = 32 * 1024


class InvalidCode(RunyardError):
    """The submitted code cannot be a run-code agent; ``line``/``reason`` say why."""

    code = "invalid_code"
    http_status = 422

    def __init__(self, reason: str, line: int | None = None, column: int | None = None) -> None:
        where = f" at line {line}" if line is not None else ""
        super().__init__(f"invalid code{where}: {reason}")
        self.reason = reason
        self.line = line
        self.column = column


Problem = tuple[str, int | None, int | None]
"""``(reason, line, column)``: why the code cannot be an agent."""

INLINE_CHARS = 4096
"""Code up to this long is compiled where it is checked (well under a millisecond);
longer code is compiled in a child process (:mod:`runyard.actors.code.check_process`):
``compile()`` holds the GIL throughout, ~0.3 s for 250 KB, so neither the event
loop nor a thread of the server may do it."""

_VERDICTS: OrderedDict[bytes, Problem | None] = OrderedDict()
_VERDICTS_KEPT = 256


def check_code(code: str) -> None:
    """Raise :class:`InvalidCode` unless ``code`` defines ``async def run(input_dict, ctx)``.

    Compiles ``code`` here, whatever its size: on a server's loop, use
    :func:`runyard.actors.code.check_process.check_code_off_loop` instead.
    """
    known, problem = known_verdict(code)
    if not known:
        problem = problem_of(code)
        remember(code, problem)
    if problem is not None:
        raise InvalidCode(*problem)


def check_code_if_cheap(code: str) -> None:
    """:func:`check_code` when that is cheap: a verdict is remembered, or the code is short.

    The registry calls this on the loop for every run-code start; a long
    source nobody checked off the loop (an internal caller's) is let through,
    and the child's own ``compile()`` then ends its run with the error.
    """
    known, problem = known_verdict(code)
    if not known:
        if len(code) > INLINE_CHARS:
            return
        problem = problem_of(code)
        remember(code, problem)
    if problem is not None:
        raise InvalidCode(*problem)


def _key(code: str) -> bytes:
    return hashlib.blake2b(code.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def known_verdict(code: str) -> tuple[bool, Problem | None]:
    """``(known, problem)``: whether a verdict on ``code`` is remembered, and which."""
    key = _key(code)
    if key not in _VERDICTS:
        return False, None
    _VERDICTS.move_to_end(key)
    return True, _VERDICTS[key]


def remember(code: str, problem: Problem | None) -> None:
    """Keep the verdict on ``code`` (the last few hundred), so the route's check and
    the registry's check of one request compile it once."""
    _VERDICTS[_key(code)] = problem
    while len(_VERDICTS) > _VERDICTS_KEPT:
        _VERDICTS.popitem(last=False)


def problem_of(code: str) -> Problem | None:
    """Compile and inspect ``code`` (here, holding the GIL): its problem, or None."""
    try:
        tree = ast.parse(code, FILENAME)
        # The parser accepts things the compiler refuses (``return`` at module
        # level, ``await`` outside ``async def``, ``nonlocal`` at top level).
        compile(tree, FILENAME, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return (exc.msg or "invalid syntax", exc.lineno, exc.offset)
    except (ValueError, OverflowError, RecursionError, MemoryError) as exc:
        # e.g. "source code string cannot contain null bytes", absurd nesting.
        return (f"cannot compile: {exc}", None, None)

    run: ast.stmt | None = None
    for stmt in tree.body:
        if _binds_run(stmt):
            run = stmt
    if run is None:
        return ("no top-level `async def run(input_dict, ctx)`", None, None)
    if isinstance(run, ast.FunctionDef):
        return ("`run` must be `async def run(input_dict, ctx)`, not a plain `def`", run.lineno, 1)
    if not isinstance(run, ast.AsyncFunctionDef):
        return (
            "`run` must be defined with `async def run(input_dict, ctx)` at the top level",
            run.lineno,
            1,
        )
    return _check_signature(run)


def _binds_run(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return stmt.name == "run"
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return any((alias.asname or alias.name.split(".")[0]) == "run" for alias in stmt.names)
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
        targets = [stmt.target]
    return any(isinstance(n, ast.Name) and n.id == "run" for t in targets for n in ast.walk(t))


def _check_signature(run: ast.AsyncFunctionDef) -> Problem | None:
    args = run.args
    positional = [*args.posonlyargs, *args.args]
    if len(positional) < 2 and args.vararg is None:
        return (
            f"`run` must accept two arguments (input_dict, ctx); it takes {len(positional)}",
            run.lineno,
            1,
        )
    required = len(positional) - len(args.defaults)
    if required > 2:
        return (
            f"`run` requires {required} positional arguments; it is called with two "
            "(input_dict, ctx)",
            run.lineno,
            1,
        )
    missing = [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    if missing:
        return (
            f"`run` requires keyword-only argument(s) {', '.join(missing)}; it is called "
            "as run(input_dict, ctx)",
            run.lineno,
            1,
        )
    return None


def env_problem(env: Mapping[str, str]) -> str | None:
    """Why ``env`` cannot be a child's environment, or None when it can."""
    if len(env) > MAX_ENV_VARS:
        return f"at most {MAX_ENV_VARS} variables, got {len(env)}"
    size = 0
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_KEY.fullmatch(key):
            return f"variable name {key!r} must match {ENV_KEY.pattern}"
        if not isinstance(value, str):
            return f"variable {key} must be a string"
        if "\x00" in value:
            return f"variable {key} contains a NUL character"
        size += len(key.encode()) + len(value.encode("utf-8", "surrogateescape")) + 2
    if size > MAX_ENV_BYTES:
        return f"the variables total {size} bytes, more than the limit of {MAX_ENV_BYTES}"
    return None


def check_env(env: Mapping[str, str] | None) -> None:
    """Raise :class:`~runyard.actors.errors.InvalidRequest` if ``env`` is not usable."""
    if env:
        problem = env_problem(env)
        if problem is not None:
            raise InvalidRequest(f"env: {problem}")
