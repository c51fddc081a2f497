"""The artifact store on an S3-compatible object store (AWS S3, MinIO, SeaweedFS), through boto3.

Uploads go through boto3's transfer manager, which switches to a multipart upload above
``s3_multipart_threshold_bytes``; each object carries its SHA-256 in its metadata and its content
type, and is checked by size after the upload. Downloads never pass through the API: the store
hands out a presigned ``GET`` URL valid for ``s3_presign_expiry_s`` seconds and the API redirects
to it. The bucket is created on first use when it does not exist.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from gni_service.settings import ServiceSettings
from gni_service.storage import Download, StorageError, StoredObject, check_key, file_digest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SHA256_METADATA = "sha256"
_S3_ERRORS = (BotoCoreError, ClientError)


def s3_client(settings: ServiceSettings, *, endpoint_url: str | None = None) -> S3Client:
    """A client with path-style addressing (what MinIO and SeaweedFS expect) and bounded retries."""
    secret = settings.s3_secret_access_key
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            # One connection per concurrent upload (and a few for the API's own calls).
            max_pool_connections=max(10, settings.artifact_upload_threads + 4),
        ),
    )
    return client


class S3ArtifactStore:
    """Artifacts as objects of one bucket; keys are the service's id-made keys."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        presign_client: S3Client | None = None,
        presign_expiry_s: int = 300,
        transfer_config: TransferConfig | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self._presign_client = presign_client or client
        self._presign_expiry_s = presign_expiry_s
        self._transfer_config = transfer_config or TransferConfig()
        self._bucket_ready = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> S3ArtifactStore:
        public = settings.s3_public_endpoint_url
        return cls(
            s3_client(settings),
            settings.s3_bucket,
            presign_client=s3_client(settings, endpoint_url=public) if public else None,
            presign_expiry_s=settings.s3_presign_expiry_s,
            transfer_config=TransferConfig(
                multipart_threshold=settings.s3_multipart_threshold_bytes,
                multipart_chunksize=settings.s3_multipart_chunk_bytes,
            ),
        )

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (once per store; concurrent creators are fine)."""
        if self._bucket_ready:
            return
        with self._lock:
            if self._bucket_ready:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as error:
                if _error_code(error) not in ("404", "NoSuchBucket", "NotFound"):
                    raise _storage_error(f"cannot reach bucket {self.bucket}", error) from error
                self._create_bucket()
            except BotoCoreError as error:
                raise _storage_error(f"cannot reach bucket {self.bucket}", error) from error
            self._bucket_ready = True

    def _create_bucket(self) -> None:
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as error:
            if _error_code(error) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise _storage_error(f"cannot create bucket {self.bucket}", error) from error
        except BotoCoreError as error:
            raise _storage_error(f"cannot create bucket {self.bucket}", error) from error

    def put_file(self, key: str, source: Path, content_type: str) -> StoredObject:
        check_key(key)
        self.ensure_bucket()
        size, sha256 = file_digest(source)
        try:
            self.client.upload_file(
                str(source),
                self.bucket,
                key,
                ExtraArgs={"ContentType": content_type, "Metadata": {SHA256_METADATA: sha256}},
                Config=self._transfer_config,
            )
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except _S3_ERRORS as error:
            raise _storage_error(f"cannot store artifact {key}", error) from error
        if head["ContentLength"] != size:
            raise StorageError(f"artifact {key} was stored with {head['ContentLength']} bytes, not {size}")
        return StoredObject(key, size, sha256)

    def download(self, key: str, *, filename: str, content_type: str) -> Download:
        check_key(key)
        try:
            url = self._presign_client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": f'attachment; filename="{_quoted(filename)}"',
                },
                ExpiresIn=self._presign_expiry_s,
            )
        except _S3_ERRORS as error:
            raise _storage_error(f"cannot sign a download of {key}", error) from error
        return Download(url=url)

    def read_bytes(self, key: str) -> bytes:
        check_key(key)
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except _S3_ERRORS as error:
            raise _storage_error(f"cannot read artifact {key}", error) from error
        return body

    def metadata(self, key: str) -> dict[str, Any]:
        """Size, content type and recorded SHA-256 of a stored object."""
        check_key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except _S3_ERRORS as error:
            raise _storage_error(f"cannot inspect artifact {key}", error) from error
        return {
            "size": head["ContentLength"],
            "content_type": head.get("ContentType"),
            "sha256": head.get("Metadata", {}).get(SHA256_METADATA),
        }

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except _S3_ERRORS as error:
            raise _storage_error(f"cannot delete artifact {key}", error) from error

    def delete_many(self, keys: Sequence[str]) -> None:
        """DeleteObjects, 1,000 keys a call (S3's most): a sweep's objects in a few hundred requests."""
        for key in keys:
            check_key(key)
        for start in range(0, len(keys), 1000):
            chunk: list[Any] = [{"Key": key} for key in keys[start : start + 1000]]
            try:
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True}
                )
            except _S3_ERRORS as error:
                raise _storage_error(f"cannot delete {len(chunk)} artifacts", error) from error
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"cannot delete {len(errors)} of {len(chunk)} artifacts, e.g. {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )

    def check(self) -> None:
        self._bucket_ready = False
        self.ensure_bucket()


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _storage_error(what: str, error: Exception) -> StorageError:
    reason = _error_code(error) if isinstance(error, ClientError) else type(error).__name__
    return StorageError(f"{what}: {reason or error}")


def _quoted(filename: str) -> str:
    """A filename safe inside a quoted Content-Disposition parameter."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)
