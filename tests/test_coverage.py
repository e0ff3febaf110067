"""Calibrated uncertainty: per-pixel credible-interval coverage (recon.metrics.coverage)."""

from __future__ import annotations

import torch

from recon import operators as O
from recon.metrics import COVERAGE_LEVELS, coverage
from recon.priors import GaussianPrior
from recon.samplers import SAMPLERS

F64 = torch.float64


def test_exact_sampler_covers_its_nominal_levels_on_an_exact_gaussian_problem():
    """Truths drawn from the prior, y = A x + noise, 400 exact posterior draws per item: the
    central intervals cover their nominal level (90 % within 0.03) on average over items."""
    g = torch.Generator().manual_seed(0)
    d, m, n_items, n_draws = 16, 8, 120, 400
    root = torch.randn(d, d, generator=g, dtype=F64) / d**0.5
    prior = GaussianPrior(
        torch.zeros(1, 4, 4, dtype=F64), root @ root.T + 0.05 * torch.eye(d, dtype=F64)
    )
    a = torch.randn(m, d, generator=g, dtype=F64) / d**0.5
    physics = O.from_matrix(a, sigma_y=0.1)
    truth = prior.sample(n_items, generator=g).reshape(n_items, d)
    y = truth @ a.T + 0.1 * torch.randn(n_items, m, generator=g, dtype=F64)
    sig = torch.tensor([1.0, 0.0], dtype=F64)
    exact = SAMPLERS["exact"].fn
    covs = {lev: 0.0 for lev in COVERAGE_LEVELS}
    for i in range(n_items):
        ys = y[i : i + 1].expand(n_draws, -1).clone()
        gens = [torch.Generator().manual_seed(1000 * i + k) for k in range(n_draws)]
        draws = exact(prior, ys, physics, sig, generator=gens).reshape(n_draws, d)
        for lev, c in coverage(draws, truth[i]).items():
            covs[lev] += c / n_items
    assert abs(covs[0.9] - 0.9) < 0.03, covs
    assert abs(covs[0.5] - 0.5) < 0.05, covs
    # and a sampler that is too confident (the posterior mean repeated with tiny spread) is not
    post_mean = draws.mean(0, keepdim=True) + 1e-3 * torch.randn(
        n_draws, d, generator=g, dtype=F64
    )
    assert coverage(post_mean, truth[-1])[0.9] < 0.5
