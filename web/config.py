"""runyard's settings: one ``RUNYARD_*`` environment variable per field.

The names are fixed (docs/design.md, "Configuration"): operators and scripts
rely on them, so renaming a field here is a breaking change.  The runtime's
defaults are not repeated here: they come from :data:`runyard.actors.config.DEFAULTS`,
and :meth:`Settings.runtime_config` is the one place the runtime's
configuration is built from these settings.  Every field carries a description because
``runyard serve --help`` prints them (see :func:`describe_settings`).

:func:`load_settings` is the way in for the CLI and the app: it turns
pydantic's ``ValidationError`` into a :class:`ConfigError` whose message names
the environment variable and the offending value, one line per problem, so a
typo in a deployment reads as ``RUNYARD_PORT: Input should be a valid integer
(got 'eighty')`` instead of a pydantic traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runyard.actors.code.settings import CodeSettings
from runyard.actors.config import DEFAULTS, RuntimeConfig
from runyard.web.origins import normalize_origin

ENV_PREFIX = "RUNYARD_"
MIB = 1024 * 1024

COUCHDB_DB_NAME: Final = re.compile(r"[a-z][a-z0-9_$()+/-]*")
"""CouchDB's rule for a database name (``fullmatch``), which it checks only
when the database is created: refused here, before anything starts."""
COUCHDB_DB_NAME_MAX: Final = 238

METRICS_TOKEN_MIN: Final = 16
HEADER_TOKEN: Final = re.compile(r"[\x21-\x7e]+")
"""What a bearer token can be sent as (``fullmatch``): visible ASCII, no spaces."""


class ConfigError(ValueError):
    """The configuration cannot be used; the message says what to fix.

    Raised for bad ``RUNYARD_*`` values and for malformed user/token
    configuration (:mod:`runyard.web.users`); the CLI prints it and exits with 2.
    """


class Settings(BaseSettings):
    """Everything an operator can set, read from ``RUNYARD_*`` variables.

    Keyword arguments override the environment (tests build
    ``Settings(data_dir=tmp_path, retention_s=1)`` directly).  Values that
    hold secrets (tokens, a CouchDB URL with credentials) are kept out of
    ``repr`` so a logged settings object does not leak them.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        # RUNYARD_COUCHDB_URL= (empty) must mean "unset", not "CouchDB at ''".
        env_ignore_empty=True,
        extra="ignore",
        validate_default=True,
    )

    host: str = Field(default="127.0.0.1", min_length=1, description="Interface to listen on.")
    port: int = Field(
        default=8000, ge=0, le=65535, description="TCP port to listen on (0 picks a free port)."
    )
    data_dir: Path = Field(
        default=Path("./runyard-data"),
        description="Directory for the SQLite store, the session key and other local state.",
    )
    node_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="This node's name among the nodes sharing a CouchDB (letters, digits, "
        "'.', '_', '-'); unset: one made once and kept in the data dir.",
    )
    couchdb_url: str | None = Field(
        default=None,
        repr=False,
        description=(
            "CouchDB server URL, credentials allowed (http://user:pass@host:5984); "
            "set means CouchDB is the store, unset means SQLite under the data dir."
        ),
    )
    couchdb_db: str = Field(
        default="runyard_runs",
        description="CouchDB database name: a lowercase letter, then lowercase letters, "
        "digits and _$()+/- (at most 238 characters).",
    )
    couchdb_user: str | None = Field(
        default=None,
        description="CouchDB user, for a URL without credentials (with RUNYARD_COUCHDB_PASSWORD).",
    )
    couchdb_password: str | None = Field(
        default=None, repr=False, description="CouchDB password for RUNYARD_COUCHDB_USER."
    )
    tokens: str | None = Field(
        default=None,
        repr=False,
        description="Users and their bearer tokens: user:token[:admin],user2:token2",
    )
    session_secret: str | None = Field(
        default=None,
        repr=False,
        min_length=32,
        description="The key that signs browser session cookies (at least 32 characters). "
        "Unset: one made once and kept in the data dir. Nodes sharing a CouchDB behind one "
        "balancer must share it, or a session from one node is refused by the others.",
    )
    public_origin: str | None = Field(
        default=None,
        description="The address browsers reach runyard at (https://runyard.example.com): a "
        "request that uses the session cookie to change something must come from a page of "
        "this origin. Unset: read from each request (Host or X-Forwarded-Host, and "
        "X-Forwarded-Proto). Set it behind a proxy that does not pass those.",
    )
    tokens_file: Path | None = Field(
        default=None,
        description=(
            "TOML file of users: [[users]] with id, token or token_sha256, admin. "
            "Without this and RUNYARD_TOKENS, `runyard serve` creates a local admin."
        ),
    )
    metrics_token: str | None = Field(
        default=None,
        repr=False,
        min_length=METRICS_TOKEN_MIN,
        description="A bearer token that opens GET /metrics and nothing else, for a "
        f"Prometheus scraper (at least {METRICS_TOKEN_MIN} visible ASCII characters, "
        "no spaces). Unset: only admins read /metrics.",
    )
    retention_s: float = Field(
        default=DEFAULTS.retention_s, ge=0, description="Seconds a finished run stays in memory."
    )
    store_retention_s: float = Field(
        default=DEFAULTS.store_retention_s,
        ge=0,
        description="Seconds the store keeps finished runs.",
    )
    stop_grace_s: float = Field(
        default=DEFAULTS.stop_grace_s,
        ge=0,
        description="Seconds of cooperative stop before an agent is cancelled or killed.",
    )
    shutdown_grace_s: float = Field(
        default=DEFAULTS.shutdown_grace_s,
        ge=0,
        description="Seconds live runs get to finish on SIGTERM/SIGINT.",
    )
    max_live_runs_per_user: int = Field(
        default=DEFAULTS.max_live_runs_per_user,
        ge=1,
        description="Per-user cap on live (running) runs.",
    )
    max_body_bytes: int = Field(
        default=MIB, ge=1, description="Largest accepted request body in bytes (else 413)."
    )
    max_code_chars: int = Field(
        default=256 * 1024,
        ge=1,
        description="Longest code run-code accepts, in characters (else 413); within "
        "the body limit too.",
    )
    max_event_bytes: int = Field(
        default=DEFAULTS.max_event_bytes,
        ge=1024,
        description="An event whose data encodes to more is kept as a marker with a preview.",
    )
    max_run_events: int = Field(
        default=DEFAULTS.max_run_events,
        ge=1,
        description="Past this many events a run ends error, naming the quota.",
    )
    max_run_bytes: int = Field(
        default=DEFAULTS.max_run_bytes,
        ge=1024,
        description="Past this much event data (encoded bytes) a run ends error, naming the quota.",
    )
    cache_bytes: int = Field(
        default=DEFAULTS.cache_bytes,
        ge=0,
        description="Memory (bytes of event data) for finished runs kept after they end; "
        "least recently used out first.",
    )
    store_timeout_s: float = Field(
        default=DEFAULTS.store_timeout_s,
        gt=0,
        description="Seconds a request that needs the store waits for it before answering "
        "503 store_unavailable (a start, a stop, a delete, a read of a stored run).",
    )
    lease_s: float = Field(
        default=DEFAULTS.lease_s,
        ge=1,
        description="Scale-out over CouchDB: seconds a node's lease lasts without renewal "
        "(renewed every third of it); after that another node takes over its live runs.",
    )
    heartbeat_s: float = Field(
        default=10, gt=0, description="Seconds between SSE heartbeat comments."
    )

    @field_validator("couchdb_db")
    @classmethod
    def _couchdb_db_name(cls, name: str) -> str:
        if len(name) > COUCHDB_DB_NAME_MAX or COUCHDB_DB_NAME.fullmatch(name) is None:
            raise ValueError(
                "not a valid CouchDB database name: it must start with a lowercase letter "
                "and hold only lowercase letters, digits and _$()+/- "
                f"(at most {COUCHDB_DB_NAME_MAX} characters)"
            )
        return name

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: str | None) -> str | None:
        if value is not None and HEADER_TOKEN.fullmatch(value) is None:
            raise ValueError(
                "the metrics token goes in an Authorization header: use visible ASCII "
                "characters only, no spaces (e.g. the output of `openssl rand -hex 32`)"
            )
        return value

    @field_validator("public_origin")
    @classmethod
    def _public_origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        origin = normalize_origin(value)
        if origin is None:
            raise ValueError(
                "not an origin: write the scheme, host and port browsers use, nothing more, "
                "e.g. https://runyard.example.com or http://10.0.0.5:8000"
            )
        return origin

    def runtime_config(
        self,
        *,
        node_id: str = DEFAULTS.node_id,
        write_window_s: float = DEFAULTS.write_window_s,
        commit_gap_s: float = DEFAULTS.commit_gap_s,
    ) -> RuntimeConfig:
        """The runtime's configuration: these settings over :data:`~runyard.actors.config.DEFAULTS`,
        with this node's id and the store's own group-commit window."""
        return RuntimeConfig(
            node_id=node_id,
            write_window_s=write_window_s,
            commit_gap_s=commit_gap_s,
            retention_s=self.retention_s,
            store_retention_s=self.store_retention_s,
            stop_grace_s=self.stop_grace_s,
            shutdown_grace_s=self.shutdown_grace_s,
            max_live_runs_per_user=self.max_live_runs_per_user,
            store_timeout_s=self.store_timeout_s,
            lease_s=self.lease_s,
            max_event_bytes=self.max_event_bytes,
            max_run_events=self.max_run_events,
            max_run_bytes=self.max_run_bytes,
            cache_bytes=self.cache_bytes,
        )

    def code_settings(self) -> CodeSettings:
        """Run-code children's settings.  The data dir holds every user's runs and
        the session key: never readable by submitted code, wherever it lives."""
        return CodeSettings(private_paths=(str(self.data_dir.resolve()),))


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment plus ``overrides``, or a readable :class:`ConfigError`.

    ``None`` overrides are dropped so the CLI can pass ``host=args.host``
    without clobbering ``RUNYARD_HOST`` when the flag was not given.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the variable (``RUNYARD_PORT``) and the bad value."""
    lines = ["invalid runyard configuration:"]
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"]) or "settings"
        name = f"{ENV_PREFIX}{field.upper()}"
        secret = field in _SECRET_FIELDS
        shown = "" if secret else f" (got {_short(err.get('input'))})"
        lines.append(f"  {name}: {err['msg']}{shown}")
    return "\n".join(lines)


_SECRET_FIELDS = frozenset(
    {"tokens", "couchdb_url", "couchdb_password", "session_secret", "metrics_token"}
)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class SettingInfo:
    """One row of the ``--help`` table."""

    env_var: str
    default: str
    description: str


def describe_settings() -> list[SettingInfo]:
    """Every setting with its environment variable, default and description, in field order."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = "unset" if field.default is None else str(field.default)
        if isinstance(field.default, Path) and not field.default.is_absolute():
            default = f"./{default}"  # str(Path("./x")) drops the "./" the docs show
        rows.append(SettingInfo(f"{ENV_PREFIX}{name.upper()}", default, field.description or ""))
    return rows
