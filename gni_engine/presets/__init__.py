"""The paper's experiments as presets: ``get_preset`` gives a sweep, ``run_preset`` runs it and reports.

>>> PRESET_NAMES
('spectral-bias', 'regulariser-validity', 'explicit-vs-gni', 'calibration-margins')
"""

from __future__ import annotations

from gni_engine.presets.claims import Claim, evaluate_claims
from gni_engine.presets.definitions import PRESET_NAMES, get_preset, preset_variants
from gni_engine.presets.runner import PresetRun, run_preset

__all__ = [
    "PRESET_NAMES",
    "Claim",
    "PresetRun",
    "evaluate_claims",
    "get_preset",
    "preset_variants",
    "run_preset",
]
