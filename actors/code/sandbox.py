"""Landlock for the run-code child: it locks itself in before the submitted code runs.

The child runs as the server's OS user, so without this the submitted code
could read everything the server can (the data directory with every user's
runs and the session key, the source tree, ``/proc/<server pid>/environ``)
and signal the server.  Landlock (Linux >= 5.13) lets an unprivileged
process give up access for itself and for every process it starts; it is not
based on capabilities, so it binds a child started by root just the same.

:func:`apply` builds one ruleset (standard library and ``ctypes`` only, no
dependency) and restricts the calling thread, which is the child's only
thread at that point, so every thread and process the code starts later
inherits the restriction:

- **Files**: every filesystem right the kernel's ABI knows is handled, and
  only these are granted:

  - read and execute beneath the interpreter (``sys.prefix``,
    ``sys.base_prefix``, the exec prefixes), every existing ``sys.path``
    directory, ``/usr``, ``/lib``, ``/lib64``, ``/bin``, ``/sbin``: the
    submitted code can still import the standard library and installed
    packages, and start programs;
  - read only: what TLS, DNS and time zones need in ``/etc`` (:data:`ETC`),
    ``/sys/devices/system/cpu``, ``/proc/cpuinfo``, ``/proc/meminfo``, and
    the child's own ``/proc/<pid>``;
  - read and write: ``/dev/null``, ``/dev/zero``; read: ``/dev/urandom``,
    ``/dev/random``;
  - everything: the run's own temporary directory (its cwd, ``HOME`` and
    ``TMPDIR``).

  A candidate directory that *contains* one of the ``hide`` paths (the
  server's source root, which usually holds ``runyard-data/``; the paths of
  ``CodeSettings.private_paths``) is left out, so the grants can never
  reach them.  Modules the child imported before the lock stay usable from
  memory (``runyard.actors.context`` for ``StopRequested``).

- **Scopes** (ABI >= 6): no signals to processes outside the sandbox (the
  submitted code cannot kill or stop the server or other runs), no
  connections to abstract UNIX sockets created outside it.

- **Network**: not restricted.  Agents call HTTP APIs; Landlock's TCP rules
  (ABI >= 4) are left alone on purpose.

Landlock cannot be undone by the restricted process (``PR_SET_NO_NEW_PRIVS``
is set first, as the kernel requires).  Where the kernel has no Landlock (or
an ABI this module cannot use, or a seccomp policy that refuses the calls),
:func:`apply` leaves the process as it is and says why: the caller reports
``"unavailable: <reason>"`` instead of ``"abi N"``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Iterable, Sequence

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
"""The same numbers on every architecture with the unified syscall table."""
ARCHITECTURES = frozenset(
    {"x86_64", "amd64", "aarch64", "arm64", "riscv64", "ppc64le", "ppc64", "s390x", "loongarch64"}
)

LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights (include/uapi/linux/landlock.h), with the ABI that introduced them.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
"""The rights that make sense on a file (not a directory); the kernel refuses the others."""

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

READ_EXEC = READ_FILE | READ_DIR | EXECUTE
READ = READ_FILE | READ_DIR
DEVICE_RW = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV

CODE_ROOTS = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin")
ETC = (
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/etc/crypto-policies",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/nsswitch.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/passwd",
    "/etc/group",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/os-release",
)
"""What of ``/etc`` stays readable: TLS roots, name resolution, time zone, the loader.

Not the whole of ``/etc``: a child started by root could read ``/etc/shadow``."""
READ_ONLY = ("/sys/devices/system/cpu", "/proc/cpuinfo", "/proc/meminfo")
DEVICES_RW = ("/dev/null", "/dev/zero")
DEVICES_R = ("/dev/urandom", "/dev/random")


class Unavailable(Exception):
    """Landlock cannot be applied here; the message says why."""


def fs_rights(abi: int) -> int:
    """Every filesystem right ABI ``abi`` knows."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def scopes(abi: int) -> int:
    return SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET if abi >= 6 else 0


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.restype = ctypes.c_int
    return libc


def _failure(what: str) -> Unavailable:
    code = ctypes.get_errno()
    if code == errno.ENOSYS:
        return Unavailable(f"{what}: the kernel has no Landlock (ENOSYS)")
    if code == errno.EOPNOTSUPP:
        return Unavailable(f"{what}: Landlock is disabled in this kernel (EOPNOTSUPP; lsm=)")
    name = errno.errorcode.get(code, str(code))
    return Unavailable(f"{what}: {os.strerror(code)} ({name})")


def abi_version(libc: ctypes.CDLL | None = None) -> int:
    """The kernel's Landlock ABI; raises :class:`Unavailable` with the reason."""
    if sys.platform != "linux":
        raise Unavailable(f"not Linux ({sys.platform})")
    machine = os.uname().machine
    if machine.lower() not in ARCHITECTURES:
        raise Unavailable(f"unsupported architecture {machine}")
    libc = libc or _libc()
    abi = libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET),
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
    )
    if abi < 0:
        raise _failure("landlock_create_ruleset(version)")
    if abi < 1:
        raise Unavailable(f"unknown Landlock ABI {abi}")
    return int(abi)


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _contains(directory: str, path: str) -> bool:
    """``path`` is ``directory`` or lies beneath it (both real paths)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def rules(workdir: str, hide: Sequence[str]) -> list[tuple[str, int]]:
    """The (path, rights) pairs :func:`apply` grants, before masking by ABI.

    Read-and-execute roots that contain (or are) a ``hide`` path are dropped.
    """
    hidden = [_real(p) for p in hide if p]
    code_roots: list[str] = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        *(p for p in sys.path if p and os.path.isdir(p)),
        *CODE_ROOTS,
    ]
    granted: list[tuple[str, int]] = []
    seen: set[str] = set()

    def add(paths: Iterable[str], rights: int, *, guarded: bool) -> None:
        for path in paths:
            real = _real(path)
            if real in seen or not os.path.exists(real):
                continue
            if guarded and any(_contains(real, h) for h in hidden):
                continue
            seen.add(real)
            granted.append((real, rights))

    add([workdir], -1, guarded=False)  # every right the ABI knows
    add(code_roots, READ_EXEC, guarded=True)
    add([*ETC, *READ_ONLY], READ, guarded=True)
    add([f"/proc/{os.getpid()}"], READ, guarded=False)
    add(DEVICES_RW, DEVICE_RW, guarded=False)
    add(DEVICES_R, READ_FILE, guarded=False)
    return granted


def restrict(workdir: str, hide: Sequence[str]) -> int:
    """Lock this thread (and all it starts) in; returns the ABI used.

    Raises :class:`Unavailable` (nothing applied) when it cannot.
    """
    libc = _libc()
    abi = abi_version(libc)
    handled = fs_rights(abi)
    scoped = scopes(abi)
    # struct landlock_ruleset_attr grew over the ABIs: handled_access_fs (1),
    # handled_access_net (4), scoped (6).  Pass the size this ABI knows.
    attr = (ctypes.c_uint64 * 3)(handled, 0, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET),
        ctypes.byref(attr),
        ctypes.c_size_t(size),
        ctypes.c_uint32(0),
    )
    if ruleset < 0:
        raise _failure("landlock_create_ruleset")
    try:
        for path, wanted in rules(workdir, hide):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # vanished or unreachable: nothing to grant
            try:
                rights = wanted & handled
                if not os.path.isdir(path):
                    rights &= FILE_RIGHTS
                beneath = _PathBeneath(rights, fd)
                done = libc.syscall(
                    ctypes.c_long(SYS_LANDLOCK_ADD_RULE),
                    ctypes.c_int(ruleset),
                    ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                    ctypes.byref(beneath),
                    ctypes.c_uint32(0),
                )
                if done < 0:
                    raise _failure(f"landlock_add_rule({path})")
            finally:
                os.close(fd)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _failure("prctl(PR_SET_NO_NEW_PRIVS)")
        if (
            libc.syscall(
                ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)
            )
            < 0
        ):
            raise _failure("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def apply(workdir: str, hide: Sequence[str] = ()) -> str:
    """:func:`restrict`, as the status the run reports: ``"abi N"`` or ``"unavailable: why"``."""
    try:
        return f"abi {restrict(workdir, hide)}"
    except Unavailable as exc:
        return f"unavailable: {exc}"
    except Exception as exc:  # never let the sandbox take a run down with it
        return f"unavailable: {type(exc).__name__}: {exc}"
