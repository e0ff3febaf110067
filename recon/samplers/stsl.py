"""STSL: second-order Tweedie from a surrogate loss (Rout, Chen, Kumar, Caramanis, Shakkottai,
Chu, "Beyond First-Order Tweedie", CVPR 2024, arXiv 2312.00852).

The official repository holds only a README; the update below follows the paper's Thm 4.4 /
eq. 6 (a data-fit gradient plus the gradient of the trace of the Hessian of ``log p_t``) as
re-implemented by the TMPD authors (bb515/tmpd ``solvers.py``, class ``STSL``), read, not
copied. The paper works in a latent space (Stable Diffusion); recon applies it in pixel space
with any denoiser. Per step, in the VE sigma form, with the score
``s(x) = (D(x, sigma) - x) / sigma^2``:

1. Hutchinson estimate of the Laplacian ``tr(grad^2 log p_sigma(x))`` from ``n_probes`` probes
   ``z ~ N(0, I)``: ``T(x) = mean_z z^T J_s(x) z``. recon's default (``difference="exact"``)
   takes ``J_s(x) z`` as an exact Jacobian-vector product (double backward), unbiased for any
   prior (tested against the closed form on a Gaussian mixture, trace and gradient); the
   reference's (``difference="finite"``) is the finite difference
   ``(s(x + delta z) - s(x)) / delta``, unbiased for any delta only when ``log p`` is
   quadratic. The reference probes with a
   unit ``z`` in the units of its VP state ``x_t = sqrt(ab_t) u``, ``u`` in [-1, 1]: that is
   ``c_t = 1 / (2 sqrt(ab_t)) = vp_scale sqrt(1 + (sigma / vp_scale)^2)`` data units, so recon
   takes ``delta = probe_scale c_t``; and its term ``z^T (s_state(x_t + z) - s_state(x_t))``
   equals ``c_t^2 T(x)`` in data units (the Hessian of ``log p`` scales by ``c_t^2`` under
   ``x = c_t x_t``), which is the value recon uses. With finite differences the score at x
   comes from the same network call as ``x0_hat``, so a step costs ``1 + n_probes`` network
   calls with a graph; exact products reuse that call's graph and cost two backward passes
   per probe instead.
2. the surrogate ``L(x) = -||y - A x0_hat(x)|| - (gamma / n) c_t^2 T(x)`` with ``n`` the sum of
   the image's shape (C + H + W for an image, d for a vector), the reference's normalisation;
   the gradient goes through every network call. Ascending ``L`` lowers the Laplacian, which
   is most negative at sharp peaks of ``log p_t``: the term pulls towards the modes (higher
   curvature), on top of DPS's data pull (tested on a two-mode mixture);
3. the DDIM(eta)/ancestral step, then ``x <- x + zeta_i grad L`` with DPS's step rule
   (``zeta sqrt(w(sigma_i) w(sigma_{i+1})) / ||A||``, see :mod:`recon.samplers.dps`): the
   data term is DPS's un-squared per-sample norm, in the operator's preconditioning metric
   where it has one (``precondition``, DPS's default; :mod:`recon.samplers.dps`).

**The default weight is ``gamma = 0``** (recon's departure; the reference's value is 0.02):
with the term switched off STSL is DPS at DPS's cost. With a network prior the gradient of
a one-probe Hutchinson estimate is mostly noise (with a Gaussian prior it is exactly zero),
and every measurement with recon's networks lost PSNR to it: the weight was chosen with
``scripts/tune_baselines.py --default stsl gamma 0 0.002 0.02`` on the real-image sets'
tuning photographs, and with 0.02 the real-image MRI sets fell below the zero-filled
baseline (figures: ``benchmarks/README.md``, "STSL and DAPS with the default prior").
``gamma > 0`` runs the term as described.

Probe noise comes from a per-row stream derived from (not drawn from) the row's stream, so the
ancestral noise equals DPS's for the same generator. For a Gaussian prior ``T`` is constant in
``x`` (the Hessian of a Gaussian log-density is constant) and STSL reduces exactly to DPS
(tested).
"""

from __future__ import annotations

from typing import Annotated, Literal

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from recon.linalg import batch_dot, batch_norm
from recon.operators import preconditioned
from recon.priors.base import Denoiser

from ._registry import Sampler
from ._steps import (
    Callback,
    Generators,
    Precondition,
    StepInfo,
    ddim_step,
    denoise,
    guidance_step,
    randn,
    start,
)
from .dps import SAMPLERS as _DPS_ENTRY
from .dps import DDIMEta, Normalize, VPScale, Zeta

_DPS = _DPS_ENTRY[0].defaults()  # STSL's step defaults are DPS's


def hutchinson_laplacian(
    denoiser: Denoiser,
    x: Tensor,
    sigma: float,
    probes: Tensor,
    *,
    delta: float | None = None,
    score_x: Tensor | None = None,
) -> Tensor:
    """Per-sample ``mean_z z^T J_s(x) z``, Hutchinson's estimate of
    ``tr(grad^2 log p_sigma(x))`` (``J_s``: the Jacobian of the score); differentiable w.r.t. x.

    With ``delta=None`` the directional derivative ``J_s(x) z`` is exact (a Jacobian-vector
    product by double backward: two extra backward passes per probe), so the estimate is
    unbiased for any prior and its gradient is the gradient of an unbiased estimate. With a
    ``delta`` it is the finite difference ``(s(x + delta z) - s(x)) / delta`` (one extra
    network call per probe), unbiased only where ``log p`` is quadratic: the reference's
    choice, with its large ``delta`` (module docstring).

    Args:
        denoiser: ``D(x, sigma)``.
        x: (B, *) points.
        sigma: noise level.
        probes: (P, B, *) standard normal probes.
        delta: None (exact) or the finite-difference scale.
        score_x: the score at x when the caller already has it (saves a network call; for
            exact products it must be a graph of ``x``, which then requires grad).

    Returns:
        (B,) estimates.
    """
    s = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)

    def score(v: Tensor) -> Tensor:
        return (denoiser(v, s) - v) / sigma**2

    est = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    if delta is None:
        with torch.enable_grad():
            xv = x if x.requires_grad else x.detach().requires_grad_(True)
            given = score_x is not None and xv is x and score_x.requires_grad
            sv = score_x if given else score(xv)  # a graph of x, or computed here
            u = torch.zeros_like(sv, requires_grad=True)
            (vjp,) = torch.autograd.grad(sv, xv, u, create_graph=True)  # J^T u, linear in u
            for z in probes:
                (jz,) = torch.autograd.grad(vjp, u, z, create_graph=True)  # J z
                est = est + batch_dot(z, jz)
        return est / probes.shape[0]
    s0 = score(x) if score_x is None else score_x
    for z in probes:
        est = est + batch_dot(z, score(x + delta * z) - s0) / delta
    return est / probes.shape[0]


def _probe_streams(streams: list[torch.Generator]) -> list[torch.Generator]:
    return [
        torch.Generator(g.device).manual_seed((g.initial_seed() ^ 0x5EED5EED) % 2**63)
        for g in streams
    ]


def sample_stsl(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
    zeta: Zeta = _DPS["zeta"],
    vp_scale: VPScale = _DPS["vp_scale"],
    normalize: Normalize = _DPS["normalize"],
    precondition: Precondition = _DPS["precondition"],
    gamma: Annotated[
        float,
        Field(
            ge=0.0,
            description="weight of the Hessian-trace term; 0 (recon's default): off, STSL is "
            "DPS; the reference's 0.02 fell below the baseline with network priors",
        ),
    ] = 0.0,
    n_probes: Annotated[int, Field(ge=1, description="Hutchinson probes per step")] = 1,
    difference: Annotated[
        Literal["exact", "finite"],
        Field(
            description="the Hessian-vector product: exact (a Jacobian-vector product, 2 extra "
            "backward passes per probe, unbiased; recon's default) or finite (the reference's "
            "finite difference of the score at probe_scale, 1 extra network call per probe)"
        ),
    ] = "exact",
    probe_scale: Annotated[
        float,
        Field(
            gt=0.0,
            description="finite differences: probe size in the reference's state units "
            "(module docstring)",
        ),
    ] = 1.0,
    eta: DDIMEta = 1.0,
) -> Tensor:
    """Draw one STSL sample per measurement (see module docstring), (B, *x_shape)."""
    with torch.no_grad():
        streams, sig, x, _ = start(y, physics, sigmas, generator, x_init=x_init, sigma_y=sigma_y)
        g_phys, g_y = preconditioned(physics, y) if precondition else (physics, y)
        pstreams = _probe_streams(streams)
        n_norm = sum(x.shape[1:])  # the reference's normalisation (module docstring)
        vp = vp_scale if vp_scale is not None else _DPS["vp_scale"]
        for i in range(len(sig) - 1):
            s, s_next = sig[i], sig[i + 1]
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                x0 = denoise(denoiser, xg, s)
                loss = -batch_norm(g_y - g_phys.A(x0))
                if gamma > 0:  # probes from their own streams: none drawn when the term is off
                    probes = torch.stack(
                        [randn(pstreams, x.shape[1:], x) for _ in range(n_probes)]
                    )
                    c_t = vp * (1.0 + (s / vp) ** 2) ** 0.5  # a unit of the VP state
                    delta = probe_scale * c_t if difference == "finite" else None
                    lap = hutchinson_laplacian(
                        denoiser, xg, s, probes, delta=delta, score_x=(x0 - xg) / s**2
                    )
                    loss = loss - (gamma / n_norm) * c_t**2 * lap
                (grad,) = torch.autograd.grad(loss.sum(), xg)
            noise = randn(streams, x.shape[1:], x) if (eta > 0 and s_next > 0) else None
            x_new = ddim_step(x, x0.detach(), s, s_next, noise, eta=eta)
            step = guidance_step(zeta, vp_scale, s, s_next, g_phys, x, normalize)
            x = x_new + step * grad
            if callback is not None:
                callback(StepInfo(i, s, x, x0.detach()))
        return x


SAMPLERS = (
    Sampler(
        sample_stsl,
        title="STSL",
        summary="Rout et al. 2024: DPS plus a Hutchinson second-order (Hessian-trace) term, "
        "off by default",
        kind="approximate",
        starts_from_noise=True,
    ),
)
