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
from types import ModuleType

from gni_engine.errors import GNIError

# module name → what it provides; every module defines register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "gni_cli.run_command",
    "gni_cli.serve_command",
    "gni_cli.worker_command",
    "gni_cli.keys_command",
)
# The client commands (submit, wait, ls, …) come with the SDK, a package of its own (sdk/): an
# installation without it (a server image) still has every command above.
CLIENT_MODULE = "gni_client.cli"


def client_commands() -> ModuleType | None:
    """The SDK's command module, or None where the SDK (``gni-client``) is not installed."""
    try:
        return importlib.import_module(CLIENT_MODULE)
    except ModuleNotFoundError as error:
        if error.name != "gni_client" and not (error.name or "").startswith("gni_client."):
            raise  # the SDK is there but one of its own imports is broken: say so
        return None


def build_parser() -> argparse.ArgumentParser:
    client = client_commands()
    epilog = None if client else "The client commands (submit, wait, ls, …) need the SDK: pip install ./sdk"
    parser = argparse.ArgumentParser(
        prog="gni", description="Batch experiments on Gaussian noise injections.", epilog=epilog
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    if client is not None:
        client.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    client = client_commands()
    parser = build_parser()
    args = parser.parse_args(client.attach_dash_values(arguments) if client else arguments)
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
