"""FPS-SMC: filtering posterior sampling (Dou & Song, "Diffusion posterior sampling for linear
inverse problem solving: a filtering perspective", ICLR 2024), for linear operators.

Written in recon's variance-exploding form (the paper's VP quantities divided by
``sqrt(ab_t)``), with ``c = c_rate``:

1. **Measurement bridge** (drawn once per measurement, shared by its particles): a noised
   measurement sequence ending at ``y``,
   ``y_T = y + sigma_T A z_T`` and, for each step t -> s,
   ``y_s = y + sqrt(1 - c) (sigma_s / sigma_t) (y_t - y) + sqrt(c) sigma_s A z_s``,
   so that ``y_s - y`` has the law of ``A (x_s - x_0)`` under the forward process (the VP form
   ``y_{t-1} = sqrt(ab_{t-1}) y + sqrt((1-c)(1-ab_{t-1})/(1-ab_t)) (y_t - sqrt(ab_t) y) +
   sqrt(c (1-ab_{t-1})) A z`` divided by ``sqrt(ab_{t-1})``).
2. **Prior kernel**: DDIM with variance ratio c,
   ``p(x_s | x_t) = N(x0_hat + sqrt(1 - c) (sigma_s / sigma_t)(x_t - x0_hat), c sigma_s^2 I)``.
3. **Conditional step**: each particle moves to the exact Gaussian product
   ``p(x_s | x_t) N(y_s; A x_s, sigma_y^2 I)`` (the VP pseudo-likelihood variance
   ``ab_{t-1} sigma^2`` is ``sigma_y^2`` here); recon samples it by perturb-and-solve with CG
   (:func:`recon.samplers._particles.gaussian_product_move`), so no SVD is needed.
4. **SMC weights** (FPS-SMC): the predictive likelihood of the bridge point,
   ``w = N(y_s; A m_t, sigma_y^2 I + c sigma_s^2 A A^T)``, followed by resampling when
   ``ESS < ess_threshold * N``. The last step (``sigma = 0``) is ``x_0 = x0_hat(x_1)`` with
   weight ``N(y; A x_0, sigma_y^2 I)``.

The official code hard-codes the pseudo-likelihood std at 0.05; recon uses the operator's
``sigma_y`` (which must be > 0).

What FPS-SMC is exact for (measured, tests/test_smc.py): its particles target the filtering
model ``p(x_{0:T}) prod_t N(y_t; A x_t, sigma_y^2 I)`` for the drawn bridge, and recon's
cloud matches that model's closed form (a Kalman filter, 1-D Gaussian prior) within Monte-Carlo
error. That model counts the bridge points as independent observations although they share
the measurement noise (``y_t - A x_t`` is the same ``y - A x_0`` noise at every level), so it is
more concentrated than the posterior, and increasingly so with more steps: 1-D Gaussian prior,
``A = 1``, ``sigma_y = 0.5``, exact posterior std 0.447; FPS std 0.23 / 0.13 / 0.08 at 10 / 50 /
200 steps (256 particles). More particles converge to that model, not to the posterior: on the
grid mixture FPS's error stays flat or grows with N (benchmarks/README.md), unlike TDS, MCGdiff
and AFDPS. recon ships it as the paper defines it, for comparison.
The log-evidence is not reported (NaN): particle-independent constants are dropped.
"""

from __future__ import annotations

import math
from typing import Annotated

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from recon.priors.base import Denoiser

from ._particles import (
    RESAMPLERS,
    ESSThreshold,
    NParticles,
    ParticleResult,
    Resampling,
    gaussian_product_move,
    reweight,
    run_clouds,
)
from ._registry import Sampler
from ._steps import Callback, Generators, StepInfo, particle_randn, require_noise, start


def _clouds(denoiser, y, physics, sig, streams, *, n, s_y, c, threshold, resample, n_cg, callback):
    b = y.shape[0]
    like = physics.A_adjoint(y)
    dt, dev = like.dtype, like.device

    def a_noise() -> Tensor:  # A z, one z per measurement from its own stream
        return physics.A(particle_randn(streams, 1, like.shape[1:], like))

    # 1. the measurement bridge y_T, ..., y_0 = y (one draw per measurement)
    bridge = [y + sig[0] * a_noise()]
    for i in range(len(sig) - 1):
        st, ss = sig[i], sig[i + 1]
        nxt = y + math.sqrt(1 - c) * (ss / st) * (bridge[-1] - y) + math.sqrt(c) * ss * a_noise()
        bridge.append(nxt)
    bridge = [t.repeat_interleave(n, dim=0) for t in bridge]
    # initial cloud: N(0, sigma_T^2) times N(y_T; A x, sigma_y^2)
    x, _ = gaussian_product_move(
        physics,
        torch.zeros((b * n, *like.shape[1:]), dtype=dt, device=dev),
        sig[0] ** 2,
        bridge[0],
        s_y**2,
        streams,
        n_cg=n_cg,
    )
    log_w = torch.full((b, n), -math.log(n), dtype=torch.float64, device=dev)
    trace = []
    for i in range(len(sig) - 1):
        st, ss = sig[i], sig[i + 1]
        x0 = denoiser(x, torch.full((b * n,), st, dtype=dt, device=dev))
        mean = x0 + math.sqrt(1 - c) * (ss / st) * (x - x0)
        x_new, incr = gaussian_product_move(
            physics, mean, c * ss**2, bridge[i + 1], s_y**2, streams, n_cg=n_cg
        )
        log_w, e, (x, x0) = reweight(
            log_w,
            incr,
            (x_new, x0),
            threshold=threshold,
            resample=resample,
            streams=streams,
            allow=ss > 0,
        )
        trace.append(e)
        if callback is not None:
            callback(StepInfo(i, st, x[:n], x0[:n]))
    return x, log_w, torch.stack(trace, dim=1), torch.full((b,), math.nan, dtype=torch.float64)


def sample_fps(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.LinearPhysics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
    n_particles: NParticles = 16,
    c_rate: Annotated[
        float, Field(gt=0.0, le=1.0, description="DDIM variance ratio c (paper 0.95)")
    ] = 0.95,
    ess_threshold: ESSThreshold = 0.5,
    resampling: Resampling = "multinomial",
    n_cg: Annotated[
        int, Field(ge=1, description="CG iterations of each Gaussian-product move")
    ] = 30,
    return_particles: bool = False,
) -> Tensor | ParticleResult:
    """FPS-SMC posterior sampling (see module docstring).

    Args:
        denoiser, y, physics, sigmas: as every sampler; physics linear.
        x_init: unused.
        generator: per-measurement streams (bridge and particles of measurement b use stream b).
        callback: a :class:`StepInfo` per step for measurement 0's cloud.
        sigma_y: measurement noise std (> 0); from the operator when None.
        n_particles, c_rate, ess_threshold, resampling, n_cg, return_particles: see
            the hyperparameters (module docstring).

    Returns:
        (B, *x_shape) draws, or a :class:`ParticleResult`.
    """
    opening = start(y, physics, sigmas, generator, sigma_y=sigma_y, init=None)
    s_y = opening.sigma_y
    require_noise(s_y, "FPS", "its pseudo-likelihood variance")
    return run_clouds(
        _clouds,
        denoiser,
        y,
        physics,
        opening,
        callback,
        return_particles=return_particles,
        n=n_particles,
        s_y=s_y,
        c=c_rate,
        threshold=ess_threshold,
        resample=RESAMPLERS[resampling],
        n_cg=n_cg,
    )


SAMPLERS = (
    Sampler(
        sample_fps,
        title="FPS",
        summary="Dou & Song 2024: measurement bridge + Gaussian-product particle moves",
        kind="approximate",
    ),
)
