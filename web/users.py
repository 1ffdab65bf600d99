"""Who may call: users and their tokens, from configuration.

Users come from ``RUNYARD_TOKENS`` (``user:token[:admin],...``) and/or
``RUNYARD_TOKENS_FILE`` (TOML ``[[users]]`` with ``id``, ``token`` or
``token_sha256``, ``admin``, and the workspaces the user belongs to,
``workspaces``, and administers, ``workspace_admin``: docs/operations.md).
Workspaces are declared only in the file: the one-line env form stays short.
Malformed configuration is refused at start-up with a
:class:`runyard.web.config.ConfigError` naming the entry, never the token.
Only SHA-256 digests of tokens are kept in memory.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from runyard.actors.access import WORKSPACE_ID_PATTERN
from runyard.actors.messages import Caller
from runyard.web.config import ConfigError, Settings

LOCAL_ADMIN_ID: Final = "admin"
USER_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
"""User ids appear in URLs, logs and store queries: keep them plain."""

_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")

# --------------------------------------------------------------------------
# Users


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    token_sha256: bytes = field(repr=False)
    admin: bool = False
    workspaces: frozenset[str] = frozenset()
    workspace_admin: frozenset[str] = frozenset()
    """A subset of ``workspaces``: an admin of a workspace is a member of it."""

    def caller(self) -> Caller:
        return Caller(
            user_id=self.user_id,
            admin=self.admin,
            workspaces=self.workspaces,
            workspace_admin=self.workspace_admin,
        )


def hash_token(token: str) -> bytes:
    """SHA-256 of the token's UTF-8 bytes: what is stored and compared."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_tokens_env(value: str, source: str = "RUNYARD_TOKENS") -> list[User]:
    """``user:token[:admin],user2:token2`` -> users; blank entries are ignored.

    Error messages name the entry by position and user id and never echo a
    token (an entry without ``:`` might be a bare token, so it is not shown).
    """
    users = []
    for index, raw in enumerate(value.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        where = f"{source} entry {index}"
        parts = entry.split(":")
        if len(parts) == 1:
            raise ConfigError(f"{where} has no ':'; expected user:token or user:token:admin")
        user_id, token, *flags = parts
        where = f"{where} ({user_id!r})"
        if len(flags) > 1 or (flags and flags[0] != "admin"):
            raise ConfigError(
                f"{where}: expected user:token or user:token:admin "
                "(tokens cannot contain ':' or ',')"
            )
        users.append(_make_user(where, user_id, token=token, admin=bool(flags)))
    return users


def parse_tokens_toml(path: Path) -> list[User]:
    """Users from a TOML file of ``[[users]]`` (``id``, ``token``/``token_sha256``, ``admin``,
    ``workspaces``, ``workspace_admin``)."""
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"RUNYARD_TOKENS_FILE {path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"RUNYARD_TOKENS_FILE {path}: not valid TOML: {exc}") from None
    return parse_users_document(document, f"RUNYARD_TOKENS_FILE {path}")


_USER_KEYS: Final = frozenset(
    {"id", "token", "token_sha256", "admin", "workspaces", "workspace_admin"}
)


def parse_users_document(document: Mapping[str, Any], source: str) -> list[User]:
    """Validate a parsed TOML document; unknown keys are errors (a typo'd ``admn`` must fail)."""
    extra = set(document) - {"users"}
    if extra:
        raise ConfigError(f"{source}: unknown top-level key(s) {sorted(extra)}; expected [[users]]")
    entries = document.get("users")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: expected one or more [[users]] tables")
    users = []
    for index, entry in enumerate(entries, start=1):
        where = f"{source}: users[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table with id and token or token_sha256")
        if isinstance(entry.get("id"), str):
            where = f"{where} (id {entry['id']!r})"
        unknown = set(entry) - _USER_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        admin = entry.get("admin", False)
        if not isinstance(admin, bool):
            raise ConfigError(f"{where}: admin must be true or false")
        user_id = entry.get("id")
        if not isinstance(user_id, str):
            raise ConfigError(f"{where}: id is required and must be a string")
        token, digest = entry.get("token"), entry.get("token_sha256")
        if (token is None) == (digest is None):
            raise ConfigError(f"{where}: give exactly one of token or token_sha256")
        if token is not None and not isinstance(token, str):
            raise ConfigError(f"{where}: token must be a string")
        if digest is not None and not (isinstance(digest, str) and _SHA256_HEX.fullmatch(digest)):
            raise ConfigError(
                f"{where}: token_sha256 must be 64 hex digits (sha256sum of the token)"
            )
        user = _make_user(where, user_id, token=token, token_sha256=digest, admin=admin)
        users.append(_with_workspaces(where, user, entry))
    return users


def _with_workspaces(where: str, user: User, entry: Mapping[str, Any]) -> User:
    """``user`` with the entry's ``workspaces`` and ``workspace_admin``, validated."""
    member = _workspace_list(where, "workspaces", entry.get("workspaces", []))
    admin_of = _workspace_list(where, "workspace_admin", entry.get("workspace_admin", []))
    outside = [w for w in admin_of if w not in member]
    if outside:
        raise ConfigError(
            f"{where}: workspace_admin {outside} not in workspaces; "
            "the admin of a workspace must also be listed as a member"
        )
    return replace(user, workspaces=frozenset(member), workspace_admin=frozenset(admin_of))


def _workspace_list(where: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise ConfigError(f'{where}: {key} must be a list of workspace ids, like ["ml", "ops"]')
    for workspace in value:
        if not WORKSPACE_ID_PATTERN.fullmatch(workspace):
            raise ConfigError(
                f"{where}: {key}: workspace id {workspace!r} must be 1-64 characters of "
                "letters, digits, '_', '.', '-' and start with a letter or digit"
            )
    if len(set(value)) != len(value):
        twice = sorted({w for w in value if value.count(w) > 1})
        raise ConfigError(f"{where}: {key} lists {twice} more than once")
    return value


def _make_user(
    where: str,
    user_id: str,
    *,
    token: str | None = None,
    token_sha256: str | None = None,
    admin: bool = False,
) -> User:
    if not USER_ID_PATTERN.fullmatch(user_id):
        raise ConfigError(
            f"{where}: user id must be 1-64 characters of letters, digits, '_', '.', '@', '-' "
            "and start with a letter or digit"
        )
    if token_sha256 is not None:
        return User(user_id, bytes.fromhex(token_sha256), admin)
    if not token or token != token.strip() or any(ch.isspace() for ch in token):
        raise ConfigError(f"{where}: token must be non-empty and contain no whitespace")
    return User(user_id, hash_token(token), admin)


def load_users(settings: Settings) -> list[User]:
    """Users from both sources together; duplicate ids or shared tokens are refused.

    A token shared by two users could not say who is calling, and a
    duplicated id would silently keep one of two tokens.
    """
    users: list[User] = []
    if settings.tokens:
        users += parse_tokens_env(settings.tokens)
    if settings.tokens_file is not None:
        users += parse_tokens_toml(settings.tokens_file)
    by_id: dict[str, User] = {}
    by_digest: dict[bytes, User] = {}
    for user in users:
        if user.user_id in by_id:
            raise ConfigError(f"user {user.user_id!r} is configured more than once")
        other = by_digest.get(user.token_sha256)
        if other is not None:
            raise ConfigError(f"users {other.user_id!r} and {user.user_id!r} have the same token")
        by_id[user.user_id] = user
        by_digest[user.token_sha256] = user
    return users


def users_configured(settings: Settings) -> bool:
    return bool(settings.tokens) or settings.tokens_file is not None


def with_local_admin(settings: Settings) -> tuple[Settings, str | None]:
    """With no users configured, add one local admin with a fresh random token.

    Returns the settings to run with and the token to show the operator
    (``None`` when users were configured).  The token is new at every start,
    as Jupyter's is; it is never written to disk.
    """
    if users_configured(settings):
        return settings, None
    token = secrets.token_urlsafe(32)  # [A-Za-z0-9_-]: safe in RUNYARD_TOKENS and URLs
    local = settings.model_copy(update={"tokens": f"{LOCAL_ADMIN_ID}:{token}:admin"})
    return local, token
