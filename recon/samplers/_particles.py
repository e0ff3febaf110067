"""Particle toolkit shared by the SMC samplers (TDS, MCGdiff, FPS, AFDPS).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from recon.linalg import batch_dot, conjugate_gradient


@dataclass
class ParticleResult:
    """A particle sampler's output for B measurements.

    Attributes:
        sample: one draw per measurement from its final weighted cloud, (B, *x_shape).
        particles: (B, N, *x_shape).
        log_weights: normalised, (B, N).
        mean: weighted posterior mean, (B, *x_shape).
        std: weighted posterior std, (B, *x_shape).
        ess: ESS after each step (before resampling), (B, n_steps).
        log_evidence: SMC estimate of ``log p(y)`` under the model, (B,); NaN for samplers
            whose weights drop particle-independent constants (FPS, AFDPS).
    """

    sample: Tensor
    particles: Tensor
    log_weights: Tensor
    mean: Tensor
    std: Tensor
    ess: Tensor
    log_evidence: Tensor


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


def reweight(
    log_w: Tensor,
    incr: Tensor,
    arrays: tuple[Tensor, ...],
    *,
    threshold: float,
    resample,
    generator: torch.Generator,
    allow: bool = True,
) -> tuple[Tensor, float, tuple[Tensor, ...]]:
    """Add incremental log-weights, normalise, and resample ``arrays`` (per-particle tensors,
    indexed together) when ``ESS < threshold * N`` (and ``allow``); weights are then reset to
    uniform. Returns ``(log_w, ESS before resampling, arrays)``."""
    log_w = normalize_log_weights(log_w + incr.to(log_w.dtype))
    e = float(ess(log_w))
    n = log_w.numel()
    if allow and e < threshold * n:
        idx = resample(log_w, generator=generator)
        arrays = tuple(a[idx] for a in arrays)
        log_w = torch.full_like(log_w, -math.log(n))
    return log_w, e, arrays


def draw_index(log_w: Tensor, generator: torch.Generator) -> int:
    """One particle index drawn with probability W_k (from the measurement's own stream)."""
    w = torch.exp(normalize_log_weights(log_w)).double().cpu()
    return int(
        torch.multinomial(w, 1, generator=generator if generator.device.type == "cpu" else None)
    )


def finish(
    clouds: Sequence[Tensor],
    log_weights: Sequence[Tensor],
    ess_traces: Sequence[Sequence[float]],
    log_evidence: Sequence[float],
    streams: Sequence[torch.Generator],
    *,
    return_particles: bool,
) -> Tensor | ParticleResult:
    """One particle per measurement drawn ∝ its weight; optionally the :class:`ParticleResult`.

    Args:
        clouds: per measurement, particles (N, *x_shape).
        log_weights: per measurement, normalised log-weights (N,).
        ess_traces: per measurement, the ESS after each step.
        log_evidence: per measurement, the log-evidence estimate (NaN if none).
        streams: per measurement, its random stream (the draw comes from it).
    """
    draws = [c[draw_index(lw, g)] for c, lw, g in zip(clouds, log_weights, streams, strict=True)]
    sample = torch.stack(draws)
    if not return_particles:
        return sample
    parts = torch.stack(list(clouds))
    lw = torch.stack(list(log_weights))
    b, n = lw.shape
    w = torch.exp(lw).reshape(b, n, *([1] * (parts.ndim - 2))).to(parts.dtype)
    mean = (w * parts).sum(1)
    std = (w * (parts - mean[:, None]) ** 2).sum(1).clamp_min(0).sqrt()
    return ParticleResult(
        sample,
        parts,
        lw,
        mean,
        std,
        torch.tensor([list(t) for t in ess_traces], dtype=torch.float64),
        torch.tensor(list(log_evidence), dtype=torch.float64),
    )


def gaussian_product_move(
    physics,
    mean: Tensor,
    v: float,
    target: Tensor,
    sigma2: float,
    generator: torch.Generator,
    *,
    n_cg: int = 30,
) -> tuple[Tensor, Tensor]:
    """Sample ``x' ∝ N(x'; mean, v I) N(target; A x', sigma2 I)`` exactly for each particle
    and return ``log int N(x'; mean, v I) N(target; A x', sigma2 I) dx'`` up to a constant.

    With ``M = I / v + A^T A / sigma2`` and ``r = target - A mean``:

    * the product is ``N(mean + M^-1 A^T r / sigma2, M^-1)``; an exact draw is
      ``mean + M^-1 (A^T r / sigma2 + xi_1 / sqrt(v) + A^T xi_2 / sqrt(sigma2))`` with
      ``xi_1, xi_2`` standard normal (its covariance is ``M^-1 M M^-1``; "perturb and solve",
      Papandreou & Yuille 2010);
    * the marginal is ``N(target; A mean, sigma2 I + v A A^T)``, whose quadratic form is, by
      Woodbury, ``|r|^2 / sigma2 - <A^T r, M^-1 A^T r> / sigma2^2``; the log-determinant does
      not depend on the particle and is dropped.

    Both solves run as one per-sample CG (rows never mix). ``v = 0`` gives ``x' = mean``.

    Args:
        physics: linear operator (A, A_adjoint).
        mean: (N, *x_shape); v: prior variance (scalar, >= 0).
        target: (1 or N, *y_shape); sigma2: likelihood variance (> 0).
        generator: the measurement's stream.
        n_cg: CG iterations (exact after rank(A^T A) + 1 iterations in exact arithmetic).

    Returns:
        x' (N, *x_shape) and the log-marginal (N,) without its constant.
    """
    n = mean.shape[0]
    r = target - physics.A(mean)
    if v <= 0:
        return mean.clone(), -0.5 * batch_dot(r, r) / sigma2
    atr = physics.A_adjoint(r) / sigma2
    xi1 = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    xi2 = torch.randn(r.shape, generator=generator, dtype=r.dtype, device=r.device)
    rhs = torch.cat([atr, atr + xi1 / math.sqrt(v) + physics.A_adjoint(xi2) / math.sqrt(sigma2)])

    def apply_m(u: Tensor) -> Tensor:
        return u / v + physics.A_adjoint(physics.A(u)) / sigma2

    sol = conjugate_gradient(apply_m, rhs, n_iter=n_cg, tol=1e-10)
    u, w = sol[:n], sol[n:]
    quad = batch_dot(r, r) / sigma2 - batch_dot(atr, u)
    return mean + w, -0.5 * quad


def run_clouds(
    one_measurement: Callable[..., tuple[Tensor, Tensor, list[float], float]],
    denoiser,
    y: Tensor,
    physics,
    sigmas: Tensor,
    generator,
    callback,
    *,
    return_particles: bool,
    **options,
) -> Tensor | ParticleResult:
    """Run ``one_measurement(denoiser, y_j, physics_j, sigmas, stream_j, callback=..., **options)
    -> (cloud, log_w, ess_trace, log_evidence)`` for every measurement j, each with its own
    operator row and random stream (clouds never mix), under ``no_grad``, and :func:`finish`.
    The callback sees measurement 0's cloud."""
    from ._steps import make_streams
    from .baselines import _row_physics

    b = y.shape[0]
    streams = make_streams(generator, b, y.device)
    sig = [float(v) for v in sigmas]
    with torch.no_grad():
        outs = [
            one_measurement(
                denoiser,
                y[j : j + 1],
                _row_physics(physics, j, b),
                sig,
                streams[j],
                callback=callback if j == 0 else None,
                **options,
            )
            for j in range(b)
        ]
    return finish(
        [o[0] for o in outs],
        [o[1] for o in outs],
        [o[2] for o in outs],
        [o[3] for o in outs],
        streams,
        return_particles=return_particles,
    )
