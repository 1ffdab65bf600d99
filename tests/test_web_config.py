"""Settings and users: ``RUNYARD_*`` settings (runyard.web.config) and who may call (runyard.web.users).

Users come from ``RUNYARD_TOKENS``, ``RUNYARD_TOKENS_FILE`` or, with
neither, a local admin made at start.  Errors name the variable or file
and never echo a token.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from runyard.actors.messages import Caller
from runyard.web.auth import Authenticator
from runyard.web.config import ConfigError, Settings, describe_settings, load_settings
from runyard.web.sessions import SessionSigner
from runyard.web.users import load_users, parse_tokens_env, parse_tokens_toml, with_local_admin

pytestmark = pytest.mark.usefixtures("clean_runyard_env")

KEY = b"k" * 32


# --------------------------------------------------------------------------
# Settings


@pytest.mark.timeout(10)
def test_settings_names_and_defaults_match_architecture() -> None:
    s = Settings()
    assert (s.host, s.port, s.data_dir) == ("127.0.0.1", 8000, Path("./runyard-data"))
    assert (s.couchdb_url, s.couchdb_db) == (None, "runyard_runs")
    assert (s.tokens, s.tokens_file) == (None, None)
    assert (s.retention_s, s.store_retention_s) == (3600, 604800)
    assert (s.stop_grace_s, s.shutdown_grace_s, s.max_live_runs_per_user) == (5, 30, 100)
    assert (s.max_body_bytes, s.heartbeat_s) == (1024 * 1024, 10)
    assert all(info.description for info in describe_settings())


@pytest.mark.timeout(10)
def test_settings_read_prefixed_env_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_PORT", "9001")
    monkeypatch.setenv("RUNYARD_RETENTION_S", "2.5")
    monkeypatch.setenv("RUNYARD_COUCHDB_URL", "")
    s = load_settings()
    assert (s.port, s.retention_s, s.couchdb_url) == (9001, 2.5, None)
    assert load_settings(port=1234, host=None).port == 1234  # None override keeps env


@pytest.mark.timeout(10)
def test_settings_errors_name_the_variable_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_PORT", "eighty")
    monkeypatch.setenv("RUNYARD_MAX_LIVE_RUNS_PER_USER", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "RUNYARD_PORT" in text
    assert "'eighty'" in text
    assert "RUNYARD_MAX_LIVE_RUNS_PER_USER" in text
    assert "Traceback" not in text


@pytest.mark.timeout(10)
def test_settings_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tokens=["alice:s3cret"])
    assert "RUNYARD_TOKENS" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(Settings(tokens="alice:s3cret"))


# --------------------------------------------------------------------------
# Users from RUNYARD_TOKENS


@pytest.mark.timeout(10)
def test_tokens_env_parses_users_and_admin_flag() -> None:
    users = parse_tokens_env(" alice:tok-a:admin , bob:tok-b,,")
    assert [(u.user_id, u.admin) for u in users] == [("alice", True), ("bob", False)]
    assert users[0].token_sha256 == hashlib.sha256(b"tok-a").digest()
    assert "tok-a" not in repr(users[0])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice:a,s3cr3t", "entry 2 has no ':'"),
        ("bob:s3cr3t:root", "entry 1 ('bob'): expected user:token"),
        ("bob:s3cr3t:admin:x", "entry 1 ('bob'): expected user:token"),
        ("bob:", "entry 1 ('bob'): token must be non-empty"),
        ("bob:s3c r3t", "no whitespace"),
        (":s3cr3t", "user id must be"),
        ("b/ob:s3cr3t", "user id must be"),
    ],
)
@pytest.mark.timeout(10)
def test_tokens_env_malformed_entries_are_named_without_the_token(
    value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tokens_env(value)
    text = str(info.value)
    assert text.startswith("RUNYARD_TOKENS entry")
    assert expected in text
    assert "s3c" not in text


# --------------------------------------------------------------------------
# Users from RUNYARD_TOKENS_FILE


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "users.toml"
    path.write_text(text)
    return path


@pytest.mark.timeout(10)
def test_tokens_file_with_token_and_token_sha256(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"carol-token").hexdigest().upper()
    path = write(
        tmp_path,
        f"""
[[users]]
id = "alice"
token = "alice-token"
admin = true

[[users]]
id = "carol"
token_sha256 = "{digest}"
""",
    )
    users = parse_tokens_toml(path)
    assert [(u.user_id, u.admin) for u in users] == [("alice", True), ("carol", False)]
    auth = Authenticator(users, SessionSigner(KEY))
    assert auth.authenticate_token("carol-token") == Caller("carol", admin=False)
    assert auth.authenticate_token("alice-token") == Caller("alice", admin=True)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[[users]]\nid = "a"\ntoken = "t"\n[[users]]\nid = "b"\n', "users[2] (id 'b')"),
        ('[[users]]\nid = "a"\ntoken = "t"\ntoken_sha256 = "' + "0" * 64 + '"\n', "exactly one"),
        ('[[users]]\nid = "a"\ntoken_sha256 = "abc"\n', "64 hex digits"),
        ('[[users]]\nid = "a"\ntoken = "t"\nadmn = true\n', "unknown key(s) ['admn']"),
        ('[[users]]\nid = "a"\ntoken = "t"\nadmin = "yes"\n', "admin must be true or false"),
        ('[[users]]\ntoken = "t"\n', "users[1]: id is required"),
        ('[[users]]\nid = "a"\ntoken = 5\n', "token must be a string"),
        ('users = "alice"\n', "expected one or more [[users]]"),
        ("", "expected one or more [[users]]"),
        ('[[user]]\nid = "a"\n', "unknown top-level key(s) ['user']"),
        ("[[users]\n", "not valid TOML"),
    ],
)
@pytest.mark.timeout(10)
def test_tokens_file_malformed_is_named(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        parse_tokens_toml(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.timeout(10)
def test_tokens_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        parse_tokens_toml(tmp_path / "nope.toml")


@pytest.mark.timeout(10)
def test_load_users_merges_sources_and_refuses_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, '[[users]]\nid = "carol"\ntoken = "c"\n')
    users = load_users(Settings(tokens="alice:a", tokens_file=path))
    assert [u.user_id for u in users] == ["alice", "carol"]
    with pytest.raises(ConfigError, match="'carol' is configured more than once"):
        load_users(Settings(tokens="carol:x", tokens_file=path))
    with pytest.raises(ConfigError, match="'alice' and 'bob' have the same token"):
        load_users(Settings(tokens="alice:same,bob:same"))


@pytest.mark.timeout(10)
def test_local_admin_only_without_configured_users(tmp_path: Path) -> None:
    settings, token = with_local_admin(Settings(data_dir=tmp_path))
    assert token is not None
    assert len(token) >= 40
    users = load_users(settings)
    assert [(u.user_id, u.admin) for u in users] == [("admin", True)]
    assert Authenticator(users, SessionSigner(KEY)).authenticate_token(token) == Caller(
        "admin", admin=True
    )
    assert with_local_admin(Settings(tokens="bob:b"))[1] is None
    assert with_local_admin(Settings(data_dir=tmp_path))[1] != token  # fresh each start
