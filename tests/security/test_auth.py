"""API keys: 401 without a good key, 404 across owners, keys stored hashed, the admin CLI."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import select, text

from gni_cli.main import main as gni
from gni_service.auth import hash_key, revoke_api_key
from gni_service.models import ApiKey, Experiment


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-key",
        "Bearer gni_0123456789ab_" + "x" * 43,  # well formed, unknown
        "Bearer gni_../../etc/passwd_" + "x" * 43,
        "Bearer " + "é" * 50,
    ],
)
def test_missing_malformed_or_unknown_keys_are_401(sqlite_url, make_app, client_of, error_of, header):
    handle = make_app(sqlite_url, auth="required")
    client = client_of(handle)
    headers = {"Authorization": header.encode()} if header is not None else {}
    for method, path in [("GET", "/v1/experiments"), ("GET", "/v1/runs/run_x"), ("POST", "/v1/experiments")]:
        response = client.request(method, path, headers=headers, json={})
        error_of(response, 401, "unauthenticated")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # Health, readiness and metrics stay open (probes carry no key).
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_a_revoked_key_is_refused_and_the_database_keeps_only_hashes(
    sqlite_url, make_app, client_of, error_of
):
    handle = make_app(sqlite_url, auth="required")
    client = client_of(handle)
    key = handle.new_key("alice")
    assert client.get("/v1/experiments", headers=auth(key)).status_code == 200
    with handle.database.transaction() as session:
        [record] = session.scalars(select(ApiKey)).all()
        assert record.secret_hash == hash_key(key)
        stored = " ".join(str(v) for v in session.execute(text("SELECT * FROM api_keys")).one())
        # The key reads gni_<id>_<secret>; the secret itself may hold "_" (URL-safe base64).
        secret = key.split("_", 2)[2]
        assert len(secret) >= 40
        assert key not in stored and secret not in stored
        revoke_api_key(session, record.id)
    error = error_of(client.get("/v1/experiments", headers=auth(key)), 401, "unauthenticated")
    assert "revoked" in error["message"]
    # A key one character off is as unknown as any other.
    error_of(client.get("/v1/experiments", headers=auth(key[:-1] + ("A" if key[-1] != "A" else "B"))), 401)


def test_each_key_sees_only_its_own_experiments(db_url, make_app, client_of, error_of, tiny_spec):
    handle = make_app(db_url, auth="required")
    client = client_of(handle)
    alice, bob = handle.new_key("alice"), handle.new_key("bob")
    created = client.post("/v1/experiments", json={"base": tiny_spec}, headers=auth(alice))
    assert created.status_code == 202, created.text
    experiment = created.json()
    assert experiment["owner"] == alice.split("_")[1]
    run_id = client.get(f"/v1/experiments/{experiment['id']}/runs", headers=auth(alice)).json()["items"][0][
        "id"
    ]
    exp = experiment["id"]
    others = [
        ("GET", f"/v1/experiments/{exp}"),
        ("GET", f"/v1/experiments/{exp}/runs"),
        ("GET", f"/v1/experiments/{exp}/aggregate?metric=summary.test_loss"),
        ("GET", f"/v1/experiments/{exp}/artifacts"),
        ("POST", f"/v1/experiments/{exp}/cancel"),
        ("GET", f"/v1/runs/{run_id}"),
        ("GET", f"/v1/runs/{run_id}/metrics"),
        ("GET", f"/v1/runs/{run_id}/artifacts"),
        ("POST", f"/v1/runs/{run_id}/cancel"),
    ]
    for method, path in others:
        error_of(client.request(method, path, headers=auth(bob)), 404, "not_found")
        assert client.request(method, path, headers=auth(alice)).status_code == 200, path
    assert client.get("/v1/experiments", headers=auth(bob)).json()["items"] == []
    assert [e["id"] for e in client.get("/v1/experiments", headers=auth(alice)).json()["items"]] == [exp]


def test_the_admin_cli_creates_lists_and_revokes_keys(tmp_path, monkeypatch, capsys, make_app, client_of):
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    monkeypatch.setenv("GNI_DATABASE_URL", url)
    monkeypatch.setenv("GNI_DATA_FOLDER", str(tmp_path / "data"))
    # A database without the schema yet: a message that says what to do, not a traceback.
    assert gni(["keys", "create", "--name", "too early"]) == 2
    assert "has no gni schema yet" in capsys.readouterr().err
    assert gni(["keys", "--migrate", "create", "--name", "ci robot", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith(f"gni_{created['id']}_")
    assert gni(["keys", "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == created["id"] and listed["revoked_at"] is None
    assert created["key"] not in json.dumps(listed)
    client = client_of(make_app(url, auth="required"))
    assert client.get("/v1/experiments", headers=auth(created["key"])).status_code == 200
    assert gni(["keys", "revoke", created["id"]]) == 0
    assert "revoked" in capsys.readouterr().out
    assert client.get("/v1/experiments", headers=auth(created["key"])).status_code == 401
    assert gni(["keys", "revoke", "ffffffffffff"]) == 2  # unknown id: an error, not a traceback


def test_without_auth_the_app_warns_at_start_up(sqlite_url, make_app, client_of, caplog, tiny_spec):
    with caplog.at_level(logging.WARNING, logger="api"):
        client = client_of(make_app(sqlite_url, auth="disabled"))
    assert any("authentication is DISABLED" in r.getMessage() for r in caplog.records)
    response = client.post("/v1/experiments", json={"base": tiny_spec})
    assert response.status_code == 202 and response.json()["owner"] is None
    with make_app(sqlite_url).database.transaction() as session:
        assert session.scalars(select(Experiment.owner)).all() == [None]
