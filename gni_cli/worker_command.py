"""``gni worker``: a Celery worker that trains queued batches (settings from the ``GNI_*`` environment).

One worker process per GPU: start one ``gni worker --concurrency 1`` per device, each with its own
``CUDA_VISIBLE_DEVICES``, e.g. on a four-GPU node::

    for gpu in 0 1 2 3; do CUDA_VISIBLE_DEVICES=$gpu gni worker --queues gpu --hostname gpu$gpu@%h & done

A CPU node serves the ``cpu`` queue with as many processes as it has cores to spare.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

QUEUES = ("gpu", "cpu")


def _queues(value: str) -> str:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"queues are a comma-separated subset of {','.join(QUEUES)}")
    return ",".join(names)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="start a Celery worker that trains queued batches",
        description="Consume batches from the broker ($GNI_BROKER_URL), train them, record results in "
        "$GNI_DATABASE_URL and artifacts in the configured store. One process per GPU "
        "(set CUDA_VISIBLE_DEVICES per worker).",
    )
    parser.add_argument(
        "--queues", type=_queues, default="gpu,cpu", help="queues to consume (default gpu,cpu)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="worker processes (default 1: one per GPU, one batch each)"
    )
    parser.add_argument("--pool", default="prefork", choices=["prefork", "solo"], help="Celery pool")
    parser.add_argument("--hostname", default=None, help="worker node name (default gni@%%h)")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["error", "warning", "info", "debug"],
        help="default $GNI_LOG_LEVEL or info",
    )
    parser.set_defaults(handler=handle_worker)


def celery_argv(args: argparse.Namespace) -> list[str]:
    """The ``celery worker`` command line for these options."""
    return [
        "worker",
        f"--queues={args.queues}",
        f"--concurrency={args.concurrency}",
        f"--pool={args.pool}",
        f"--hostname={args.hostname or 'gni@%h'}",
        f"--loglevel={args.log_level or 'info'}",
        "--prefetch-multiplier=1",
        "--without-gossip",
        "--without-mingle",
    ]


def handle_worker(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise SystemExit("error: --concurrency must be at least 1")
    from gni_service.settings import get_settings
    from worker.app import app

    settings = get_settings()  # a bad GNI_* value fails here with the variable's name
    args.log_level = args.log_level or settings.log_level.lower()
    _log_structured(settings.log_format, args.log_level.upper())
    app.worker_main(argv=celery_argv(args))
    return 0


def _log_structured(log_format: Literal["json", "text"], level: str) -> None:
    """Celery's own logging set-up is replaced by the service's structured logs."""
    from celery.signals import setup_logging

    from gni_service.structured_logging import configure_logging
    from worker.log_ids import CeleryTaskIds

    def configure(**_: Any) -> None:
        configure_logging(log_format, level, id_filters=[CeleryTaskIds()])

    setup_logging.connect(configure, weak=False)
