"""Recorders that plug the analyses into training: each returns per-run rows, vectorised over the batch.

Every recorder looks at the clean network (no noise), returns empty rows for batches it does not
apply to, and honours the :class:`~gni_engine.spec.AnalysesSpec` flags of the batch (runs of one
batch share them: they are part of the batch key).
"""

from __future__ import annotations

from typing import Any

import torch

from gni_engine.analyses.classification import (
    QUANTILE_LEVELS,
    expected_calibration_error,
    input_margins,
    margin_quantiles,
    negative_log_likelihood,
    output_margins,
)
from gni_engine.analyses.layers import layer_jacobian_norms
from gni_engine.analyses.spectral import (
    frequency_table,
    high_frequency_share,
    input_term_from_spectrum,
    spectrum,
    target_amplitudes,
)
from gni_engine.recording import MetricRow, RecordContext, Rows, merge_rows, rows_from
from gni_engine.regulariser import stacked_noise_gap
from gni_engine.spec import MLPSpec, SinusoidsData
from gni_engine.stacked import StackedMLP


def _empty(ctx: RecordContext) -> Rows:
    return [[] for _ in ctx.specs]


def _no_summary(ctx: RecordContext) -> list[dict[str, Any]]:
    return [{} for _ in ctx.specs]


def frequency_label(frequency: float) -> str:
    """Metric-name form of a frequency: 5.0 → '5', 2.5 → '2.5'."""
    return f"{frequency:g}"


def _param_like(ctx: RecordContext) -> torch.Tensor:
    return ctx.net.parameters()[0]


# ------------------------------------------------------------------------------------- spectral
class SpectralRecorder:
    """Normalised amplitude at every target frequency (DIGEST §4.1) on the full uniform grid.

    Metrics ``amplitude_{K}Hz``; summary ``spectrum_final`` ({K: amplitude}) and ``spectrum_full``
    (|c_ω| for every bin, run-averaged figures use it).
    """

    @staticmethod
    def applies(ctx: RecordContext) -> bool:
        first = ctx.specs[0]
        data = first.data
        return (
            first.task == "regression"
            and isinstance(data, SinusoidsData)
            and data.dim == 1
            and first.analyses.spectrum
        )

    def record(self, ctx: RecordContext) -> Rows:
        if not self.applies(ctx):
            return _empty(ctx)
        amps = self._amplitudes(ctx).double().cpu().tolist()  # (E, K)
        return [
            [
                MetricRow(ctx.step, f"amplitude_{frequency_label(f)}Hz", float(a))
                for f, a in zip(self._frequencies(ctx)[e], amps[e], strict=False)
            ]
            for e in range(len(ctx.specs))
        ]

    def summarise(self, ctx: RecordContext) -> list[dict[str, Any]]:
        if not self.applies(ctx):
            return _no_summary(ctx)
        amps = self._amplitudes(ctx).double().cpu().tolist()
        full = spectrum(grid_output(ctx)).double().cpu().tolist()  # (E, n//2)
        return [
            {
                "spectrum_final": {
                    frequency_label(f): float(a)
                    for f, a in zip(self._frequencies(ctx)[e], amps[e], strict=False)
                },
                "spectrum_full": full[e],
            }
            for e in range(len(ctx.specs))
        ]

    @staticmethod
    def _frequencies(ctx: RecordContext) -> list[list[float]]:
        return [list(d.meta["frequencies"]) for d in ctx.datasets]

    def _amplitudes(self, ctx: RecordContext) -> torch.Tensor:
        values = grid_output(ctx)  # (E, n)
        freq, amp, _ = frequency_table(
            self._frequencies(ctx), [list(d.meta["amplitudes"]) for d in ctx.datasets], device=values.device
        )
        return target_amplitudes(values.double(), freq, amp)  # (E, K)


def uniform_grid(ctx: RecordContext) -> torch.Tensor:
    """The full grid t_i = i/n of the sinusoid data, shared by the batch: (E, n, 1)."""
    data = ctx.specs[0].data
    assert isinstance(data, SinusoidsData)
    like = _param_like(ctx)
    t = torch.arange(data.n_points, dtype=like.dtype, device=like.device) / data.n_points
    return t.reshape(1, -1, 1).expand(len(ctx.specs), -1, 1)


def grid_output(ctx: RecordContext) -> torch.Tensor:
    """The clean network on the full uniform grid: (E, n)."""
    if "grid_output" not in ctx.cache:
        with torch.no_grad():
            ctx.cache["grid_output"] = ctx.net.forward(uniform_grid(ctx)).output[..., 0]
    out: torch.Tensor = ctx.cache["grid_output"]
    return out


def grid_endpoint(ctx: RecordContext) -> torch.Tensor:
    """The clean network at t = 1, just past the grid, in float64: (E,)."""
    like = _param_like(ctx)
    one = torch.ones(len(ctx.specs), 1, 1, dtype=like.dtype, device=like.device)
    with torch.no_grad():
        return ctx.net.forward(one).output[:, 0, 0].double()


class FourierCheckRecorder:
    r"""The input-layer term of R read from the spectrum (Parseval) against its Jacobian value.

    Metric ``high_frequency_share`` (share of :math:`\mathrm{mean}_x|f'|^2` above the cut-off) at each
    record step; summary: ``input_sobolev_spectral`` (ramp-corrected, see
    :func:`~gni_engine.analyses.spectral.remove_ramp`) and ``input_sobolev_jacobian`` (½ mean_x |f'|²,
    so R's input term is σ₀² times it), their relative difference ``input_term_relative_error``, the
    uncorrected ``input_sobolev_spectral_raw`` (shows the wrap-around jump's artefact),
    ``input_term_R`` (with the spec's σ₀), ``high_frequency_share`` and ``high_frequency_cutoff_hz``.
    """

    def record(self, ctx: RecordContext) -> Rows:
        if not SpectralRecorder.applies(ctx):
            return _empty(ctx)
        share = high_frequency_share(
            grid_output(ctx).double(), self._cutoffs(ctx), endpoint=grid_endpoint(ctx)
        )
        return rows_from(ctx.step, "high_frequency_share", share)

    def summarise(self, ctx: RecordContext) -> list[dict[str, Any]]:
        if not SpectralRecorder.applies(ctx):
            return _no_summary(ctx)
        values = grid_output(ctx).double()  # (E, n)
        endpoint = grid_endpoint(ctx)  # (E,)
        raw = input_term_from_spectrum(values)  # (E,)
        spectral = input_term_from_spectrum(values, endpoint=endpoint)
        jacobian = self._jacobian_term(ctx)  # (E,)
        sigma0 = torch.tensor(
            [s.injection_sigmas()[0] for s in ctx.specs], dtype=torch.float64, device=values.device
        )
        cutoffs = self._cutoffs(ctx)
        share = high_frequency_share(values, cutoffs, endpoint=endpoint)
        rel = (spectral - jacobian) / jacobian.clamp_min(torch.finfo(torch.float64).tiny)
        columns = {
            "input_sobolev_spectral": spectral,
            "input_sobolev_spectral_raw": raw,
            "input_sobolev_jacobian": jacobian,
            "input_term_relative_error": rel,
            "input_term_R": sigma0.pow(2) * jacobian,
            "high_frequency_share": share,
            "high_frequency_cutoff_hz": cutoffs,
        }
        table = {k: v.cpu().tolist() for k, v in columns.items()}
        return [{k: float(v[e]) for k, v in table.items()} for e in range(len(ctx.specs))]

    @staticmethod
    def _cutoffs(ctx: RecordContext) -> torch.Tensor:
        values = [
            s.analyses.high_frequency_cutoff or max(d.meta["frequencies"]) / 2
            for s, d in zip(ctx.specs, ctx.datasets, strict=True)
        ]
        return torch.tensor(values, dtype=torch.float64, device=_param_like(ctx).device)

    @staticmethod
    def _jacobian_term(ctx: RecordContext) -> torch.Tensor:
        """½ mean_x |f'(x)|² on the grid by autograd (each output depends on its own input only)."""
        with torch.enable_grad():
            x = uniform_grid(ctx).detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(ctx.net.forward(x).output.sum(), x)
        return 0.5 * grad.double().pow(2).sum(-1).mean(-1)


# --------------------------------------------------------------------------------- layer norms
class LayerNormRecorder:
    """``layer_norm_{i}``: batch mean of ‖∂h_{i+1}/∂h_i‖_F on the training inputs (MLPs, ≥ 2 hidden)."""

    @staticmethod
    def applies(ctx: RecordContext) -> bool:
        first = ctx.specs[0]
        return (
            isinstance(first.model, MLPSpec)
            and len(first.model.hidden) >= 2
            and first.analyses.layer_norms
            and isinstance(ctx.net, StackedMLP)
        )

    def _norms(self, ctx: RecordContext) -> torch.Tensor:
        if "layer_norms" not in ctx.cache:
            assert isinstance(ctx.net, StackedMLP)
            x = ctx.x_train.flatten(2)
            with torch.no_grad():
                ctx.cache["layer_norms"] = layer_jacobian_norms(ctx.net, x)  # (E, H−1)
        out: torch.Tensor = ctx.cache["layer_norms"]
        return out

    def record(self, ctx: RecordContext) -> Rows:
        if not self.applies(ctx):
            return _empty(ctx)
        norms = self._norms(ctx)
        return merge_rows(
            *(rows_from(ctx.step, f"layer_norm_{i + 1}", norms[:, i]) for i in range(norms.shape[1]))
        )

    def summarise(self, ctx: RecordContext) -> list[dict[str, Any]]:
        if not self.applies(ctx):
            return _no_summary(ctx)
        return [{"layer_norms_final": row} for row in self._norms(ctx).double().cpu().tolist()]


# ------------------------------------------------------------------------------ classification
class ClassificationRecorder:
    """Calibration and margins on the test split (the training split when there is no test split).

    Metrics ``ece``, ``nll`` and ``output_margin_q50`` at each record step; the summary adds accuracy,
    the reliability table, output and input margin quantiles.
    """

    @staticmethod
    def applies(ctx: RecordContext) -> bool:
        return ctx.specs[0].task == "classification"

    @staticmethod
    def _split(ctx: RecordContext) -> tuple[str, torch.Tensor, torch.Tensor]:
        if ctx.x_test.shape[1] > 0:
            return "test", ctx.x_test, ctx.y_test
        return "train", ctx.x_train, ctx.y_train

    def record(self, ctx: RecordContext) -> Rows:
        if not self.applies(ctx):
            return _empty(ctx)
        split, _, labels = self._split(ctx)
        logits = ctx.clean_output(split).double()  # (E, N, C)
        ece, _ = expected_calibration_error(
            torch.softmax(logits, -1), labels, ctx.specs[0].analyses.calibration_bins
        )
        parts = [
            rows_from(ctx.step, "ece", ece),
            rows_from(ctx.step, "nll", negative_log_likelihood(logits, labels)),
        ]
        if ctx.specs[0].analyses.margins:
            q50 = output_margins(logits, labels).median(-1).values
            parts.append(rows_from(ctx.step, "output_margin_q50", q50))
        return merge_rows(*parts)

    def summarise(self, ctx: RecordContext) -> list[dict[str, Any]]:
        if not self.applies(ctx):
            return _no_summary(ctx)
        split, x, labels = self._split(ctx)
        logits = ctx.clean_output(split).double()
        ece, table = expected_calibration_error(
            torch.softmax(logits, -1), labels, ctx.specs[0].analyses.calibration_bins
        )
        columns: dict[str, torch.Tensor] = {
            "ece": ece,
            "nll": negative_log_likelihood(logits, labels),
            "accuracy": (logits.argmax(-1) == labels).double().mean(-1),
        }
        quantiles: dict[str, torch.Tensor] = {}
        if ctx.specs[0].analyses.margins:
            quantiles["output_margin_quantiles"] = margin_quantiles(output_margins(logits, labels))
            quantiles["input_margin_quantiles"] = margin_quantiles(input_margins(ctx.net, x, labels).double())
        out = []
        scalars = {k: v.cpu().tolist() for k, v in columns.items()}
        lists = {k: v.cpu().tolist() for k, v in quantiles.items()}
        tables = {k: getattr(table, k).double().cpu().tolist() for k in ("counts", "confidence", "accuracy")}
        edges = table.edges.double().cpu().tolist()
        for e in range(len(ctx.specs)):
            entry: dict[str, Any] = {k: float(v[e]) for k, v in scalars.items()}
            entry["eval_split"] = split
            entry["reliability"] = {"edges": edges, **{k: v[e] for k, v in tables.items()}}
            if lists:
                entry["quantile_levels"] = list(QUANTILE_LEVELS)
                for name, values in lists.items():
                    entry[name] = values[e]
                prefix = {"output_margin_quantiles": "margin", "input_margin_quantiles": "input_margin"}
                for name, values in lists.items():
                    for level in (0.1, 0.5, 0.9):
                        entry[f"{prefix[name]}_q{round(level * 100)}"] = values[e][
                            QUANTILE_LEVELS.index(level)
                        ]
            out.append(entry)
        return out


# ----------------------------------------------------------------------------------- noise gap
class NoiseGapRecorder:
    """``noise_gap``: the Monte-Carlo E[L(noisy)] − L(clean) at every record step, if asked for."""

    def record(self, ctx: RecordContext) -> Rows:
        analyses = ctx.specs[0].analyses
        if not analyses.noise_gap_every or analyses.noise_gap_samples == 0 or ctx.final:
            return _empty(ctx)
        mean, _ = stacked_noise_gap(
            ctx.net,
            ctx.x_train,
            ctx.y_train,
            ctx.scales,
            ctx.loss,
            samples=analyses.noise_gap_samples,
            generators=list(ctx.generators),
        )
        return rows_from(ctx.step, "noise_gap", mean)

    def summarise(self, ctx: RecordContext) -> list[dict[str, Any]]:
        return _no_summary(ctx)
