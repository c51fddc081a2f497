"""The command-line client: ``submit``, ``status``, ``runs``, ``aggregate``, ``download``, ``cancel``.

They are sub-commands of ``gni`` (registered through :func:`register`) and of the torch-free
``gni-client`` command. Each prints a table for people, or JSON with ``--json``, and exits with:

====  ==========================================================================
0     done: the experiment succeeded, or the command did what it was asked
1     the experiment (or run) failed or was cancelled; a cancel that conflicts
2     invalid input: a bad spec (each field named), a bad option, an unreadable file
3     not found: no experiment, run or artifact with that id
4     not finished: still queued or running (``status``), or ``--wait`` timed out
5     the service is unreachable or answered with an error
====  ==========================================================================

The service is ``--base-url`` or ``$GNI_BASE_URL`` (default ``http://127.0.0.1:8000``, where
``gni serve`` listens); the key is ``--api-key`` or ``$GNI_API_KEY``. Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gni_client._client import Client
from gni_client._exceptions import (
    APIConnectionError,
    APIStatusError,
    ConflictError,
    GNIClientError,
    NotFoundError,
    SpecValidationError,
    UnprocessableEntityError,
    WaitTimeoutError,
)
from gni_client.types import Aggregate, Experiment, ExperimentPlan, Run

EXIT_DONE, EXIT_FAILED, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_RUNNING, EXIT_SERVICE = 0, 1, 2, 3, 4, 5
SUMMARY_KEYS = ("train_loss", "test_loss", "R_total", "noise_gap", "accuracy", "test_accuracy", "ece")
Handler = Callable[[argparse.Namespace, Client], int]


# ---------------------------------------------------------------------------------- registration
def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("service")
    group.add_argument(
        "--base-url", default=None, help="service URL (default $GNI_BASE_URL or http://127.0.0.1:8000)"
    )
    group.add_argument("--api-key", default=None, help="API key (default $GNI_API_KEY)")
    group.add_argument(
        "--timeout", type=positive_seconds, default=60.0, help="seconds per request (default 60)"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    return common


def positive_seconds(text: str) -> float:
    """A number of seconds > 0 (``--timeout``, ``--wait-timeout``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


def register(subparsers: Any) -> None:
    """Add the client commands to an ``argparse`` sub-parser set (``gni``'s or ``gni-client``'s)."""
    common = _common()
    submit = subparsers.add_parser(
        "submit",
        parents=[common],
        help="submit an experiment (a spec file or a preset) to the service",
        description="Submit a run or sweep spec (JSON, or YAML with PyYAML installed) or a preset.",
    )
    submit.add_argument("spec", nargs="?", type=Path, help="run or sweep spec file (.json/.yaml)")
    submit.add_argument("--preset", help="a preset name instead of a spec file")
    submit.add_argument(
        "--sweep", action="append", default=[], metavar="PATH=V1,V2", help="a grid axis (repeatable)"
    )
    submit.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="set a spec field")
    submit.add_argument("--steps", type=int, help="preset: training steps of every run")
    submit.add_argument("--seeds", type=int, help="preset: seeds per arm")
    submit.add_argument("--name", help="experiment name")
    submit.add_argument("--dry-run", action="store_true", help="only show the expansion; store nothing")
    submit.add_argument(
        "--reuse-results",
        action="store_true",
        help="take the results of runs with the same spec you already trained instead of training again",
    )
    submit.add_argument(
        "--no-figures",
        action="store_true",
        help="no figures of each run (numbers and weights only; the experiment's figures are drawn anyway)",
    )
    submit.add_argument("--wait", action="store_true", help="wait for the runs and print their summary")
    submit.add_argument("--wait-timeout", type=positive_seconds, default=None, help="seconds to wait at most")
    submit.set_defaults(handler=_entry(handle_submit))

    status = subparsers.add_parser(
        "status", parents=[common], help="an experiment's status (or the latest experiments)"
    )
    status.add_argument("id", nargs="?", help="experiment id (default: list the latest experiments)")
    status.add_argument("--limit", type=int, default=20, help="experiments listed without an id (default 20)")
    status.set_defaults(handler=_entry(handle_status))

    runs = subparsers.add_parser("runs", parents=[common], help="an experiment's runs, filtered and sorted")
    runs.add_argument("id", help="experiment id")
    runs.add_argument("--filter", action="append", default=[], metavar="EXPR", help="e.g. summary.ece<0.05")
    runs.add_argument("--status", action="append", default=[], help="only runs in this status (repeatable)")
    runs.add_argument("--sort", help="a path; '-' first for descending, e.g. -summary.test_loss")
    runs.set_defaults(handler=_entry(handle_runs))

    aggregate = subparsers.add_parser(
        "aggregate", parents=[common], help="mean, std, stderr and n of metrics per group of runs"
    )
    aggregate.add_argument("id", help="experiment id")
    aggregate.add_argument(
        "--group-by", action="append", default=[], metavar="PATHS", help="e.g. noise.sigma"
    )
    aggregate.add_argument(
        "--metric", action="append", required=True, metavar="PATH", help="e.g. summary.test_loss"
    )
    aggregate.add_argument("--filter", action="append", default=[], metavar="EXPR", help="as for runs")
    aggregate.set_defaults(handler=_entry(handle_aggregate))

    download = subparsers.add_parser(
        "download", parents=[common], help="download an experiment's (or a run's, or one) artifacts"
    )
    download.add_argument("id", help="experiment id (or run_… or art_… id)")
    download.add_argument("--to", type=Path, required=True, help="folder to write into")
    download.add_argument("--kind", help="only this kind: figure, weights, results, metrics")
    download.add_argument("--no-runs", action="store_true", help="experiment-level files only")
    download.set_defaults(handler=_entry(handle_download))

    cancel = subparsers.add_parser("cancel", parents=[common], help="cancel an experiment (or a run_… id)")
    cancel.add_argument("id", help="experiment id (or run id)")
    cancel.set_defaults(handler=_entry(handle_cancel))

    remove = subparsers.add_parser(
        "delete", parents=[common], help="delete a finished experiment with its runs and files"
    )
    remove.add_argument("id", help="experiment id")
    remove.set_defaults(handler=_entry(handle_delete))


def _entry(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """A handler with its client, turning every expected failure into a message and an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            with Client(base_url=args.base_url, api_key=args.api_key, timeout=args.timeout) as client:
                return handler(args, client)
        except SpecValidationError as error:
            _fail(error.message.split(": ", 1)[0] + ":")
            for item in error.errors:
                _fail(f"  {item['loc']}: {item['msg']}")
            return EXIT_INVALID
        except UnprocessableEntityError as error:
            _fail(
                f"error: {error.message}" if not error.errors else "error: the service rejected the request:"
            )
            for item in error.errors:
                _fail(f"  {item['loc']}: {item['msg']}")
            return EXIT_INVALID
        except NotFoundError as error:
            _fail(f"error: {error.message}")
            return EXIT_NOT_FOUND
        except ConflictError as error:
            _fail(f"error: {error.message}")
            return EXIT_FAILED
        except WaitTimeoutError as error:
            _fail(f"error: {error.message}")
            return EXIT_RUNNING
        except APIConnectionError as error:
            _fail(f"error: {error.message} (is the service running? `gni serve` starts one)")
            return EXIT_SERVICE
        except APIStatusError as error:
            _fail(f"error: the service answered {error.status_code}: {error.message}")
            return EXIT_SERVICE
        except (GNIClientError, ValueError, OSError) as error:
            _fail(f"error: {error}")
            return EXIT_INVALID

    return run


def _fail(line: str) -> None:
    sys.stderr.write(line + "\n")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _json(value: Any) -> None:
    _out(json.dumps(value, indent=2, default=str))


# ------------------------------------------------------------------------------------ parsing
DASH_VALUE_OPTIONS = frozenset({"--sort"})


def attach_dash_values(argv: Sequence[str]) -> list[str]:
    """``--sort -summary.test_loss`` → ``--sort=-summary.test_loss``, which argparse would otherwise
    read as an unknown option (``expected one argument``).

    >>> attach_dash_values(["runs", "exp_1", "--sort", "-summary.test_loss", "--json"])
    ['runs', 'exp_1', '--sort=-summary.test_loss', '--json']
    >>> attach_dash_values(["runs", "exp_1", "--sort", "--json"])
    ['runs', 'exp_1', '--sort', '--json']
    """
    items = list(argv)
    out: list[str] = []
    i = 0
    while i < len(items):
        item = items[i]
        following = items[i + 1] if i + 1 < len(items) else ""
        if item in DASH_VALUE_OPTIONS and following.startswith("-") and not following.startswith("--"):
            out.append(f"{item}={following}")
            i += 2
            continue
        out.append(item)
        i += 1
    return out


def parse_value(text: str) -> Any:
    """JSON when it parses (``0.1``, ``true``, ``[1,2]``), the text otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_axis(text: str, option: str = "--sweep") -> tuple[str, list[Any]]:
    """``noise.sigma=0,0.1`` → ``("noise.sigma", [0, 0.1])``; ``training.mode=baseline,gni`` → strings.

    >>> parse_axis("noise.sigma=0,0.1")
    ('noise.sigma', [0, 0.1])
    >>> parse_axis("training.mode=baseline,gni")
    ('training.mode', ['baseline', 'gni'])
    """
    path, sep, values = text.partition("=")
    if not sep or not path.strip() or not values.strip():
        expected = "PATH=V1,V2,…" if option == "--sweep" else "PATH=VALUE"
        raise ValueError(f"{option} '{text}': expected {expected}")
    try:
        parsed = json.loads(f"[{values}]")
    except ValueError:
        parsed = [parse_value(v.strip()) for v in values.split(",")]
    return path.strip(), parsed


def load_spec(path: Path) -> dict[str, Any]:
    """A spec file: JSON by extension, YAML otherwise (PyYAML needed)."""
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise ValueError(
                f"{path}: reading YAML needs PyYAML (pip install pyyaml), or give JSON"
            ) from None
        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping (a run spec, or a sweep with base and axes)")
    return data


# ------------------------------------------------------------------------------------- tables
def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return value if isinstance(value, str) else json.dumps(value, default=str)


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    _out("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in cells:
        _out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _experiment_code(experiment: Experiment) -> int:
    if experiment.status == "succeeded":
        return EXIT_DONE
    return EXIT_FAILED if experiment.finished else EXIT_RUNNING


def print_experiment(experiment: Experiment) -> None:
    c = experiment.counts
    _out(f"{experiment.id}  {experiment.name}  {experiment.status}")
    _out(
        f"runs: {experiment.run_count} ({c.queued} queued, {c.running} running, {c.succeeded} succeeded, "
        f"{c.failed} failed, {c.cancelled} cancelled)"
    )
    if experiment.progress is not None:
        p = experiment.progress
        _out(f"progress: {p.steps_done}/{p.steps_total} steps ({100 * p.fraction:.0f}%)")
    if experiment.summary:
        print_table(
            ["metric", "mean", "std", "stderr", "n"],
            [[k, s.mean, s.std, s.stderr, s.n] for k, s in experiment.summary.items()],
        )


def print_runs(runs: Sequence[Run]) -> None:
    coord_keys = list(dict.fromkeys(k for run in runs for k in run.coords))
    shown = [k for k in SUMMARY_KEYS if any(k in (run.summary or {}) for run in runs)]
    header = ["#", "id", "status", *coord_keys, *shown]
    rows = [
        [run.position, run.id, run.status, *(run.coords.get(k) for k in coord_keys)]
        + [(run.summary or {}).get(k) for k in shown]
        for run in runs
    ]
    print_table(header, rows)
    for run in runs:
        if run.error:
            _out(f"run {run.position} ({run.id}): {run.status}: {run.error}")


def print_aggregate(aggregate: Aggregate) -> None:
    rows = aggregate.rows()
    header = list(rows[0]) if rows else [*aggregate.group_by, "mean", "std", "stderr", "n"]
    print_table(header, [list(row.values()) for row in rows])


# ----------------------------------------------------------------------------------- handlers
def handle_submit(args: argparse.Namespace, client: Client) -> int:
    if (args.spec is None) == (args.preset is None):
        raise ValueError("give a spec file or --preset NAME (not both)")
    if args.preset is None and (args.steps is not None or args.seeds is not None):
        raise ValueError(
            "--steps and --seeds go with --preset; with a spec file use --set training.steps=N "
            "or --sweep seed=0,1,…"
        )
    if args.preset is not None and args.set:
        raise ValueError("--set goes with a spec file; a preset takes --steps, --seeds and --sweep")
    axes = dict(parse_axis(text) for text in args.sweep)
    sets = dict(parse_axis(text, "--set") for text in args.set)
    values = {path: v[0] if len(v) == 1 else v for path, v in sets.items()}
    if args.preset is not None:
        overrides = {k: v for k, v in (("steps", args.steps), ("seeds", args.seeds)) if v is not None}
        result = client.experiments.create(
            preset=args.preset,
            overrides=overrides,
            sweep=axes or None,
            name=args.name,
            dry_run=args.dry_run,
            reuse_results=args.reuse_results,
            run_figures=not args.no_figures,
        )
    else:
        result = client.experiments.create(
            spec=load_spec(args.spec),
            overrides=values,
            sweep=axes,
            name=args.name,
            dry_run=args.dry_run,
            reuse_results=args.reuse_results,
            run_figures=not args.no_figures,
        )
    if isinstance(result, ExperimentPlan):
        if args.json:
            _json(dict(result.raw))
        else:
            flops = f"~{result.estimated_flops:.3g} FLOPs"
            _out(f"dry run: {result.run_count} runs in {result.batch_count} batches, {flops}")
        return EXIT_DONE
    experiment = result
    if not args.wait:
        if args.json:
            _json(dict(experiment.raw))
        else:
            _out(f"submitted {experiment.id} ({experiment.name}): {experiment.run_count} runs")
            if args.reuse_results:
                _out(f"reused: {experiment.counts.succeeded} runs already trained with the same spec")
            _out(f"follow it with: gni status {experiment.id}")
        return EXIT_DONE
    if not args.json:
        _out(f"submitted {experiment.id} ({experiment.name}): {experiment.run_count} runs; waiting")
    experiment = client.experiments.wait(experiment.id, timeout=args.wait_timeout, progress=not args.json)
    if args.json:
        _json(dict(experiment.raw))
    else:
        print_experiment(experiment)
        print_runs(list(client.runs.list(experiment.id)))
    return _experiment_code(experiment)


def handle_status(args: argparse.Namespace, client: Client) -> int:
    if args.id is None:
        page = client.experiments.list(limit=args.limit)
        if args.json:
            _json([dict(e.raw) for e in page.items])
        else:
            rows = [
                [e.id, e.name, e.status, e.run_count, e.counts.succeeded, e.created_at] for e in page.items
            ]
            print_table(["id", "name", "status", "runs", "succeeded", "created"], rows)
        return EXIT_DONE
    experiment = client.experiments.get(args.id)
    if args.json:
        _json(dict(experiment.raw))
    else:
        print_experiment(experiment)
    return _experiment_code(experiment)


def handle_runs(args: argparse.Namespace, client: Client) -> int:
    runs = list(
        client.runs.list(args.id, filter=args.filter or None, status=args.status or None, sort=args.sort)
    )
    if args.json:
        _json([dict(run.raw) for run in runs])
    else:
        print_runs(runs)
    return EXIT_DONE


def handle_aggregate(args: argparse.Namespace, client: Client) -> int:
    aggregate = client.experiments.aggregate(
        args.id, group_by=args.group_by or None, metric=args.metric, filter=args.filter or None
    )
    if args.json:
        _json(dict(aggregate.raw))
    else:
        print_aggregate(aggregate)
    return EXIT_DONE


def handle_download(args: argparse.Namespace, client: Client) -> int:
    identifier: str = args.id
    # --to is a folder even before it exists (argparse's Path drops a trailing '/'), and the SDK
    # then places each file under its sanitised name.
    folder = f"{args.to}{os.sep}"
    if identifier.startswith("art_"):
        paths = [client.artifacts.download(identifier, to=folder)]
    elif identifier.startswith("run_"):
        records = client.artifacts.list(run_id=identifier, kind=args.kind)
        paths = [client.artifacts.download(record, to=folder) for record in records]
    else:
        paths = client.artifacts.download_all(
            identifier, to=args.to, kind=args.kind, include_runs=not args.no_runs
        )
    if args.json:
        _json([str(p) for p in paths])
    else:
        for path in paths:
            _out(str(path))
        _out(f"{len(paths)} files in {args.to}")
    return EXIT_DONE


def handle_cancel(args: argparse.Namespace, client: Client) -> int:
    identifier: str = args.id
    if identifier.startswith("run_"):
        run = client.runs.cancel(identifier)
        if args.json:
            _json(dict(run.raw))
        else:
            _out(f"{run.id}: {run.status}")
        return EXIT_DONE
    experiment = client.experiments.cancel(identifier)
    if args.json:
        _json(dict(experiment.raw))
    else:
        print_experiment(experiment)
    return EXIT_DONE


def handle_delete(args: argparse.Namespace, client: Client) -> int:
    deleted = client.experiments.delete(args.id)
    if args.json:
        _json(dict(deleted.raw))
    else:
        _out(
            f"{deleted.id}: deleted {deleted.runs} runs, {deleted.artifacts} artifact records, "
            f"{deleted.objects_to_delete} stored objects to delete"
        )
    return EXIT_DONE


# ------------------------------------------------------------------------------- gni-client
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gni-client", description="Client of the gni service.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``gni-client`` command (the same commands as ``gni``'s client commands, without torch)."""
    args = build_parser().parse_args(attach_dash_values(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
