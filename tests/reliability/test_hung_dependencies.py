"""A dependency that accepts connections and never answers: errors within seconds, nothing wedged."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

import gni_service.executor.celery_executor as celery_executor
from gni_service.db import Database
from gni_service.executor.celery_executor import BatchMessage, BrokerUnavailable, CeleryExecutor
from gni_service.migrate import upgrade_database
from gni_service.readiness import ReadinessProbe
from gni_service.settings import ServiceSettings


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never sends a byte (a hung Redis)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for connection in held:
        connection.close()
    server.close()


@pytest.fixture
def hung_executor(silent_server: int, tmp_path) -> Iterator[CeleryExecutor]:
    settings = ServiceSettings(
        executor="celery", broker_url=f"redis://127.0.0.1:{silent_server}/0", data_folder=tmp_path
    )
    url = f"sqlite:///{tmp_path / 'hung.sqlite3'}"
    upgrade_database(url)
    database = Database(url)
    executor = CeleryExecutor(database, settings)
    yield executor
    database.dispose()


def test_a_hung_broker_is_unavailable_within_seconds_not_forever(hung_executor: CeleryExecutor):
    result: list[BaseException | None] = []

    def check() -> None:
        try:
            hung_executor.check()
            result.append(None)
        except BaseException as error:
            result.append(error)

    thread = threading.Thread(target=check, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the broker check still blocks after 30 s"
    assert isinstance(result[0], BrokerUnavailable) and time.monotonic() - started < 15


def test_announcing_stops_at_the_first_batch_the_broker_does_not_take(
    hung_executor: CeleryExecutor, monkeypatch: pytest.MonkeyPatch
):
    messages = [BatchMessage(f"exp_x/b{i}", "cpu", 5, 600.0, 720.0) for i in range(3)]
    monkeypatch.setattr(celery_executor, "plan_messages", lambda specs, settings: messages)
    sent: list[str] = []

    def refused(message: BatchMessage) -> bool:
        sent.append(message.batch_key)
        return False

    monkeypatch.setattr(hung_executor, "send", refused)
    hung_executor.enqueue(["exp_x/b0", "exp_x/b1", "exp_x/b2"])
    assert sent == ["exp_x/b0"]  # the other two wait for the reaper, not 3 × the timeout


def test_a_probe_answers_by_its_deadline_and_a_hung_check_holds_one_thread():
    release = threading.Event()
    calls: list[str] = []

    def hung() -> None:
        calls.append("hung")
        release.wait(30)

    probe = ReadinessProbe({"database": lambda: None, "storage": hung}, deadline_s=0.3)
    for _ in range(5):  # an orchestrator probing every few seconds
        started = time.monotonic()
        assert probe.probe() == {"database": "ok", "storage": "unavailable: no answer within 0.3 s"}
        assert time.monotonic() - started < 1.5
    assert calls == ["hung"] and probe.threads_in_flight() == 1  # one attempt, waited on by all
    release.set()
    deadline = time.monotonic() + 5
    while probe.threads_in_flight() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert probe.probe() == {"database": "ok", "storage": "ok"}  # answers again: a new attempt
    assert calls == ["hung", "hung"]
