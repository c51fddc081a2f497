"""Idempotency-Key on every POST: the same request gets the first answer, another request a 409."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gni_service.models import Experiment, IdempotencyRecord


def _count_experiments(handle) -> int:
    with handle.database.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Experiment)) or 0)


def test_a_retried_create_replays_the_first_answer_and_creates_nothing(
    db_url, make_app, client_of, error_of, tiny_spec
):
    handle = make_app(db_url, auth="required")
    client = client_of(handle)
    headers = {"Authorization": f"Bearer {handle.new_key()}", "Idempotency-Key": "create-1"}
    first = client.post(
        "/v1/experiments", json={"base": tiny_spec, "axes": {"seed": [0, 1]}}, headers=headers
    )
    assert first.status_code == 202, first.text
    # The same body, spelled differently (key order, spacing), is the same request.
    again = client.post(
        "/v1/experiments",
        content=b'{"axes": {"seed": [0, 1]},   "base": '
        + first.request.content.split(b'"base":', 1)[1][:-1]
        + b"}",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _count_experiments(handle) == 1
    assert len(handle.executor.enqueued) == 1  # enqueued once, not per retry
    changed = client.post(
        "/v1/experiments", json={"base": tiny_spec, "axes": {"seed": [0, 2]}}, headers=headers
    )
    error = error_of(changed, 409, "idempotency_conflict")
    assert error["details"] == {"idempotency_key": "create-1"}
    assert _count_experiments(handle) == 1
    # Without a key, two posts are two experiments.
    plain = {"Authorization": headers["Authorization"]}
    for _ in range(2):
        assert client.post("/v1/experiments", json={"base": tiny_spec}, headers=plain).status_code == 202
    assert _count_experiments(handle) == 3


def test_keys_are_per_owner_and_cover_cancel(db_url, make_app, client_of, error_of, tiny_spec):
    handle = make_app(db_url, auth="required")
    client = client_of(handle)
    alice = {"Authorization": f"Bearer {handle.new_key('alice')}", "Idempotency-Key": "same"}
    bob = {"Authorization": f"Bearer {handle.new_key('bob')}", "Idempotency-Key": "same"}
    a = client.post("/v1/experiments", json={"base": tiny_spec}, headers=alice).json()
    b = client.post("/v1/experiments", json={"base": tiny_spec}, headers=bob).json()
    assert a["id"] != b["id"]  # one owner's key never answers for another
    cancel = {**alice, "Idempotency-Key": "cancel-1"}
    first = client.post(f"/v1/experiments/{a['id']}/cancel", headers=cancel)
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    replay = client.post(f"/v1/experiments/{a['id']}/cancel", headers=cancel)
    assert replay.json() == first.json() and replay.headers["Idempotent-Replayed"] == "true"
    # Bob's experiment is not found by alice, key or no key; her used key conflicts before anything.
    error_of(
        client.post(f"/v1/experiments/{b['id']}/cancel", headers={**cancel, "Idempotency-Key": "n"}), 404
    )
    error_of(client.post(f"/v1/experiments/{b['id']}/cancel", headers=cancel), 409, "idempotency_conflict")
    run_id = client.get(f"/v1/experiments/{a['id']}/runs", headers=alice).json()["items"][0]["id"]
    error_of(client.post(f"/v1/runs/{run_id}/cancel", headers=cancel), 409, "idempotency_conflict")
    with handle.database.transaction() as session:
        owners = sorted(r.owner for r in session.scalars(select(IdempotencyRecord)))
    assert len(owners) == 3 and len(set(owners)) == 2  # the 404 stored nothing


def test_bad_keys_are_422(sqlite_url, make_app, client_of, error_of, tiny_spec):
    client = client_of(make_app(sqlite_url))
    for key in ["", "x" * 201, "has space", "tab\tinside"]:
        response = client.post("/v1/experiments", json={"base": tiny_spec}, headers={"Idempotency-Key": key})
        error = error_of(response, 422, "spec_error")
        assert "idempotency-key" in error["message"].lower()


def test_concurrent_twins_create_one_experiment(db_url, make_app, error_of, tiny_spec):
    handle = make_app(db_url)
    body = {"base": tiny_spec, "axes": {"seed": list(range(20))}}
    answers: list[tuple[int, dict]] = []
    barrier = threading.Barrier(6)

    def submit() -> None:
        client = TestClient(handle.app)  # no lifespan: the app's context is already there
        barrier.wait()
        response = client.post("/v1/experiments", json=body, headers={"Idempotency-Key": "twins"})
        answers.append((response.status_code, response.json()))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for status, _ in answers} == {202}, answers
    assert len({body["id"] for _, body in answers}) == 1
    assert _count_experiments(handle) == 1
