r"""Calibration and margins of classifiers, per run over a stacked batch.

Expected calibration error with M equal-width confidence bins :math:`B_m = ((m-1)/M, m/M]`
(Guo et al. 2017), confidence :math:`\hat p = \max_c p_c`:

.. math:: \mathrm{ECE} = \sum_m \frac{|B_m|}{N}\, \big|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)\big|

Output margin :math:`f_y - \max_{j \ne y} f_j` (negative when misclassified); its first-order
input-space estimate :math:`(f_y - f_j)/\|\nabla_x (f_y - f_j)\|` with j the runner-up class.

>>> probs = torch.tensor([[[0.9, 0.1], [0.9, 0.1]]])  # (E=1, N=2, C=2)
>>> ece, table = expected_calibration_error(probs, torch.tensor([[0, 1]]), bins=10)
>>> float(ece)  # confidence 0.9, accuracy 0.5
0.4
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gni_engine.stacked import StackedNetwork

QUANTILE_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 … 0.95


@dataclass(frozen=True)
class ReliabilityTable:
    """Reliability-diagram data per run: bin edges (M+1,), counts, mean confidence, accuracy (E, M).

    Empty bins have count 0 and confidence and accuracy NaN.
    """

    edges: torch.Tensor
    counts: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, bins: int = 15
) -> tuple[torch.Tensor, ReliabilityTable]:
    """ECE (…,) and the reliability table of predicted probabilities (…, N, C) against labels (…, N)."""
    lead = probs.shape[:-2]
    n = probs.shape[-2]
    conf, pred = probs.max(-1)  # (…, N)
    correct = (pred == labels).to(probs.dtype)
    index = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)  # bin m = ((m-1)/M, m/M]
    zeros = torch.zeros(*lead, bins, dtype=probs.dtype, device=probs.device)
    counts = zeros.scatter_add(-1, index, torch.ones_like(conf))  # (…, M)
    conf_sum = zeros.scatter_add(-1, index, conf)
    acc_sum = zeros.scatter_add(-1, index, correct)
    ece = (acc_sum - conf_sum).abs().sum(-1) / n
    safe = counts.clamp_min(1)
    empty = counts == 0
    nan = torch.full_like(counts, float("nan"))
    table = ReliabilityTable(
        edges=torch.linspace(0, 1, bins + 1, dtype=probs.dtype, device=probs.device),
        counts=counts,
        confidence=torch.where(empty, nan, conf_sum / safe),
        accuracy=torch.where(empty, nan, acc_sum / safe),
    )
    return ece, table


def _runner_up(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_y, f_j) with j = argmax_{j≠y} f_j: logits (…, N, C), labels (…, N) → two (…, N)."""
    f_y = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, labels.unsqueeze(-1), float("-inf"))
    return f_y, others.max(-1).values


def output_margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """f_y − max_{j≠y} f_j: logits (…, N, C), labels (…, N) → (…, N)."""
    f_y, f_j = _runner_up(logits, labels)
    return f_y - f_j


def input_margins(net: StackedNetwork, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""First-order distance to the decision boundary :math:`(f_y - f_j)/\|\nabla_x (f_y - f_j)\|`: (E, N).

    x: (E, N, …) and labels (E, N); j is each example's runner-up class (held fixed while
    differentiating). Examples never interact in the network, so one backward pass of the summed
    gaps gives every per-example input gradient.
    """
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        logits = net.forward(x_in).output  # (E, N, C)
        others = logits.detach().scatter(-1, labels.unsqueeze(-1), float("-inf"))
        j = others.argmax(-1, keepdim=True)  # (E, N, 1)
        gap = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - logits.gather(-1, j).squeeze(-1)  # (E, N)
        (grad,) = torch.autograd.grad(gap.sum(), x_in)
    norm: torch.Tensor = grad.flatten(2).norm(dim=-1)  # (E, N)
    margins: torch.Tensor = gap.detach()
    return margins / norm.clamp_min(torch.finfo(norm.dtype).tiny)


def margin_quantiles(margins: torch.Tensor, levels: Sequence[float] = QUANTILE_LEVELS) -> torch.Tensor:
    """Quantiles of per-example margins (…, N) at ``levels``: (…, len(levels))."""
    q = torch.tensor(list(levels), dtype=margins.dtype, device=margins.device)
    out: torch.Tensor = torch.quantile(margins, q, dim=-1).movedim(0, -1)
    return out


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean −log softmax(f)_y: logits (…, N, C), labels (…, N) → (…,)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(-1)
