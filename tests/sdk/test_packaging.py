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


def test_the_sdks_types_read_every_field_the_service_answers(tmp_path):
    """No drift: each response model's JSON fields are the OpenAPI schema's properties, both ways."""
    from gni_client import types

    from api.app import create_app
    from gni_service.settings import ServiceSettings

    schemas = create_app(ServiceSettings(data_folder=tmp_path)).openapi()["components"]["schemas"]
    pairs = {
        "ExperimentOut": types.Experiment,
        "RunOut": types.Run,
        "ArtifactOut": types.Artifact,
        "AggregateOut": types.Aggregate,
        "AggregateGroupOut": types.AggregateGroup,
        "MetricsOut": types.RunMetrics,
        "SeriesOut": types.MetricSeries,
        "MetricStatsOut": types.MetricStats,
        "StatusCounts": types.StatusCounts,
        "Progress": types.Progress,
        "ExperimentPlanOut": types.ExperimentPlan,
        "ExperimentDeleted": types.ExperimentDeleted,
        "PlannedRun": types.PlannedRun,
    }
    for name, model in pairs.items():
        assert set(types.model_fields(model)) == set(schemas[name]["properties"]), name
