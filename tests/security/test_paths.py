"""Artifact downloads: ids are looked up, never joined into paths; the store refuses escaping keys."""

from __future__ import annotations

import pytest

from gni_service.artifacts import store_artifact
from gni_service.storage import LocalArtifactStore, StorageError

ATTEMPTS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "..\\..\\windows\\win.ini",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "art_x/../../gni.sqlite3",
    "....//....//etc/passwd",
    "art_%00.png",
    "art_\u2025\u2215etc",
    "~root",
    "file:%2F%2F%2Fetc%2Fpasswd",
    "a" * 5000,
]


@pytest.fixture
def stored(sqlite_url, make_app, client_of, tiny_spec, tmp_path):
    handle = make_app(sqlite_url)
    client = client_of(handle)
    experiment = client.post("/v1/experiments", json={"base": tiny_spec}).json()
    source = tmp_path / "figure.png"
    source.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "secret.txt").write_text("do not serve me")
    with handle.database.transaction() as session:
        artifact = store_artifact(
            session,
            handle.context.store,
            source,
            name="../../figures/../../secret.txt/evil.png",  # a hostile name only labels the file
            experiment_id=experiment["id"],
            run_id=None,
        )
    return client, artifact.id


@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_traversal_attempts_find_nothing(stored, error_of, attempt):
    client, _ = stored
    for path in (f"/v1/artifacts/{attempt}/content", f"/v1/artifacts/{attempt}"):
        response = client.get(path)
        assert response.status_code in (404, 422), (path, response.status_code)
        body = error_of(response, response.status_code)
        assert "do not serve me" not in response.text and "root:" not in response.text, body


def test_a_real_artifact_downloads_under_a_safe_name(stored):
    client, artifact_id = stored
    response = client.get(f"/v1/artifacts/{artifact_id}/content")
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    disposition = response.headers["content-disposition"]
    assert ".." not in disposition and "/" not in disposition.split("filename", 1)[1]


@pytest.mark.parametrize(
    "key",
    [
        "../secret.txt",
        "experiments/../../secret.txt",
        "/etc/passwd",
        "experiments//x.png",
        "experiments/x/..",
        "experiments\\..\\x",
        "experiments/x.png/../../y",
        "experiments/%2e%2e/x",
        "experiments/x\x00.png",
        "",
        "a" * 600,
    ],
)
def test_the_local_store_refuses_keys_that_leave_it(tmp_path, key):
    store = LocalArtifactStore(tmp_path / "store")
    (tmp_path / "secret.txt").write_text("secret")
    source = tmp_path / "source.bin"
    source.write_bytes(b"data")
    for operation in (
        lambda: store.put_file(key, source, "application/octet-stream"),
        lambda: store.read_bytes(key),
        lambda: store.download(key, filename="x", content_type="application/octet-stream"),
        lambda: store.delete(key),
    ):
        with pytest.raises(StorageError):
            operation()
    assert (tmp_path / "secret.txt").read_text() == "secret"
