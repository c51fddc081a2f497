"""``gni serve``: the whole service in one process (API, executor, SQLite, local artifacts).

Everything lives under one data folder (database, artifacts, run work folders), the schema is
migrated at start-up, and a restart picks up where the last process stopped: runs it left
``running`` are queued again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gni_cli.run_command import positive_int

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gni_service.settings import ServiceSettings

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
LOOPBACK_NAMES = LOOPBACK_HOSTS | {"[::1]"}  # as a Host header may write them


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="start the REST service with an embedded executor (no other service needed)",
        description="Start the REST API on HOST:PORT with SQLite and local artifacts under the data folder; "
        "runs train inside the server process. Browse http://HOST:PORT/docs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--data-folder",
        type=Path,
        default=None,
        help="holds the database, artifacts and work folders (default $GNI_DATA_FOLDER or ./gni-data)",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="batches trained at once (default 1)"
    )
    parser.add_argument(
        "--executor",
        choices=["inprocess", "celery"],
        default=None,
        help="inprocess: train inside this process; celery: enqueue to workers via $GNI_BROKER_URL "
        "(default $GNI_EXECUTOR or inprocess)",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["error", "warning", "info", "debug"],
        help="default $GNI_LOG_LEVEL or info",
    )
    parser.set_defaults(handler=handle_serve)


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0-65535, got {value}")
    return value


def embedded_app(settings: ServiceSettings) -> FastAPI:
    """The app ``gni serve`` runs. Without authentication it listens on loopback only, and answers
    only requests addressed to a loopback name: a web page whose domain is re-pointed to 127.0.0.1
    (DNS rebinding) sends its own Host header and is refused, so it cannot drive the API."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from api.app import create_app

    app = create_app(settings)
    if settings.auth == "disabled":
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=sorted(LOOPBACK_NAMES))
    return app


def handle_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import UVICORN_OPTIONS
    from gni_service.settings import ServiceSettings

    overrides: dict[str, str] = {"GNI_MIGRATE_ON_START": "true"}
    if args.data_folder is not None:
        overrides["GNI_DATA_FOLDER"] = str(args.data_folder)
    if args.threads is not None:
        overrides["GNI_EXECUTOR_THREADS"] = str(args.threads)
    if args.executor is not None:
        overrides["GNI_EXECUTOR"] = args.executor
    if args.log_level is not None:
        overrides["GNI_LOG_LEVEL"] = args.log_level
    settings = ServiceSettings.from_env({**os.environ, **overrides})
    database = settings.resolved_database_url
    auth = "API keys required" if settings.auth == "required" else "NO AUTHENTICATION (GNI_AUTH=disabled)"
    sys.stderr.write(
        f"gni serve: data folder {settings.data_folder.resolve()}, database {database.split('://')[0]}, "
        f"executor {settings.executor}; {auth}\n"
    )
    if settings.auth == "disabled" and args.host not in LOOPBACK_HOSTS:
        sys.stderr.write(
            f"gni serve: refusing to listen on {args.host} without authentication: anyone reaching it could "
            "read and cancel every experiment. Set GNI_AUTH=required (keys from `gni keys create`) or "
            "bind to 127.0.0.1\n"
        )
        return 2
    uvicorn.run(
        embedded_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=30,
        **UVICORN_OPTIONS,
    )
    return 0
