"""``runyard runs ls|start|get|watch|stop|rm``: a runyard server from the shell.

Every verb goes through :mod:`runyard.web.client` (the one code path to a server),
so the CLI finds the server and token the same way (``--url``/``--token``,
else ``RUNYARD_URL``/``RUNYARD_TOKEN``) and reconnects the same way.

Exit status: 0 done; 1 the server refused (its message is printed) or could
not be reached, and ``watch`` of a run that did not end ``success``; 2 bad
input (a flag, ``--input`` that is not a JSON object, a file that cannot be
read, no token).  Never a traceback: every expected failure is one line on
stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from runyard.web.cli_output import done_line, run_detail, runs_table, watch_line
from runyard.web.client import (
    ApiError,
    Client,
    ClientConfigError,
    ClientError,
    ConnectionFailed,
    EventModel,
    RunStartedResponse,
)

STATUSES = ("running", "success", "error", "stopped")


class UsageError(ValueError):
    """Input the command cannot use; the message says which flag and why (exit 2)."""


def add_runs_parser(commands: Any) -> None:
    """``runyard runs VERB ...`` on ``commands`` (the top-level subparsers)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="the server (default: RUNYARD_URL, else http://127.0.0.1:8000)"
    )
    common.add_argument("--token", help="bearer token (default: RUNYARD_TOKEN)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    runs = commands.add_parser(
        "runs",
        help="start, list, follow, stop and delete runs on a server",
        description="Talk to a runyard server (RUNYARD_URL, RUNYARD_TOKEN).",
    )
    verbs = runs.add_subparsers(dest="verb", metavar="VERB", required=True)

    ls = verbs.add_parser("ls", parents=[common], help="list your runs, newest first")
    ls.add_argument("--status", choices=STATUSES, help="only runs with this status")
    ls.add_argument("--agent", help="only runs of this agent")
    ls.add_argument("--limit", type=int, default=50, help="at most N runs (0: all; default 50)")

    start = verbs.add_parser("start", parents=[common], help="start a run, print its id")
    start.add_argument("agent", metavar="AGENT", help="a catalog agent (or the name for --code)")
    start.add_argument("--input", metavar="JSON", help="the input object, e.g. '{\"n\": 3}'")
    start.add_argument(
        "--code", metavar="FILE", help="run this file's `async def run(input_dict, ctx)` as AGENT"
    )
    start.add_argument("--max-duration", type=float, metavar="S", help="wall-time limit, seconds")
    start.add_argument("--watch", action="store_true", help="then follow it, as `watch` does")

    get = verbs.add_parser("get", parents=[common], help="one run's record and its last events")
    get.add_argument("run_id", metavar="ID")
    get.add_argument("--events", type=int, default=20, metavar="N", help="show the last N events")
    get.add_argument("--all", action="store_true", help="show every event")

    watch = verbs.add_parser(
        "watch",
        parents=[common],
        help="follow a run live to its end (exit 0 if it succeeded, else 1)",
    )
    watch.add_argument("run_id", metavar="ID")
    watch.add_argument("--after", type=int, metavar="SEQ", help="start after this event")

    stop = verbs.add_parser("stop", parents=[common], help="ask a run to stop")
    stop.add_argument("run_id", metavar="ID")
    rm = verbs.add_parser("rm", parents=[common], help="delete a finished run")
    rm.add_argument("run_id", metavar="ID")


def run_runs(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run ``runyard runs <verb>``; the exit status (see the module docstring)."""
    try:
        check_input(args)
        with Client(args.url, args.token) as client:
            return VERBS[args.verb](client, args, out)
    except (UsageError, ClientConfigError) as exc:
        return fail(str(exc), 2)
    except ApiError as exc:
        return fail(f"{exc.message} ({exc.status} {exc.code})", 1)
    except ConnectionFailed as exc:
        return fail(str(exc), 1)
    except ClientError as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return fail("interrupted (the run goes on)", 130)
    except BrokenPipeError:
        return 0  # `runyard runs ls | head`


def fail(message: str, status: int) -> int:
    print(f"runyard: {message}", file=sys.stderr, flush=True)
    return status


def check_input(args: argparse.Namespace) -> None:
    """Read and check the flags before anything is sent (UsageError)."""
    if args.verb == "ls" and args.limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    if args.verb == "watch" and args.after is not None and args.after < 0:
        raise UsageError("--after must be a seq >= 0")
    if args.verb != "start":
        return
    args.input_dict = {}
    if args.input is not None:
        try:
            value = json.loads(args.input)
        except json.JSONDecodeError as exc:
            msg = f"--input is not valid JSON ({exc}); give an object, e.g. '{{\"n\": 3}}'"
            raise UsageError(msg) from None
        if not isinstance(value, dict):
            msg = f"--input must be a JSON object, e.g. '{{\"n\": 3}}', not {type(value).__name__}"
            raise UsageError(msg)
        args.input_dict = value
    args.code_text = None
    if args.code is not None:
        try:
            args.code_text = Path(args.code).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise UsageError(f"--code: cannot read {args.code}: {reason}") from None


def emit_json(out: TextIO, value: Any) -> None:
    print(json.dumps(value, separators=(",", ":")), file=out, flush=True)


def do_ls(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    runs = []
    for run in client.list(
        status=args.status, agent=args.agent, page_size=min(args.limit or 200, 200)
    ):
        runs.append(run)
        if args.limit and len(runs) >= args.limit:
            break
    if args.json:
        emit_json(out, [run.model_dump(mode="json") for run in runs])
    elif runs:
        print(runs_table(runs), file=out)
    else:
        print("no runs", file=sys.stderr)
    return 0


def do_start(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    started: RunStartedResponse
    if args.code_text is not None:
        started = client.start_code(
            args.code_text, args.input_dict, agent_name=args.agent, max_duration_s=args.max_duration
        )
    else:
        started = client.start(args.agent, args.input_dict, max_duration_s=args.max_duration)
    if args.json:
        emit_json(out, started.model_dump(mode="json"))
    else:
        print(started.run_id, file=out, flush=True)
    if not args.watch:
        return 0
    return follow(client, started.run_id, None, args.json, out)


def do_get(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    run = client.get(args.run_id)
    if args.json:
        emit_json(out, run.model_dump(mode="json"))
    else:
        print(run_detail(run, None if args.all else max(args.events, 0)), file=out)
    return 0


def do_watch(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return follow(client, args.run_id, args.after, args.json, out)


def follow(client: Client, run_id: str, after: int | None, as_json: bool, out: TextIO) -> int:
    """Print the run's events as they come (reconnecting as needed); 0 if it ends ``success``."""
    last: EventModel | None = None
    for event in client.stream(run_id, after=after):
        last = event
        if as_json:
            emit_json(out, event.model_dump(mode="json"))
        else:
            print(watch_line(event), file=out, flush=True)
    if last is None:  # a stream always ends with done; no event means something is wrong
        return fail(f"the stream of {run_id} ended without its done event", 1)
    if not as_json:
        print(done_line(last), file=out, flush=True)
    return 0 if last.data.get("status") == "success" else 1


def do_stop(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    answer = client.stop(args.run_id)
    if args.json:
        emit_json(out, answer.model_dump(mode="json"))
    else:
        print(f"stopping {answer.run_id}", file=out)
    return 0


def do_rm(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    client.delete(args.run_id)
    if args.json:
        emit_json(out, {"run_id": args.run_id, "deleted": True})
    else:
        print(f"deleted {args.run_id}", file=out)
    return 0


VERBS = {
    "ls": do_ls,
    "start": do_start,
    "get": do_get,
    "watch": do_watch,
    "stop": do_stop,
    "rm": do_rm,
}
