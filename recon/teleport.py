"""Analytical teleportation: start a diffusion sampler part-way down from an exact Gaussian draw.

Wang and Vastola, "The Unreasonable Effectiveness of Gaussian Score Approximation for Diffusion
Models and its Applications" (TMLR 2024): at high noise a trained diffusion model's denoiser is
close to the one of the Gaussian with its training data's mean and covariance, so the first
steps of sampling can be replaced by an exact draw from that Gaussian at a level
``sigma_skip``; the paper skips 15-30 % of the steps at no loss of sample quality. With a
linear Gaussian likelihood the draw is from the Gaussian *posterior*: ``x0 | y ~ N(m, C)``
gives ``x_sigma | y ~ N(m, C + sigma^2 I)``, an exact posterior draw (:mod:`recon.priors.exact`)
plus ``sigma z`` (:func:`teleport`). The sampler then runs the schedule from the largest of its
levels at or below ``sigma_skip`` (:func:`cut`), saving the network calls of the levels above.

``auto`` picks ``sigma_skip`` from where the two denoisers agree in quality on held-out images
of the network's training distribution (:func:`compare`, measured once per bundled network by
``scripts/make_priors.py --teleport`` and kept in the manifest): the smallest measured level at
and above which the Gaussian's mean squared denoising error is at most ``1 + TOLERANCE`` times
the network's (:func:`auto_sigma`). Agreement of the outputs themselves (``discrepancy``) is
recorded beside it but not used: at the top levels, which EDM training rarely samples
(``ln sigma ~ N(-1.2, 1.2^2)``), the network's outputs stray from the data mean and the
Gaussian denoises better.

Which samplers teleport (marked 'teleports' in ``recon list samplers``): those whose state at
``sigmas[0]`` is ``x_init`` (``Sampler.starts_from_noise``), and particle samplers whose
cloud starts from ``n`` exact draws per measurement weighted to its twisted target
(:func:`cloud_start`; ``Sampler.teleports_cloud``).
Units: images in [0, 1], ``sigma`` in data units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import deepinv as dinv
import torch
from torch import Tensor

from recon.priors.base import Denoiser

#: the agreement a skipped level must have: the Gaussian's mean squared denoising error is at
#: most ``1 + TOLERANCE`` times the network's
TOLERANCE = 0.05

#: noise levels (data units) the agreement is measured at: 25 log-spaced from 0.01 to 80
LEVELS: tuple[float, ...] = tuple(
    round(10 ** (-2 + i * (math.log10(80) + 2) / 24), 5) for i in range(25)
)


def compare(
    network: Denoiser,
    gaussian: Denoiser,
    images: Tensor,
    levels: Sequence[float] = LEVELS,
    *,
    seed: int = 0,
    batch: int = 16,
) -> dict[str, list[float]]:
    """How two denoisers compare at each noise level, on held-out images ``x0`` with
    ``x = x0 + sigma z`` (z seeded by ``seed``, the same z for both).

    Args:
        network, gaussian: denoisers ``D(x, sigma) -> E[x0 | x]`` on images of ``images``' shape.
        images: held-out clean images (N, C, H, W) in [0, 1].
        levels: noise levels (data units).
        seed: seed of the noise.
        batch: images per denoiser call.

    Returns:
        Per level: ``discrepancy``, ``sum ||D_net - D_gauss||^2 / sum ||D_net - x0||^2``, and
        ``excess_mse``, ``sum ||D_gauss - x0||^2 / sum ||D_net - x0||^2 - 1`` (negative where
        the Gaussian denoises better, e.g. at levels the network rarely saw in training).
    """
    disc, excess = [], []
    g = torch.Generator().manual_seed(seed)
    for s in levels:
        num = err_n = err_g = 0.0
        for x0 in images.split(batch):
            x0 = x0.float()
            x = x0 + s * torch.randn(x0.shape, generator=g)
            sig = torch.full((x.shape[0],), float(s))
            with torch.no_grad():
                dn = network(x, sig).float()
                dg = gaussian(x.double(), sig.double()).float()
            num += float((dn - dg).pow(2).sum())
            err_n += float((dn - x0).pow(2).sum())
            err_g += float((dg - x0).pow(2).sum())
        disc.append(num / max(err_n, 1e-30))
        excess.append(err_g / max(err_n, 1e-30) - 1.0)
    return {"discrepancy": disc, "excess_mse": excess}


def auto_sigma(
    levels: Sequence[float], excess: Sequence[float], tolerance: float = TOLERANCE
) -> float | None:
    """The smallest measured level at and above which the Gaussian denoises as well as the
    network, up to ``tolerance``: every ``excess_mse <= tolerance`` (:func:`compare`); None when
    it is worse already at the top level (teleportation would skip nothing)."""
    best = None
    for s, e in sorted(zip(levels, excess, strict=True), reverse=True):
        if e > tolerance:
            break
        best = s
    return best


def cut(sigmas: Tensor, sigma_skip: float) -> Tensor:
    """The schedule from its largest level at or below ``sigma_skip`` (at least its last two
    levels), so ``len(sigmas) - len(cut(...))`` network-call levels are skipped."""
    keep = int((sigmas > sigma_skip).sum())
    return sigmas[min(keep, len(sigmas) - 2) :]


def teleport(
    gaussian: Denoiser,
    y: Tensor,
    physics: dinv.physics.LinearPhysics,
    sigma: float,
    generator: Sequence[torch.Generator],
    *,
    sigma_y: float | None = None,
) -> Tensor:
    """An exact draw of ``x_sigma | y`` under the Gaussian prior: ``x0 + sigma z`` with ``x0``
    an exact posterior draw (:func:`recon.samplers.sample_exact`), row i from
    ``generator[i]`` alone. Shape (B, *x_shape), y's dtype."""
    from recon.samplers._steps import randn
    from recon.samplers.baselines import sample_exact

    sig = torch.tensor([float(sigma), 0.0], dtype=torch.float64)
    x0 = sample_exact(gaussian, y, physics, sig, generator=list(generator), sigma_y=sigma_y)
    return x0 + sigma * randn(generator, x0.shape[1:], x0)


def cloud_start(
    gaussian: Any,
    y: Tensor,
    physics: dinv.physics.LinearPhysics,
    sigma: float,
    streams: Sequence[torch.Generator],
    n: int,
    *,
    sigma_y: float,
    cg_iters: int = 1000,
    cg_tol: float = 1e-9,
) -> tuple[Tensor, Tensor]:
    """A particle cloud's teleported start: ``n`` exact draws of ``x_sigma | y`` per measurement
    under the Gaussian prior, and the Gaussian's predictive log-likelihood of each.

    An SMC sampler whose first target is ``p(x_sigma) p~(y | x_sigma)`` (TDS) and whose
    particles are drawn from the Gaussian posterior ``p_G(x_sigma | y)`` instead of the prior
    ``p(x_sigma)`` weighs each by ``p~(y | x_sigma) / p_G(y | x_sigma)``, taking
    ``p(x_sigma) = p_G(x_sigma)`` (teleportation's premise). ``p_G(y | x_sigma) =
    N(y; A D_G(x_sigma), A C_sigma A^T + sigma_y^2 I)`` with ``D_G`` the Gaussian's denoiser
    and ``C_sigma v = sigma^2 (D_G(v) - D_G(0))``, the covariance of ``x0 | x_sigma`` (the
    Gaussian denoiser is affine); its quadratic form is solved by conjugate gradient in
    measurement space, in float64.

    Args:
        gaussian: an exact Gaussian prior (``posterior``, and a denoiser ``D(x, sigma)``).
        y: measurements (B, *meas_shape).
        physics: the linear operator of these B measurements.
        sigma: the start level (data units).
        streams: one generator per measurement; measurement b's draws come from ``streams[b]``.
        n: particles per measurement.
        sigma_y: measurement noise std.
        cg_iters, cg_tol: the solve's settings (condition number up to
            ``1 + sigma^2 ||A||^2 / sigma_y^2``).

    Returns:
        ``x`` (B * n, *x_shape) in y's dtype, rows ``b*n .. b*n + n - 1`` for measurement b, and
        ``log p_G(y | x_sigma)`` (B * n,) float64, up to a constant per measurement (the
        log-determinant, the same for all of its particles).
    """
    from recon.linalg import batch_dot, conjugate_gradient
    from recon.operators import cast
    from recon.samplers._steps import particle_randn

    yn = y.repeat_interleave(n, dim=0)
    rows = [g for g in streams for _ in range(n)]
    x0 = gaussian.posterior(physics, yn, sigma_y=sigma_y).sample_rows(rows)
    x = x0 + sigma * particle_randn(streams, n, x0.shape[1:], x0)
    ph = cast(physics, torch.float64)
    y64 = yn.double()
    sig = torch.full((x.shape[0],), float(sigma), dtype=torch.float64, device=x.device)
    with torch.no_grad():
        d0 = gaussian(torch.zeros_like(x), sig)

        def apply_s(z: Tensor) -> Tensor:
            return sigma**2 * ph.A(gaussian(ph.A_adjoint(z), sig) - d0) + sigma_y**2 * z

        r = y64 - ph.A(gaussian(x, sig))
        u = conjugate_gradient(apply_s, r, n_iter=cg_iters, tol=cg_tol)
    return x.to(y.dtype), -0.5 * batch_dot(r, u).double()


@dataclass
class Teleport:
    """A run's teleportation: the Gaussian it draws from and the level it starts at.

    Attributes:
        gaussian: the exact Gaussian prior (on the scan's image shape).
        sigmas: the run's schedule from the start level on (:func:`cut`); ``sigmas[0]`` is
            the start level (data units).
        record: what the results file records (attr ``teleport``).
    """

    gaussian: Denoiser
    sigmas: Tensor
    record: dict[str, Any]

    @property
    def sigma(self) -> float:
        """The start level (data units)."""
        return float(self.sigmas[0])


def prepare(
    cfg: Any, entry: Any, prior_cfg: Any, shape: tuple[int, ...], sigmas: Tensor, device: Any
) -> Teleport | None:
    """The teleportation a run config asks for (``cfg.teleport``, ``cfg.teleport_prior``), or
    None. ``entry`` is the sampler's registry entry, ``prior_cfg`` the resolved prior config,
    ``shape`` the image shape (C, H, W) and ``sigmas`` the schedule.

    Raises:
        UserError: a sampler that does not start from noise, no Gaussian for the prior,
            ``auto`` without a measured agreement, or a Gaussian of another size.
    """
    from pydantic import TypeAdapter

    from recon.errors import UserError
    from recon.priors.configs import PriorConfig, resolve, teleport_partner
    from recon.samplers import SAMPLERS

    if cfg.teleport is None:
        return None
    if not (entry.starts_from_noise or entry.teleports_cloud):
        able = ", ".join(
            n for n, e in SAMPLERS.items() if e.starts_from_noise or e.teleports_cloud
        )
        raise UserError(
            f"--teleport: sampler {entry.name!r} does not start from noise; teleportation "
            f"applies to {able}"
        )
    partner = teleport_partner(prior_cfg)
    name = cfg.teleport_prior or (partner or {}).get("gaussian")
    if name is None:
        raise UserError(
            "--teleport: the prior has no bundled Gaussian partner; give one fitted to its "
            "training data with --set teleport_prior=NAME_OR_PATH"
        )
    if cfg.teleport == "auto":
        if partner is None or cfg.teleport_prior not in (None, partner["gaussian"]):
            raise UserError(
                "--teleport auto needs the agreement of the network and its Gaussian, measured "
                "for bundled networks only; give a level instead, e.g. --teleport 5"
            )
        sigma = auto_sigma(partner["levels"], partner["excess_mse"])
        rule = f"auto: the Gaussian's denoising MSE within {TOLERANCE:.0%} of the network's"
    else:
        sigma, rule = float(cfg.teleport), "given"
    sigma = float(sigmas[0]) if sigma is None else sigma
    kept = cut(sigmas, sigma)
    skipped = len(sigmas) - len(kept)
    conf = TypeAdapter(PriorConfig).validate_python(resolve(name, shape))
    gaussian = conf.build(device=str(device))
    if getattr(gaussian, "posterior", None) is None:
        raise UserError(f"--teleport: prior {name!r} is not an exact Gaussian (no posterior)")
    got = tuple(getattr(gaussian, "shape", shape))
    if got != tuple(shape):
        raise UserError(
            f"--teleport: the Gaussian {name!r} serves images of shape {got}, the scan's are "
            f"{tuple(shape)}; give one of that size (--set teleport_prior=...) or no --teleport"
        )
    record = {
        "gaussian": name,
        "sigma_skip": float(kept[0]),
        "requested": cfg.teleport,
        "rule": rule,
        "levels_skipped": skipped,
        "levels": len(sigmas),
    }
    return Teleport(gaussian, kept, record)
