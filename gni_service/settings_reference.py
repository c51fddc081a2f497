"""docs/settings.md, written from :class:`~gni_service.settings.ServiceSettings` itself.

``python -m gni_service.settings_reference > docs/settings.md`` regenerates it; a test keeps the
file equal to what this prints, so the reference never drifts from the settings the code reads.
"""

from __future__ import annotations

import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from gni_service.settings import ServiceSettings

HEADER = """# Settings

Every setting of the API, the executors and the workers, read from the environment once per process
(`gni_service.settings.get_settings()`): `GNI_` and the field name in capitals. A bad value stops
start-up with a message naming the variable. `gni serve` and `gni worker` take a few of them as
options too (`--help`). Generated from `gni_service/settings.py` by
`python -m gni_service.settings_reference > docs/settings.md`.

| variable | default | allowed | meaning |
| --- | --- | --- | --- |
"""


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e7:
        return f"`{value:.0e}`"
    return f"`{value}`"


def _allowed(field: FieldInfo) -> str:
    annotation = field.annotation
    choices: list[Any] = []
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            choices += typing.get_args(candidate)
        elif isinstance(candidate, type) and issubclass(candidate, Enum):
            choices += [member.value for member in candidate]
    if choices:
        return ", ".join(f"`{c}`" for c in choices)
    bounds = []
    for item in field.metadata:
        for name, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, name, None) is not None:
                bounds.append(f"{symbol} {getattr(item, name):g}")
        for name, word in (("min_length", "≥"), ("max_length", "≤")):
            if getattr(item, name, None) is not None:
                bounds.append(f"{word} {getattr(item, name)} characters")
    return ", ".join(bounds)


# Read by the engine (any process that trains: gni run, executors, workers) and by the SDK.
OUTSIDE_SERVICE_SETTINGS: tuple[tuple[str, str, str], ...] = (
    (
        "GNI_DATA_DIR",
        "unset",
        "folder of the data sets read from files (MNIST, CIFAR-10, SVHN, Boston housing); a spec's "
        "`data.data_dir` wins (refused through the API)",
    ),
    (
        "GNI_CACHE_DIR",
        "`$XDG_CACHE_HOME/gni`, else `~/.cache/gni`",
        "where the CPU noise kernel is compiled to",
    ),
    (
        "GNI_NOISE_STREAM",
        "`auto`",
        "`auto`, `generator`, `counter`, `counter-reference`: where training noise is drawn from "
        "(docs/performance.md)",
    ),
    ("GNI_NOISE_TRIG", "`shared`", "the GPU noise kernel's sine/cosine (docs/performance.md)"),
    (
        "GNI_FUSED_GEMM",
        "`auto`",
        "`auto`, `off`, `on`, `tf32x3`, `fold`: fused GPU products (docs/performance.md)",
    ),
    ("GNI_ADAM_KERNEL", "`auto`", "`auto`, `torch`, `triton`: the optimiser step on a GPU"),
    ("GNI_CUDA_GRAPH", "`off`", "`off`, `on`: replay each training step from a CUDA graph"),
    ("GNI_KEEP_FREED_MEMORY", "`1`", "`0`: leave glibc's heap thresholds alone"),
    ("GNI_BASE_URL", "`http://127.0.0.1:8000`", "the SDK's and the client commands' service address"),
    ("GNI_API_KEY", "unset", "the SDK's and the client commands' Bearer key"),
)


def _cell(text: str) -> str:
    """Description text as a table cell: Python's None reads 'unset'; no HTML, no column breaks."""
    return text.replace("None:", "unset:").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def settings_reference() -> str:
    """The markdown of docs/settings.md."""
    rows = [
        f"| `GNI_{name.upper()}` | {_default(field)} | {_allowed(field)} | {_cell(field.description or '')} |"
        for name, field in ServiceSettings.model_fields.items()
    ]
    outside = [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in OUTSIDE_SERVICE_SETTINGS]
    engine = "\n## Read by the engine and the SDK\n\n| variable | default | meaning |\n| --- | --- | --- |\n"
    return HEADER + "".join(f"{row}\n" for row in rows) + engine + "".join(f"{row}\n" for row in outside)


if __name__ == "__main__":
    sys.stdout.write(settings_reference())
