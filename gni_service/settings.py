"""Service settings, read from the environment once per process by :func:`get_settings`.

Every variable is optional; the defaults give the embedded mode: SQLite and local artifacts under
one data folder.

==========================  ===============================================================
``GNI_DATA_FOLDER``         folder holding the embedded database, artifacts and run work dirs
``GNI_DATABASE_URL``        SQLAlchemy URL; default ``sqlite:///<data folder>/gni.sqlite3``
``GNI_ARTIFACT_DIR``        local artifact directory; default ``<data folder>/artifacts``
``GNI_EXECUTOR``            ``inprocess`` (runs execute inside the API process) or ``celery``
``GNI_EXECUTOR_THREADS``    batches executed at once by the in-process executor
``GNI_MAX_SWEEP_RUNS``      largest sweep one request may create
``GNI_MAX_BODY_BYTES``      largest request body accepted
``GNI_BROKER_URL``          Celery broker (Redis) of the ``celery`` executor and the workers
``GNI_BROKER_KEY_PREFIX``   prefix of every broker key (isolates stacks sharing one Redis)
``GNI_ARTIFACT_STORE``      ``local`` (a directory) or ``s3`` (an S3-compatible bucket)
``GNI_S3_ENDPOINT_URL``     S3 endpoint (MinIO, SeaweedFS, …); unset: AWS
``GNI_S3_REGION``           S3 region
``GNI_S3_ACCESS_KEY_ID``    S3 credentials; unset: boto3's default chain (environment, role)
``GNI_S3_SECRET_ACCESS_KEY``
``GNI_S3_BUCKET``           bucket of the artifacts, created when missing
``GNI_ENV``                 ``development`` (default) or ``production``: production refuses
                            default credentials and running without authentication
``GNI_AUTH``                ``required`` (Bearer API keys, ``gni keys``) or ``disabled``
``GNI_LOG_FORMAT``          ``json`` (one object per line) or ``text``
``GNI_MAX_*``, ``GNI_RATE_*`` limits of one request and of one API key (see the model)
``GNI_RATE_LIMIT_REDIS_URL`` Redis shared by the API processes' rate limits (default: the broker's
                            with the ``celery`` executor; none, i.e. per process, with ``inprocess``)
==========================  ===============================================================

The remaining tuning fields (``GNI_S3_*``, ``GNI_TASK_*``) are described on the model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url

from gni_engine.errors import SpecError
from gni_engine.spec import format_validation_error

ExecutorKind = Literal["inprocess", "celery"]
ArtifactStoreKind = Literal["local", "s3"]
Environment = Literal["development", "production"]
AuthMode = Literal["required", "disabled"]

# Passwords shipped in examples and images: accepted in development only.
DEFAULT_SECRETS = frozenset(
    {"gni", "minio", "minioadmin", "changeme", "change-me", "password", "postgres", "secret", "admin"}
)

_ENV_PREFIX = "GNI_"


class ServiceSettings(BaseModel):
    """Everything the API and the executor are configured with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_folder: Path = Field(
        Path("gni-data"), description="Holds the embedded database, artifacts, work dirs."
    )
    database_url: str | None = Field(None, description="SQLAlchemy URL; None: SQLite in the data folder.")
    artifact_dir: Path | None = Field(
        None, description="Local artifact store; None: <data folder>/artifacts."
    )
    executor: ExecutorKind = Field(
        "inprocess", description="Who trains runs: inprocess (the API process) or celery (workers)."
    )
    executor_threads: int = Field(1, ge=1, le=64, description="Batches the in-process executor runs at once.")
    migrate_on_start: bool = Field(False, description="Upgrade the database schema when the API starts.")
    max_sweep_runs: int = Field(
        10_000, ge=1, le=100_000, description="Most runs one experiment may expand to (a larger one: 422)."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies are answered 413.")
    max_page_size: int = Field(500, ge=1, description="Largest limit of one page of a list.")
    api_threads: int = Field(8, ge=1, le=256, description="Threads serving blocking request work in the API.")
    progress_interval_s: float = Field(
        1.0, gt=0, description="Least time between two progress writes of a run."
    )
    metrics_flush_rows: int = Field(5_000, ge=1, description="Buffered metric rows that force a bulk insert.")
    cancel_poll_interval_s: float = Field(
        0.5, gt=0, description="How often a running batch checks for cancels."
    )
    idle_poll_interval_s: float = Field(
        2.0, gt=0, description="How often an idle executor looks for queued runs."
    )
    heartbeat_interval_s: float = Field(
        5.0, gt=0, description="How often a training batch marks its runs alive."
    )
    # Leases, retries and checkpoints (docs/reliability.md).
    lease_timeout_s: float = Field(
        60.0, gt=0, description="A running run whose heartbeat is older than this has lost its executor."
    )
    reaper_interval_s: float = Field(
        5.0, gt=0, description="How often the API process re-queues expired leases and lost messages."
    )
    max_attempts: int = Field(
        3, ge=1, le=100, description="Claims of a run before a lost lease fails it instead of re-queueing."
    )
    checkpoint_every_steps: int = Field(
        500, ge=0, description="Steps between two checkpoints of a running batch (0: never)."
    )
    checkpoint_min_interval_s: float = Field(
        30.0, ge=0, description="Least time between two checkpoints of a batch (bounds the I/O)."
    )
    idempotency_ttl_s: float = Field(
        86_400.0,
        gt=0,
        description="Stored answers of Idempotency-Keys are deleted after this long (a retry later is new).",
    )
    requeue_queued_after_s: float = Field(
        900.0, gt=0, description="A batch queued this long without being claimed is announced again."
    )
    figures_grace_s: float = Field(
        30.0,
        ge=0,
        description="The reaper draws a finished experiment's missing figures only after this long.",
    )
    figures_lease_s: float = Field(
        600.0, gt=0, description="A claim on drawing an experiment's figures expires after this long."
    )
    artifact_upload_threads: int = Field(
        8,
        ge=1,
        le=64,
        description="Artifacts a worker uploads at once while it records a batch (their round trips "
        "to the store overlap; a 1,000-run batch has ~14,000 files).",
    )
    figure_processes: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Processes that draw a trained batch's run figures, the worker's own included "
        "(unset: one per core the worker may use; with several workers on a node, share the cores).",
    )
    figures_max_attempts: int = Field(
        3, ge=1, le=100, description="Claims on an experiment's figures before they are marked failed."
    )
    infrastructure_retry_s: float = Field(
        120.0,
        ge=0,
        description="How long a batch retries recording its outcome while the database or store is down.",
    )
    # Distributed execution (executor "celery") and the S3 artifact store.
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker URL (Redis).")
    broker_key_prefix: str = Field(
        "", max_length=64, description="Prefix of every broker key; isolates stacks sharing one Redis."
    )
    task_default_priority: int = Field(5, ge=0, le=9, description="Priority of a batch task (0 first).")
    task_time_limit_floor_s: float = Field(
        600.0, gt=0, description="Least soft time limit of a batch task, whatever its estimated cost."
    )
    task_flops_per_second: float = Field(
        1e10, gt=0, description="Pessimistic training throughput that turns a batch's FLOPs into seconds."
    )
    task_time_limit_grace_s: float = Field(
        120.0, gt=0, description="Hard time limit minus soft: time to record the outcome."
    )
    task_max_retries: int = Field(
        5, ge=0, le=100, description="Retries of a task after infrastructure errors."
    )
    task_auto_device_queue: Literal["gpu", "cpu"] = Field(
        "gpu", description='Queue of the batches whose execution.device is "auto".'
    )
    artifact_store: ArtifactStoreKind = Field(
        "local", description="Where artifacts live: local (artifact_dir) or s3 (an S3-compatible bucket)."
    )
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint; None: AWS.")
    s3_public_endpoint_url: str | None = Field(
        None, description="Endpoint clients reach for presigned downloads; None: s3_endpoint_url."
    )
    s3_region: str = Field("us-east-1", description="Region of the bucket (signing).")
    s3_access_key_id: str | None = Field(None, description="S3 access key; None: boto3's own lookup.")
    s3_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret key (never logged); None: boto3's own lookup."
    )
    s3_bucket: str = Field(
        "gni-artifacts", min_length=3, max_length=63, description="Bucket of the artifacts."
    )
    s3_presign_expiry_s: int = Field(300, ge=1, le=604_800, description="Lifetime of a download URL.")
    s3_multipart_threshold_bytes: int = Field(
        64 * 1024 * 1024, ge=5 * 1024 * 1024, description="Files above this upload in parts."
    )
    s3_multipart_chunk_bytes: int = Field(
        64 * 1024 * 1024, ge=5 * 1024 * 1024, description="Size of one part of a multipart upload."
    )
    # Security and operations.
    env: Environment = Field(
        "development", description="production refuses default credentials and disabled authentication."
    )
    auth: AuthMode = Field("disabled", description="required: every /v1 request carries a Bearer API key.")
    log_format: Literal["json", "text"] = Field("json", description="json: one object per line.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Least level logged (any case)."
    )
    max_run_steps: int = Field(1_000_000, ge=1, description="Most training steps of one run.")
    max_model_parameters: int = Field(
        50_000_000, ge=1, description="Most parameters of one run's network (weights and biases)."
    )
    max_data_points: int = Field(1_000_000, ge=1, description="Most data points (n_points, subset) of a run.")
    max_active_runs_per_key: int = Field(
        20_000, ge=1, description="Most queued and running runs one API key may have at once."
    )
    rate_limit_per_s: float = Field(
        50.0, ge=0, description="Requests per second per API key (token bucket refill); 0: no limit."
    )
    rate_limit_burst: int = Field(200, ge=1, description="Requests one API key may make at once.")
    rate_limit_redis_url: str | None = Field(
        None,
        description=(
            "Redis holding the request-rate budgets that every API process shares; None: the broker's "
            "Redis with the celery executor, a budget per process with the in-process one."
        ),
    )
    rate_limit_redis_timeout_s: float = Field(
        0.05, gt=0, le=5, description="Longest wait on the rate limit's Redis before letting a request pass."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        # GNI_LOG_LEVEL=debug as well as DEBUG (the command lines' --log-level is lower case).
        return value.upper() if isinstance(value, str) else value

    @field_validator("figure_processes", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # Compose passes an unset variable through as "" (``${GNI_FIGURE_PROCESSES:-}``).
        return None if value == "" else value

    @model_validator(mode="after")
    def _safe_outside_development(self) -> ServiceSettings:
        if self.env == "development":
            return self
        if self.auth != "required":
            raise ValueError(f"auth: GNI_ENV={self.env} needs GNI_AUTH=required")
        for name, secret in self.secrets().items():
            if secret is not None and secret.lower() in DEFAULT_SECRETS:
                raise ValueError(
                    f"{name}: a default credential is refused outside development; set a secret of your own"
                )
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The repr hides the passwords of its URLs (the S3 secret is a SecretStr already)."""
        for name, value in super().__repr_args__():
            yield name, _without_password(value) if name in _URL_FIELDS else value

    def secrets(self) -> dict[str, str | None]:
        """Every secret of the settings by field name (for checks only: never log these)."""
        return {
            "database_url": _password_of(self.database_url),
            "broker_url": _password_of(self.broker_url),
            "rate_limit_redis_url": _password_of(self.rate_limit_redis_url),
            "s3_secret_access_key": (
                self.s3_secret_access_key.get_secret_value() if self.s3_secret_access_key else None
            ),
        }

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_folder / 'gni.sqlite3').resolve()}"

    @property
    def resolved_rate_limit_redis_url(self) -> str | None:
        """Where the API processes share their request-rate budgets; None: each process has its own."""
        if self.rate_limit_redis_url:
            return self.rate_limit_redis_url
        if self.executor == "celery" and self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            return self.broker_url
        return None

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_folder / "artifacts").resolve()

    @property
    def work_dir(self) -> Path:
        """Where runs write their files before the artifact store takes them."""
        return (self.data_folder / "work").resolve()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """Settings from ``GNI_*`` variables; a bad value raises :class:`SpecError` naming the variable."""
        env = os.environ if environ is None else environ
        values = {
            name: env[_ENV_PREFIX + name.upper()]
            for name in cls.model_fields
            if _ENV_PREFIX + name.upper() in env
        }
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            details = [_env_detail(d) for d in format_validation_error(error)]
            lines = "; ".join(f"{d['loc']}: {d['msg']}" for d in details)
            raise SpecError(f"invalid service settings: {lines}", details=details) from None


def _env_detail(detail: dict[str, str]) -> dict[str, str]:
    """A field's error named by its variable; a cross-field check names its field as "field: …"."""
    loc, msg = detail["loc"], detail["msg"]
    head, _, rest = msg.partition(": ")
    if loc == "(root)" and head in ServiceSettings.model_fields:
        loc, msg = head, rest
    return {"loc": _ENV_PREFIX + loc.upper(), "msg": msg}


_URL_FIELDS = frozenset({"database_url", "broker_url", "rate_limit_redis_url"})


def _without_password(url: Any) -> Any:
    if not isinstance(url, str) or _password_of(url) is None:
        return url
    return make_url(url).render_as_string(hide_password=True)


def _password_of(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return make_url(url).password
    except Exception:  # not a URL SQLAlchemy reads: its own field validation reports it
        return None


@lru_cache(maxsize=1)
def get_settings() -> ServiceSettings:
    """The process's settings, read from the environment on first use (never at import time)."""
    return ServiceSettings.from_env()
