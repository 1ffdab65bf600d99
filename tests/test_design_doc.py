"""docs/design.md stays true where it states facts the code can check.

The code cites that page by section, so a section that drifts from the code
misleads exactly the reader it was written for.  Checked here: the
configuration table (every ``RUNYARD_*`` setting, with its default), the
``RuntimeConfig`` knobs, and the sections the code cites.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from runyard.actors.config import DEFAULTS, RuntimeConfig
from runyard.web.config import describe_settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "design.md"
CITED_SECTIONS = ("Configuration", "Threads and loops", "Lessons we apply")


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/design.md has no section '## {title}'"
    return match.group(1)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("title", CITED_SECTIONS)
def test_the_sections_the_code_cites_exist(title: str) -> None:
    assert _section(title).strip()


@pytest.mark.timeout(10)
def test_every_setting_is_in_the_table_with_its_default() -> None:
    rows = [line for line in _section("Configuration").splitlines() if line.startswith("| `")]
    for setting in describe_settings():
        row = next((r for r in rows if f"`{setting.env_var}`" in r.split("|")[1]), None)
        assert row is not None, f"{setting.env_var} is missing from the table"
        names = re.findall(r"`(RUNYARD_\w+)`", row.split("|")[1])
        defaults = re.findall(r"`([^`]+)`", row.split("|")[3])
        shown = dict(zip(names, defaults, strict=False)) if len(defaults) > 1 else None
        expected = shown[setting.env_var] if shown else (defaults[0] if defaults else "unset")
        assert expected == _plain(setting.default), (setting.env_var, row)


@pytest.mark.timeout(10)
def test_every_runtime_knob_is_named_with_its_default() -> None:
    section = _section("Configuration")
    for field in dataclasses.fields(RuntimeConfig):
        assert f"`{field.name}`" in section, f"RuntimeConfig.{field.name} is not described"
    for name in (
        "evict_interval_s",
        "purge_interval_s",
        "store_timeout_s",
        "write_window_s",
        "max_unstored_bytes",
    ):
        value = getattr(DEFAULTS, name)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        assert f"`{name}` ({shown})" in section, name


def _plain(default: str) -> str:
    """``3600.0`` as the table writes it (``3600``); other defaults unchanged."""
    try:
        return f"{float(default):g}" if "." in default else default
    except ValueError:
        return default
