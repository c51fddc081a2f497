"""Write the SDK's copy of the run spec's JSON schema and the TypedDicts generated from it.

The server's pydantic models (``gni_engine.spec.RunSpec``, ``gni_engine.sweep.SweepSpec``) are the
single source of truth; the SDK must not import them (they need torch), so it ships:

- ``sdk/gni_client/_spec_schema.json``: ``SweepSpec.model_json_schema()`` (RunSpec and every part
  of it under ``$defs``), which the SDK's validator checks specs against;
- ``sdk/gni_client/_spec_types.py``: one ``TypedDict`` per model, for editors and type checkers.

Run after changing the spec models: ``python scripts/generate_sdk_types.py``; ``--check`` exits 1
when the shipped files are stale (the test suite checks the same against the live app).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "sdk" / "gni_client" / "_spec_schema.json"
TYPES_PATH = ROOT / "sdk" / "gni_client" / "_spec_types.py"

HEADER = '''"""TypedDicts of the run spec, generated from the server's JSON schema: do not edit.

Regenerate with ``python scripts/generate_sdk_types.py`` after changing ``gni_engine.spec``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, Required, TypedDict
'''


def spec_schema() -> dict[str, Any]:
    from gni_engine.sweep import SweepSpec

    return SweepSpec.model_json_schema()


def render_schema(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, ensure_ascii=False) + "\n"  # field order is error order


def _literal(values: list[Any]) -> str:
    return "Literal[" + ", ".join(json.dumps(v) for v in values) + "]"


def python_type(schema: dict[str, Any]) -> str:
    """The annotation of one JSON-schema node (within the subset the spec uses)."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " | ".join(dict.fromkeys(python_type(member) for member in schema[key]))
    if "const" in schema:
        return _literal([schema["const"]])
    if "enum" in schema:
        return _literal(schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"Sequence[{python_type(schema.get('items', {}))}]"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"Mapping[str, {python_type(extra)}]" if isinstance(extra, dict) else "Mapping[str, Any]"
    simple = {"integer": "int", "number": "float", "boolean": "bool", "string": "str", "null": "None"}
    return simple.get(str(kind), "Any")


def render_typed_dict(name: str, schema: dict[str, Any]) -> str:
    doc = str(schema.get("description", name)).strip().splitlines()[0].replace('"""', "'")
    lines = [f"class {name}(TypedDict, total=False):", f'    """{doc}"""', ""]
    required = set(schema.get("required", []))
    for key, sub in schema.get("properties", {}).items():
        annotation = python_type(sub)
        if "oneOf" in sub:  # a discriminated union: named by an alias at the end of the module
            annotation = f"{key.title()}Spec"
        if "prefixItems" in sub:
            annotation = f"Sequence[{python_type(sub['prefixItems'][0])}]"
        wrapped = f"Required[{annotation}]" if key in required else f"NotRequired[{annotation}]"
        lines.append(f"    {key}: {wrapped}")
    return "\n".join(lines) + "\n"


def render_types(schema: dict[str, Any]) -> str:
    defs: dict[str, Any] = dict(schema["$defs"])
    defs[str(schema.get("title", "SweepSpec"))] = schema
    blocks = [HEADER]
    blocks.extend("\n\n" + render_typed_dict(name, defs[name]) for name in sorted(defs))
    members = {
        "DataSpec": python_type(defs["RunSpec"]["properties"]["data"]),
        "ModelSpec": python_type(defs["RunSpec"]["properties"]["model"]),
    }
    blocks.append("\n\n" + "".join(f"{alias} = {value}\n" for alias, value in members.items()))
    return "".join(blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the shipped files are stale")
    args = parser.parse_args(argv)
    schema = spec_schema()
    outputs = {SCHEMA_PATH: render_schema(schema), TYPES_PATH: render_types(schema)}
    stale = [path for path, text in outputs.items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run scripts/generate_sdk_types.py)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(outputs[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
