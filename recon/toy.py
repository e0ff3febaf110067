"""The 25-component Gaussian-mixture inverse problem of the SMC literature, with exact posterior.

Construction (Cardoso, Janati, Le Corff, Moulines, "Monte Carlo guided diffusion for Bayesian
linear inverse problems", ICLR 2024, arXiv 2308.07983, Sec. 5 and its benchmark code):

* prior: 25 components with identity covariance and means ``(-8 i, -8 j)`` for
  ``i, j in {-2..2}``, the 2-D pair repeated along all ``d / 2`` coordinate pairs; weights
  ``w = n^2 / sum(n^2)`` with ``n`` standard normal (random per seed);
* operator: ``A0 ~ N(0, 1)^{d_y x d}``, ``A0 = U S V^T`` (SVD), singular values replaced by
  ``sort(U(0, 1)^{d_y})`` descending, ``A = U diag(s) V[:d_y]``;
* noise std ``sigma_y = U(0, 1) * max(s)``; ``x* ~ prior``, ``y = A x* + sigma_y e``.

The exact posterior is a Gaussian mixture (:meth:`GaussianMixturePrior.posterior`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon.operators import MatrixPhysics, from_matrix
from recon.priors import GaussianMixturePosterior, GaussianMixturePrior


@dataclass
class MixtureProblem:
    """One random instance: prior, operator, truth, measurement, exact posterior."""

    prior: GaussianMixturePrior
    physics: MatrixPhysics
    x_true: Tensor
    y: Tensor
    sigma_y: float
    posterior: GaussianMixturePosterior


def grid_mixture_prior(d: int, *, generator: torch.Generator) -> GaussianMixturePrior:
    """The 25-component grid mixture in dimension d (even), random weights."""
    if d % 2:
        raise ValueError(f"d must be even, got {d}")
    grid = torch.tensor(
        [[-8.0 * i, -8.0 * j] for i in range(-2, 3) for j in range(-2, 3)], dtype=torch.float64
    )
    means = grid.repeat(1, d // 2)
    w = torch.randn(25, generator=generator, dtype=torch.float64) ** 2
    covs = [torch.ones(d, dtype=torch.float64) for _ in range(25)]
    return GaussianMixturePrior(w / w.sum(), means, covs)


def mixture_problem(d: int, d_y: int, *, seed: int) -> MixtureProblem:
    """A random instance of the grid-mixture inverse problem (float64)."""
    g = torch.Generator().manual_seed(seed)
    prior = grid_mixture_prior(d, generator=g)
    a0 = torch.randn(d_y, d, generator=g, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(a0, full_matrices=True)
    s = torch.sort(torch.rand(d_y, generator=g, dtype=torch.float64), descending=True).values
    a = u @ torch.diag(s) @ vh[:d_y]
    sigma_y = float(torch.rand(1, generator=g, dtype=torch.float64)) * float(s.max())
    physics = from_matrix(a, sigma_y=sigma_y)
    x_true = prior.sample(1, generator=g)
    y = physics.A(x_true) + sigma_y * torch.randn(1, d_y, generator=g, dtype=torch.float64)
    return MixtureProblem(prior, physics, x_true, y, sigma_y, prior.posterior(physics, y))
