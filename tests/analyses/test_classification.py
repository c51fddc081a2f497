"""ECE, reliability data and margins against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from gni_engine.analyses.classification import (
    expected_calibration_error,
    input_margins,
    margin_quantiles,
    negative_log_likelihood,
    output_margins,
)
from gni_engine.stacked import StackedMLP


def test_ece_is_zero_for_a_predictor_calibrated_by_construction():
    # In each confidence bin the share of correct labels equals the confidence exactly.
    probs, labels = [], []
    for conf, n_correct, n in ((0.7, 7, 10), (0.9, 9, 10), (0.6, 3, 5)):
        for i in range(n):
            probs.append([conf, 1 - conf])
            labels.append(0 if i < n_correct else 1)
    ece, table = expected_calibration_error(
        torch.tensor([probs], dtype=torch.float64), torch.tensor([labels]), 10
    )
    assert float(ece) == pytest.approx(0.0, abs=1e-12)
    assert table.counts.sum() == 25


def test_ece_equals_known_value_for_a_miscalibrated_predictor():
    # 10 examples at confidence 0.95 with 6 correct, 10 at 0.55 with 5 correct: ECE = ½·0.35 + ½·0.05.
    probs = [[0.95, 0.05]] * 10 + [[0.55, 0.45]] * 10
    labels = [0] * 6 + [1] * 4 + [0] * 5 + [1] * 5
    ece, table = expected_calibration_error(
        torch.tensor([probs], dtype=torch.float64), torch.tensor([labels]), 15
    )
    assert float(ece) == pytest.approx(0.5 * 0.35 + 0.5 * 0.05, abs=1e-12)
    full = table.counts[0] > 0
    assert torch.allclose(table.accuracy[0][full], torch.tensor([0.5, 0.6], dtype=torch.float64))
    assert torch.allclose(table.confidence[0][full], torch.tensor([0.55, 0.95], dtype=torch.float64))
    assert torch.isnan(table.accuracy[0][~full]).all()


def test_ece_runs_are_independent_in_a_stack():
    probs = torch.tensor([[[0.9, 0.1]] * 4, [[0.6, 0.4]] * 4], dtype=torch.float64)  # (2, 4, 2)
    labels = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1]])
    ece, _ = expected_calibration_error(probs, labels, 15)
    assert torch.allclose(ece, torch.tensor([0.15, 0.35], dtype=torch.float64))


def test_output_margins_and_nll_on_hand_built_example():
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 2]])
    assert output_margins(logits, labels).tolist() == [[1.0, -2.0]]
    expected = -(torch.log_softmax(logits, -1)[0, 0, 0] + torch.log_softmax(logits, -1)[0, 1, 2]) / 2
    assert math.isclose(float(negative_log_likelihood(logits, labels)), float(expected), rel_tol=1e-12)


def test_input_margin_of_a_linear_two_class_model_is_the_distance_to_the_boundary():
    # f = W x with W columns w0 = (1, 0), w1 = (-1, 0): f0 − f1 = 2 x₁, boundary x₁ = 0, distance |x₁|.
    w = torch.tensor([[[1.0, -1.0], [0.0, 0.0]]], dtype=torch.float64)  # (E=1, d_in=2, C=2)
    net = StackedMLP([w], None, "linear")
    x = torch.tensor([[[0.5, 3.0], [-2.0, 1.0], [1.5, -7.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 0, 1]])
    margins = input_margins(net, x, labels)
    assert torch.allclose(margins, torch.tensor([[0.5, -2.0, -1.5]], dtype=torch.float64), atol=1e-12)


def test_margin_quantiles_match_torch_quantile():
    values = torch.arange(101, dtype=torch.float64).reshape(1, -1)
    q = margin_quantiles(values, (0.1, 0.5, 0.9))
    assert q.tolist() == [[10.0, 50.0, 90.0]]
