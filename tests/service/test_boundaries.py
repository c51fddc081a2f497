"""Import boundaries: the engine imports no service code; the API and the worker never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "gni_engine": {
        "api",
        "worker",
        "gni_service",
        "gni_cli",
        "fastapi",
        "sqlalchemy",
        "celery",
        "boto3",
        "alembic",
    },
    "gni_service": {"api", "worker", "fastapi", "gni_cli"},
    "api": {"worker", "gni_cli"},
    "worker": {"api", "gni_cli"},
}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_inside_their_boundary(package):
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_roots(path) & FORBIDDEN[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_the_boundary_check_sees_imports():
    # A check that cannot fail is no check: it must see this file's own imports.
    assert {"ast", "pytest", "pathlib"} <= _imported_roots(Path(__file__))
