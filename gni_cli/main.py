"""Entry point of the ``gni`` command.

Each sub-command lives in its own module exposing ``register(subparsers)``; modules are imported
only when the command line is built, and the heavy ones (torch, the service) import inside their
handlers so that ``gni --help`` and the client commands stay fast and torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gni_engine.errors import GNIError

# module name → what it provides; every module defines register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "gni_cli.run_command",
    "gni_cli.serve_command",
    "gni_cli.worker_command",
    "gni_cli.keys_command",
    "gni_client.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gni", description="Batch experiments on Gaussian noise injections."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from gni_client.cli import attach_dash_values

    parser = build_parser()
    args = parser.parse_args(attach_dash_values(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.handler(args)
    except GNIError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
