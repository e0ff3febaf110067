"""RED-Diff: variational posterior sampling (Mardani, Song, Kautz, Vahdat, ICLR 2024,
arXiv 2305.04391).

A Gaussian ``q(x0 | y) = N(mu, s^2 I)`` with ``s -> 0``; ``mu`` minimises, by Adam over
descending noise levels ``sigma_t`` (Algorithm 1):

``loss(mu) = obs_weight * mean((y - A mu)^2) / 2 + lam * sigma_t * mean(sg(eps_hat - eps) * mu)``

with ``x_t = mu + sigma_t eps``, ``eps_hat = (x_t - D(x_t, sigma_t)) / sigma_t`` and ``sg`` the
stop-gradient: no backpropagation through the denoiser. Each mean is over one sample's entries
(measurement entries for the first term, image entries for the second) and the batch loss is
the **sum** of per-sample losses, so every row's gradient is its own.

Convention: the relative weighting of the two terms is the official code's (``algos/reddiff.py``:
means over entries, no ``1 / sigma_v^2``), and the SNR weight ``sigma_t / alpha_t`` of the VP
form is the VE ``sigma_t``. Substituting ``u = 2 x - 1`` shows that with recon's [0, 1] data
units this loss is the official [-1, 1] loss divided by 4 (up to a constant), so ``lam`` equals
the paper's lambda (0.25) and, since Adam's step is in parameter units, ``lr`` is the official
lr halved (0.1 -> 0.05). ``mu`` starts at ``A_dagger(y)`` on the measured part and at mid-grey
(``init_null = 0.5``) on the null space of A, as the official code (whose inpainting holes start
at 0 in [-1, 1] units).

Three documented departures make the defaults work untuned (issue 15; the paper's settings stay
available as ``data_weight="official"``, ``betas=(0.9, 0.99)``, ``precondition=False``):

- ``data_weight="operator"`` (default): the data term is ``||y - A mu||^2 / (2 ||A||^2 d)``
  (``d`` image entries, ``||A||^2`` by :func:`recon.operators.norm_sq`) instead of the mean over
  the ``m`` measurement entries. The two agree where ``m / d = ||A||^2`` (denoising, inpainting
  masks, single-coil Cartesian MRI, average-pooling super-resolution: the official code's
  means normalise exactly these), and differ where they do not: 8-coil MRI (``m = 8 d``, the
  official weight is 8x too small: RED-Diff stayed near the prior) and CT (1.5x).
- ``betas="auto"`` (default): Adam's moment horizons ``1 / (1 - beta)``, the official 10 and
  100 steps at its 1000 steps, scale with the square root of the run's length ``n``:
  ``beta = 1 - 1 / max(1, h sqrt(n / 1000))``, the official (0.9, 0.99) at 1000 steps and
  (0.55, 0.955) at 50. With the official betas at 50 steps the first moment averages gradients
  over a fifth of the run, from noise levels long past; horizons scaled linearly, (0, 0.8) at
  50, leave the network's noisy prior gradient unaveraged (both measured).

- ``precondition=True`` (default): the data term is ``||M (y - A mu)||^2`` with ``||M A||^2``
  in the weight, ``M`` the operator's preconditioner where it has one (CT; why:
  :func:`recon.operators.preconditioned`); elsewhere unchanged.

Measured (``benchmarks/README.md``, "RED-Diff untuned"): with the fitting network prior, 50
steps, the first two departures lift mri_x4_multicoil from 14.9 to 23.2 dB (pinv 18.1) and
ct_sparse_30 from 15.0 to 17.3 dB, still below FBP (20.8); the preconditioned data term lifts
it to 26.7 dB at 50 steps (without it: 20.3 dB at 200 steps).

For a Gaussian prior ``N(m, C)`` the expected gradient of the second term is
``lam * sigma_t^2 / d * (C + sigma_t^2 I)^{-1} (mu - m)``: at a fixed level ``sigma``, RED-Diff
is stochastic gradient descent on a quadratic whose minimiser is a MAP estimate with that
implied prior precision (tested). Over a descending schedule it is a MAP-like point estimate,
not a posterior sample.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from recon.linalg import bview
from recon.operators import norm_sq, preconditioned
from recon.priors.base import Denoiser

from ._registry import Sampler
from ._steps import Callback, Generators, Precondition, StepInfo, denoise, randn, start

#: Adam's first- and second-moment horizons ``1 / (1 - beta)`` in the official code
#: (betas 0.9, 0.99) and the run length they belong to (``_configs/algo/reddiff.yaml``,
#: ``sample_batch.sh``)
HORIZONS, OFFICIAL_STEPS = (10.0, 100.0), 1000


def auto_betas(n_steps: int) -> tuple[float, float]:
    """Adam betas of ``betas="auto"`` for a run of ``n_steps`` (module docstring):
    ``1 - 1 / max(1, h sqrt(n / 1000))`` per moment, h in :data:`HORIZONS`."""
    scale = math.sqrt(n_steps / OFFICIAL_STEPS)
    b1, b2 = (1.0 - 1.0 / max(1.0, h * scale) for h in HORIZONS)
    return b1, b2


def sample_reddiff(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
    lam: Annotated[
        float, Field(ge=0.0, description="weight of the denoising (prior) term")
    ] = 0.25,
    lr: Annotated[float, Field(gt=0.0, description="Adam learning rate (data units)")] = 0.05,
    obs_weight: Annotated[float, Field(ge=0.0, description="weight of the data term")] = 1.0,
    data_weight: Annotated[
        Literal["operator", "official"],
        Field(
            description="data term normalisation: operator: ||y - A mu||^2 / (2 ||A||^2 d) "
            "(recon); official: mean over measurement entries (the paper's code)"
        ),
    ] = "operator",
    betas: Annotated[
        tuple[float, float] | Literal["auto"],
        Field(
            description="Adam betas; auto: the official (0.9, 0.99) horizons scaled by "
            "sqrt(steps / 1000) (recon); (0.9, 0.99): the paper's"
        ),
    ] = "auto",
    precondition: Precondition = True,
    init_null: Annotated[
        float | None,
        Field(description="start value of mu's null-space part (official: mid-grey); None: 0"),
    ] = 0.5,
) -> Tensor:
    """RED-Diff estimate ``mu`` per measurement.

    Args:
        denoiser: ``D(x, sigma)``.
        y: measurements (B, *meas_shape).
        physics: forward operator (differentiable).
        sigmas: descending schedule ending in 0; one Adam step per non-zero level.
        x_init: initial ``mu``; when None, ``A_dagger(y) + init_null (1 - A_dagger(A 1))``:
            the measured part from the data, the unmeasured part (inpainting holes) at
            ``init_null`` (0.5, mid-grey, as the official code's 0 in [-1, 1] units).
        generator: per-row streams.
        callback: receives a :class:`StepInfo` per step (``x`` = ``mu``).
        sigma_y: unused (the official weighting has no ``1 / sigma_v^2``); accepted for a
            uniform signature.
        lam, lr, obs_weight, data_weight, betas, precondition, init_null: the hyperparameters
            (module docstring).

    Returns:
        ``mu`` (B, *x_shape).
    """
    b1, b2 = auto_betas(len(sigmas) - 1) if betas == "auto" else betas
    adam_eps = 1e-8
    with torch.no_grad():
        streams, sig, mu, _ = start(
            y, physics, sigmas, generator, x_init=x_init, sigma_y=sigma_y, init="pinv"
        )
        if x_init is None and init_null:
            ones = torch.ones_like(mu)
            mu = mu + init_null * (ones - physics.A_dagger(physics.A(ones)))
        # Adam (Kingma & Ba 2015) written out: elementwise, so per sample by construction
        g_phys, g_y = preconditioned(physics, y) if precondition else (physics, y)
        m1 = torch.zeros_like(mu)
        m2 = torch.zeros_like(mu)
        n_img = mu[0].numel()
        if data_weight == "official":
            w_obs = obs_weight / y[0].numel()
        else:  # per row: a row's weight depends on its own operator only
            w_obs = obs_weight / (bview(norm_sq(g_phys, mu), mu).to(mu.dtype) * n_img)
        for i, s in enumerate(sig[:-1]):
            eps = randn(streams, mu.shape[1:], mu)
            x_t = mu + s * eps
            x0 = denoise(denoiser, x_t, s)
            eps_hat = (x_t - x0) / s
            with torch.enable_grad():
                mu_g = mu.detach().requires_grad_(True)
                resid = g_y - g_phys.A(mu_g)
                loss_obs = (resid.abs() ** 2).reshape(y.shape[0], -1).sum(1) / 2
                # d/dmu of lam * sigma * mean(sg(eps_hat - eps) * mu) is the constant below
                (grad,) = torch.autograd.grad(loss_obs.sum(), mu_g)
            grad = w_obs * grad + lam * s * (eps_hat - eps) / n_img
            m1 = b1 * m1 + (1 - b1) * grad
            m2 = b2 * m2 + (1 - b2) * grad**2
            m1_hat = m1 / (1 - b1 ** (i + 1))
            m2_hat = m2 / (1 - b2 ** (i + 1))
            mu = mu - lr * m1_hat / (m2_hat.sqrt() + adam_eps)
            if callback is not None:
                callback(StepInfo(i, s, mu, x0))
        return mu


SAMPLERS = (
    Sampler(
        sample_reddiff,
        title="RED-Diff",
        summary="Mardani et al. 2024: Adam on a data term plus a score-distillation prior term",
        kind="approximate",
    ),
)
