"""Property-based fuzzing of the whole API against its own OpenAPI document (schemathesis).

Every operation gets generated requests, valid ones (positive) and invalid ones (negative); each
answer must not be a 5xx and must match what the document promises (status code, content type,
headers, body schema). Runs in-process over ASGI on a SQLite app; ``GNI_FUZZ_EXAMPLES`` raises the
examples per operation and pass (default 25). Each operation is fuzzed with generated path ids and
again with the ids of a real experiment, run and artifact, so the fuzzer gets past the 404s.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gni_service.artifacts import store_artifact

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = int(os.environ.get("GNI_FUZZ_EXAMPLES", "25"))


@pytest.mark.slow
def test_no_generated_request_gets_a_5xx_or_breaks_the_schema(
    sqlite_url, make_app, client_of, tiny_spec, tmp_path
):
    handle = make_app(sqlite_url, max_sweep_runs=20, max_run_steps=1000, max_data_points=4096)
    client = client_of(handle)  # runs the lifespan; schemathesis then calls the app over ASGI
    seeded = client.post("/v1/experiments", json={"base": tiny_spec, "axes": {"seed": [0, 1]}}).json()
    run_id = client.get(f"/v1/experiments/{seeded['id']}/runs").json()["items"][0]["id"]
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n")
    with handle.database.transaction() as session:
        artifact = store_artifact(
            session, handle.context.store, figure, name="f.png", experiment_id=seeded["id"], run_id=run_id
        )
    real_ids = {"experiment_id": seeded["id"], "run_id": run_id, "artifact_id": artifact.id}
    schema = schemathesis.openapi.from_asgi("/openapi.json", handle.app)
    statuses: Counter[int] = Counter()
    per_operation: Counter[str] = Counter()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14, [op.label for op in operations]

    def fuzz(label: str, mode: GenerationMode, strategy: SearchStrategy[schemathesis.Case]) -> None:
        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: schemathesis.Case) -> None:
            response = case.call()
            statuses[response.status_code] += 1
            per_operation[label] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as error:  # collect all, report together
                failures.append(f"{label} [{mode.value}]: {str(error)[:600]}")

        try:
            exercise()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing left to break (no parameters, no body)

    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        fixed = {name: real_ids[name] for name in names if name in real_ids}
        passes = [(mode, None) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
        passes += [(mode, fixed) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if fixed]
        for mode, ids in passes:
            fuzz(operation.label, mode, operation.as_strategy(generation_mode=mode, path_parameters=ids))
    total = sum(statuses.values())
    print(
        f"fuzz: {total} requests over {len(operations)} operations; statuses {dict(sorted(statuses.items()))}"
    )
    assert not failures, "\n\n".join(failures[:10]) + f"\n\n({len(failures)} failures)"
    assert not any(status >= 500 for status in statuses)
    assert total >= 300 and set(per_operation) == {op.label for op in operations}
