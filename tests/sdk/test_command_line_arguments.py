"""Command-line arguments checked where they are read: a clear error (exit 2), never a traceback later."""

from __future__ import annotations

import pytest
from gni_client.cli import attach_dash_values
from gni_client.cli import main as client_main

from gni_cli.main import main as gni
from gni_cli.run_command import _Progress


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "99999"], "expected a port in 0-65535, got 99999"),
        (["serve", "--port", "-1"], "expected a port in 0-65535, got -1"),
        (["serve", "--threads", "0"], "expected at least 1, got 0"),
        (["status", "--timeout", "0"], "expected seconds > 0, got 0"),
        (["status", "--timeout", "-1"], "expected seconds > 0, got -1"),
        (["submit", "spec.yaml", "--wait", "--wait-timeout", "-1"], "expected seconds > 0, got -1"),
        (["status", "--timeout", "soon"], "expected a number of seconds, got 'soon'"),
    ],
)
def test_bad_numbers_are_refused_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        gni(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_base_url_is_named_not_retried(capsys):
    assert client_main(["status", "--base-url", "localhost:8766"]) == 2
    err = capsys.readouterr().err
    assert "base URL 'localhost:8766'" in err and "expected http://HOST:PORT" in err


def test_a_sort_value_may_start_with_a_dash():
    assert attach_dash_values(["runs", "exp_1", "--sort", "-summary.test_loss"]) == [
        "runs",
        "exp_1",
        "--sort=-summary.test_loss",
    ]
    assert attach_dash_values(["runs", "exp_1", "--sort", "seed", "--json"]) == [
        "runs",
        "exp_1",
        "--sort",
        "seed",
        "--json",
    ]


def test_no_progress_bar_where_stderr_is_not_a_terminal(capsys):
    # pytest's captured stderr is not a terminal: a log file gets no carriage-return bars.
    assert _Progress(100, quiet=False).bar is None
