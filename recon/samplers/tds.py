"""TDS: Twisted Diffusion Sampler (Wu, Trippe, Naesseth, Blei, Cunningham, NeurIPS 2023,
arXiv 2306.17775), a sequential Monte Carlo sampler that is asymptotically exact in the number
of particles.

Per measurement, ``n_particles`` particles follow the reverse diffusion (VE sigma form, DDPM
ancestral transitions ``p(x_s | x_t) = N(m_t(x_t), v_t I)`` with
``m_t = x0_hat + (sigma_s^2 / sigma_t^2)(x_t - x0_hat)``,
``v_t = sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2``), twisted towards the data:

* twisting function ``p~_t(y | x_t) = N(y; A x0_hat(x_t), (sigma_y^2 + c sigma_t^2) I)``, the
  likelihood at the Tweedie estimate with its variance inflated by ``c sigma_t^2``
  (``c = twist_scale``; at ``sigma_t = 0`` it is the exact likelihood);
* proposal ``q(x_s | x_t) = N(m_t + h_t g_t, v_t I)``, ``g_t = grad_{x_t} log p~_t(y | x_t)``
  (through the denoiser: one forward and one VJP per step), ``h_t = v_t`` in the paper;
* weights ``w = p(x_s | x_t) p~_s(y | x_s) / (q(x_s | x_t) p~_t(y | x_t))``, initial
  weights ``p~_T(y | x_T)``; the last step (to ``sigma = 0``) is the deterministic
  ``x_0 = x0_hat(x_1)`` and its weight ``p(y | x_0) / p~_1(y | x_1)``;
* systematic (or multinomial) resampling when ``ESS < ess_threshold * n_particles``.

The weights make the final cloud a consistent (as ``n_particles -> inf``) approximation of the
posterior of the discretised diffusion model, whatever the twist and the proposal's mean; they
change only the variance. It needs ``sigma_y > 0`` (a noiseless likelihood is a point mass).

**recon's defaults** (documented departures; the paper's setting is ``twist_scale=1.0,
precondition=False, proposal_step="gradient"``). The paper's ``c sigma_t^2`` is the error of
``A x0_hat`` when every row of ``A`` is a unit vector (inpainting on the kept pixels, Cartesian
MRI). recon's operators return zero rows for unmeasured entries (masks, undersampled k-space)
and CT's rows are line integrals with squared norm ~0.01, so on real sparse CT the paper's
twist stays flat until ``sigma_t ~ sigma_y``: the data enter in the last few steps and TDS
ends 6 dB below FBP (``benchmarks/README.md``, "The SMC samplers with the default prior").
Hence:

* ``twist_scale="auto"``: ``c = rho = tr(A A^T) / m``, the mean over the ``m`` measured entries
  of ``||a_i||^2``, i.e. of the variance of ``a_i^T e`` for an error ``e`` of unit variance per
  pixel (:func:`recon.operators.mean_row_norm_sq`); ``rho = 1`` where every row
  is a unit vector, the paper's ``c``;
* ``precondition=True``: where the operator has a data-space preconditioner ``M`` (CT: the
  square root of the ramp filter, :func:`recon.operators.preconditioned`) the proposal's
  direction ``g_t`` is the gradient of ``-k ||M (y - A x0_hat)||^2 / (2 var_t)`` with
  ``k = ||A||^2 / ||M A||^2``: every singular direction is fitted at the same rate (``A^T r``
  fits each at a rate proportional to its squared singular value, and the Radon transform's
  fall off like ``1 / |frequency|``), with the paper's largest curvature ``||A||^2 / var_t``;
* ``proposal_step="gain"``: ``h_t = v_t / (1 + v_t ||A||^2 / var_t)``, ``var_t = sigma_y^2 +
  c sigma_t^2``, the mean of the Gaussian product ``N(m_t, v_t) N(y; A x, var_t)`` along
  ``A``'s top singular direction (denoiser Jacobian taken as the identity). The paper's
  ``h_t = v_t`` overshoots there once ``v_t ||A||^2 > var_t``, which the sharper twist
  causes (real CT with ``rho`` and the paper's step: 4.9 dB); ``h_t -> v_t`` where
  ``v_t ||A||^2 << var_t``.

A proposal is any distribution the weights divide by, and the twist any positive function
that is the likelihood at ``sigma = 0``, so none of the three changes the target. Measured
(first item of real_ct_sparse_30, 8 particles, the generic prior): the paper's setting 17.4 dB,
recon's 30.1 (FBP 24.1); without the gain step 4.9, without ``M`` 23.7. The benchmark tables
are in ``benchmarks/README.md`` ("TDS's twist and AFDPS's tempering").

Output: one draw per measurement from its final weighted cloud; with ``return_particles``
a :class:`ParticleResult` with the whole cloud.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Literal

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from recon.linalg import batch_dot
from recon.operators import mean_row_norm_sq, norm_sq, preconditioned
from recon.priors.base import Denoiser
from recon.teleport import cloud_start

from ._particles import (
    RESAMPLERS,
    ESSThreshold,
    NParticles,
    ParticleResult,
    Resampling,
    log_mean_exp,
    normalize_log_weights,
    reweight,
    run_clouds,
)
from ._registry import Sampler
from ._steps import (
    Callback,
    Generators,
    Precondition,
    StepInfo,
    particle_randn,
    require_noise,
    start,
)


def _log_twist(
    denoiser: Denoiser,
    x: Tensor,
    sigma: float,
    y: Tensor,
    physics,
    var: float,
    grad: bool,
    metric: tuple[Callable[[Tensor], Tensor], float] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """x0_hat, log p~(y | x) per particle (rows,), and the proposal's direction if asked: the
    gradient of log p~ w.r.t. x, or with ``metric = (M, k)`` that of
    ``-k ||M (y - A x0_hat)||^2 / (2 var)``."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(grad)
        s = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        x0 = denoiser(xg, s) if sigma > 0 else xg
        r = y - physics.A(x0)
        m = r[0].numel()
        logp = -0.5 * batch_dot(r, r) / var - 0.5 * m * math.log(2 * math.pi * var)
        g = None
        if grad:
            if metric is None:
                obj = logp
            else:
                mr = metric[0](r)
                obj = -0.5 * metric[1] * batch_dot(mr, mr) / var
            g = torch.autograd.grad(obj.sum(), xg)[0]
    return x0.detach(), logp.detach(), g


def _clouds(
    denoiser,
    y,
    physics,
    sig,
    streams,
    *,
    n,
    s_y,
    c,
    precondition,
    step,
    threshold,
    resample,
    callback,
    gaussian,
):
    b = y.shape[0]
    like = physics.A_adjoint(y[:1])
    shape = like.shape[1:]
    yn = y.repeat_interleave(n, dim=0)
    if c == "auto":
        c = mean_row_norm_sq(physics, like)
    lam = float(norm_sq(physics, like)[0])
    metric = None
    if precondition and getattr(physics, "metric_sqrt", None) is not None:
        pre, _ = preconditioned(physics, y[:1])
        metric = (physics.metric_sqrt, lam / float(norm_sq(pre, like)[0]))
    if gaussian is None:
        x = sig[0] * particle_randn(streams, n, shape, like)
    else:  # teleported: x_T ~ p_G(x_T | y), weighed by p(x_T) / p_G(x_T | y) ~ 1 / p_G(y | x_T)
        x, log_pg = cloud_start(gaussian, y, physics, float(sig[0]), streams, n, sigma_y=s_y)
    var0 = s_y**2 + c * sig[0] ** 2
    x0, logp, g = _log_twist(denoiser, x, sig[0], yn, physics, var0, True, metric)
    log_w = logp.reshape(b, n).double()  # x_T ~ p(x_T): initial weight p~_T(y | x_T)
    if gaussian is not None:
        log_w = log_w - log_pg.reshape(b, n).to(log_w.device)
    log_z = log_mean_exp(log_w)
    log_w = normalize_log_weights(log_w)
    trace = []
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        if s_next > 0:
            ratio = s_next**2 / s**2
            mean = x0 + ratio * (x - x0)
            v = s_next**2 * (1 - ratio)
            h = v if step == "gradient" else v / (1 + v * lam / (s_y**2 + c * s**2))
            prop_mean = mean + h * g
            x_new = prop_mean + math.sqrt(v) * particle_randn(streams, n, shape, like)
            # log p(x_new | x) - log q(x_new | x), Gaussian with common variance v
            log_p = -0.5 * batch_dot(x_new - mean, x_new - mean) / v
            log_q = -0.5 * batch_dot(x_new - prop_mean, x_new - prop_mean) / v
            var = s_y**2 + c * s_next**2
            x0_new, logp_new, g_new = _log_twist(
                denoiser, x_new, s_next, yn, physics, var, True, metric
            )
        else:  # deterministic last step x_0 = x0_hat(x_1); weight p(y | x_0) / p~_1(y | x_1)
            x_new = x0
            log_p = log_q = torch.zeros_like(logp)
            x0_new, logp_new, g_new = _log_twist(denoiser, x_new, 0.0, yn, physics, s_y**2, False)
        incr = (log_p - log_q + logp_new - logp).reshape(b, n).double()
        log_z = log_z + torch.logsumexp(log_w + incr, dim=1)
        arrays = (x_new, x0_new, logp_new, g_new if g_new is not None else x_new)
        log_w, e, (x, x0, logp, g) = reweight(
            log_w,
            incr,
            arrays,
            threshold=threshold,
            resample=resample,
            streams=streams,
            allow=s_next > 0,
        )
        trace.append(e)
        if callback is not None:
            callback(StepInfo(i, s, x[:n], x0[:n]))
    if gaussian is not None:  # the start's weights are known up to a constant only
        log_z = torch.full_like(log_z, math.nan)
    return x, log_w, torch.stack(trace, dim=1), log_z


def sample_tds(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
    n_particles: NParticles = 64,
    twist_scale: Annotated[
        Annotated[float, Field(ge=0.0)] | Literal["auto"],
        Field(
            description="c: twisting variance sigma_y^2 + c sigma^2; auto: the operator's "
            "mean squared row norm (recon), 1.0: the paper"
        ),
    ] = "auto",
    precondition: Precondition = True,
    proposal_step: Annotated[
        Literal["gain", "gradient"],
        Field(
            description="h: gain = v / (1 + v ||A||^2 / var), the Gaussian-product step along "
            "A's top direction (recon); gradient = v (the paper)"
        ),
    ] = "gain",
    ess_threshold: ESSThreshold = 0.5,
    resampling: Resampling = "systematic",
    return_particles: bool = False,
    teleport_from: Denoiser | None = None,
) -> Tensor | ParticleResult:
    """Twisted SMC posterior sampling (see module docstring).

    Args:
        denoiser, y, physics, sigmas: as every sampler; physics must be differentiable.
        x_init: unused (the cloud starts from the prior marginal at ``sigmas[0]``).
        teleport_from: an exact Gaussian prior fitted to the network's training data: the
            cloud then starts at ``sigmas[0]`` from exact draws of its posterior
            ``p_G(x_sigma | y)``, weighed by ``p~(y | x_sigma) / p_G(y | x_sigma)``
            (:func:`recon.teleport.cloud_start`; analytical teleportation, Wang and Vastola,
            TMLR 2024). The log-evidence is then NaN (the start's weights are known up to a
            constant).
        generator: per-measurement streams (particles of measurement b draw from stream b).
        callback: receives a :class:`StepInfo` per step for measurement 0's cloud.
        sigma_y: measurement noise std (> 0); from the operator when None.
        n_particles, twist_scale, precondition, proposal_step, ess_threshold, resampling,
            return_particles: see the hyperparameters (module docstring).

    Returns:
        (B, *x_shape) draws, or a :class:`ParticleResult` when ``return_particles``.
    """
    opening = start(y, physics, sigmas, generator, sigma_y=sigma_y, init=None)
    s_y = opening.sigma_y
    require_noise(s_y, "TDS", "its final weights are the likelihood")
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
        c=twist_scale,
        precondition=precondition,
        step=proposal_step,
        threshold=ess_threshold,
        resample=RESAMPLERS[resampling],
        gaussian=teleport_from,
    )


SAMPLERS = (
    Sampler(
        sample_tds,
        title="TDS",
        summary="Wu et al. 2023: twisted SMC with DPS-like proposals; asymptotically exact",
        kind="asymptotic",
        teleports_cloud=True,
    ),
)
