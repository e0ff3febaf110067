"""MCGdiff: Monte Carlo guided diffusion (Cardoso, Janati el Idrissi, Le Corff, Moulines,
ICLR 2024, arXiv 2308.07983), for linear operators with an SVD.

Written in recon's variance-exploding form (``x_t = x_0 + sigma_t n``; the paper's VP
quantities divided by ``sqrt(ab_t)``). In the right-singular basis ``x_bar = V^T x`` the
measurement reads ``y_bar_i = s_i x_bar_i + sigma_y e_i``, i.e. ``y~_i = y_bar_i / s_i`` is
``x_bar_{0,i}`` plus noise of std ``sigma_tau_i = sigma_y / s_i``: exactly the law of the
*diffused* coordinate ``x_bar_{tau_i, i}`` at noise level ``sigma_tau_i``. So coordinate i is
observed "at time tau_i", and the posterior given y equals the posterior given
``x_bar_{tau_i, i} = y~_i``. MCGdiff targets, at each noise level ``sigma_t >= sigma_tau_i``,
the prior marginal times the potentials

    g_t(x_bar_i) = N(x_bar_i; y~_i, sigma_t^2 - sigma_tau_i^2 + kappa (1 + sigma_tau_i^2))

(the forward noising of ``y~_i`` from tau_i to t; ``kappa`` is the paper's small variance, in
its VP units, that keeps the potential proper at t = tau_i). Per step t -> s (Alg. 1):

1. predict with the DDIM kernel (``eta``):
   ``m = x0_hat + sqrt(sigma_s^2 - v)/sigma_t (x - x0_hat)``,
   ``v = eta^2 sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2``; ``m_bar = V^T m``;
2. weight (fully adapted, depends on x_t only): over the coordinates active at s
   (``sigma_s >= sigma_tau_i``), ``log w = sum_i log N(m_bar_i; y~_i, v + var_s,i) -
   sum_i log g_t(x_bar_i)``;
3. resample when ``ESS < ess_threshold * N``. The paper resamples multinomially at every step
   (``ess_threshold=1, resampling="multinomial"``); recon's default resamples systematically
   when the ESS falls below N/2, the usual lower-variance choice that also limits path
   degeneracy (the weights are valid either way);
4. propagate: active coordinates from the Gaussian product
   ``K = v / (v + var_s)``, ``x_bar' = K y~ + (1 - K) m_bar + sqrt(var_s K) z``; the others
   (unobserved, or already past tau_i) ``x_bar' = m_bar + sqrt(v) z``; ``x' = V x_bar'``.

The schedule ``sigmas`` is augmented with the distinct ``sigma_tau_i`` (the official code also
adds these steps, ``get_optimal_timesteps_from_singular_values``), so every observed coordinate
is pinned exactly at its own level. Coordinates with ``sigma_tau_i >= sigmas[0]`` are weighted
once at the start by ``N(y~_i; x_bar_T,i, sigma_tau_i^2 - sigma_T^2)``. With ``sigma_y = 0``
every ``tau_i`` is 0 and the potentials shrink to variance ``kappa`` at the end.

The final weighted cloud is consistent (N -> inf, then kappa -> 0) for the posterior of the
discretised diffusion model; the output is one draw per measurement ∝ weight (the packaged
``mcg_diff`` returns weights too; the paper-era script returned the cloud after the last
resampling). Cost: one network call per particle and step, no gradients.
"""

from __future__ import annotations

import math
from typing import Annotated

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from recon.errors import SamplerInputError
from recon.operators.svd import svd
from recon.priors.base import Denoiser

from ._particles import (
    RESAMPLERS,
    ESSThreshold,
    ParticleResult,
    Resampling,
    log_mean_exp,
    normalize_log_weights,
    reweight,
    run_clouds,
)
from ._registry import Sampler
from ._steps import Callback, Generators, StepInfo, particle_randn, start
from .baselines import _row_physics


def _log_normal(x: Tensor, mean: Tensor, var: Tensor, where: Tensor) -> Tensor:
    """sum over the ``where`` entries of log N(x; mean, var), per particle (N,)."""
    lp = -0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * var))
    return torch.where(where, lp, torch.zeros_like(lp)).flatten(1).sum(1)


def _augment(sig: list[float], taus: Tensor) -> list[float]:
    extra = [float(t) for t in torch.unique(taus) if 0.0 < float(t) < sig[0]]
    return sorted(set(sig) | set(extra), reverse=True)


def _clouds(
    denoiser, y, physics, sig, streams, *, n, s_y, eta, kappa, threshold, resample, callback
):
    b = y.shape[0]
    like = physics.A_adjoint(y[:1])
    dec = svd(physics, like)
    dt, dev = like.dtype, like.device
    s = dec.s.to(dt)
    obs = s > 1e-12 * float(s.max().clamp_min(1e-300))
    safe_s = torch.where(obs, s, torch.ones_like(s))
    y_b = torch.where(obs, dec.u_adjoint(y).to(dt) / safe_s, torch.zeros_like(s))  # (B, ...)
    y_t = y_b.repeat_interleave(n, dim=0)  # each particle's rescaled observation
    tau = torch.where(obs, s_y / safe_s, torch.full_like(s, math.inf))
    sig = _augment(sig, tau[obs])
    s_T = sig[0]
    early = obs & (tau >= s_T)  # observed "before" the schedule starts: weighted once
    filt = obs & (tau < s_T)
    kap = kappa * (1 + torch.where(filt, tau, torch.zeros_like(tau)) ** 2)

    def pot_var(level: float) -> Tensor:
        return (level**2 - torch.where(filt, tau, torch.zeros_like(tau)) ** 2).clamp_min(0) + kap

    def randn() -> Tensor:
        return particle_randn(streams, n, s.shape[1:], like)

    # initial cloud: N(0, sigma_T^2) times the potentials at T (exact Gaussian product)
    var_T = pot_var(s_T)
    k0 = s_T**2 / (s_T**2 + var_T)
    z = randn()
    xb = torch.where(filt, k0 * y_t + torch.sqrt(var_T * k0) * z, s_T * z)
    log_z = _log_normal(y_b, torch.zeros_like(y_b), s_T**2 + var_T, filt).double()
    log_w = torch.zeros((b, n), dtype=torch.float64, device=dev)
    if bool(early.any()):
        v_early = torch.where(early, tau**2 - s_T**2, torch.ones_like(tau)).clamp_min(kappa)
        log_w = log_w + _log_normal(y_t, xb, v_early, early).double().reshape(b, n)
    log_z = log_z + log_mean_exp(log_w)
    log_w = normalize_log_weights(log_w)
    trace = []
    for i in range(len(sig) - 1):
        st, ss = sig[i], sig[i + 1]
        x = dec.v(xb)
        x0 = denoiser(x, torch.full((x.shape[0],), st, dtype=dt, device=dev))
        v = eta**2 * ss**2 * (st**2 - ss**2) / st**2
        m = x0 + math.sqrt(max(ss**2 - v, 0.0)) / st * (x - x0)
        mb = dec.v_adjoint(m)
        act = filt & (tau <= ss * (1 + 1e-9))
        var_s, var_t = pot_var(ss), pot_var(st)
        incr = _log_normal(mb, y_t, v + var_s, act) - _log_normal(xb, y_t, var_t, act)
        incr = incr.double().reshape(b, n)
        log_z = log_z + torch.logsumexp(log_w + incr, dim=1)
        log_w, e, (mb, x, x0) = reweight(
            log_w, incr, (mb, x, x0), threshold=threshold, resample=resample, streams=streams
        )
        trace.append(e)
        z = randn()
        gain = v / (v + var_s)
        xb_act = gain * y_t + (1 - gain) * mb + torch.sqrt(var_s * gain) * z
        xb = torch.where(act, xb_act, mb + math.sqrt(v) * z)
        if callback is not None:
            callback(StepInfo(i, st, x[:n], x0[:n]))
    return dec.v(xb), log_w, torch.stack(trace, dim=1), log_z


def sample_mcgdiff(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
    n_particles: Annotated[
        int, Field(ge=1, description="particles per measurement (paper: 64)")
    ] = 64,
    eta: Annotated[
        float, Field(ge=0.0, le=1.0, description="DDIM stochasticity (paper: 1)")
    ] = 1.0,
    kappa: Annotated[
        float, Field(gt=0.0, description="potential variance at tau (VP units)")
    ] = 1e-4,
    ess_threshold: ESSThreshold = 0.5,
    resampling: Resampling = "systematic",
    return_particles: bool = False,
) -> Tensor | ParticleResult:
    """MCGdiff posterior sampling (see module docstring).

    Args:
        denoiser, y, physics, sigmas: as every sampler; physics must have an SVD
            (:func:`recon.operators.svd.svd`: inpainting, single-coil MRI, dense matrices).
        x_init: unused (the cloud starts at ``sigmas[0]``).
        generator: per-measurement streams (particles of measurement b draw from stream b).
        callback: a :class:`StepInfo` per step for measurement 0's cloud.
        sigma_y: measurement noise std (from the operator when None); 0 is allowed.
        n_particles, eta, kappa, ess_threshold, resampling, return_particles: see
            the hyperparameters (module docstring).

    Returns:
        (B, *x_shape) draws, or a :class:`ParticleResult`. Its evidence includes the Gaussian
        constants of the potentials: an estimate of ``log p(y~)``, i.e. of ``log p(y)`` up to
        the Jacobian ``-sum log s_i``. It is not exact at finite steps: on the 4-d Gaussian
        test problem (200 steps, 8 x 512 particles) it reads -3.97 +- 0.15 against the exact
        -3.60 (TDS's evidence is the checked one, tests/test_smc.py).
    """
    opening = start(y, physics, sigmas, generator, sigma_y=sigma_y, init=None)
    s_y = opening.sigma_y
    b = y.shape[0]
    try:
        svd(_row_physics(physics, 0, b), physics.A_adjoint(y[:1]))
    except TypeError as err:
        raise SamplerInputError(str(err)) from None
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
        eta=eta,
        kappa=kappa,
        threshold=ess_threshold,
        resample=RESAMPLERS[resampling],
    )


SAMPLERS = (
    Sampler(
        sample_mcgdiff,
        title="MCGdiff",
        summary="Cardoso et al. 2024: SMC in the SVD basis; asymptotically exact",
        kind="asymptotic",
    ),
)
