"""STSL: the Hutchinson trace estimate and the reduction to DPS on Gaussian priors."""

from __future__ import annotations

import math

import torch

from recon import operators as O
from recon.metrics import sliced_wasserstein
from recon.priors import GaussianPrior
from recon.samplers import sample_dps, sample_stsl
from recon.samplers.stsl import hutchinson_laplacian
from recon.schedules import karras
from recon.toy import mixture_problem

F64 = torch.float64


def _gauss(gen, d=6):
    a = torch.randn(d, d, generator=gen, dtype=F64)
    return GaussianPrior(
        torch.randn(d, generator=gen, dtype=F64), a @ a.T / d + 0.1 * torch.eye(d, dtype=F64)
    )


def test_hutchinson_trace_is_unbiased_on_a_gaussian(gen):
    """E[z^T (s(x + z) - s(x))] = tr(grad s) = -tr((C + sigma^2 I)^{-1}), within 5 SE."""
    prior = _gauss(gen)
    sigma = 0.7
    x = torch.randn(2, 6, generator=gen, dtype=F64)
    probes = torch.randn(4000, 2, 6, generator=gen, dtype=F64)
    exact = -torch.trace(torch.linalg.inv(prior.cov.dense() + sigma**2 * torch.eye(6, dtype=F64)))
    per_probe = torch.stack([hutchinson_laplacian(prior, x, sigma, p[None]) for p in probes])
    se = per_probe.std(0) / math.sqrt(probes.shape[0])
    assert bool(((per_probe.mean(0) - exact).abs() < 5 * se).all())


def test_hutchinson_small_delta_matches_autograd_laplacian_on_a_mixture(gen):
    """For a non-Gaussian prior the finite difference needs a small delta: with delta 1e-4 the
    estimate's mean matches the autograd Hessian trace of the noised mixture."""
    prob = mixture_problem(4, 1, seed=0)
    prior, sigma = prob.prior, 3.0
    x = prior.sample(1, generator=gen) + sigma * torch.randn(1, 4, generator=gen, dtype=F64)
    xg = x.clone().requires_grad_(True)
    sc = prior.score(xg, torch.tensor([sigma], dtype=F64))
    exact = sum(torch.autograd.grad(sc[0, i], xg, retain_graph=True)[0][0, i] for i in range(4))
    probes = torch.randn(4000, 1, 4, generator=gen, dtype=F64)
    est = torch.stack([hutchinson_laplacian(prior, x, sigma, p[None], delta=1e-4) for p in probes])
    se = float(est.std() / math.sqrt(4000))
    assert abs(float(est.mean()) - float(exact)) < 5 * se + 1e-6


def test_stsl_equals_dps_on_a_gaussian_prior(gen):
    """The Hessian trace of a Gaussian log-density is constant, so its gradient vanishes and
    STSL's update is DPS's; the probe streams are separate, so the samples coincide."""
    prior = _gauss(gen)
    physics = O.from_matrix(torch.randn(3, 6, generator=gen, dtype=F64), sigma_y=0.1)
    y = physics.A(prior.sample(3, generator=gen))
    sig = karras(20, sigma_max=10.0).to(F64)
    kw = dict(zeta=0.1, vp_scale=None)
    a = sample_stsl(
        prior,
        y,
        physics,
        sig,
        gamma=5.0,
        n_probes=2,
        generator=torch.Generator().manual_seed(1),
        **kw,
    )
    b = sample_dps(prior, y, physics, sig, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.allclose(a, b, atol=1e-8)


def test_stsl_default_is_dps_on_any_prior():
    """The default weight is 0 (module docstring): then STSL is DPS draw for draw, also where
    the prior is not Gaussian (a two-mode mixture), and needs no probe network calls."""
    prob = mixture_problem(8, 2, seed=0)
    ys = prob.y.expand(4, -1).clone()
    sig = karras(20, sigma_min=0.01, sigma_max=100.0).to(F64)
    calls = []

    def counted(x, s):
        calls.append(len(x))
        return prob.prior(x, s)

    kw = dict(zeta=0.2, vp_scale=1.0)
    a = sample_stsl(
        counted, ys, prob.physics, sig, generator=torch.Generator().manual_seed(1), **kw
    )
    n_stsl = len(calls)
    b = sample_dps(
        counted, ys, prob.physics, sig, generator=torch.Generator().manual_seed(1), **kw
    )
    assert torch.allclose(a, b, atol=1e-10)
    assert n_stsl == len(calls) - n_stsl


def test_stsl_on_the_grid_mixture_is_no_worse_than_dps():
    """d=8, d_y=2: STSL's SW to the exact posterior is within Monte-Carlo noise of DPS's or
    better (the Gaussian-prior reduction makes them equal in law there)."""
    sig = karras(50, sigma_min=0.01, sigma_max=100.0).to(F64)
    n = 300
    diffs = []
    for seed in range(2):
        prob = mixture_problem(8, 2, seed=seed)
        ref = prob.posterior.sample(n, generator=torch.Generator().manual_seed(seed))[:, 0]
        ys = prob.y.expand(n, -1).clone()
        kw = dict(zeta=0.2, vp_scale=1.0)
        s_dps = sample_dps(
            prob.prior, ys, prob.physics, sig, generator=torch.Generator().manual_seed(1), **kw
        )
        s_stsl = sample_stsl(
            prob.prior,
            ys,
            prob.physics,
            sig,
            gamma=0.02,
            generator=torch.Generator().manual_seed(1),
            **kw,
        )
        g = torch.Generator().manual_seed(0)
        diffs.append(
            sliced_wasserstein(s_stsl, ref, generator=g)
            - sliced_wasserstein(s_dps, ref, generator=torch.Generator().manual_seed(0))
        )
    assert sum(diffs) / len(diffs) < 0.5  # SW noise at n=300 is ~0.2 (exact-vs-exact)


def test_stsl_term_pulls_towards_the_mode_and_reuses_the_score():
    """Two modes at (+-2, 0): between them the Laplacian of log p is large, at a mode it is
    -d / (var + sigma^2). At (1, 0) the gradient of STSL's prior term ``-T`` (what ascending
    its surrogate follows) points to the nearer mode (+x). The exact Laplacian is taken with
    the basis vectors as probes and a small delta. Passing the score at x gives the same
    value as recomputing it (the sampler saves that network call)."""
    from recon.priors import GaussianMixturePrior

    means = torch.tensor([[2.0, 0.0], [-2.0, 0.0]], dtype=F64)
    prior = GaussianMixturePrior(torch.ones(2), means, torch.full((2, 2), 0.3, dtype=F64))
    sigma, probes = 0.3, torch.eye(2, dtype=F64)[:, None, :]  # (P=2, B=1, d=2)
    x = torch.tensor([[1.0, 0.0]], dtype=F64, requires_grad=True)
    lap = 2 * hutchinson_laplacian(prior, x, sigma, probes, delta=1e-5)
    (grad,) = torch.autograd.grad(-lap.sum(), x)
    assert grad[0, 0] > 0 and abs(float(grad[0, 1])) < 1e-6 * abs(float(grad[0, 0]))
    s_x = (prior(x, torch.full((1,), sigma, dtype=F64)) - x) / sigma**2
    again = 2 * hutchinson_laplacian(prior, x, sigma, probes, delta=1e-5, score_x=s_x)
    assert torch.allclose(lap, again)


def test_default_trace_term_and_its_gradient_match_the_closed_form_on_a_mixture(gen):
    """On a Gaussian mixture (whose Hessian of log p_sigma varies with x), STSL's default
    estimate (exact Jacobian-vector products, one probe per draw) of the Laplacian and of its
    gradient matches the closed form (exact derivatives of the mixture's log-density) within
    5 Monte-Carlo standard errors; the reference's finite difference at its default step does
    not (it is biased where log p is not quadratic)."""
    from recon.samplers import SAMPLERS

    defaults = SAMPLERS["stsl"].defaults()
    assert defaults["difference"] == "exact" and defaults["n_probes"] == 1
    prob = mixture_problem(4, 1, seed=0)
    prior, sigma = prob.prior, 3.0
    s = torch.tensor([sigma], dtype=F64)
    x = prior.sample(1, generator=gen) + sigma * torch.randn(1, 4, generator=gen, dtype=F64)
    xg = x.clone().requires_grad_(True)
    lp = prior.log_prob(xg, s).sum()
    (g,) = torch.autograd.grad(lp, xg, create_graph=True)
    lap = sum(torch.autograd.grad(g[0, i], xg, create_graph=True)[0][0, i] for i in range(4))
    (lap_grad,) = torch.autograd.grad(lap, xg)
    lap = lap.detach()
    n = 3000
    ests, grads = [], []
    for _ in range(n):
        z = torch.randn(1, 1, 4, generator=gen, dtype=F64)
        xi = x.clone().requires_grad_(True)
        est = hutchinson_laplacian(prior, xi, sigma, z)
        (gi,) = torch.autograd.grad(est.sum(), xi)
        ests.append(est.detach())
        grads.append(gi)
    ests, grads = torch.cat(ests), torch.cat(grads)
    assert abs(float(ests.mean() - lap)) < 5 * float(ests.std()) / math.sqrt(n)
    se = grads.std(0) / math.sqrt(n)
    assert bool(((grads.mean(0) - lap_grad[0]).abs() < 5 * se + 1e-9).all())
    vp = SAMPLERS["dps"].defaults()["vp_scale"]
    c_t = vp * math.sqrt(1 + (sigma / vp) ** 2)  # the reference's step (module docstring)
    probes = torch.randn(n, 1, 1, 4, generator=gen, dtype=F64)
    fd = torch.cat([hutchinson_laplacian(prior, x, sigma, p, delta=c_t) for p in probes])
    assert abs(float(fd.mean() - lap)) > 5 * float(fd.std()) / math.sqrt(n)
