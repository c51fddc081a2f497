"""Figures (matplotlib, headless; PNG and SVG): one run's, and the arms of an experiment compared.

- :func:`run_figures(state, dataset, figures_dir) <gni_engine.figures.run.run_figures>`: called by
  :func:`~gni_engine.execution.execute_runs` for every run that succeeds, the runs of a batch dealt
  out to several processes (:mod:`gni_engine.figures.processes`, not imported here: it is also the
  children's ``python -m`` entry point);
- :func:`comparison_figures(runs, out_dir) <gni_engine.figures.comparison.comparison_figures>`: called
  after an experiment with ``(coordinates, spec, metrics, summary)`` per run.
"""

from __future__ import annotations

from gni_engine.figures.comparison import ComparisonRun, comparison_figures
from gni_engine.figures.run import run_figures

__all__ = ["ComparisonRun", "comparison_figures", "run_figures"]
