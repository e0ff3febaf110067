"""DAPS against closed forms: its x0-space Langevin stage on an exact Gaussian prior."""

from __future__ import annotations

import math

import torch

from recon import operators as O
from recon.operators import norm_sq
from recon.priors import GaussianPrior
from recon.samplers import sample_daps

F64 = torch.float64


def test_langevin_stage_matches_its_closed_form(gen):
    """One annealing level (``sigmas = [s, 0]``, ``ode_steps = 1``) from a fixed ``x_T``: the
    output is K unadjusted Langevin steps on ``N(x0_hat, s^2 I) N(y; A x0, tau^2 I)`` from
    ``x0_hat = D(x_T, s)``. For a Gaussian target with precision P and mean m_L, K steps of size
    h from a point give exactly mean ``m_L + M^K (x0_hat - m_L)`` and covariance
    ``sum_{j<K} M^j (2h) M^j`` with ``M = I - h P``; 4000 draws must match both within 5
    standard errors."""
    d, s, tau, k = 8, 0.5, 0.2, 40
    a = torch.randn(3, d, generator=gen, dtype=F64)
    c = torch.randn(d, d, generator=gen, dtype=F64)
    prior = GaussianPrior(
        torch.randn(d, generator=gen, dtype=F64), c @ c.T / d + 0.05 * torch.eye(d, dtype=F64)
    )
    physics = O.from_matrix(a, sigma_y=tau)
    y = physics.A(prior.sample(1, generator=gen))
    x_t = prior.sample(1, generator=gen) + s * torch.randn(1, d, generator=gen, dtype=F64)
    n = 4000
    out = sample_daps(
        prior,
        y.expand(n, -1).clone(),
        physics,
        torch.tensor([s, 0.0], dtype=F64),
        x_init=x_t.expand(n, -1).clone(),
        generator=torch.Generator().manual_seed(3),
        n_langevin=k,
        ode_steps=1,
        lr=0.5,
    )
    x0_hat = prior(x_t, torch.full((1,), s, dtype=F64))[0]
    prec = torch.eye(d, dtype=F64) / s**2 + a.T @ a / tau**2
    m_l = torch.linalg.solve(prec, x0_hat / s**2 + a.T @ y[0] / tau**2)
    h = 0.5 / (1 / s**2 + float(norm_sq(physics, x_t)[0]) / tau**2)
    m = torch.eye(d, dtype=F64) - h * prec
    mk = torch.linalg.matrix_power(m, k)
    mean = m_l + mk @ (x0_hat - m_l)
    cov = sum(torch.linalg.matrix_power(m, j) @ (2 * h * m.T.matrix_power(j)) for j in range(k))
    var = torch.diagonal(cov)
    assert bool(((out.mean(0) - mean).abs() < 5 * (var / n).sqrt()).all())
    assert bool(((out.var(0) - var).abs() < 5 * var * math.sqrt(2 / (n - 1))).all())
    # not vacuous: the chain moved far from its start, relative to its spread
    assert float(((mean - x0_hat).abs() / var.sqrt()).max()) > 5
