"""DAPS: Decoupled Annealing Posterior Sampling (Zhang, Chu, Berner, Sun, Bouman, Yue, Anandkumar,
"Improving Diffusion Inverse Problem Solving with Decoupled Noise Annealing", CVPR 2025,
arXiv 2407.01521).

Per noise level ``sigma_i`` of the annealing schedule (Algorithm 1), in the VE sigma form:

1. ``x0_hat``: the probability-flow ODE from ``x_i`` at ``sigma_i`` down to ``ode_sigma_min``,
   ``ode_steps`` Euler steps on a Karras sub-schedule, then Tweedie (``ode_steps = 1``: Tweedie);
2. Langevin in x0-space on ``p(x0 | x_i, y) ~ N(x0; x0_hat, r_i^2 I) N(y; A x0, tau^2 I)``
   with ``r_i = sigma_i`` (the official ``gaussian`` prior solver), started at ``x0_hat``:
   ``x0 <- x0 + h (-(x0 - x0_hat) / r^2 - A^T (A x0 - y) / tau^2) + sqrt(2 h) z``;
3. decoupled re-noising ``x_{i+1} = x0 + sigma_{i+1} z'`` (fresh noise, independent of x_i).

Step size. The official step is absolute (``lr = 1e-4`` in [-1, 1] units with ``tau = 0.01``,
decaying linearly to ``lr_min_ratio = 0.01`` of it over the annealing). recon's ``lr`` is a
fraction of ``1 / L_i`` with ``L_i = 1 / r_i^2 + ||A||^2 / tau^2`` (``||A||^2`` per sample by
power iteration), which is the official step at ``lr ~ 1`` for ``||A|| = 1``, ``r`` small, and
stays stable for any operator scale (CT, super-resolution) without tuning; the same linear decay
applies. The default ``lr = 0.1`` was chosen by ``scripts/tune_baselines.py --default daps lr
...`` over 0.03, 0.1, 0.2 and 0.5 on the benchmark sets' tuning images: the best worst-case
margin over the pinv / FBP baseline (-1.4 dB; -3.1 at 0.5, -3.5 at 0.03). Smaller steps did
better on real single-coil MRI and super-resolution, larger ones on CT, whose weakly measured
directions a short chain with a small step does not reach. No value beats the baseline on every
set; the exceptions are in benchmarks/README.md ("DAPS's step"). ``tau`` defaults to the
operator's ``sigma_y`` (the paper fixes 0.01 in [-1, 1] units, i.e. 0.005 here, which is used
when ``sigma_y = 0``).

What it is exact for: with a Gaussian prior, step 2 is unadjusted Langevin on a Gaussian, whose
stationary law is known in closed form (tested); the chain as a whole is approximate, because
``N(x0_hat, r^2 I)`` is not ``p(x0 | x_i)``. Cost per level: ``ode_steps`` network calls and
``n_langevin`` operator pairs, no backpropagation through the network.
"""

from __future__ import annotations

import itertools
from typing import Annotated

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from recon.linalg import bview
from recon.operators import norm_sq
from recon.priors.base import Denoiser
from recon.schedules import karras

from ._registry import Sampler
from ._steps import Callback, Generators, StepInfo, denoise, randn, start


def sample_daps(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
    n_langevin: Annotated[
        int, Field(ge=0, description="Langevin steps per level (paper 100)")
    ] = 100,
    lr: Annotated[
        float,
        Field(
            gt=0.0,
            lt=2.0,
            description="Langevin step as a fraction of 1 / L_i (recon's 0.1: best worst case "
            "over the benchmark sets' tuning images; ~1 is the paper's step at ||A|| = 1)",
        ),
    ] = 0.1,
    lr_min_ratio: Annotated[
        float, Field(gt=0.0, le=1.0, description="last level's step / first's (paper 0.01)")
    ] = 0.01,
    tau: Annotated[
        float | None,
        Field(gt=0.0, description="likelihood std of the Langevin target; None: sigma_y"),
    ] = None,
    ode_steps: Annotated[
        int, Field(ge=1, description="Euler steps of the ODE to x0_hat (paper 5)")
    ] = 5,
    ode_sigma_min: Annotated[
        float, Field(gt=0.0, description="where the ODE stops (paper 0.01 in [-1, 1] units)")
    ] = 0.005,
) -> Tensor:
    """Draw one DAPS sample per measurement (module docstring), (B, *x_shape).

    Args:
        denoiser, y, physics, sigmas, x_init, generator, callback: as every sampler (``sigmas``
            is the annealing schedule; ``x_init`` the state at ``sigmas[0]``).
        sigma_y: measurement noise std; from the operator when None.
        n_langevin, lr, lr_min_ratio, tau, ode_steps, ode_sigma_min: the hyperparameters.
    """
    with torch.no_grad():
        streams, sig, x, s_y = start(y, physics, sigmas, generator, x_init=x_init, sigma_y=sigma_y)
        t2 = (tau if tau is not None else (s_y if s_y > 0 else 0.005)) ** 2
        a2 = bview(norm_sq(physics, x), x)
        aty = physics.A_adjoint(y)
        n_levels = len(sig) - 1
        for i in range(n_levels):
            s, s_next = sig[i], sig[i + 1]
            x0_hat = x  # 1. the probability-flow ODE (Euler), then Tweedie
            if ode_steps > 1 and s > ode_sigma_min:
                levels = karras(ode_steps - 1, sigma_min=ode_sigma_min, sigma_max=s).tolist()[:-1]
                for a, b in itertools.pairwise(levels):
                    x0_hat = x0_hat + (b - a) * (x0_hat - denoise(denoiser, x0_hat, a)) / a
                x0_hat = denoise(denoiser, x0_hat, ode_sigma_min)
            else:
                x0_hat = denoise(denoiser, x0_hat, s)
            # 2. Langevin on N(x0_hat, s^2) N(y; A x0, tau^2), step lr_i / L per sample
            h = lr * (1 + i / n_levels * (lr_min_ratio - 1)) / (1 / s**2 + a2 / t2)
            x0 = x0_hat
            for _ in range(n_langevin):
                score = (x0_hat - x0) / s**2 - (physics.A_adjoint(physics.A(x0)) - aty) / t2
                x0 = x0 + h * score + (2 * h).sqrt() * randn(streams, x.shape[1:], x)
            # 3. decoupled re-noising
            x = x0 + s_next * randn(streams, x.shape[1:], x) if s_next > 0 else x0
            if callback is not None:
                callback(StepInfo(i, s, x, x0))
        return x


SAMPLERS = (
    Sampler(
        sample_daps,
        title="DAPS",
        summary="Zhang et al. 2025: x0-space Langevin between decoupled noise levels",
        kind="approximate",
        starts_from_noise=True,
    ),
)
