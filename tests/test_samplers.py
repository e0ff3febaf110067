"""Sampler contract tests (every registry entry) and exact-posterior checks."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from recon import operators as O
from recon.metrics import sliced_wasserstein
from recon.priors import GaussianPrior
from recon.samplers import (
    SAMPLERS,
    CountingDenoiser,
    StepInfo,
    hyperparameters,
    sample_dds,
    sample_dps,
    sample_exact,
    sample_reddiff,
)
from recon.schedules import karras
from recon.toy import mixture_problem

F64 = torch.float64
COMMON = {"x_init", "generator", "callback", "sigma_y", "return_particles", "teleport_from"}
FAST = {
    "reddiff": dict(lr=0.05),
    "dps": dict(vp_scale=None, zeta=0.1),
    "mcgdiff": dict(n_particles=8),
    "fps": dict(n_particles=8),
    "afdps": dict(n_particles=8),
}


def _spd(d, gen, jitter=0.05):
    a = torch.randn(d, d, generator=gen, dtype=F64)
    return a @ a.T / d + jitter * torch.eye(d, dtype=F64)


@pytest.fixture
def vector_problem(gen):
    d = 6
    prior = GaussianPrior(0.3 * torch.randn(d, generator=gen, dtype=F64), _spd(d, gen))
    a = torch.randn(3, d, generator=gen, dtype=F64)
    physics = O.from_matrix(a, sigma_y=0.1)
    x = prior.sample(4, generator=gen)
    y = physics.A(x) + 0.1 * torch.randn(4, 3, generator=gen, dtype=F64)
    return prior, physics, y


@pytest.fixture
def image_problem(gen):
    shape = (1, 8, 8)
    prior = GaussianPrior(
        torch.full(shape, 0.5, dtype=F64), torch.full((64,), 0.04, dtype=F64), shape=shape
    )
    cfg = O.InpaintingConfig(img_size=shape, keep_ratio=0.5, sigma_y=0.02)
    physics = O.cast(O.build(cfg), F64)
    x = prior.sample(3, generator=gen)
    y = physics.A(x) + 0.02 * physics.mask * torch.randn(x.shape, generator=gen, dtype=F64)
    return prior, physics, y


@pytest.fixture
def ct_problem(gen):
    shape = (1, 8, 8)
    prior = GaussianPrior(
        torch.full(shape, 0.5, dtype=F64), torch.full((64,), 0.04, dtype=F64), shape=shape
    )
    physics = O.cast(O.build(O.CTConfig(img_size=(8, 8), n_angles=10, sigma_y=0.01)), F64)
    y = physics.A(prior.sample(3, generator=gen))
    return prior, physics, y


# samplers that only apply to some problems: fbp to CT, tv to images
ONLY = {"fbp": "ct_problem", "tv": "image_problem"}


def _problem(name, problem, request):
    return request.getfixturevalue(ONLY.get(name, problem))


def _run(name, prior, physics, y, *, n_steps=12, generator=None, **kw):
    params = {**FAST.get(name, {}), **kw}
    sigmas = karras(n_steps, sigma_min=0.01, sigma_max=20.0).to(F64)
    return SAMPLERS[name].fn(prior, y, physics, sigmas, generator=generator, **params)


def of_kind(kind):
    return sorted(n for n, s in SAMPLERS.items() if s.kind == kind)


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_keyword_is_common_or_a_configurable_hyperparameter(name):
    """A keyword-only parameter without ``Annotated[..., Field(...)]`` would be unreachable from
    configs and the CLI: every one is either a common argument or a config field, and the
    generated config validates its own defaults and rejects unknown keys."""
    entry = SAMPLERS[name]
    sig = inspect.signature(entry.fn)
    kw_only = {p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}
    fields = set(entry.config.model_fields) - {"name"}
    assert kw_only - COMMON == fields
    assert COMMON - {"return_particles", "teleport_from"} <= kw_only
    assert ("teleport_from" in kw_only) == entry.teleports_cloud
    assert list(sig.parameters)[:4] == ["denoiser", "y", "physics", "sigmas"]
    cfg = entry.config()
    assert hyperparameters(cfg) == entry.defaults()
    with pytest.raises(ValueError):
        entry.config(no_such_key=1)
    assert entry.summary and entry.kind in ("exact", "asymptotic", "approximate")


def test_registry_collects_every_sampler_module():
    """Every public module of recon/samplers declares at least one sampler."""
    import pkgutil

    import recon.samplers as pkg

    modules = {m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")}
    declared = {SAMPLERS[n].fn.__module__.rsplit(".", 1)[1] for n in SAMPLERS}
    assert modules == declared


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("problem", ["vector_problem", "image_problem"])
def test_output_finite_shaped_and_inputs_unchanged(name, problem, request):
    prior, physics, y = _problem(name, problem, request)
    y_copy = y.clone()
    state = {k: v.clone() for k, v in physics.state_dict().items()}
    x_init = physics.A_dagger(y) + 0.5
    x_init_copy = x_init.clone()
    infos: list[StepInfo] = []
    out = _run(
        name,
        prior,
        physics,
        y,
        generator=torch.Generator().manual_seed(0),
        x_init=x_init,
        callback=infos.append,
    )
    assert out.shape == physics.A_adjoint(y).shape
    assert out.dtype == y.dtype
    assert bool(torch.isfinite(out).all())
    assert torch.equal(y, y_copy) and torch.equal(x_init, x_init_copy)
    for k, v in physics.state_dict().items():
        assert torch.equal(v, state[k])
    assert infos and all(isinstance(i, StepInfo) for i in infos)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_seed_bit_identical(name, request):
    prior, physics, y = _problem(name, "vector_problem", request)
    a = _run(name, prior, physics, y, generator=torch.Generator().manual_seed(7))
    b = _run(name, prior, physics, y, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("problem", ["vector_problem", "image_problem"])
def test_sample_does_not_depend_on_batch_mates(name, problem, request):
    prior, physics, y = _problem(name, problem, request)
    batch = _run(
        name,
        prior,
        physics,
        y,
        generator=_gens([11, 12, 13]) if y.shape[0] == 3 else _gens([11, 12, 13, 14]),
    )
    alone = _run(name, prior, physics, y[1:2], generator=_gens([12]))
    assert torch.allclose(batch[1:2], alone, rtol=0, atol=1e-12)
    # the check is not vacuous: another stream gives another sample (for the random ones)
    if SAMPLERS[name].stochastic:
        other = _run(name, prior, physics, y[1:2], generator=_gens([99]))
        assert float((other - alone).abs().max()) > 1e-4


def test_counting_denoiser(vector_problem):
    prior, physics, y = vector_problem
    counted = CountingDenoiser(prior)
    _run("dps", counted, physics, y, n_steps=7)
    assert counted.nfe == 7 and counted.vjp == 7 and counted.rows == 7 * y.shape[0]
    counted = CountingDenoiser(prior)
    _run("dds", counted, physics, y, n_steps=7)
    assert counted.nfe == 7 and counted.vjp == 0


# ----------------------------------------------------------------------------------------------
# exact-posterior checks


@pytest.fixture
def gauss8(gen):
    d = 8
    prior = GaussianPrior(torch.randn(d, generator=gen, dtype=F64), _spd(d, gen))
    a = torch.randn(3, d, generator=gen, dtype=F64)
    return prior, a


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", of_kind("exact"))
def test_exact_sampler_matches_posterior(name, gauss8, gen):
    prior, a = gauss8
    physics = O.from_matrix(a, sigma_y=0.2)
    y = physics.A(prior.sample(1, generator=gen))
    post = prior.posterior(physics, y)
    n = 3000
    s = SAMPLERS[name].fn(
        prior,
        y.expand(n, -1).clone(),
        physics,
        karras(2).to(F64),
        generator=torch.Generator().manual_seed(1),
    )
    se = post.std[0] / math.sqrt(n)
    assert bool(((s.mean(0) - post.mean[0]).abs() < 5 * se).all())
    # sample std: standard error sigma / sqrt(2 (n - 1))
    assert bool(((s.std(0) - post.std[0]).abs() < 5 * post.std[0] / math.sqrt(2 * n)).all())


def test_dds_noiseless_fits_data_and_approaches_posterior_mean(gauss8, gen):
    """DDS noiseless: CG on A^T A x = A^T y from x0_hat fits y (m = 3 < n_cg = 5: CG is exact in
    m steps); the mean of the samples approaches the posterior mean as steps grow."""
    prior, a = gauss8
    physics = O.from_matrix(a, sigma_y=0.0)
    y = physics.A(prior.sample(1, generator=gen))
    post = prior.posterior(physics, y)
    n = 1500
    ys = y.expand(n, -1).clone()
    errs = []
    for steps in (10, 200):
        s = sample_dds(
            prior,
            ys,
            physics,
            karras(steps, sigma_max=20.0).to(F64),
            generator=torch.Generator().manual_seed(2),
        )
        resid = (physics.A(s) - ys).norm(dim=1) / ys.norm(dim=1)
        assert float(resid.max()) < 1e-3
        errs.append(_rel(s.mean(0), post.mean[0]))
    # Monte-Carlo error of the mean, relative: ||std|| / sqrt(n) / ||mean||
    mc = float(post.std[0].norm() / math.sqrt(n) / post.mean[0].norm())
    assert errs[1] < errs[0] - 3 * mc
    assert errs[1] < 0.05 + 3 * mc


def test_dds_inpainting_with_independent_prior_is_exact_on_the_mean(gen):
    """Inpainting with an independent-pixel prior: observed pixels equal y exactly; unobserved
    pixels are untouched by the data, so their mean is the prior mean (= posterior mean)."""
    shape = (1, 6, 6)
    mean = torch.rand(shape, generator=gen, dtype=F64)
    prior = GaussianPrior(mean, torch.full((36,), 0.05, dtype=F64), shape=shape)
    physics = O.cast(O.build(O.InpaintingConfig(img_size=shape, keep_ratio=0.5)), F64)
    y = physics.A(prior.sample(1, generator=gen))
    n = 2000
    s = sample_dds(
        prior,
        y.expand(n, -1, -1, -1).clone(),
        physics,
        karras(50, sigma_max=20.0).to(F64),
        generator=torch.Generator().manual_seed(3),
    )
    m = physics.mask.bool()[0]
    assert torch.allclose(s[:, m], y[:, m].expand(n, -1), atol=1e-10)
    se = math.sqrt(0.05) / math.sqrt(n)
    assert float((s.mean(0)[~m] - mean[~m]).abs().max()) < 5 * se


def test_dds_auto_gamma_is_the_exact_step_for_an_isotropic_gaussian_prior(gen):
    """With x0 ~ N(m, sigma_d^2 I), x0 | x_t is exactly N(D(x_t), r_t^2 I), so DDS's CG update
    with gamma="auto" (r_t^2 / sigma_y^2) is the exact mean of x0 | x_t, y (closed form)."""
    from recon.samplers.dds import auto_gamma, data_consistency

    d, sd, s_t, s_y = 6, 0.3, 0.7, 0.05
    m = torch.rand(d, generator=gen, dtype=F64)
    prior = GaussianPrior(m, torch.full((d,), sd**2, dtype=F64), shape=(d,))
    assert abs(prior.data_std - sd) < 1e-12
    a = torch.randn(3, d, generator=gen, dtype=F64)
    physics = O.from_matrix(a, sigma_y=s_y)
    x_t = (m + 0.4 * torch.randn(d, generator=gen, dtype=F64))[None]
    y = (a @ m)[None] + 0.1
    x0_hat = prior(x_t, torch.tensor([s_t], dtype=F64))
    got = data_consistency(
        physics, x0_hat, y, sigma_y=s_y, n_cg=50, gamma=auto_gamma(s_t, s_y, sd), cg_tol=0
    )
    prec = (1 / sd**2 + 1 / s_t**2) * torch.eye(d, dtype=F64) + a.T @ a / s_y**2
    want = torch.linalg.solve(prec, m / sd**2 + x_t[0] / s_t**2 + a.T @ y[0] / s_y**2)
    assert torch.allclose(got[0], want, atol=1e-9)


def test_prior_data_std_matches_draws(gen):
    """``data_std`` (what gamma="auto" reads) of a mixture is the std of its draws."""
    prob = mixture_problem(8, 1, seed=0)
    draws = prob.prior.sample(20000, generator=gen)
    want = float(((draws - draws.mean(0)) ** 2).mean().sqrt())
    assert abs(prob.prior.data_std - want) / want < 0.02


def test_operator_norm_is_per_row_and_dps_step_is_invariant_to_units(gauss8, gen):
    """``norm_sq`` matches the largest squared singular value, row by row; with
    ``normalize`` (the default) DPS gives the same samples for (c A, c y) as for (A, y)."""
    prior, a = gauss8
    c = torch.tensor([1.0, 2.0], dtype=F64)[:, None]  # row b's operator is c_b A
    both = O.from_functions(
        lambda v: c * (v @ a.T), lambda w: (c * w) @ a, img_size=(a.shape[1],), dtype=F64
    )
    x = torch.zeros(2, a.shape[1], dtype=F64)
    got = O.norm_sq(both, x)
    top = torch.linalg.matrix_norm(a, ord=2) ** 2
    want = torch.stack([top, 4 * top])
    assert torch.allclose(got, want, rtol=1e-3), (got, want)
    assert torch.allclose(O.norm_sq(O.from_matrix(a), x[:1]), got[:1])
    physics = O.from_matrix(a, sigma_y=0.05)
    y = physics.A(prior.sample(3, generator=gen))
    sig = karras(20, sigma_max=20.0).to(F64)
    run = [
        sample_dps(
            prior, c * y, O.from_matrix(c * a), sig, generator=torch.Generator().manual_seed(5)
        )
        for c in (1.0, 37.0)
    ]
    assert torch.allclose(run[0], run[1], atol=1e-8)
    paper = sample_dps(
        prior,
        37 * y,
        O.from_matrix(37 * a),
        sig,
        generator=torch.Generator().manual_seed(5),
        normalize=False,
    )
    assert not torch.allclose(paper, run[0], atol=1e-3)


def test_preconditioned_data_term_brings_ct_closer_to_the_posterior(gen):
    """On sparse-view CT with an exact Gaussian prior, the mean of DPS draws and the RED-Diff
    estimate land much closer to the exact posterior mean with the ramp preconditioner (the
    default) than with the plain ``A^T r`` (measured 12 steps: DPS 0.09 vs 0.25, RED-Diff 0.06
    vs 0.21 relative error); STSL takes DPS's data term and gives DPS's draws."""
    w = 16
    shape = (1, w, w)
    prior = GaussianPrior(
        torch.full(shape, 0.5, dtype=F64), torch.full((w * w,), 0.04, dtype=F64), shape=shape
    )
    physics = O.cast(O.build(O.CTConfig(img_size=(w, w), n_angles=30, sigma_y=0.01)), F64)
    y = physics.A(prior.sample(1, generator=gen))
    y = y + 0.01 * torch.randn(y.shape, generator=gen, dtype=F64)
    want = prior.posterior(physics, y).mean[0]
    ys = y.expand(32, *y.shape[1:]).clone()
    sig = karras(12, sigma_min=0.01, sigma_max=20.0).to(F64)

    def draw(name, yy, **kw):  # library defaults
        return SAMPLERS[name].fn(prior, yy, physics, sig, generator=_gens(range(len(yy))), **kw)

    for name in ("dps", "reddiff"):
        err = {}
        for pre in (False, True):
            s = draw(name, ys, precondition=pre)
            err[pre] = float((s.mean(0) - want).norm() / want.norm())
        assert err[True] < 0.6 * err[False], (name, err)
    torch.testing.assert_close(draw("stsl", ys[:2]), draw("dps", ys[:2]), rtol=0, atol=1e-12)


def test_dps_moves_toward_data_and_mean_error_shrinks_with_steps(gauss8, gen):
    prior, a = gauss8
    physics = O.from_matrix(a, sigma_y=0.05)
    y = physics.A(prior.sample(1, generator=gen)) + 0.05 * torch.randn(
        1, 3, generator=gen, dtype=F64
    )
    post = prior.posterior(physics, y)
    n = 1500
    ys = y.expand(n, -1).clone()
    prior_resid = float((physics.A(prior.sample(n, generator=gen)) - ys).norm(dim=1).mean())
    errs, resids = [], []
    for steps in (10, 300):
        s = sample_dps(
            prior,
            ys,
            physics,
            karras(steps, sigma_max=20.0).to(F64),
            generator=torch.Generator().manual_seed(4),
            zeta=0.1,
            vp_scale=None,
            normalize=False,
        )
        errs.append(_rel(s.mean(0), post.mean[0]))
        resids.append(float((physics.A(s) - ys).norm(dim=1).mean()))
    # relative Monte-Carlo error of the mean (DPS's spread is within 1.5x the posterior's)
    mc = float(post.std[0].norm() * 1.5 / math.sqrt(n) / post.mean[0].norm())
    assert errs[0] > errs[1] + 6 * mc
    assert max(resids) < 0.5 * prior_resid


def _reddiff_fixed_level(
    prior, physics, y, sigma, lam, n_steps=3000, lr=0.005, data_weight="official"
):
    sig = torch.cat(
        [sigma * torch.linspace(1.001, 1.0, n_steps, dtype=F64), torch.zeros(1, dtype=F64)]
    )
    its = []
    sample_reddiff(
        prior,
        y,
        physics,
        sig,
        generator=torch.Generator().manual_seed(5),
        lam=lam,
        lr=lr,
        data_weight=data_weight,
        betas=(0.9, 0.99),
        callback=lambda info: its.append(info.x),
    )
    return torch.stack(its[n_steps // 2 :]).mean(0)  # Polyak average of the Adam iterates


def test_reddiff_fixed_level_converges_to_its_map(gauss8, gen):
    """At a fixed level sigma, E[update] is the gradient of
    J(mu) = ||y - A mu||^2 / (2 m) + lam sigma^2 / (2 d) (mu - m0)^T (C + sigma^2 I)^{-1} (mu - m0)
    (module docstring): the iterates converge to argmin J."""
    prior, _ = gauss8
    d = 8
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    a = q[:4]
    physics = O.from_matrix(a, sigma_y=0.05)
    y = physics.A(prior.sample(1, generator=gen))
    sigma, lam = 30.0, 16.0
    c = prior.cov.dense()
    p = lam * sigma**2 / d * torch.linalg.inv(c + sigma**2 * torch.eye(d, dtype=F64))
    ref = torch.linalg.solve(a.T @ a / 4 + p, a.T @ y[0] / 4 + p @ prior.mean)
    mu = _reddiff_fixed_level(prior, physics, y, sigma, lam)
    assert _rel(mu[0], ref) < 1e-2
    assert _rel(torch.linalg.pinv(a) @ y[0], ref) > 0.5  # the prior term matters


def test_reddiff_operator_data_weight_converges_to_its_map(gauss8, gen):
    """``data_weight="operator"``: the data term is ||y - A mu||^2 / (2 ||A||^2 d), so with A
    scaled by 3 (||A||^2 = 9) the fixed-level minimiser is that of A / 3 under the official
    weight's m = d (both means over d entries): the weight follows the operator's scale."""
    prior, _ = gauss8
    d = 8
    a = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))[0][:4] * 3.0
    physics = O.from_matrix(a, sigma_y=0.05)
    y = physics.A(prior.sample(1, generator=gen))
    sigma, lam = 30.0, 16.0
    c = prior.cov.dense()
    p = lam * sigma**2 / d * torch.linalg.inv(c + sigma**2 * torch.eye(d, dtype=F64))
    ref = torch.linalg.solve(a.T @ a / (9 * d) + p, a.T @ y[0] / (9 * d) + p @ prior.mean)
    mu = _reddiff_fixed_level(prior, physics, y, sigma, lam, data_weight="operator")
    assert _rel(mu[0], ref) < 1e-2
    official = torch.linalg.solve(a.T @ a / 4 + p, a.T @ y[0] / 4 + p @ prior.mean)
    assert _rel(official, ref) > 0.1  # the two weightings differ here


def test_reddiff_auto_betas_scale_the_official_horizons():
    from recon.samplers.reddiff import auto_betas

    assert auto_betas(1000) == pytest.approx((0.9, 0.99))  # the paper's run length
    h = math.sqrt(50 / 1000)
    assert auto_betas(50) == pytest.approx((1 - 1 / (10 * h), 1 - 1 / (100 * h)))
    assert auto_betas(5) == pytest.approx((0.0, 1 - 1 / (100 * math.sqrt(5 / 1000))))


def test_reddiff_map_equals_posterior_mean_when_weights_match(gen):
    """With an isotropic prior N(m0, c I), J above is the negative log posterior (up to scale)
    when lam = d (c + sigma^2) sigma_y^2 / (m c sigma^2); its minimiser is the posterior mean."""
    d, m, c, s_y, sigma = 8, 4, 0.5, 0.3, 30.0
    prior = GaussianPrior(
        0.2 * torch.randn(d, generator=gen, dtype=F64), torch.full((d,), c, dtype=F64)
    )
    a = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))[0][:m] * 2.0
    physics = O.from_matrix(a, sigma_y=s_y)
    y = physics.A(prior.sample(1, generator=gen))
    lam = d * (c + sigma**2) * s_y**2 / (m * c * sigma**2)
    mu = _reddiff_fixed_level(prior, physics, y, sigma, lam)
    assert _rel(mu[0], prior.posterior(physics, y).mean[0]) < 1e-2


def test_reddiff_standard_schedule_reduces_residual(gauss8, gen):
    prior, a = gauss8
    physics = O.from_matrix(a, sigma_y=0.05)
    y = physics.A(prior.sample(2, generator=gen))
    x_init = prior.mean.expand(2, -1).clone()
    mu = sample_reddiff(
        prior,
        y,
        physics,
        karras(200, sigma_max=5.0).to(F64),
        x_init=x_init,
        generator=torch.Generator().manual_seed(6),
    )
    before = (physics.A(x_init) - y).norm(dim=1)
    after = (physics.A(mu) - y).norm(dim=1)
    assert bool((after < 0.2 * before).all())


def test_dds_multicoil_mri_complex_cg(gen):
    """DDS's CG on 2-channel complex MRI data: noiseless samples fit the k-space."""
    shape = (2, 8, 8)
    prior = GaussianPrior(
        torch.zeros(shape, dtype=F64), torch.full((128,), 0.05, dtype=F64), shape=shape
    )
    cfg = O.MultiCoilMRIConfig(img_size=(8, 8), n_coils=3, acceleration=2, center_fraction=0.25)
    physics = O.cast(O.build(cfg), F64)
    y = physics.A(prior.sample(2, generator=gen))
    s = sample_dds(
        prior,
        y,
        physics,
        karras(20, sigma_max=5.0).to(F64),
        n_cg=30,
        generator=torch.Generator().manual_seed(0),
    )
    rel = (physics.A(s) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    assert float(rel.max()) < 1e-3


def test_gmm_samplers_beat_the_prior():
    """On the 25-component grid mixture (d=8, d_y=2; four random problems), the mean
    sliced-Wasserstein distance of DPS and DDS samples to exact posterior samples is below half
    the prior's: a bound far above Monte-Carlo noise (the exact-vs-exact distance, checked
    below), not a tight accuracy claim. Numbers per sampler: benchmarks/gmm_sw.py.

    DPS runs with the paper's VP step weighting (``vp_scale=1``: these data are in network
    units) and the benchmark's zeta' = 0.1, i.e. ``zeta = 0.2`` on the un-squared norm."""
    n = 400
    sw = {"prior": [], "noise": [], "dds": [], "dps": []}
    for seed in range(4):
        prob = mixture_problem(8, 2, seed=seed)
        g = torch.Generator().manual_seed(seed)
        ref = prob.posterior.sample(n, generator=g)[:, 0]

        def dist(s, ref=ref):
            return sliced_wasserstein(s, ref, generator=torch.Generator().manual_seed(0))

        sw["noise"].append(dist(prob.posterior.sample(n, generator=g)[:, 0]))
        sw["prior"].append(dist(prob.prior.sample(n, generator=g)))
        ys = prob.y.expand(n, -1).clone()
        sigmas = karras(100, sigma_min=0.01, sigma_max=100.0).to(F64)
        for name, kw in [("dds", {}), ("dps", dict(zeta=0.2, vp_scale=1.0))]:
            s = SAMPLERS[name].fn(
                prob.prior,
                ys,
                prob.physics,
                sigmas,
                generator=torch.Generator().manual_seed(1),
                **kw,
            )
            sw[name].append(dist(s))
    mean = {k: sum(v) / len(v) for k, v in sw.items()}
    assert mean["noise"] < 0.05 * mean["prior"], mean
    assert mean["dds"] < 0.5 * mean["prior"], mean
    assert mean["dps"] < 0.5 * mean["prior"], mean


def test_posterior_summary_is_chunk_and_batch_invariant(vector_problem):
    from recon.posterior import posterior_summary

    prior, physics, y = vector_problem
    sig = karras(10, sigma_min=0.01, sigma_max=20.0).to(F64)
    a = posterior_summary(
        sample_dds, prior, y, physics, sig, n_samples=5, generator=_gens([1, 2, 3, 4]), max_batch=2
    )
    b = posterior_summary(
        sample_dds, prior, y[2:3], physics, sig, n_samples=5, generator=_gens([3]), max_batch=5
    )
    assert a.samples.shape == (4, 5, 6)
    assert torch.allclose(a.samples[2], b.samples[0], rtol=0, atol=1e-12)
    assert torch.allclose(a.mean, a.samples.mean(1)) and torch.allclose(a.std, a.samples.std(1))


def test_posterior_summary_reports_the_start_then_each_chunk(vector_problem):
    """Progress bars time from the (0, total) call, so the first rate is not that of a
    zero-length interval (issue 17, class 9)."""
    from recon.posterior import posterior_summary

    prior, physics, y = vector_problem
    calls = []
    sig = karras(4, sigma_min=0.01, sigma_max=20.0).to(F64)
    kw = dict(n_samples=3, max_batch=2, callback=lambda d, t: calls.append((d, t)))
    posterior_summary(sample_dds, prior, y[:2], physics, sig, generator=_gens([1, 2]), **kw)
    assert calls == [(0, 6), (2, 6), (3, 6), (5, 6), (6, 6)]


def test_posterior_summary_exact_moments(gen):
    from recon.posterior import posterior_summary

    d = 4
    prior = GaussianPrior(torch.ones(d, dtype=F64), _spd(d, gen))
    physics = O.from_matrix(torch.randn(2, d, generator=gen, dtype=F64), sigma_y=0.3)
    y = physics.A(prior.sample(2, generator=gen))
    post = prior.posterior(physics, y)
    n = 2000
    s = posterior_summary(
        sample_exact,
        prior,
        y,
        physics,
        karras(2).to(F64),
        n_samples=n,
        generator=_gens([5, 6]),
        max_batch=500,
        keep_samples=False,
    )
    assert s.samples is None
    assert bool(((s.mean - post.mean).abs() < 5 * post.std / math.sqrt(n)).all())


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_per_sample_masks_batch_invariance(name, gen):
    """Per-sample inpainting masks: row 1 of a batch equals row 1 run alone with its own mask."""
    if name == "fbp":
        pytest.skip("fbp applies to CT, which has no per-sample parameters")
    shape = (1, 6, 6)
    prior = GaussianPrior(
        torch.full(shape, 0.5, dtype=F64), torch.full((36,), 0.04, dtype=F64), shape=shape
    )
    cfg = O.InpaintingConfig(img_size=shape, keep_ratio=0.5, sigma_y=0.01, n_masks=3)
    physics = O.cast(O.build(cfg), F64)
    y = physics.A(prior.sample(3, generator=gen))
    batch = _run(name, prior, physics, y, generator=_gens([1, 2, 3]))
    single = O.cast(
        O.build(
            O.InpaintingConfig(img_size=shape, mask="given", sigma_y=0.01), mask=physics.mask[1]
        ),
        F64,
    )
    alone = _run(name, prior, single, y[1:2], generator=_gens([2]))
    assert torch.allclose(batch[1:2], alone, rtol=0, atol=1e-12)


def test_row_physics_slices_masks_and_coil_maps_only(gen):
    from recon.samplers.baselines import _row_physics

    cfg = O.MultiCoilMRIConfig(
        img_size=(8, 8),
        n_coils=3,
        acceleration=2,
        center_fraction=0.25,
        mask="given",
        coil_maps="given",
    )
    masks = (torch.rand(2, 1, 8, 8, generator=gen) > 0.5).float()
    maps = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.complex64)
    batch = O.build(cfg, mask=masks, coil_maps=maps)
    x = torch.randn(2, 2, 8, 8, generator=gen)
    y = batch.A(x)
    for i in range(2):
        row = _row_physics(batch, i, 2)
        single = O.build(cfg, mask=masks[i], coil_maps=maps[i])
        assert torch.allclose(row.A(x[i : i + 1]), y[i : i + 1], atol=1e-6)
        assert torch.allclose(single.A(x[i : i + 1]), y[i : i + 1], atol=1e-6)
    assert batch.coil_maps.shape[0] == 2  # the caller's operator is untouched
    # a dense matrix with as many rows as the batch is shared, not sliced
    dense = O.from_matrix(torch.randn(2, 4, generator=gen))
    assert _row_physics(dense, 1, 2) is dense


def test_reddiff_starts_inpainting_holes_at_mid_grey():
    """mu's measured part starts at the data, its null-space part at init_null (official:
    mid-grey); init_null=None gives A_dagger(y) (holes at 0)."""
    cfg = O.InpaintingConfig(img_size=(1, 8, 8), keep_ratio=0.5, seed=3)
    physics = O.build(cfg)
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = physics.A(x)
    prior = GaussianPrior(torch.full((1, 8, 8), 0.5), torch.full((64,), 0.1))
    sig = torch.tensor([0.5, 0.0])
    m = physics.mask.bool().expand_as(x)
    for init, hole in ((0.5, 0.5), (None, 0.0)):
        mu = SAMPLERS["reddiff"].fn(
            prior, y, physics, sig, lr=1e-12, init_null=init, generator=torch.Generator()
        )
        assert torch.allclose(mu[~m], torch.full_like(mu[~m], hole), atol=1e-6)
        assert torch.allclose(mu[m], x[m], atol=1e-6)
