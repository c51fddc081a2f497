"""Per-run losses over stacked outputs, and the factor S of the output Hessian H_L = S Sᵀ.

Regression: L = mean_n ½‖y_n − f_n‖² (the ½ makes H_L = I; a plain mean-squared error would be
H_L = (2/d_L) I). Classification: L = mean_n −log softmax(f_n)_{y_n}, with
H_L = diag(p) − p pᵀ, p = softmax(f).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch.nn import functional as F

LossName = Literal["mse", "cross_entropy"]


def per_example_loss(loss: LossName, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(E, N) losses; output (E, N, d_L); target (E, N, d_L) floats or (E, N) class ids."""
    if loss == "mse":
        return 0.5 * (output - target).pow(2).sum(-1)
    e, n, c = output.shape
    return F.cross_entropy(output.reshape(e * n, c), target.reshape(e * n), reduction="none").reshape(e, n)


def run_losses(loss: LossName, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(E,) mean loss of each run."""
    return per_example_loss(loss, output, target).mean(-1)


def hessian_factor(loss: LossName, output: torch.Tensor) -> torch.Tensor:
    """S with H_L = S Sᵀ per example, as R = d_L vectors: (E, d_L, N, d_L), differentiable in ``output``.

    Squared error: S = I. Cross-entropy: column c is s_c = √p_c (e_c − p).
    """
    e, n, d = output.shape
    if loss == "mse":
        eye = torch.eye(d, dtype=output.dtype, device=output.device)
        return eye.reshape(1, d, 1, d).expand(e, d, n, d)
    logp = torch.log_softmax(output, dim=-1)  # (E, N, C)
    p = logp.exp()
    eye = torch.eye(d, dtype=output.dtype, device=output.device)
    diff = eye.reshape(1, d, 1, d) - p.unsqueeze(1)  # (E, C, N, C): e_c − p
    # √p_c as exp(½ log p_c): the same value, but a finite gradient where p_c underflows to 0
    return (0.5 * logp).exp().transpose(1, 2).unsqueeze(-1) * diff


def hessian_one_draw(
    loss: LossName,
    output: torch.Tensor,
    generators: Sequence[torch.Generator | None],
    draw: Sequence[bool] | None = None,
) -> torch.Tensor:
    """One random v per example with E[v vᵀ] = H_L: (E, 1, N, d_L); run e draws from ``generators[e]``.

    Squared error: v ~ N(0, I). Cross-entropy: v = w (e_ŷ − p) with ŷ ~ Cat(p) and
    w = √(p_ŷ / sg(p_ŷ)) = 1 in value: since ŷ's distribution depends on θ, w adds the score-function
    term p_ŷ⁻¹ ∇p_ŷ ‖J_kᵀ v‖² without which the estimator's gradient would be biased.
    Only the runs where ``draw`` is true (default: all) touch their generator; the others (whose R is
    zero-weighted) get a deterministic v, so a batch never moves the streams of its non-explicit runs.
    """
    e, n, d = output.shape
    wanted = [True] * e if draw is None else list(draw)
    if loss == "mse":
        draws = [
            torch.randn((1, n, d), generator=g, dtype=output.dtype, device=output.device)
            if w
            else torch.zeros((1, n, d), dtype=output.dtype, device=output.device)
            for g, w in zip(generators, wanted, strict=True)
        ]
        return torch.stack(draws)
    p = torch.softmax(output, dim=-1)
    classes = torch.stack(
        [
            torch.multinomial(p[i].detach().double(), 1, generator=g).squeeze(-1)
            if wanted[i]
            else p[i].detach().argmax(-1)
            for i, g in enumerate(generators)
        ]
    )  # (E, N)
    onehot = F.one_hot(classes, d).to(output.dtype)
    p_hat = p.gather(-1, classes.unsqueeze(-1))  # (E, N, 1)
    weight = (p_hat / p_hat.detach()).sqrt()  # 1 in value; unbiased gradient of E_ŷ[‖J_kᵀ v‖²]
    return (weight * (onehot - p)).unsqueeze(1)
