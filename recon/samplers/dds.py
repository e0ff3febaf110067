"""DDS: Decomposed Diffusion Sampler (Chung, Lee, Ye, ICLR 2024, arXiv 2303.05754).

Per step ``t -> s`` (official ``solver_2d.py``, ``Diffusion.dds``), in the VE sigma form:

1. Tweedie ``x0_hat = D(x_t, sigma_t)`` (no gradient through the network);
2. a Krylov data-consistency update of ``x0_hat`` by ``n_cg`` conjugate-gradient iterations,
   started at ``x0_hat``, per sample:
   noiseless (``sigma_y = 0``): ``A^H A x = A^H y``;
   noisy: ``(I + gamma A^H A) x = x0_hat + gamma A^H y``, i.e.
   ``argmin ||x - x0_hat||^2 + gamma ||y - A x||^2`` (``gamma`` is invariant to the [0, 1] vs
   [-1, 1] choice of units);
3. renoising ``x_s = x0' + sigma_s (eta z + sqrt(1 - eta^2) eps_hat)`` with
   ``eps_hat = (x_t - x0_hat) / sigma_t``. This ``eta`` is DDS's own: the fraction of the total
   std ``sigma_s`` that is fresh noise (0.85 by default), **not** the DDIM eta.

Defaults follow the official code: 50 steps (respaced DDPM), ``n_cg = 5``, ``eta = 0.85``,
except ``gamma``. The official ``gamma = 1`` (kept: ``gamma=1.0``) weighs the data in the units
of ``A`` and ignores the noise level: with ``||A||^2`` or ``sigma_y`` far from 1 it must be
tuned (recon's CT in field-of-view units has ``||A||^2 ~ 0.5`` and wants ``gamma ~ 1000``; x4
bicubic super-resolution has ``||A||^2 ~ 1/16``), and untuned it fell below the FBP / pseudo-
inverse baseline on sparse-view CT and x4 super-resolution.

``gamma = "auto"`` (the default; recon's documented departure) makes step 2 the MAP of a
Gaussian approximation: ``x0 | x_t ~ N(x0_hat, r_t^2 I)`` times the likelihood ``N(y; A x0,
sigma_y^2 I)`` gives ``gamma_t = r_t^2 / sigma_y^2``, with ``r_t^2 = sigma_t^2 sigma_d^2 /
(sigma_t^2 + sigma_d^2)`` the posterior variance of a pixel under an ``N(m, sigma_d^2)`` prior:
``sigma_d`` is the prior's own pixel std where it states one (``data_std``: exact Gaussian and
mixture priors, EDM networks' ``sigma_data``), else 0.25 in [0, 1] units (EDM's ``sigma_data =
0.5`` in [-1, 1]); the same ``r_t^2`` as Pi-GDM (Song, Vahdat, Mardani, Kautz, ICLR 2023) with
its data variance. It follows ``sigma_y`` and the noise level and is in the units of ``A`` by
construction. The benchmark sets record tuned values of the paper's constant ``gamma`` too
(``scripts/tune_baselines.py``).

The official CG sums its inner products over the whole batch and does not conjugate complex
data; recon's CG is per sample and conjugated (2-channel real MRI data is the
real form of complex data, for which the real inner product is the right one).
"""

from __future__ import annotations

from typing import Annotated, Literal

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from recon.linalg import conjugate_gradient
from recon.priors.base import Denoiser

from ._registry import Sampler
from ._steps import Callback, Generators, StepInfo, denoise, randn, start

NCG = Annotated[int, Field(ge=0, description="CG iterations per step")]
CGTol = Annotated[float, Field(ge=0.0, description="per-sample relative residual early stop")]


#: pixel std of the data behind ``gamma="auto"`` when the prior states none ([0, 1] units)
SIGMA_D = 0.25


def auto_gamma(sigma: float, sigma_y: float, sigma_d: float = SIGMA_D) -> float:
    """``gamma_t = r_t^2 / sigma_y^2`` of ``gamma="auto"`` at noise level ``sigma`` (module
    docstring); ``sigma``, ``sigma_y``, ``sigma_d`` in data units, ``sigma_y > 0``."""
    r2 = sigma**2 * sigma_d**2 / (sigma**2 + sigma_d**2)
    return r2 / sigma_y**2


def data_consistency(
    physics: dinv.physics.Physics,
    x0: Tensor,
    y: Tensor,
    *,
    sigma_y: float,
    n_cg: int,
    gamma: float,
    cg_tol: float,
) -> Tensor:
    """DDS's Krylov update of ``x0`` (step 2 of the module docstring), shape of ``x0``."""
    if n_cg == 0:
        return x0
    aty = physics.A_adjoint(y)
    if sigma_y == 0:
        return conjugate_gradient(physics.A_adjoint_A, aty, x0, n_iter=n_cg, tol=cg_tol)

    def apply_m(v: Tensor) -> Tensor:
        return v + gamma * physics.A_adjoint_A(v)

    return conjugate_gradient(apply_m, x0 + gamma * aty, x0, n_iter=n_cg, tol=cg_tol)


def sample_dds(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
    n_cg: NCG = 5,
    eta: Annotated[
        float, Field(ge=0.0, le=1.0, description="DDS eta: fresh-noise fraction")
    ] = 0.85,
    gamma: Annotated[
        Annotated[float, Field(gt=0.0)] | Literal["auto"],
        Field(
            description="data weight of the noisy-case CG; auto: r_t^2 / sigma_y^2 (recon), "
            "1.0: the paper's"
        ),
    ] = "auto",
    cg_tol: CGTol = 1e-5,
) -> Tensor:
    """Draw one DDS sample per measurement.

    Args:
        denoiser: ``D(x, sigma)``.
        y: measurements (B, *meas_shape).
        physics: a linear operator.
        sigmas: descending schedule ending in 0 (50 respaced DDPM levels in the paper).
        x_init: starting state at ``sigmas[0]``; ``sigmas[0] * z`` when None.
        generator: per-row streams.
        callback: receives a :class:`StepInfo` per step (``x0_hat`` after the CG update).
        sigma_y: measurement noise std; from the operator when None; 0 selects the
            noiseless CG system.
        n_cg, eta, gamma, cg_tol: the hyperparameters (module docstring).

    Returns:
        Samples (B, *x_shape).
    """
    with torch.no_grad():
        streams, sig, x, s_y = start(y, physics, sigmas, generator, x_init=x_init, sigma_y=sigma_y)
        sigma_d = float(getattr(denoiser, "data_std", SIGMA_D))
        for i in range(len(sig) - 1):
            s, s_next = sig[i], sig[i + 1]
            x0 = denoise(denoiser, x, s)
            g = auto_gamma(s, s_y, sigma_d) if gamma == "auto" and s_y > 0 else gamma
            x0c = data_consistency(physics, x0, y, sigma_y=s_y, n_cg=n_cg, gamma=g, cg_tol=cg_tol)
            if s_next > 0:
                eps_hat = (x - x0) / s
                z = randn(streams, x.shape[1:], x)
                x = x0c + s_next * (eta * z + (1 - eta**2) ** 0.5 * eps_hat)
            else:
                x = x0c
            if callback is not None:
                callback(StepInfo(i, s, x, x0c))
        return x


SAMPLERS = (
    Sampler(
        sample_dds,
        title="DDS",
        summary="Chung, Lee, Ye 2024: Tweedie, a few CG data-consistency steps, DDS renoising",
        kind="approximate",
        starts_from_noise=True,
    ),
)
