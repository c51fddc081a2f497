"""docs/settings.md is the settings the code reads, all of them, with their real defaults."""

from __future__ import annotations

import re
from pathlib import Path

from gni_service.settings import ServiceSettings
from gni_service.settings_reference import settings_reference

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("gni_engine", "gni_service", "gni_cli", "api", "worker", "sdk/gni_client")


def test_the_reference_is_what_the_settings_say():
    written = (ROOT / "docs" / "settings.md").read_text()
    regenerate = "python -m gni_service.settings_reference > docs/settings.md"
    assert written == settings_reference(), f"regenerate: {regenerate}"


def test_every_variable_the_code_reads_is_in_the_reference():
    reference = settings_reference()
    read: set[str] = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r"[\"'](GNI_[A-Z0-9_]+)[\"']", path.read_text()))
    read |= {f"GNI_{name.upper()}" for name in ServiceSettings.model_fields}
    assert {name for name in read if f"`{name}`" not in reference} == set()


def test_each_row_gives_the_default_and_bounds_the_settings_enforce():
    reference = settings_reference()
    assert "| `GNI_MAX_SWEEP_RUNS` | `10000` | ≥ 1, ≤ 100000 |" in reference
    assert "| `GNI_AUTH` | `disabled` | `required`, `disabled` |" in reference
    assert "| `GNI_TASK_FLOPS_PER_SECOND` | `1e+10` | > 0 |" in reference
    assert "<" not in reference.replace("&lt;", "")  # no raw HTML in table cells
