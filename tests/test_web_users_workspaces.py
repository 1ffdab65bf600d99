"""Workspaces in ``RUNYARD_TOKENS_FILE``: ``workspaces`` and ``workspace_admin`` per user.

A valid declaration reaches the :class:`Caller` the authenticator answers
with (by token and by session cookie alike); a malformed one is refused at
start-up with an error naming the file and the entry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.actors.messages import Caller
from runyard.web.auth import Authenticator
from runyard.web.config import ConfigError
from runyard.web.sessions import SessionSigner
from runyard.web.users import parse_tokens_env, parse_tokens_toml

KEY = b"k" * 32


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.timeout(10)
def test_workspaces_reach_the_caller_by_token_and_by_session(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[users]]
id = "alice"
token = "alice-token"
workspaces = ["ml", "ops"]
workspace_admin = ["ml"]

[[users]]
id = "bob"
token = "bob-token"
""",
    )
    auth = Authenticator(parse_tokens_toml(path), SessionSigner(KEY))
    alice = Caller("alice", workspaces=frozenset({"ml", "ops"}), workspace_admin=frozenset({"ml"}))
    assert auth.authenticate_token("alice-token") == alice
    assert auth.authenticate_token("bob-token") == Caller("bob")
    cookie = auth.issue_session(alice).value
    assert auth.authenticate_session(cookie) == alice


@pytest.mark.timeout(10)
def test_the_env_form_has_no_workspaces() -> None:
    [user] = parse_tokens_env("alice:t")
    assert user.caller() == Caller("alice", workspaces=frozenset(), workspace_admin=frozenset())


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('workspaces = "ml"', 'workspaces must be a list of workspace ids, like ["ml", "ops"]'),
        ("workspaces = [1]", "workspaces must be a list of workspace ids"),
        ('workspaces = ["m l"]', "workspaces: workspace id 'm l' must be 1-64 characters"),
        ('workspaces = ["-ml"]', "start with a letter or digit"),
        ('workspaces = ["' + "w" * 65 + '"]', "must be 1-64 characters"),
        ('workspaces = ["ml", "ml"]', "workspaces lists ['ml'] more than once"),
        ('workspace_admin = ["ml"]', "workspace_admin ['ml'] not in workspaces"),
        ('workspaces = ["ml"]\nworkspace_admin = ["ops"]', "must also be listed as a member"),
        ('workspace_admin = "ml"', "workspace_admin must be a list of workspace ids"),
        ('workspace = ["ml"]', "unknown key(s) ['workspace']"),
    ],
)
@pytest.mark.timeout(10)
def test_a_malformed_declaration_names_the_file_and_the_entry(
    tmp_path: Path, entry: str, expected: str
) -> None:
    body = f'[[users]]\nid = "ok"\ntoken = "t1"\n\n[[users]]\nid = "carol"\ntoken = "t2"\n{entry}\n'
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        parse_tokens_toml(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "users[2] (id 'carol')" in message
    assert "t2" not in message.replace(str(path), "")  # never the token
