"""Shared look of every figure: arm colours and names, headless saving as PNG and SVG.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no global state), which
renders with the Agg canvas and needs no display.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from gni_engine.recording import MetricRow

ARM_COLOURS = {"baseline": "#4c72b0", "gni": "#dd8452", "explicit": "#55a868"}
ARM_NAMES = {
    "baseline": "baseline (no noise)",
    "gni": "GNI (noisy training)",
    "explicit": "explicit R (clean + R)",
}
EXTRA_COLOURS = ("#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
FORMATS = ("png", "svg")


def layer_colours(count: int) -> list[str]:
    """Colours for ``count`` layers in order, dark (input side) to light (output side): a sequential
    map, so layers never look like the arms' colours and their order reads from the colour alone."""
    cmap = colormaps["viridis"]
    positions = np.linspace(0.0, 0.85, count) if count > 1 else np.zeros(count)  # 0.85: no pale yellow
    return [to_hex(cmap(float(p))) for p in positions]


MetricLike = MetricRow | Mapping[str, Any]


def new_figure(cols: int = 1, rows: int = 1, *, width: float = 4.6, height: float = 3.4) -> Figure:
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    return fig


# Matplotlib's text and mathtext machinery share caches that are not thread-safe; the service may
# draw figures from several executor threads, so drawing is serialised.
_DRAW_LOCK = threading.Lock()


def save(fig: Figure, out_dir: Path, stem: str) -> dict[str, Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.svg``; returns ``{file name: path}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with _DRAW_LOCK:
        return _save_locked(fig, out_dir, stem)


def _save_locked(fig: Figure, out_dir: Path, stem: str) -> dict[str, Path]:
    engine = fig.get_layout_engine()
    if engine is not None:  # lay out once, not once per format: saving is most of a figure's cost
        engine.execute(fig)
        fig.set_layout_engine("none")
    files: dict[str, Path] = {}
    # A fixed salt for the SVG's element ids (random by default) and no creation date: the same runs
    # give byte-identical figures, in whichever process drew them.
    with rc_context({"svg.hashsalt": "gni"}):
        for fmt in FORMATS:
            path = out_dir / f"{stem}.{fmt}"
            fig.savefig(path, dpi=150 if fmt == "png" else None, metadata=_metadata(fmt))
            files[path.name] = path
    return files


def _metadata(fmt: str) -> dict[str, Any]:
    return {"Date": None} if fmt == "svg" else {}


def as_rows(metrics: Iterable[MetricLike]) -> list[MetricRow]:
    """MetricRows from MetricRows or mappings with ``step``, ``name`` and ``value``."""
    out = []
    for m in metrics:
        if isinstance(m, MetricRow):
            out.append(m)
        else:
            out.append(MetricRow(int(m["step"]), str(m["name"]), float(m["value"])))
    return out


def series(rows: Sequence[MetricRow], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric, sorted by step."""
    pairs = sorted((r.step, r.value) for r in rows if r.name == name)
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pairs, strict=True)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def metric_names(rows: Sequence[MetricRow], prefix: str) -> list[str]:
    """Metric names starting with ``prefix``, in numeric order of their suffix where there is one."""
    names = {r.name for r in rows if r.name.startswith(prefix)}

    def key(name: str) -> tuple[float, str]:
        digits = "".join(c for c in name[len(prefix) :] if c.isdigit() or c == ".")
        try:
            return float(digits), name
        except ValueError:
            return float("inf"), name

    return sorted(names, key=key)


def log_if_decades(*arrays: Any, decades: float = 1.0) -> str:
    """'log' where the positive values span at least ``decades`` powers of ten, else 'linear'.

    A log axis over less than a decade gets only minor ticks, labelled '2.4×10⁻¹ 2.6×10⁻¹ …' until
    they overlap; such a range reads better on a linear axis.
    """
    values = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays] or [np.zeros(0)])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size < 2:
        return "linear"
    return "log" if np.log10(values.max() / values.min()) >= decades else "linear"


def frequency_of(name: str) -> float:
    """'amplitude_15Hz' → 15.0."""
    return float(name.removeprefix("amplitude_").removesuffix("Hz"))
