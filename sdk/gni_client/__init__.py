"""Python client of the gni service: batch experiments on Gaussian noise injections.

>>> import gni_client
>>> issubclass(gni_client.NotFoundError, gni_client.APIStatusError)
True

Typical use (a server must be running; ``gni serve`` starts one)::

    from gni_client import Client

    client = Client()  # GNI_BASE_URL, GNI_API_KEY
    experiment = client.experiments.create(preset="spectral-bias", overrides={"steps": 200, "seeds": 2})
    experiment = client.experiments.wait(experiment.id)
    table = client.experiments.aggregate(experiment.id, group_by="training.mode", metric="summary.train_loss")
    print(table.to_pandas())

The exceptions are documented together in :mod:`gni_client._exceptions`; specs can be built and
checked offline with :mod:`gni_client.spec`. The package needs httpx only (no torch).
"""

from gni_client._base_client import DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, NOT_GIVEN
from gni_client._client import AsyncClient, Client
from gni_client._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    DownloadIntegrityError,
    GNIClientError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SpecValidationError,
    UnprocessableEntityError,
    WaitTimeoutError,
)
from gni_client._version import __version__
from gni_client.pagination import AsyncCursorPage, AsyncPaginator, SyncCursorPage
from gni_client.spec import run_spec, sweep, validate_run_spec, validate_sweep, with_values
from gni_client.types import (
    Aggregate,
    AggregateGroup,
    Artifact,
    Experiment,
    ExperimentDeleted,
    ExperimentPlan,
    MetricSeries,
    MetricStats,
    Run,
    RunMetrics,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "NOT_GIVEN",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "Aggregate",
    "AggregateGroup",
    "Artifact",
    "AsyncClient",
    "AsyncCursorPage",
    "AsyncPaginator",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "DownloadIntegrityError",
    "Experiment",
    "ExperimentDeleted",
    "ExperimentPlan",
    "GNIClientError",
    "InternalServerError",
    "MetricSeries",
    "MetricStats",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "Run",
    "RunMetrics",
    "SpecValidationError",
    "SyncCursorPage",
    "UnprocessableEntityError",
    "WaitTimeoutError",
    "__version__",
    "run_spec",
    "sweep",
    "validate_run_spec",
    "validate_sweep",
    "with_values",
]
