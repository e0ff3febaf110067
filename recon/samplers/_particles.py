"""Particle toolkit shared by the SMC samplers (TDS, MCGdiff, FPS, AFDPS).

A cloud is ``N`` particles with log-weights ``(N,)`` for one measurement. The clouds of B
measurements live in the batch dimension, ``B * N`` rows (measurement b's particles in rows
``b*N .. b*N + N - 1``) with log-weights ``(B, N)``, so one network call serves every cloud; each
cloud draws its noise and its resampling from its measurement's own stream and is normalised and
resampled on its own, so clouds of different measurements never mix.

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
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor

from recon.linalg import batch_dot, conjugate_gradient

from ._steps import Start


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
    if not bool(torch.isfinite(log_w).any(dim=-1).all()):
        raise FloatingPointError("every particle of a cloud has zero weight")
    return log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)


def ess(log_w: Tensor) -> Tensor:
    """Effective sample size ``1 / sum W^2`` of (possibly unnormalised) log-weights (..., N)."""
    lw = log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)
    return torch.exp(-torch.logsumexp(2 * lw, dim=-1))


def _gen_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def multinomial_resample(log_w: Tensor, *, generator: torch.Generator | None) -> Tensor:
    """Indices (N,) drawn i.i.d. from the normalised weights (on the stream's device)."""
    w = torch.exp(normalize_log_weights(log_w)).double()
    w = w.to(_gen_device(generator, w.device))
    return torch.multinomial(w, w.numel(), replacement=True, generator=generator).to(log_w.device)


def systematic_resample(log_w: Tensor, *, generator: torch.Generator | None) -> Tensor:
    """Indices (N,) by systematic resampling: one uniform ``u``, points ``(u + k) / N``.

    Unbiased: the expected number of copies of particle k is ``N W_k``.
    """
    n = log_w.numel()
    w = torch.exp(normalize_log_weights(log_w)).double().cpu()
    cdf = torch.cumsum(w, 0)
    cdf[-1] = 1.0
    dev = _gen_device(generator, torch.device("cpu"))
    u = float(torch.rand(1, generator=generator, dtype=torch.float64, device=dev))
    points = (u + torch.arange(n, dtype=torch.float64)) / n
    return torch.searchsorted(cdf, points).clamp(max=n - 1).to(log_w.device)


RESAMPLERS = {"systematic": systematic_resample, "multinomial": multinomial_resample}

# hyperparameters every particle sampler has (their defaults are each sampler's own)
NParticles = Annotated[int, Field(ge=1, description="particles per measurement")]
ESSThreshold = Annotated[
    float, Field(ge=0.0, le=1.0, description="resample when ESS < this fraction of N")
]
Resampling = Annotated[
    Literal[tuple(RESAMPLERS)],  # type: ignore[valid-type]
    Field(description="resampling scheme: " + ", ".join(RESAMPLERS)),
]


def log_mean_exp(log_w: Tensor) -> Tensor:
    """``log((1/N) sum exp(log_w))`` over the last axis (stable)."""
    return torch.logsumexp(log_w, dim=-1) - math.log(log_w.shape[-1])


def reweight(
    log_w: Tensor,
    incr: Tensor,
    arrays: tuple[Tensor, ...],
    *,
    threshold: float,
    resample,
    streams: Sequence[torch.Generator],
    allow: bool = True,
) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """Add incremental log-weights, normalise per measurement, and resample the clouds whose
    ``ESS < threshold * N`` (when ``allow``); a resampled cloud's weights are reset to uniform.

    Args:
        log_w: normalised log-weights (B, N).
        incr: incremental log-weights (B * N,) or (B, N).
        arrays: per-particle tensors (B * N, ...), indexed together.
        threshold, resample: the ESS fraction and the resampling function.
        streams: one stream per measurement (its resampling draws come from it).

    Returns:
        ``(log_w, ESS before resampling (B,), arrays)``.
    """
    b, n = log_w.shape
    log_w = normalize_log_weights(log_w + incr.reshape(b, n).to(log_w.dtype))
    e = ess(log_w)
    low = (e < threshold * n).tolist() if allow else [False] * b
    if any(low):
        idx = torch.arange(b * n, device=log_w.device)
        for j in (j for j in range(b) if low[j]):
            idx[j * n : (j + 1) * n] = j * n + resample(log_w[j], generator=streams[j])
        arrays = tuple(a[idx] for a in arrays)
        rows = torch.tensor(low, device=log_w.device)
        log_w = torch.where(rows[:, None], torch.full_like(log_w, -math.log(n)), log_w)
    return log_w, e, arrays


def draw_index(log_w: Tensor, generator: torch.Generator) -> int:
    """One particle index drawn with probability W_k (from the measurement's own stream)."""
    w = torch.exp(normalize_log_weights(log_w)).double().to(generator.device)
    return int(torch.multinomial(w, 1, generator=generator))


def finish(
    particles: Tensor,
    log_weights: Tensor,
    ess_trace: Tensor,
    log_evidence: Tensor,
    streams: Sequence[torch.Generator],
    *,
    return_particles: bool,
) -> Tensor | ParticleResult:
    """One particle per measurement drawn ∝ its weight; optionally the :class:`ParticleResult`.

    Args:
        particles: (B, N, *x_shape).
        log_weights: normalised log-weights (B, N).
        ess_trace: the ESS after each step, (B, n_steps).
        log_evidence: the log-evidence estimates (B,) (NaN if none).
        streams: per measurement, its random stream (the draw comes from it).
    """
    sample = torch.stack(
        [particles[j, draw_index(log_weights[j], g)] for j, g in enumerate(streams)]
    )
    if not return_particles:
        return sample
    b, n = log_weights.shape
    w = torch.exp(log_weights).reshape(b, n, *([1] * (particles.ndim - 2))).to(particles.dtype)
    mean = (w * particles).sum(1)
    std = (w * (particles - mean[:, None]) ** 2).sum(1).clamp_min(0).sqrt()
    return ParticleResult(
        sample,
        particles,
        log_weights,
        mean,
        std,
        ess_trace.double().cpu(),
        log_evidence.double().cpu(),
    )


def gaussian_product_move(
    physics,
    mean: Tensor,
    v: float,
    target: Tensor,
    sigma2: float,
    streams: Sequence[torch.Generator],
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
        physics: linear operator (A, A_adjoint), shared by all rows.
        mean: (B * N, *x_shape), measurement b's N particles in rows b*N .. b*N + N - 1;
            v: prior variance (scalar, >= 0).
        target: (B * N, *y_shape) or broadcastable; sigma2: likelihood variance (> 0).
        streams: one stream per measurement (B of them); measurement b's noise comes from
            ``streams[b]`` alone.
        n_cg: CG iterations (exact after rank(A^T A) + 1 iterations in exact arithmetic).

    Returns:
        x' (B * N, *x_shape) and the log-marginal (B * N,) without its constant.
    """
    rows = mean.shape[0]
    n = rows // len(streams)
    r = target - physics.A(mean)
    if v <= 0:
        return mean.clone(), -0.5 * batch_dot(r, r) / sigma2
    atr = physics.A_adjoint(r) / sigma2
    xi = [
        (
            torch.randn((n, *mean.shape[1:]), generator=g, dtype=mean.dtype, device=mean.device),
            torch.randn((n, *r.shape[1:]), generator=g, dtype=r.dtype, device=r.device),
        )
        for g in streams
    ]
    xi1 = torch.cat([a for a, _ in xi])
    xi2 = torch.cat([b for _, b in xi])
    rhs = torch.cat([atr, atr + xi1 / math.sqrt(v) + physics.A_adjoint(xi2) / math.sqrt(sigma2)])

    def apply_m(u: Tensor) -> Tensor:
        return u / v + physics.A_adjoint(physics.A(u)) / sigma2

    sol = conjugate_gradient(apply_m, rhs, n_iter=n_cg, tol=1e-10)
    u, w = sol[:rows], sol[rows:]
    quad = batch_dot(r, r) / sigma2 - batch_dot(atr, u)
    return mean + w, -0.5 * quad


#: what a sampler's cloud function returns for B measurements: particles (B * N, *x_shape),
#: normalised log-weights (B, N), the ESS after each step (B, n_steps), log-evidence (B,)
CloudOutput = tuple[Tensor, Tensor, Tensor, Tensor]


#: the most particle entries (rows x numel of an image) one group of clouds holds at once
MAX_CLOUD_ELEMENTS = 2**24


def run_clouds(
    clouds: Callable[..., CloudOutput],
    denoiser,
    y: Tensor,
    physics,
    opening: Start,
    callback,
    *,
    n: int,
    return_particles: bool,
    **options,
) -> Tensor | ParticleResult:
    """Run ``clouds(denoiser, y, physics, sigmas, streams, n=n, callback=..., **options)`` on
    every measurement's cloud under ``no_grad`` and :func:`finish`; ``opening`` is the
    sampler's :func:`~recon.samplers._steps.start` (streams and schedule).

    The clouds of all measurements are one batch of ``B * N`` rows when the operator is shared
    (a network call serves every cloud); each measurement's particles draw only from its own
    stream and are weighted and resampled within its own cloud, so clouds never mix and a
    measurement's result is the same alone or in any batch. Measurements are taken in groups
    of at most :data:`MAX_CLOUD_ELEMENTS` particle entries (memory); an operator with
    per-measurement parameters (masks, coil maps) runs cloud by cloud on its row's operator.
    The callback sees measurement 0's cloud.
    """
    from .baselines import _has_per_sample_params, _row_physics

    b = y.shape[0]
    streams, sig = opening.streams, opening.sigmas
    if b == 1 or not _has_per_sample_params(physics, b):
        numel = physics.A_adjoint(y[:1]).numel()
        per = max(1, MAX_CLOUD_ELEMENTS // max(n * numel, 1))
        groups = [(slice(j, min(j + per, b)), physics) for j in range(0, b, per)]
    else:
        groups = [(slice(j, j + 1), _row_physics(physics, j, b)) for j in range(b)]
    with torch.no_grad():
        outs = [
            clouds(
                denoiser,
                y[rows],
                phys,
                sig,
                streams[rows],
                n=n,
                callback=callback if rows.start == 0 else None,
                **options,
            )
            for rows, phys in groups
        ]
    x = torch.cat([o[0] for o in outs])
    return finish(
        x.reshape(b, n, *x.shape[1:]),
        torch.cat([o[1] for o in outs]),
        torch.cat([o[2] for o in outs]),
        torch.cat([o[3] for o in outs]),
        streams,
        return_particles=return_particles,
    )
