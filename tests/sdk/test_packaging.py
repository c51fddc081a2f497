"""The SDK installs and imports without torch, and its generated files are current."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_sdk_and_its_cli_does_not_import_torch():
    code = (
        "import sys, gni_client, gni_client.cli, gni_client.spec\n"
        "gni_client.spec.validate_run_spec({'noise': {'sigma': 0.2}})\n"
        "heavy = ('torch', 'numpy', 'pydantic', 'gni_engine', 'fastapi')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "[]"


def test_sdk_declares_httpx_as_its_only_dependency():
    text = (ROOT / "sdk" / "pyproject.toml").read_text()
    assert 'dependencies = ["httpx>=0.27"]' in text and 'gni-client = "gni_client.cli:main"' in text


def test_generated_schema_and_types_are_current():
    spec = importlib.util.spec_from_file_location(
        "generate_sdk_types", ROOT / "scripts" / "generate_sdk_types.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run scripts/generate_sdk_types.py"
