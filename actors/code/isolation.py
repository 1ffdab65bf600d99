"""Namespaces for the run-code child: a stop reaches every process the code started.

Without this, code that calls ``os.setsid()`` and double-forks leaves a
process outside the child's process group: the stop's ``killpg`` misses it,
and it outlives its run.  :func:`contain` is the first thing a child does
(before it reads its job, so a pre-started child has done it while idle).
It splits the child into three processes (``ctypes`` and the standard
library only)::

    keeper        the process the server started and signals; never runs code
      init        PID 1 of a new PID namespace; reaps, never runs code
        runner    reads the job and runs the code (the only one that returns)

- **PID namespace** (``unshare(CLONE_NEWPID)``; as root directly, otherwise
  inside a new user namespace when the kernel allows unprivileged ones).
  When ``init`` dies the kernel kills every process left in the namespace,
  whatever session or process group it put itself in.  ``init`` dies with
  the keeper (``PR_SET_PDEATHSIG``, set by our code in a process the
  submitted code cannot reach: a namespace's PID 1 ignores signals from
  inside it that it has no handler for), and the keeper kills ``init`` on
  SIGTERM: the server's stop is SIGTERM to the keeper, then SIGKILL to its
  process group.
- **Mount namespace** with a fresh ``/proc`` for the PID namespace: the
  code sees only its own processes there (not the server's ``environ`` or
  ``fd``), on top of what Landlock hides (:mod:`runyard.actors.code.sandbox`).
  Mount events stay private (``MS_REC | MS_PRIVATE`` first), so nothing
  reaches the host's mount table.
- **No capabilities** in the runner: a server run as root would otherwise
  hand submitted code ``CAP_SYS_BOOT``, ``CAP_NET_ADMIN`` on the host's
  network, ``CAP_SYS_MODULE``...  (Landlock does not cover those), and in a
  user namespace the runner could unmount the fresh ``/proc``.  The
  bounding set is emptied too, so a program it starts as root gains none.
- **Network namespace** only when ``network`` is False: the code then has
  a loopback device that is down and no route anywhere, and
  ``/proc/net`` shows no socket of the server or its clients.

Where no namespace can be made (no user namespaces for an unprivileged
server, a seccomp policy, ``mode="off"``), the keeper makes itself a child
subreaper (``PR_SET_CHILD_SUBREAPER``) and runs the code in ``runner``
directly: processes orphaned by the code reparent to the keeper, which
kills them when the runner ends or on SIGTERM.  Only a server SIGKILL that
lands before the keeper can act lets a ``setsid`` process escape then.

The keeper exits the way the runner did (same code, or the same signal), so
the server's explanations of a child's death stay true.  :func:`contain`
returns the status the ``sandbox`` frame reports: which namespaces were
made (``"pid mount"``, ``"user pid mount net"``), or ``"unavailable: why"``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import signal
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
STATUS = struct.Struct("=i")


@dataclass(frozen=True, slots=True)
class Contained:
    """What :func:`contain` applied, as the runner reports it (``sandbox`` frame)."""

    namespaces: str
    """``"pid mount"`` etc. (``user`` first when a user namespace was needed), or
    ``"unavailable: why"`` (then the keeper is a subreaper instead)."""
    network: str
    """``"on"``, ``"off"`` (own network namespace), or ``"on (could not turn off: why)"``."""
    capabilities: str = "none"
    """``"none"`` once every capability is dropped, else ``"kept: why"``."""

    @property
    def pid_namespace(self) -> bool:
        return not self.namespaces.startswith("unavailable")


def argv_options(network: bool, mode: str) -> str:
    """The one command-line word that carries :func:`contain`'s options (``pid:net-off``)."""
    return f"{mode}:{'net-on' if network else 'net-off'}"


def parse_options(word: str | None) -> tuple[str, bool]:
    """``(mode, network)`` from :func:`argv_options`' word; absent: ``auto``, network on."""
    if not word or ":" not in word:
        return "auto", True
    mode, net = word.split(":", 1)
    return (mode if mode in ("auto", "require", "off") else "auto"), net != "net-off"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _fail(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)} ({errno.errorcode.get(code, code)})")


def _unshare(libc: ctypes.CDLL, flags: int) -> None:
    if libc.unshare(ctypes.c_int(flags)) != 0:
        raise _fail("unshare")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _make_namespaces(libc: ctypes.CDLL, network: bool) -> tuple[list[str], str | None]:
    """Enter new mount (+ net) namespaces, and a PID namespace for the next child.

    Tries without a user namespace first (root, or CAP_SYS_ADMIN), then
    inside one.  Returns the names made and why /proc cannot be remounted
    (None when it can); raises OSError when no namespace could be made.
    """
    if sys.platform != "linux":
        raise OSError(errno.ENOSYS, f"not Linux ({sys.platform})")
    flags = CLONE_NEWPID | CLONE_NEWNS | (0 if network else CLONE_NEWNET)
    names = ["pid", "mount", *([] if network else ["net"])]
    try:
        _unshare(libc, flags)
    except OSError as plain:
        if plain.errno not in (errno.EPERM, errno.EACCES, errno.EINVAL):
            raise
        uid, gid = os.geteuid(), os.getegid()
        try:
            _unshare(libc, CLONE_NEWUSER | flags)
        except OSError as exc:
            msg = f"{plain.strerror}; in a new user namespace: {exc.strerror}"
            raise OSError(exc.errno, msg) from None
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
        _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
        names.insert(0, "user")
    # Mounts made from here on must not propagate back to the host's namespace.
    if libc.mount(b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None) != 0:
        return names, str(_fail("mount --make-rprivate /"))
    return names, None


def _mount_proc(libc: ctypes.CDLL) -> str | None:
    """A /proc of this PID namespace over the old one; None, or why not."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if libc.mount(b"proc", b"/proc", b"proc", ctypes.c_ulong(flags), None) != 0:
        return str(_fail("mount proc"))
    return None


HELPER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities(libc: ctypes.CDLL) -> str:
    """Empty this process's bounding, ambient, effective, permitted, inheritable sets.

    Returns ``"none"``, or ``"kept: why"`` when the kernel refused.
    """
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EPERM without CAP_SETPCAP: none to drop
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        return f"kept: {_fail('capset')}"
    return "none"


def _reset_signals() -> dict[int, object]:
    """Default dispositions in init (a PID 1 then ignores them from inside); returns the old."""
    old: dict[int, object] = {}
    for sig in HELPER_SIGNALS:
        old[sig] = signal.signal(sig, signal.SIG_DFL)
    return old


def _restore_signals(old: dict[int, object]) -> None:
    """The runner gets Python's own dispositions back (KeyboardInterrupt, ignored SIGPIPE)."""
    for sig, handler in old.items():
        with contextlib.suppress(TypeError, ValueError):
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _exit_like(status: int) -> NoReturn:
    """Exit with the same code, or die of the same signal, as ``status`` (a wait status)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(Exception):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
            os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _children() -> list[int]:
    """This process's live children (``/proc/self/task/*/children``, else a /proc scan)."""
    found: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                found += [int(p) for p in f.read().split()]
        return found
    except OSError:
        pass
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{entry}/stat") as f:
            if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry))
    return found


def _kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _reap_everything() -> None:
    """Kill and reap every child until none is left (orphans keep arriving as a subreaper)."""
    while True:
        _kill_all(_children())
        try:
            os.wait()
        except ChildProcessError:
            return


def _keeper_with_namespace(init: int, status_r: int) -> NoReturn:
    """Wait for ``init``; kill it on SIGTERM; then exit like the runner did."""
    signal.signal(signal.SIGTERM, lambda *_: _kill_all([init]))
    _, init_status = os.waitpid(init, 0)
    got = b""
    with contextlib.suppress(OSError):
        got = os.read(status_r, STATUS.size)
    _exit_like(STATUS.unpack(got)[0] if len(got) == STATUS.size else init_status)


def _init(libc: ctypes.CDLL, status_w: int, keep: list[int]) -> None:
    """PID 1 of the namespace: fork the runner (returns in it), reap, report its status."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace of init by the code's processes
    old = _reset_signals()
    runner = os.fork()
    if runner == 0:
        _restore_signals(old)
        return
    for fd in keep:
        os.close(fd)
    status = _wait_status(runner)
    with contextlib.suppress(OSError):
        os.write(status_w, STATUS.pack(status))
    os._exit(0)  # the kernel kills what is left in the namespace


def contain(mode: str, network: bool, close_in_helpers: Iterable[int] = ()) -> Contained:
    """Split into keeper / init / runner as the module says; returns in the runner only.

    ``mode``: ``"auto"`` (namespaces when possible, the subreaper otherwise),
    ``"require"`` (the same; the caller refuses the job when the status says
    unavailable), ``"off"`` (the subreaper only).  ``close_in_helpers``: fds
    (the job socket) the keeper and init close, so only the runner holds them.
    Must run while the process has one thread.
    """
    libc = _libc()
    keep = list(close_in_helpers)
    names: list[str] = []
    why = "turned off (CodeSettings.namespaces)"
    proc_problem: str | None = None
    if mode != "off":
        try:
            names, proc_problem = _make_namespaces(libc, network)
        except OSError as exc:
            why = exc.strerror or str(exc)
    if not names:
        net = "on" if network else f"on (could not turn off: {why})"
        contained = _subreaper_split(libc, keep, why, net)
        return Contained(contained.namespaces, net, drop_capabilities(libc))
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    init = os.fork()
    if init != 0:
        os.close(status_w)
        for fd in keep:
            os.close(fd)
        _keeper_with_namespace(init, status_r)
    if proc_problem is None:
        proc_problem = _mount_proc(libc)
    _init(libc, status_w, keep)
    os.close(status_r)
    os.close(status_w)
    shown = " ".join(names) + (f" (/proc not remounted: {proc_problem})" if proc_problem else "")
    return Contained(shown, "on" if network else "off", drop_capabilities(libc))


def _subreaper_split(libc: ctypes.CDLL, keep: list[int], why: str, net: str) -> Contained:
    """No namespace: the keeper adopts the code's orphans and kills them when the runner ends."""
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    runner = os.fork()
    if runner == 0:
        return Contained(f"unavailable: {why}", net)
    for fd in keep:
        os.close(fd)
    signal.signal(signal.SIGTERM, lambda *_: _kill_all([runner, *_children()]))
    status = _wait_status(runner)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _reap_everything()
    _exit_like(status)


def _wait_status(runner: int) -> int:
    """Reap children until ``runner`` ends; its wait status (0 if it was already gone)."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        if pid == runner:
            return status
