"""Classical reconstructions with the sampler signature: FBP (CT) and TV-regularised least
squares, so every results table has them.

``fbp``: filtered back-projection (ramp filter) of a CT operator (``physics.fbp``).

``tv``: ``argmin_x 1/2 ||A x - y||^2 + lam TV(x)`` (isotropic TV, deepinv's finite differences
``TVDenoiser.nabla``), solved by ``n_iter`` iterations of the Condat-Vu primal-dual algorithm
(Condat, JOTA 2013, Algorithm 3.1 with the smooth term ``1/2 ||A x - y||^2``):

    x+ = x - tau (A^T (A x - y) + D^T u)
    u+ = proj_{|u_i| <= lam} (u + s D (2 x+ - x))

with ``tau = 1 / L`` and ``s = L / 16``, which meets the convergence condition
``1 / tau - s ||D||^2 >= L / 2`` (``||D||^2 <= 8``); ``L = ||A||^2`` per
sample by power iteration. The iteration count is fixed (no batch-wide stopping test), so each
row's result is its own. deepinv's ``TVDenoiser`` is not used as a prox here: it keeps a warm
start between calls and stops on a batch-wide criterion.
"""

from __future__ import annotations

from typing import Annotated

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from recon.errors import SamplerInputError
from recon.linalg import bview
from recon.operators import norm_sq
from recon.priors.base import Denoiser

from ._registry import Sampler
from ._steps import Callback, Generators, StepInfo, one_shot

_nabla = dinv.models.TVDenoiser.nabla
_nabla_adjoint = dinv.models.TVDenoiser.nabla_adjoint


def sample_fbp(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
) -> Tensor:
    """``physics.fbp(y)`` (B, 1, W, W); the prior, schedule and generator are unused."""
    del denoiser, x_init, generator, sigma_y
    fbp = getattr(physics, "fbp", None)
    if fbp is None:
        raise SamplerInputError("sampler 'fbp' needs a CT operator (recon.operators.ct)")
    with torch.no_grad():
        x = fbp(y)
        return one_shot(x, sigmas, callback)


def sample_tv(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
    lam: Annotated[float, Field(ge=0.0, description="TV weight (data units)")] = 0.01,
    n_iter: Annotated[int, Field(ge=1, description="primal-dual iterations")] = 200,
) -> Tensor:
    """TV-regularised least squares per row (see module docstring), (B, *x_shape)."""
    del denoiser, generator, sigma_y
    with torch.no_grad():
        x = physics.A_dagger(y) if x_init is None else x_init.clone()
        lip = norm_sq(physics, x) * 1.01  # L = ||A||^2, a little margin
        # Condat-Vu step rule: 1/tau - s ||D||^2 >= L / 2; with s = 1/(16 tau): tau = 1/L
        tau = 1.0 / lip.clamp_min(1e-12)
        s = 1.0 / (16.0 * tau)
        tau_b, s_b = bview(tau, x), bview(s, x)[..., None]
        u = torch.zeros((*x.shape, 2), dtype=x.dtype, device=x.device)
        for i in range(n_iter):
            grad = physics.A_adjoint(physics.A(x) - y)
            x_new = x - tau_b * (grad + _nabla_adjoint(u))
            u = u + s_b * _nabla(2 * x_new - x)
            norm = u.pow(2).sum(-1, keepdim=True).sqrt()  # isotropic: per-pixel 2-vector
            u = u / torch.clamp(norm / max(lam, 1e-30), min=1.0)
            x = x_new
            if callback is not None:
                callback(StepInfo(i, float(sigmas[0]), x, x))
        return x


SAMPLERS = (
    Sampler(
        sample_fbp,
        title="FBP",
        summary="filtered back-projection (CT only): the classical CT baseline",
        kind="approximate",
        stochastic=False,
        uses_prior=False,
        keeps_noise=True,
    ),
    Sampler(
        sample_tv,
        title="TV",
        summary="total-variation regularised least squares (Condat-Vu primal-dual): a classical "
        "baseline",
        kind="approximate",
        stochastic=False,
        uses_prior=False,
    ),
)
