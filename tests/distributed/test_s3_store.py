"""The S3 artifact store against a real S3-compatible server (SeaweedFS started by the fixtures)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest
from boto3.s3.transfer import TransferConfig

from gni_service.settings import ServiceSettings
from gni_service.storage import StorageError
from gni_service.storage_s3 import S3ArtifactStore

from .conftest import ACCESS_KEY, REGION, SECRET_KEY, free_port

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


def _settings(endpoint_url: str, bucket: str) -> ServiceSettings:
    return ServiceSettings.from_env(
        {
            "GNI_ARTIFACT_STORE": "s3",
            "GNI_S3_ENDPOINT_URL": endpoint_url,
            "GNI_S3_REGION": REGION,
            "GNI_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "GNI_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "GNI_S3_BUCKET": bucket,
            "GNI_S3_PRESIGN_EXPIRY_S": "60",
        }
    )


@pytest.fixture
def store(s3_server, bucket_name) -> S3ArtifactStore:
    return S3ArtifactStore.from_settings(_settings(s3_server.endpoint_url, bucket_name))


def _file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_put_creates_the_bucket_and_records_size_sha256_and_content_type(store, s3_server, tmp_path):
    source = _file(tmp_path / "figure.png", 12_345)
    stored = store.put_file("experiments/exp_1/runs/run_1/art_1.png", source, "image/png")
    assert stored.size == 12_345
    assert stored.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert store.read_bytes(stored.key) == source.read_bytes()
    head = s3_server.client().head_object(Bucket=store.bucket, Key=stored.key)
    assert head["ContentType"] == "image/png"
    assert head["Metadata"]["sha256"] == stored.sha256
    assert store.metadata(stored.key) == {
        "size": 12_345,
        "content_type": "image/png",
        "sha256": stored.sha256,
    }


def test_a_presigned_download_serves_the_bytes_and_expires(store, tmp_path):
    source = _file(tmp_path / "model.safetensors", 4096)
    stored = store.put_file(
        "experiments/exp_1/runs/run_1/art_2.safetensors", source, "application/octet-stream"
    )
    download = store.download(
        stored.key, filename="model.safetensors", content_type="application/octet-stream"
    )
    assert download.path is None and download.url is not None
    response = httpx.get(download.url)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == stored.sha256
    assert 'filename="model.safetensors"' in response.headers["content-disposition"]
    assert "X-Amz-Expires=60" in download.url
    tampered = download.url.replace(stored.key, "experiments/exp_1/runs/run_1/other.safetensors")
    assert httpx.get(tampered).status_code == 403


def test_large_files_upload_in_parts(s3_server, bucket_name, tmp_path):
    settings = _settings(s3_server.endpoint_url, bucket_name)
    store = S3ArtifactStore.from_settings(settings)
    store._transfer_config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    source = _file(tmp_path / "big.pt", 11 * MiB + 17)
    stored = store.put_file("experiments/exp_1/runs/run_1/art_3.pt", source, "application/octet-stream")
    head = s3_server.client().head_object(Bucket=bucket_name, Key=stored.key)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag counts its parts
    assert stored.size == 11 * MiB + 17
    assert hashlib.sha256(store.read_bytes(stored.key)).hexdigest() == stored.sha256
    small = store.put_file(
        "experiments/exp_1/runs/run_1/art_4.pt", _file(tmp_path / "s.pt", MiB), "text/plain"
    )
    assert "-" not in s3_server.client().head_object(Bucket=bucket_name, Key=small.key)["ETag"]


def test_delete_and_refused_keys(store, tmp_path):
    stored = store.put_file(
        "experiments/exp_1/experiment/art_5.json", _file(tmp_path / "r.json", 10), "application/json"
    )
    store.delete(stored.key)
    with pytest.raises(StorageError):
        store.read_bytes(stored.key)
    with pytest.raises(StorageError, match="refusing"):
        store.put_file("../escape.json", tmp_path / "r.json", "application/json")


def test_an_unreachable_store_raises_storage_error(bucket_name):
    store = S3ArtifactStore.from_settings(_settings(f"http://127.0.0.1:{free_port()}", bucket_name))
    with pytest.raises(StorageError, match="cannot reach bucket"):
        store.check()


def test_delete_many_removes_objects_a_thousand_a_request(store, s3_server, tmp_path, monkeypatch):
    source = _file(tmp_path / "x.bin", 10)
    keys = [
        store.put_file(f"experiments/exp_1/art_{i}.bin", source, "application/octet-stream").key
        for i in range(5)
    ]
    calls: list[int] = []
    real = store.client.delete_objects

    def counted(**kwargs):
        calls.append(len(kwargs["Delete"]["Objects"]))
        return real(**kwargs)

    monkeypatch.setattr(store.client, "delete_objects", counted)
    store.delete_many([*keys[:3], "checkpoints/run_never_written.safetensors"])  # a missing key is fine
    listed = s3_server.client().list_objects_v2(Bucket=store.bucket).get("Contents", [])
    assert sorted(o["Key"] for o in listed) == sorted(keys[3:]) and calls == [4]
    with pytest.raises(StorageError, match="refusing artifact key"):
        store.delete_many(["../outside"])  # keys are checked before anything is deleted
