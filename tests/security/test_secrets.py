"""No secret in logs or error bodies; default credentials refused outside development."""

from __future__ import annotations

import logging

import pytest

from gni_engine.errors import SpecError
from gni_service.settings import ServiceSettings

STRONG = "wS9-long-random-secret"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GNI_DATABASE_URL", "postgresql+psycopg://gni:gni@db:5432/gni"),
        ("GNI_DATABASE_URL", "postgresql+psycopg://gni:changeme@db:5432/gni"),
        ("GNI_BROKER_URL", "redis://:password@redis:6379/0"),
        ("GNI_S3_SECRET_ACCESS_KEY", "minioadmin"),
        ("GNI_S3_SECRET_ACCESS_KEY", "MINIO"),
    ],
)
def test_default_credentials_are_refused_in_production(variable, value):
    env = {"GNI_ENV": "production", "GNI_AUTH": "required", variable: value}
    with pytest.raises(SpecError) as raised:
        ServiceSettings.from_env(env)
    field = variable.removeprefix("GNI_")
    assert f"GNI_{field}" in raised.value.message and "default credential" in raised.value.message
    assert value not in raised.value.message  # the message names the setting, never the secret
    ServiceSettings.from_env({**env, "GNI_ENV": "development"})  # development accepts them


def test_production_needs_authentication_and_accepts_real_secrets():
    secure = {
        "GNI_ENV": "production",
        "GNI_DATABASE_URL": f"postgresql+psycopg://gni:{STRONG}@db:5432/gni",
        "GNI_S3_SECRET_ACCESS_KEY": STRONG,
    }
    with pytest.raises(SpecError, match="GNI_AUTH"):
        ServiceSettings.from_env(secure)
    settings = ServiceSettings.from_env({**secure, "GNI_AUTH": "required"})
    assert STRONG not in repr(settings.s3_secret_access_key)


def test_keys_and_passwords_never_reach_logs_or_bodies(sqlite_url, make_app, client_of, caplog, tiny_spec):
    caplog.set_level(logging.DEBUG)
    handle = make_app(sqlite_url, auth="required", s3_secret_access_key=STRONG)
    client = client_of(handle)
    key = handle.new_key()
    good = {"Authorization": f"Bearer {key}"}
    texts = [
        client.post("/v1/experiments", json={"base": tiny_spec}, headers=good).text,
        client.get("/v1/experiments", headers=good).text,
        client.get("/v1/experiments", headers={"Authorization": f"Bearer {key}x"}).text,
        client.get("/v1/experiments", headers={"Authorization": f"Bearer {key[:-3]}"}).text,
        client.get("/v1/experiments", headers={"Authorization": f"Basic {key}"}).text,
        client.get("/readyz").text,
        client.get("/metrics").text,
        client.get("/openapi.json").text,
    ]
    secret_part = key.split("_", 2)[2]
    for text in [*texts, caplog.text]:
        assert secret_part not in text and secret_part[:-3] not in text
        assert STRONG not in text


def test_the_settings_repr_hides_every_password():
    settings = ServiceSettings(
        database_url=f"postgresql+psycopg://gni:{STRONG}@db:5432/gni",
        broker_url=f"redis://:{STRONG}@redis:6379/0",
        rate_limit_redis_url=f"redis://user:{STRONG}@redis:6379/1",
        s3_secret_access_key=STRONG,
    )
    for text in (repr(settings), str(settings), f"{settings!r}"):
        assert STRONG not in text
        assert "postgresql+psycopg://gni:***@db:5432/gni" in text and "redis://:***@redis:6379/0" in text
    assert settings.database_url is not None and STRONG in settings.database_url  # the value itself is whole


def test_a_postgresql_server_that_never_answers_a_connection_times_out(monkeypatch: pytest.MonkeyPatch):
    import socket
    import time

    from sqlalchemy.exc import OperationalError

    import gni_service.db as db

    silent = socket.socket()  # accepts (the kernel's backlog) and never answers the start-up packet
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    monkeypatch.setattr(db, "POSTGRES_CONNECT_TIMEOUT_S", 2)  # libpq's least
    engine = db.create_db_engine(f"postgresql+psycopg://gni@127.0.0.1:{silent.getsockname()[1]}/gni")
    started = time.monotonic()
    with pytest.raises(OperationalError, match="timeout"):
        engine.connect()
    assert time.monotonic() - started < 10
    engine.dispose()
    silent.close()


def test_debug_logging_is_the_services_own_not_the_http_libraries(monkeypatch: pytest.MonkeyPatch):
    import io

    from gni_service.structured_logging import QUIET_LIBRARIES, configure_logging

    root = logging.getLogger()
    before = (root.level, {name: logging.getLogger(name).level for name in QUIET_LIBRARIES})
    stream = io.StringIO()
    handler = configure_logging("json", "DEBUG", stream)
    try:
        logging.getLogger("gni_service.test").debug("own debug line")
        logging.getLogger("botocore.endpoint").debug("Authorization: AWS4-HMAC-SHA256 Credential=AKIA...")
        logging.getLogger("urllib3.connectionpool").debug("Starting new HTTPS connection")
        logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
        written = stream.getvalue()
        assert "own debug line" in written and "Found credentials" in written
        assert "AWS4-HMAC" not in written and "Starting new HTTPS" not in written
        configure_logging("json", "WARNING", stream)
        assert logging.getLogger("botocore").level == logging.WARNING  # never louder than asked
    finally:
        root.removeHandler(handler)
        for installed in list(root.handlers):
            if installed is not handler and getattr(installed, "stream", None) is stream:
                root.removeHandler(installed)
        root.setLevel(before[0])
        for name, level in before[1].items():
            logging.getLogger(name).setLevel(level)
