"""DPS: Diffusion Posterior Sampling (Chung, Kim, Mccann, Klasky, Ye, ICLR 2023, arXiv 2209.14687).

Update (Algorithm 1), written in the VE sigma form of :mod:`recon.samplers._steps`:

1. ``x0_hat = D(x_i, sigma_i)`` with a graph to ``x_i`` (optionally clamped inside the graph,
   as the official code does, which zeroes the gradient on saturated pixels);
2. ``x'_{i+1} = DDIM_eta(x_i, x0_hat, sigma_i -> sigma_{i+1})`` (``eta = 1``: DDPM ancestral,
   the paper; smaller ``eta`` with a respaced schedule: DDIM);
3. ``x_{i+1} = x'_{i+1} - zeta_i * grad_{x_i} ||y - A x0_hat||`` with the **un-squared** norm,
   per sample. The paper's ``zeta' / ||r|| * grad ||r||^2`` equals ``2 zeta' grad ||r||``; the
   official code's ``scale`` is ``2 zeta'``; its norm is taken over the whole batch (a bug:
   recon's is per sample).

Step size. ``zeta_i = zeta sqrt(w(sigma_i) w(sigma_{i+1})) / ||A||`` with
``w(s) = 1 + (s / vp_scale)^2``. A VP network in [-1, 1] units has the state
``x_vp = sqrt(ab) (2 x - 1)`` with ``ab = 1 / (1 + (s / vp_scale)^2)``: the official update
``x_vp,t-1 -= scale grad_{x_vp,t} ||y_vp - A x0_vp||`` carried over to recon's [0, 1] VE state
is ``x_{i+1} -= (scale / 2) grad_{x_i} ||y - A x0_hat|| / sqrt(ab_i ab_{i+1})`` (the residual
doubles in [-1, 1] units, the chain rule gives ``1 / (2 sqrt(ab_i))``, the state conversion
``1 / (2 sqrt(ab_{i+1}))``). So ``zeta = scale / 2``, ``vp_scale = 0.5`` and
``normalize = False`` reproduce the official update exactly (its FFHQ configs: ``scale = 0.3``
for super-resolution and deblurring, ``0.5`` for inpainting, i.e. ``zeta = 0.15, 0.25``).
``vp_scale = None`` gives a constant step (EDM-style networks, vectors).

Defaults: ``zeta = 2`` with ``normalize = True`` is recon's untuned default, chosen once by
``scripts/tune_baselines.py --default dps zeta 0.25 0.5 1 2 4`` on tuning images separate from
the benchmark sets (the value with the best worst-case margin over pinv/FBP on every set at 50
steps; few steps need a larger step than the paper's 1000). The paper's setting is
``zeta = 0.15`` (super-resolution, deblurring) or ``0.25`` (inpainting), ``normalize = False``,
1000 steps.

``normalize = True`` (recon's default, a documented departure) divides the step by the row's
operator norm ``||A||`` (square root of the power-iteration estimate
:func:`recon.operators.norm_sq`): the gradient of the un-squared ``||y - A x0||`` scales with
``||A||``, so the paper's step, tuned on operators with ``||A|| ~ 1``, is far too large on CT
and needs per-task tuning; normalised, the update is invariant to the units of y
(``A, y -> c A, c y`` gives the same samples, tested), and MRI and inpainting (``||A|| = 1``)
are unchanged.

``precondition = True`` (recon's default, a documented departure) takes the residual as
``||M (y - A x0_hat)||`` with the operator's preconditioner ``M`` where it has one (CT; why:
:func:`recon.operators.preconditioned`), and normalises the step by ``||M A||``; elsewhere it
changes nothing. ``precondition = False`` is the paper's update.

Cost per step: one forward and one VJP through the denoiser (``vjp_chunk`` rows at a time).
"""

from __future__ import annotations

from typing import Annotated

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from recon.operators import preconditioned
from recon.priors.base import Denoiser

from ._registry import Sampler
from ._steps import (
    Callback,
    Generators,
    Precondition,
    StepInfo,
    batch_norm,
    ddim_step,
    denoise,
    guidance_step,
    randn,
    start,
)

# shared with STSL and active subsampling, which take DPS steps
Zeta = Annotated[
    float, Field(ge=0.0, description="step size on grad ||y - A x0_hat|| (data units)")
]
VPScale = Annotated[
    float | None,
    Field(gt=0.0, description="VP step weighting 1 + (sigma/vp_scale)^2; None: constant"),
]
DDIMEta = Annotated[float, Field(ge=0.0, le=1.0, description="1 = DDPM ancestral, 0 = DDIM")]
Normalize = Annotated[
    bool,
    Field(description="divide the step by ||A|| (power iteration); False: the paper's step"),
]
Clamp = Annotated[
    tuple[float, float] | None,
    Field(description="clamp x0_hat to this range inside the graph (official: data range)"),
]


def _guidance(
    denoiser: Denoiser,
    x: Tensor,
    sigma: float,
    y: Tensor,
    physics: dinv.physics.Physics,
    clamp: tuple[float, float] | None,
) -> tuple[Tensor, Tensor]:
    """x0_hat and the per-sample gradient of ``||y - A x0_hat(x)||`` w.r.t. x."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0 = denoise(denoiser, xg, sigma)
        if clamp is not None:
            x0 = x0.clamp(*clamp)
        # the sum of per-sample norms: row i's gradient is that of its own norm only
        norms = batch_norm(y - physics.A(x0))
        (grad,) = torch.autograd.grad(norms.sum(), xg)
    return x0.detach(), grad


def dps_step(
    denoiser: Denoiser,
    x: Tensor,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigma: float,
    sigma_next: float,
    noise: Tensor | None,
    *,
    zeta: float,
    vp_scale: float | None,
    normalize: bool,
    eta: float = 1.0,
    clamp: tuple[float, float] | None = None,
    chunk: int | None = None,
) -> tuple[Tensor, Tensor]:
    """One DPS step (module docstring, steps 1-3) for a batch of rows; returns ``(x_next,
    x0_hat)``. ``noise`` is the standard normal of the DDIM step (None when deterministic);
    ``chunk`` rows go through each VJP."""
    step = chunk or x.shape[0]
    parts = [
        _guidance(denoiser, x[j : j + step], sigma, y[j : j + step], physics, clamp)
        for j in range(0, x.shape[0], step)
    ]
    x0 = torch.cat([p[0] for p in parts])
    grad = torch.cat([p[1] for p in parts])
    x_new = ddim_step(x, x0, sigma, sigma_next, noise, eta=eta)
    step = guidance_step(zeta, vp_scale, sigma, sigma_next, physics, x, normalize)
    return x_new - step * grad, x0


def sample_dps(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
    zeta: Zeta = 2.0,
    vp_scale: VPScale = 0.5,
    normalize: Normalize = True,
    precondition: Precondition = True,
    eta: DDIMEta = 1.0,
    clamp: Clamp = None,
    vjp_chunk: Annotated[
        int | None, Field(ge=1, description="rows per forward+VJP (memory)")
    ] = None,
) -> Tensor:
    """Draw one DPS sample per measurement.

    Args:
        denoiser: ``D(x, sigma)``.
        y: measurements (B, *meas_shape).
        physics: forward operator (any differentiable deepinv physics).
        sigmas: descending schedule ending in 0, (N + 1,).
        x_init: starting state at ``sigmas[0]`` (B, *x_shape); ``sigmas[0] * z`` when None
            (its shape is that of ``A_adjoint(y)``).
        generator: per-row streams (see :func:`recon.samplers._steps.make_streams`).
        callback: receives a :class:`StepInfo` after each step.
        sigma_y: unused by the update (DPS's normalised step does not need it); accepted so
            every sampler has the same signature.
        zeta, vp_scale, normalize, precondition, eta, clamp, vjp_chunk: the hyperparameters
            (module docstring).

    Returns:
        Samples (B, *x_shape).
    """
    with torch.no_grad():
        streams, sig, x, _ = start(y, physics, sigmas, generator, x_init=x_init, sigma_y=sigma_y)
        g_phys, g_y = preconditioned(physics, y) if precondition else (physics, y)
        for i in range(len(sig) - 1):
            s, s_next = sig[i], sig[i + 1]
            noise = randn(streams, x.shape[1:], x) if (eta > 0 and s_next > 0) else None
            x, x0 = dps_step(
                denoiser,
                x,
                g_y,
                g_phys,
                s,
                s_next,
                noise,
                zeta=zeta,
                vp_scale=vp_scale,
                normalize=normalize,
                eta=eta,
                clamp=clamp,
                chunk=vjp_chunk,
            )
            if callback is not None:
                callback(StepInfo(i, s, x, x0))
        return x


SAMPLERS = (
    Sampler(
        sample_dps,
        title="DPS",
        summary="Chung et al. 2023: DDPM/DDIM steps, then a per-sample step on grad ||y - A x0||",
        kind="approximate",
        starts_from_noise=True,
    ),
)
