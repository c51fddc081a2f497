"""The client's spec checks against the server's: same invalid inputs, same field paths and messages.

The SDK ships a copy of the server's JSON schema (``scripts/generate_sdk_types.py``); these tests
prove the copy is current (equal to the live app's OpenAPI components) and that the client's
validator, fed the inputs the server's pydantic models reject, names the same fields the same way.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
from gni_client import SpecValidationError
from gni_client.spec import check_experiment, spec_schema, validate_run_spec, validate_sweep

from api.app import create_app
from gni_engine.errors import SpecError
from gni_engine.spec import parse_run_spec
from gni_engine.sweep import SweepSpec, parse_sweep_spec
from gni_service.settings import ServiceSettings

TINY = {"data": {"n_points": 64, "frequencies": [1.0, 3.0]}, "model": {"hidden": [8, 8]}}

INVALID_SPECS = [
    {"noise": {"sigma": "abc"}},
    {"noise": {"sigma": -1}},
    {"noise": {"sigma": 101}},
    {"noise": {"sigma": math.nan}},
    {"noise": {"sigma": [0.1, "x"]}},
    {"noise": {"sigma": [0.1, 0.2]}},
    {"noise": {"layers": "foo"}},
    {"noise": {"layers": [0, 0]}},
    {"noise": {"layers": [-1]}},
    {"noise": {"layers": [0.5]}},
    {"noise": {"layers": [9]}},
    {"noise": 5},
    {"model": {"activation": "sigmoid"}},
    {"model": {"hidden": [0]}},
    {"model": {"hidden": "a"}},
    {"model": {"hidden": [1] * 65}},
    {"model": {"kind": "convnet"}},
    {"training": {"lr": 0}},
    {"training": {"lr": 1e400}},
    {"training": {"steps": 1.5}},
    {"training": {"steps": "ten"}},
    {"training": {"batch_size": "a"}},
    {"training": {"bogus": 1}},
    {"training": {"mode": "GNI"}},
    {"bogus": 1},
    {"seed": -1},
    {"seed": 2**63},
    {"task": 3},
    {"data": 5},
    {"data": {"name": "two_moons"}},
    {"data": {"name": "two_moons", "n_points": 2}, "seed": "x", "zz": 1},
    {"data": {"name": "mnist", "subset": 0}},
    {"data": {"name": "mnist", "flatten": "x"}, "task": "classification"},
    {"task": "classification", "data": {"name": "mnist", "flatten": False}},
    {"task": "classification", "data": {"name": "mnist"}, "model": {"kind": "convnet", "channels": [1]}},
    {
        "task": "classification",
        "data": {"name": "mnist", "flatten": False},
        "model": {"kind": "convnet", "channels": [1, 2, 3]},
    },
    {"task": "classification"},
    {"data": {"n_points": 10}},
    {"data": {"frequencies": []}},
    {"data": {"frequencies": [1, 2], "amplitudes": [1]}},
    {"data": {"frequencies": [1, 2], "phases": [0.0]}},
    {"data": {"frequencies": [-1.0]}},
    {"data": {"phases": "x"}},
    {"data": {"phases": [1, "a"]}},
    {"data": {"test_fraction": 1}},
    {"data": {"name": "circles", "factor": 0}, "task": "classification"},
    {"analyses": {"high_frequency_cutoff": 0}},
    {"analyses": {"spectrum": "maybe"}},
    {"execution": {"precision": "fp16"}},
    {"execution": {"device": None}},
    # Lax pydantic would read true as 1: refused wherever a number is due.
    {"noise": {"sigma": True}},
    {"noise": {"sigma": [0.1, False]}},
    {"model": {"hidden": [True, 4]}},
    {"training": {"steps": True, "lr": False}},
    {"seed": True},
    {"data_seed": False},
    {"data": {"frequencies": [1.0, 3.0], "amplitudes": [1.0, 0.0]}},
]

VALID_SPECS = [
    {},
    TINY,
    {"training": {"steps": "10", "lr": "1e-3"}},  # pydantic's lax mode: numbers in strings
    {"noise": {"sigma": [0.0, 0.1, 0.2]}, "model": {"hidden": [4, 4]}},
    {"model": {"hidden": [4], "bias": False}, "analyses": {"spectrum": False}},
    {"data": {"frequencies": [1.0, 3.0], "amplitudes": [1.0, -2.0]}},
    {"task": "classification", "data": {"name": "circles", "noise": 0.1}, "analyses": {"spectrum": "yes"}},
    {"task": "classification", "data": {"name": "mnist", "flatten": False}, "model": {"kind": "convnet"}},
    {"data": {"name": "diabetes", "subset": None}, "data_seed": 3},
]


def _server_errors(spec):
    try:
        parse_run_spec(spec)
    except SpecError as error:
        return error.details
    return []


def _client_errors(spec):
    try:
        validate_run_spec(spec)
    except SpecValidationError as error:
        return error.errors
    return []


def _without_tag_message(errors):
    """The one wording the schema cannot carry: pydantic names its discriminator function."""
    return [
        {"loc": e["loc"], "msg": "<tag>" if e["msg"].startswith("Input tag") else e["msg"]} for e in errors
    ]


def _openapi_form(node):
    """What FastAPI's OpenAPI models make of a pydantic schema: null defaults dropped, bounds as floats."""
    if isinstance(node, dict):
        return {
            k: float(v) if k in _BOUNDS and isinstance(v, int) else _openapi_form(v)
            for k, v in node.items()
            if not (k == "default" and v is None)
        }
    if isinstance(node, list):
        return [_openapi_form(v) for v in node]
    return node


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def test_shipped_schema_is_the_live_apps(tmp_path):
    """No drift: the SDK's schema equals the spec components of the running app's OpenAPI."""
    app = create_app(ServiceSettings(data_folder=tmp_path))
    components = _openapi_form(app.openapi()["components"]["schemas"])
    shipped = json.loads(json.dumps(spec_schema()).replace("#/$defs/", "#/components/schemas/"))
    assert len(shipped["$defs"]) >= 12, "the shipped schema lacks the spec's models"
    for name, schema in shipped["$defs"].items():
        assert components.get(name) == _openapi_form(schema), f"{name} differs from the server's (regenerate)"
    assert shipped["$defs"]["RunSpec"] == json.loads(
        json.dumps(SweepSpec.model_json_schema()["$defs"]["RunSpec"]).replace(
            "#/$defs/", "#/components/schemas/"
        )
    )
    # the request body embeds exactly this RunSpec
    body = components["ExperimentCreate"]["properties"]["base"]
    assert {"$ref": "#/components/schemas/RunSpec"} in body.get("anyOf", [body])


@pytest.mark.parametrize("spec", INVALID_SPECS, ids=lambda s: json.dumps(s)[:60])
def test_invalid_spec_fails_alike_on_client_and_server(spec):
    server = _server_errors(spec)
    client = _client_errors(spec)
    assert server, "the server accepts this spec: the case is wrong"
    assert _without_tag_message(client) == _without_tag_message(server)


@pytest.mark.parametrize("spec", VALID_SPECS, ids=lambda s: json.dumps(s)[:60])
def test_valid_spec_passes_both_with_the_same_defaults(spec):
    assert _server_errors(spec) == []
    filled = validate_run_spec(spec)
    assert filled == json.loads(json.dumps(parse_run_spec(spec).model_dump(mode="json")))


SWEEPS = [
    ({}, {"noise.sigam": [1]}),
    ({}, {"seed": []}),
    ({}, {"seed": 3}),
    ({}, {"data.anything.deeper": [1]}),  # unions accept any member's field; the runs then fail
    ({"noise": {"sigma": -1}}, {"seed": [0]}),
    (TINY, {"noise.sigma": [0.1, -1.0]}),
    (TINY, {"training.mode": ["baseline", "bogus"], "seed": [0, 1]}),
    (TINY, {"seed": list(range(400)), "noise.sigma": list(range(251))}),  # > 100,000 runs
]


def _server_sweep_errors(base, axes):
    from gni_engine.sweep import expand_sweep

    try:
        expand_sweep(parse_sweep_spec({"base": base, "axes": axes}))
    except SpecError as error:
        return error.message, error.details
    return None, []


@pytest.mark.parametrize(("base", "axes"), SWEEPS, ids=lambda v: json.dumps(v)[:50])
def test_invalid_sweep_fails_alike(base, axes):
    message, server = _server_sweep_errors(base, axes)
    assert server, "the server accepts this sweep: the case is wrong"
    with pytest.raises(SpecValidationError) as caught:
        validate_sweep(base, axes)
    assert caught.value.errors == server
    assert caught.value.message == message


def test_valid_sweep_counts_its_runs():
    assert validate_sweep(TINY, {"training.mode": ["baseline", "gni"], "seed": [0, 1, 2]}) == 6


def test_request_check_uses_the_servers_body_paths(tmp_path):
    """``create`` checks the request body as the API does: ``base.noise.sigma``, then the sweep."""
    from fastapi.testclient import TestClient

    from gni_service.context import build_context

    settings = ServiceSettings(data_folder=tmp_path, migrate_on_start=True)
    context = build_context(settings)
    try:
        app = create_app(context=context, start_executor=False)
        cases = [
            ({**TINY, "noise": {"sigma": -1}, "training": {"steps": 0}}, {}),
            ({**TINY, "model": {"hidden": "x"}}, {"seed": 4}),
            (TINY, {"seed": 4}),
            (TINY, {"noise.sigam": [0.1]}),
            (TINY, {"noise.sigma": [0.1, 200.0]}),
        ]
        with TestClient(app) as http:
            for base, axes in cases:
                answer = http.post("/v1/experiments?dry_run=true", json={"base": base, "axes": axes})
                assert answer.status_code == 422, answer.text
                with pytest.raises(SpecValidationError) as caught:
                    check_experiment(copy.deepcopy(base), axes)
                assert caught.value.errors == answer.json()["error"]["details"], (base, axes)
    finally:
        context.close()
