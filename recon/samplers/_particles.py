"""Particle toolkit shared by the SMC samplers (TDS, and the later MCGdiff/FPS/ensemble ones).

A cloud is ``N`` particles with log-weights ``(N,)`` for one measurement; samplers handle one
measurement's cloud at a time, so clouds of different measurements never mix.

* normalisation by log-sum-exp (no overflow or NaN for weights spanning any range);
* effective sample size ``ESS = 1 / sum(W^2)`` of the normalised weights W;
* multinomial and systematic resampling (Kitagawa 1996; Douc, Cappe, Moulines 2005), drawing
  from the measurement's own stream;
* the running log-evidence ``log Z += log sum_k W_prev^k w^k`` (the SMC normalising constant).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def normalize_log_weights(log_w: Tensor) -> Tensor:
    """``log W = log w - logsumexp(log w)``; -inf entries stay -inf, all -inf raises."""
    if not bool(torch.isfinite(log_w).any()):
        raise FloatingPointError("every particle has zero weight")
    return log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)


def ess(log_w: Tensor) -> Tensor:
    """Effective sample size ``1 / sum W^2`` of (possibly unnormalised) log-weights (..., N)."""
    lw = log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)
    return torch.exp(-torch.logsumexp(2 * lw, dim=-1))


def multinomial_resample(log_w: Tensor, *, generator: torch.Generator | None) -> Tensor:
    """Indices (N,) drawn i.i.d. from the normalised weights."""
    w = torch.exp(normalize_log_weights(log_w)).double()
    return torch.multinomial(w.cpu(), w.numel(), replacement=True, generator=generator).to(
        log_w.device
    )


def systematic_resample(log_w: Tensor, *, generator: torch.Generator | None) -> Tensor:
    """Indices (N,) by systematic resampling: one uniform ``u``, points ``(u + k) / N``.

    Unbiased: the expected number of copies of particle k is ``N W_k``.
    """
    n = log_w.numel()
    w = torch.exp(normalize_log_weights(log_w)).double().cpu()
    cdf = torch.cumsum(w, 0)
    cdf[-1] = 1.0
    u = float(torch.rand(1, generator=generator, dtype=torch.float64))
    points = (u + torch.arange(n, dtype=torch.float64)) / n
    return torch.searchsorted(cdf, points).clamp(max=n - 1).to(log_w.device)


RESAMPLERS = {"systematic": systematic_resample, "multinomial": multinomial_resample}


def log_mean_exp(log_w: Tensor) -> float:
    """``log((1/N) sum exp(log_w))`` (stable)."""
    return float(torch.logsumexp(log_w, dim=-1) - math.log(log_w.shape[-1]))
