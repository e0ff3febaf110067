"""AFDPS: the approximation-free ensemble sampler of Chen, Ren, Min, Ying, Izzo, "Solving
Inverse Problems via Diffusion-Based Priors: An Approximation-Free Ensemble Sampling Approach"
(2025, arXiv 2506.03979). The paper has no public code; this is recon's derivation, in
recon's variance-exploding form, with every step written out.

**Setting.** Generative time t runs from noise (``sigma = sigma_T``) to data (``sigma = 0``);
``p_t`` is the prior diffused to ``sigma(t)`` (``x = x_0 + sigma n``), ``beta(t) = -d sigma^2 /
dt >= 0``, and the score ``s = grad log p_t = (D(x, sigma) - x) / sigma^2`` comes from the
denoiser. The likelihood is ``L(x) = exp(-mu(x))`` with ``mu(x) = |y - A x|^2 / (2 sigma_y^2)``.

**(1) Prior PDE.** ``p_t`` solves ``d_t p = -(beta/2) Lap p``. For any diffusion coefficient
``V(t)^2`` this is the Fokker-Planck equation ``d_t p = -div(c p) + (V^2/2) Lap p`` with drift
``c = ((beta + V^2) / 2) s`` (since ``div(p s) = Lap p``). ``V^2 = beta`` is the reverse SDE,
``V = 0`` the probability-flow ODE.

**(2) Posterior path.** Let ``Q_t = p_t e^{-mu}`` (unnormalised). At sigma = 0 it is the
posterior; at sigma_T it is ``N(0, sigma_T^2 I) e^{-mu}`` up to the usual approximation of
``p_T``, a Gaussian we sample exactly. Substituting ``p = Q e^{mu}`` into (1), with
``div(c Q e^mu) = e^mu (div(c Q) + Q c.grad mu)`` and
``Lap(Q e^mu) = e^mu (Lap Q + 2 grad Q.grad mu + Q Lap mu + Q |grad mu|^2)`` and
``V^2 grad Q.grad mu = div(V^2 Q grad mu) - V^2 Q Lap mu``:

    d_t Q = -div((c - V^2 grad mu) Q) + (V^2/2) Lap Q + r Q,
    r(x, t) = -c.grad mu - (V^2/2) Lap mu + (V^2/2) |grad mu|^2.

For the linear-Gaussian likelihood ``grad mu = -A^T (y - A x) / sigma_y^2`` and
``Lap mu = tr(A^T A) / sigma_y^2`` is a constant (it cancels in normalised weights).

**(3) Feynman-Kac particles.** By the Feynman-Kac formula, particles moved by
``dX = (c - V^2 grad mu) dt + V dW`` and weighted by ``d log w = r dt`` represent Q_t; with
resampling on low ESS this is the paper's ensemble (the seed's "modified drift plus a
reweighting term").

**(4) Discretisation used here** (t -> s, ``Delta = sigma_t^2 - sigma_s^2``):

* ``variant="sde"`` (``V^2 = beta``): the prior part of the move is integrated exactly for a
  frozen ``x0_hat``: the DDPM kernel ``N(m, v I)`` with ``m = x0_hat + (sigma_s^2 /
  sigma_t^2)(x - x0_hat)`` and ``v = sigma_s^2 Delta / sigma_t^2`` (so ``c dt = m - x`` and
  ``V^2 dt = v``). The guidance ``-V^2 grad mu dt`` is taken implicitly: the particle moves to
  the Gaussian product ``N(x'; m, v I) L(x')`` (exact draw by perturb-and-solve with CG), which
  equals ``m - v grad mu(m) + sqrt(v) z`` to first order in v and stays stable for large steps
  and small sigma_y, where the explicit drift overshoots.
  Weights, ``weights="exact"``: for the path targets ``gamma_s(x_{s:T}) = p(x_T)
  prod p(x_k | x_{k+1}) L(x_s)`` (``p(. | .)`` the model's kernels) and the proposal
  ``q(x' | x) ∝ p(x' | x) L(x')``, the incremental weight ``gamma_s / (gamma_t q)`` is
  ``p(x' | x) L(x') / (L(x) q(x' | x)) = int N(x'; m, v) L(x') dx' / L(x)``, i.e.
  ``log w = log N(y; A m, sigma_y^2 I + v A A^T) + mu(x)`` (a constant dropped).
  Expanding in v gives ``-(m - x).grad mu + (v/2)|grad mu|^2 -
  (v/2) Lap mu + O(v^2)`` = ``r dt``: the exact ratio is the paper's rate integrated over the
  step, and it makes the final cloud consistent (N -> inf) for the posterior of the
  discretised diffusion model whatever the number of steps.
  ``weights="rate"``: the paper's ``r dt`` at the left point, ``-(m - x).grad mu(x) +
  (v/2) |grad mu(x)|^2`` (``Lap mu`` dropped); it carries an O(step) bias.
* ``variant="ode"`` (``V = 0``): DDIM (eta = 0) moves ``x' = x0_hat + (sigma_s / sigma_t)(x -
  x0_hat)``, weights ``r dt = -(x' - x).grad mu(x)``, then ``n_corrector`` unadjusted Langevin
  steps on ``Q_s``: ``x <- x + delta (s(x) - grad mu(x)) + sqrt(2 delta) z`` with
  ``delta = corrector_step * sigma_s^2``. The paper's "ODE + corrector" variant; it has both
  the rate's O(step) bias and the Langevin step's bias, so it is approximate.

**(5) Tempering** (recon's addition, ``tempering="rows"``, the default). The paper's path
over-pins noisy particles: ``L(x_t)`` treats the noisy ``x_t`` as if it were clean, so at high
noise ``Q_t`` is far narrower along the measured directions than the true ``p(x_t | y)`` and the
weights degenerate (measured: on a 4-d Gaussian problem with 150 steps and 4096 particles the
untempered cloud's mean is 10-20 standard errors off the model posterior; with one step from
sigma = 2 the ESS of 100000 particles is 161 and the mean is still wrong). recon therefore uses
the path ``Q_t = p_t L^{lambda_t}`` with ``lambda(sigma) = sigma_y^2 / (sigma_y^2 + rho
sigma^2)`` (1 at sigma = 0), the exponent at which a Gaussian ``L`` has the width of
``N(y; A x_t, (sigma_y^2 + rho sigma_t^2) I)``, an isotropic stand-in for ``p(y | x_t) ~
N(y; A x_t, sigma_y^2 I + sigma_t^2 A A^T)``. ``rho`` is the mean of ``A A^T``'s diagonal,
``tr(A A^T) / m`` (:func:`recon.operators.mean_row_norm_sq`; ``tempering="rows"``); until
2026-12 it was the largest eigenvalue ``||A||^2`` (``tempering="norm"``), which on CT (0.45
against rho 0.0077) and on masked operators (zero rows) kept the path flat until ``sigma ~
sigma_y`` and left AFDPS below FBP on real sparse CT (first item, 8 particles, the generic
prior: ``norm`` 20.4 dB, ``rows`` 29.5, FBP 24.1; ``benchmarks/README.md``, "TDS's twist and
AFDPS's tempering"). The derivation above
holds with ``mu -> lambda mu`` plus the rate ``-lambda' mu`` from ``d_t e^{-lambda mu}``; the
exact weight becomes ``log N(y; A m, sigma_y^2/lambda_s I + v A A^T) + lambda_t mu(x)`` and the
move uses ``L^{lambda_s}`` (variance ``sigma_y^2 / lambda_s``). Any lambda with
``lambda(0) = 1`` keeps the final target the posterior.

The last step (sigma_s = 0) is ``x_0 = x0_hat`` with weight ``-mu(x_0) + mu(x)`` (target
``p_0 L``). The log-evidence is not reported (NaN): particle-independent constants are dropped.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Annotated, Literal

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from recon.linalg import batch_dot
from recon.operators import mean_row_norm_sq, norm_sq
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


def _mu_and_grad(physics, x: Tensor, y1: Tensor, s2: float) -> tuple[Tensor, Tensor]:
    r = y1 - physics.A(x)
    return 0.5 * batch_dot(r, r) / s2, -physics.A_adjoint(r) / s2


def _clouds(denoiser, y, physics, sig, streams, *, n, s_y, opts, resample, callback):
    b = y.shape[0]
    like = physics.A_adjoint(y[:1])
    dt, dev = like.dtype, like.device
    s2 = s_y**2
    rows = b * n
    yn = y.repeat_interleave(n, dim=0)
    rho = 0.0  # tempering "none"
    if opts.tempering == "rows":
        rho = mean_row_norm_sq(physics, like)
    elif opts.tempering == "norm":
        rho = float(norm_sq(physics, like)[0])

    def lam(sigma: float) -> float:  # likelihood exponent lambda(sigma), 1 at sigma = 0
        return s2 / (s2 + rho * sigma**2)

    def randn() -> Tensor:
        return particle_randn(streams, n, like.shape[1:], like)

    # Q_T = N(0, sigma_T^2 I) L^lambda_T: an exact Gaussian draw, equal weights
    x, _ = gaussian_product_move(
        physics,
        torch.zeros((rows, *like.shape[1:]), dtype=dt, device=dev),
        sig[0] ** 2,
        yn,
        s2 / lam(sig[0]),
        streams,
        n_cg=opts.n_cg,
    )
    log_w = torch.full((b, n), -math.log(n), dtype=torch.float64, device=dev)
    trace = []
    for i in range(len(sig) - 1):
        st, ss = sig[i], sig[i + 1]
        lt, ls = lam(st), lam(ss)
        x0 = denoiser(x, torch.full((rows,), st, dtype=dt, device=dev))
        mu, grad = _mu_and_grad(physics, x, yn, s2)
        if opts.variant == "sde":
            ratio = ss**2 / st**2
            m = x0 + ratio * (x - x0)
            v = ss**2 * (1 - ratio)
            x_new, log_marg = gaussian_product_move(
                physics, m, v, yn, s2 / ls, streams, n_cg=opts.n_cg
            )
            if opts.weights == "exact" or ss == 0:  # the last step (x0_hat) is always exact
                incr = log_marg + lt * mu
            else:
                incr = (
                    -lt * batch_dot(m - x, grad)
                    + 0.5 * v * lt**2 * batch_dot(grad, grad)
                    - (ls - lt) * mu
                )
        else:
            x_new = x0 + (ss / st) * (x - x0)
            if ss == 0:
                incr = -_mu_and_grad(physics, x_new, yn, s2)[0] + lt * mu
            else:
                incr = -lt * batch_dot(x_new - x, grad) - (ls - lt) * mu
                # Langevin on Q_s; the step is scaled by the curvature 1/sigma^2 + lambda rho/s2
                delta = opts.corrector_step / (1 / ss**2 + ls * rho / s2)
                for _ in range(opts.n_corrector):
                    sg = torch.full((rows,), ss, dtype=dt, device=dev)
                    score = (denoiser(x_new, sg) - x_new) / ss**2
                    g_mu = _mu_and_grad(physics, x_new, yn, s2)[1]
                    x_new = x_new + delta * (score - ls * g_mu) + math.sqrt(2 * delta) * randn()
        log_w, e, (x, x0) = reweight(
            log_w,
            incr,
            (x_new, x0),
            threshold=opts.ess_threshold,
            resample=resample,
            streams=streams,
            allow=ss > 0,
        )
        trace.append(e)
        if callback is not None:
            callback(StepInfo(i, st, x[:n], x0[:n]))
    return x, log_w, torch.stack(trace, dim=1), torch.full((b,), math.nan, dtype=torch.float64)


def sample_afdps(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.LinearPhysics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
    n_particles: NParticles = 64,
    variant: Annotated[
        Literal["sde", "ode"], Field(description="sde: FK-weighted SDE; ode: flow + corrector")
    ] = "sde",
    weights: Annotated[
        Literal["exact", "rate"], Field(description="sde: FK ratio or r dt")
    ] = "exact",
    tempering: Annotated[
        Literal["rows", "norm", "none"],
        Field(
            description="likelihood exponent lambda(sigma) with rho = the operator's mean "
            "squared row norm (rows) or ||A||^2 (norm); none = the paper's path"
        ),
    ] = "rows",
    n_corrector: Annotated[int, Field(ge=0, description="ode: Langevin corrector steps")] = 1,
    corrector_step: Annotated[float, Field(gt=0.0, description="ode: delta / sigma^2")] = 0.05,
    ess_threshold: ESSThreshold = 0.5,
    resampling: Resampling = "systematic",
    n_cg: Annotated[
        int, Field(ge=1, description="CG iterations of each Gaussian-product move")
    ] = 30,
    return_particles: bool = False,
) -> Tensor | ParticleResult:
    """Approximation-free ensemble posterior sampling (see module docstring).

    Args:
        denoiser, y, physics, sigmas: as every sampler; physics linear.
        x_init: unused (the cloud starts from the exact Gaussian ``Q_T``).
        generator: per-measurement streams.
        callback: a :class:`StepInfo` per step for measurement 0's cloud.
        sigma_y: measurement noise std (> 0); from the operator when None.
        n_particles, variant, weights, tempering, n_corrector, corrector_step, ess_threshold,
            resampling, n_cg, return_particles: see the hyperparameters (module docstring).

    Returns:
        (B, *x_shape) draws, or a :class:`ParticleResult`.
    """
    opening = start(y, physics, sigmas, generator, sigma_y=sigma_y, init=None)
    s_y = opening.sigma_y
    require_noise(s_y, "AFDPS", "its target path is p_t times the likelihood")
    opts = SimpleNamespace(
        variant=variant,
        weights=weights,
        tempering=tempering,
        n_corrector=n_corrector,
        corrector_step=corrector_step,
        ess_threshold=ess_threshold,
        n_cg=n_cg,
    )
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
        opts=opts,
        resample=RESAMPLERS[resampling],
    )


SAMPLERS = (
    Sampler(
        sample_afdps,
        title="AFDPS",
        summary="Chen et al. 2025: Feynman-Kac particles on the path p_t e^{-mu}",
        kind="asymptotic",
    ),
)
