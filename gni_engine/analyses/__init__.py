"""Analyses of trained (or initial) networks: pure functions and the recorders that run them in training.

Everything is evaluated on the clean network and vectorised over the E runs of a stacked batch:

- :mod:`~gni_engine.analyses.spectral`: spectra of 1-D functions, spectral dynamics, and the
  Fourier (Parseval) reading of R's input-layer term;
- :mod:`~gni_engine.analyses.layers`: layer-to-layer Jacobian norms of MLPs;
- :mod:`~gni_engine.analyses.classification`: ECE with reliability data, NLL, output and input margins;
- :mod:`~gni_engine.analyses.validity`: R against the Monte-Carlo noise gap at initialisation.

>>> [type(r).__name__ for r in analysis_recorders()]  # doctest: +NORMALIZE_WHITESPACE
['SpectralRecorder', 'FourierCheckRecorder', 'LayerNormRecorder', 'ClassificationRecorder',
 'NoiseGapRecorder']
"""

from __future__ import annotations

from gni_engine.analyses.classification import (
    ReliabilityTable,
    expected_calibration_error,
    input_margins,
    margin_quantiles,
    negative_log_likelihood,
    output_margins,
)
from gni_engine.analyses.layers import layer_jacobian_norms, layer_map_norms
from gni_engine.analyses.recorders import (
    ClassificationRecorder,
    FourierCheckRecorder,
    LayerNormRecorder,
    NoiseGapRecorder,
    SpectralRecorder,
)
from gni_engine.analyses.spectral import (
    high_frequency_share,
    input_term_from_spectrum,
    spectral_dynamics,
    spectrum,
    target_amplitudes,
)
from gni_engine.recording import Recorder

__all__ = [
    "ReliabilityTable",
    "analysis_recorders",
    "expected_calibration_error",
    "high_frequency_share",
    "input_margins",
    "input_term_from_spectrum",
    "layer_jacobian_norms",
    "layer_map_norms",
    "margin_quantiles",
    "negative_log_likelihood",
    "output_margins",
    "spectral_dynamics",
    "spectrum",
    "target_amplitudes",
]


def analysis_recorders() -> list[Recorder]:
    """The analysis recorders training adds to the loss and R recorders (each skips runs it does not fit)."""
    return [
        SpectralRecorder(),
        FourierCheckRecorder(),
        LayerNormRecorder(),
        ClassificationRecorder(),
        NoiseGapRecorder(),
    ]
