"""Exact priors pinned against Monte Carlo, brute-force integration and dense algebra."""

from __future__ import annotations

import math

import pytest
import torch

from recon.operators import from_matrix
from recon.priors import (
    Covariance,
    DeepinvDenoiser,
    EDMDenoiser,
    EpsilonDenoiser,
    GaussianMixturePrior,
    GaussianPrior,
    score_from_denoiser,
)
from recon.schedules import ddpm_alphas_cumprod

F64 = torch.float64


def _spd(d, gen, jitter=0.1):
    a = torch.randn(d, d, generator=gen, dtype=F64)
    return a @ a.T / d + jitter * torch.eye(d, dtype=F64)


def _mixture_2d(gen):
    means = torch.tensor([[-1.5, 0.0], [1.0, 1.0], [0.5, -1.5]], dtype=F64)
    covs = torch.stack([_spd(2, gen, 0.05) * 0.5 for _ in range(3)])
    return GaussianMixturePrior(torch.tensor([0.5, 0.3, 0.2]), means, covs)


@pytest.mark.parametrize("form", ["diag", "full", "lowrank_iso", "lowrank_diag"])
def test_covariance_forms_agree_with_dense(form, gen):
    d = 6
    u = torch.randn(d, 2, generator=gen, dtype=F64)
    if form == "diag":
        spec, dense = torch.rand(d, generator=gen, dtype=F64) + 0.1, None
        dense = torch.diag(spec)
    elif form == "full":
        dense = _spd(d, gen)
        spec = dense
    elif form == "lowrank_iso":
        spec, dense = (u, 0.3), u @ u.T + 0.3 * torch.eye(d, dtype=F64)
    else:
        dg = torch.rand(d, generator=gen, dtype=F64) + 0.1
        spec, dense = (u, dg), u @ u.T + torch.diag(dg)
    cov = Covariance.from_any(spec, d)
    v = torch.randn(3, d, generator=gen, dtype=F64)
    s2 = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    for b in range(3):
        m = dense + s2[b] * torch.eye(d, dtype=F64)
        assert torch.allclose(cov.solve_shifted(v, s2)[b], torch.linalg.solve(m, v[b]))
        assert torch.allclose(cov.logdet_shifted(s2)[b], torch.logdet(m))
    assert torch.allclose(cov.matvec(v), v @ dense.T)
    assert torch.allclose(cov.dense(), dense)
    assert torch.allclose(cov.diagonal(), torch.diagonal(dense))


def test_gaussian_denoiser_closed_form_and_tweedie(gen):
    d = 5
    cov = _spd(d, gen)
    mu = torch.randn(d, generator=gen, dtype=F64)
    prior = GaussianPrior(mu, cov)
    x = torch.randn(4, d, generator=gen, dtype=F64)
    sigma = torch.tensor([0.01, 0.3, 1.0, 10.0], dtype=F64)
    for b in range(4):
        ref = mu + cov @ torch.linalg.solve(
            cov + sigma[b] ** 2 * torch.eye(d, dtype=F64), x[b] - mu
        )
        assert torch.allclose(prior(x, sigma)[b], ref)
    # Tweedie: score = (D - x) / sigma^2 equals the autograd score of log p_sigma
    xg = x.clone().requires_grad_(True)
    auto = torch.autograd.grad(prior.log_prob(xg, sigma).sum(), xg)[0]
    assert torch.allclose(score_from_denoiser(prior, x, sigma), auto)
    assert torch.allclose(prior.score(x, sigma), auto)


def test_mixture_denoiser_matches_monte_carlo(gen):
    """E[x0 | x] by self-normalised importance sampling from the prior, within 4 std errors."""
    prior = _mixture_2d(gen)
    sigma = 0.6
    x = torch.tensor([[0.3, 0.4], [-1.0, -0.5]], dtype=F64)
    exact = prior(x, torch.full((2,), sigma, dtype=F64))
    x0 = prior.sample(400_000, generator=gen)  # (N, 2)
    for b in range(2):
        logw = -((x[b] - x0) ** 2).sum(1) / (2 * sigma**2)
        w = torch.softmax(logw, 0)
        est = (w[:, None] * x0).sum(0)
        se = torch.sqrt((w[:, None] ** 2 * (x0 - est) ** 2).sum(0))
        assert bool(((exact[b] - est).abs() < 4 * se + 1e-12).all()), (exact[b], est, se)
    # the score of the noised mixture agrees with autograd of its log density
    xg = x.clone().requires_grad_(True)
    s = torch.full((2,), sigma, dtype=F64)
    auto = torch.autograd.grad(prior.log_prob(xg, s).sum(), xg)[0]
    assert torch.allclose(prior.score(x, s), auto)
    assert torch.allclose(score_from_denoiser(prior, x, s), auto)


def test_gaussian_denoiser_matches_monte_carlo(gen):
    prior = GaussianPrior(torch.tensor([0.2, -0.3], dtype=F64), _spd(2, gen))
    sigma = 0.8
    x = torch.tensor([[1.0, 0.5]], dtype=F64)
    exact = prior(x, torch.tensor([sigma], dtype=F64))[0]
    x0 = prior.sample(400_000, generator=gen)
    w = torch.softmax(-((x[0] - x0) ** 2).sum(1) / (2 * sigma**2), 0)
    est = (w[:, None] * x0).sum(0)
    se = torch.sqrt((w[:, None] ** 2 * (x0 - est) ** 2).sum(0))
    assert bool(((exact - est).abs() < 4 * se).all())


def _grid_posterior(log_prior_fn, a, y, s_y, lim=6.0, n=801):
    t = torch.linspace(-lim, lim, n, dtype=F64)
    gx, gy = torch.meshgrid(t, t, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    loglik = -((pts @ a.T - y) ** 2).sum(1) / (2 * s_y**2)
    logp = log_prior_fn(pts) + loglik
    w = torch.softmax(logp, 0)
    mean = (w[:, None] * pts).sum(0)
    var = (w[:, None] * (pts - mean) ** 2).sum(0)
    return mean, var.sqrt()


def test_mixture_posterior_equals_grid_integration(gen):
    prior = _mixture_2d(gen)
    a = torch.tensor([[1.0, 0.7]], dtype=F64)
    s_y = 0.5
    physics = from_matrix(a, sigma_y=s_y)
    y = torch.tensor([[0.9], [-1.2]], dtype=F64)
    post = prior.posterior(physics, y)
    assert torch.allclose(post.weights.sum(1), torch.ones(2, dtype=F64))
    for b in range(2):
        mean, std = _grid_posterior(lambda p: prior.log_prob(p), a, y[b], s_y)
        assert torch.allclose(post.mean[b], mean, atol=1e-6)
        assert torch.allclose(post.std[b], std, atol=1e-6)
    # posterior samples have the exact moments (Monte-Carlo tolerance: 5 standard errors)
    n = 50_000
    s = post.sample(n, generator=gen)
    se_mean = post.std / math.sqrt(n)
    assert bool(((s.mean(0) - post.mean).abs() < 5 * se_mean).all())


def test_gaussian_posterior_dense_cg_and_grid_agree(gen):
    cov = _spd(2, gen)
    mu = torch.tensor([0.5, -0.2], dtype=F64)
    prior = GaussianPrior(mu, cov)
    a = torch.tensor([[0.8, -0.4]], dtype=F64)
    physics = from_matrix(a, sigma_y=0.3)
    y = torch.tensor([[0.7]], dtype=F64)
    dense = prior.posterior(physics, y, method="dense")
    cg = prior.posterior(physics, y, method="cg")
    mean, std = _grid_posterior(lambda p: prior.log_prob(p), a, y[0], 0.3)
    assert torch.allclose(dense.mean[0], mean, atol=1e-6)
    assert torch.allclose(dense.std[0], std, atol=1e-6)
    assert torch.allclose(cg.mean, dense.mean, atol=1e-10)
    # Matheron samples of the matrix-free posterior have the exact covariance
    n = 40_000
    s = cg.sample(n, generator=gen)[:, 0]
    emp = torch.cov(s.T)
    # standard error of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / n)
    c = dense.cov
    se = torch.sqrt((torch.outer(c.diagonal(), c.diagonal()) + c**2) / n)
    assert bool(((emp - c).abs() < 5 * se).all())


def test_gaussian_posterior_on_images_matrix_free(gen):
    """Inpainting a 6x6 image: CG posterior mean equals the dense one; noiseless data is fit."""
    from recon import operators as O

    data = torch.rand(200, 1, 6, 6, generator=gen, dtype=F64)
    prior = GaussianPrior.fit(data)
    cfg = O.InpaintingConfig(img_size=(1, 6, 6), keep_ratio=0.5, sigma_y=0.0)
    physics = O.cast(O.build(cfg), F64)
    x = data[:2]
    y = physics.A(x)
    dense = prior.posterior(physics, y, method="dense")
    cg = prior.posterior(physics, y, method="cg", cg_iters=500)
    assert torch.allclose(cg.mean, dense.mean, atol=1e-7)
    mask = physics.mask.bool().expand_as(x)
    assert torch.allclose(dense.mean[mask], x[mask], atol=1e-8)
    assert float(dense.std[mask].max()) < 1e-6


def test_gaussian_fit_matches_sample_moments(gen):
    data = torch.randn(500, 4, generator=gen, dtype=F64) @ _spd(4, gen) + 2.0
    prior = GaussianPrior.fit(data)
    assert torch.allclose(prior.mean, data.mean(0))
    emp = torch.cov(data.T, correction=0)
    assert torch.allclose(prior.cov.dense(), emp, atol=1e-6)
    # PCA truncation keeps the top directions and the mean discarded variance
    lowrank = GaussianPrior.fit(data, rank=2)
    ev = torch.linalg.eigvalsh(emp).flip(0)
    got = torch.linalg.eigvalsh(lowrank.cov.dense()).flip(0)
    assert torch.allclose(got[:2], ev[:2], atol=1e-8)
    assert torch.allclose(got[2:], ev[2:].mean().expand(2), atol=1e-8)


def test_pca_fit_with_fewer_samples_than_dimensions(gen):
    data = torch.randn(20, 30, generator=gen, dtype=F64) * torch.linspace(0.1, 2, 30, dtype=F64)
    prior = GaussianPrior.fit(data, rank=5)
    emp = torch.cov(data.T, correction=0)
    ev = torch.linalg.eigvalsh(emp).flip(0)
    got = torch.linalg.eigvalsh(prior.cov.dense()).flip(0)
    assert torch.allclose(got[:5], ev[:5], atol=1e-8)
    assert torch.allclose(got[5:], ev[5:].sum() / 25 * torch.ones(25, dtype=F64), atol=1e-8)


def test_gmm_fit_increases_likelihood(gen):
    centres = torch.tensor([[3.0, 0, 0], [-3.0, 0, 0], [0, 3.0, 0]], dtype=F64)
    idx = torch.randint(0, 3, (600,), generator=gen)
    data = centres[idx] + 0.5 * torch.randn(600, 3, generator=gen, dtype=F64)
    model, hist = GaussianMixturePrior.fit(
        data, 3, rank=1, n_iter=30, generator=gen, return_history=True
    )
    diffs = torch.diff(torch.tensor(hist))
    assert bool((diffs > -1e-9).all()), hist
    assert hist[-1] > hist[0]
    found = sorted(model.means.tolist())
    assert torch.allclose(torch.tensor(found), torch.tensor(sorted(centres.tolist())), atol=0.2)


def test_prior_sampling_moments(gen):
    prior = _mixture_2d(gen)
    s = prior.sample(100_000, generator=gen)
    mean = (prior.weights[:, None] * prior.means).sum(0)
    assert torch.allclose(s.mean(0), mean, atol=0.02)


# ----------------------------------------------------------------------------------------------
# adapters: an oracle network that answers exactly under its own parametrisation must give the
# same D as the exact prior it encodes.


def _oracle_prior(gen):
    return GaussianPrior(torch.full((4,), 0.5, dtype=F64), _spd(4, gen, 0.05) * 0.05)


def _net_units_denoiser(prior, lo, hi):
    """The prior's exact denoiser expressed in network units u = lo + (hi - lo) x."""

    def d_u(u, s_u):
        x = (u - lo) / (hi - lo)
        return lo + (hi - lo) * prior(x, s_u / (hi - lo))

    return d_u


@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_edm_adapter_round_trip(data_range, gen):
    prior = _oracle_prior(gen)
    lo, hi = data_range
    d_u = _net_units_denoiser(prior, lo, hi)
    sd = 0.5

    def net(x_in, c_noise):  # solves D_u = c_skip u + c_out F for F
        s = torch.exp(4 * c_noise)
        u = x_in * torch.sqrt(s**2 + sd**2)[:, None]
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / torch.sqrt(s**2 + sd**2)
        return (d_u(u, s) - c_skip[:, None] * u) / c_out[:, None]

    den = EDMDenoiser(net, sigma_data=sd, data_range=data_range)
    x = torch.rand(3, 4, generator=gen, dtype=F64)
    sigma = torch.tensor([0.02, 0.2, 2.0], dtype=F64)
    assert torch.allclose(den(x, sigma), prior(x, sigma), atol=1e-10)


@pytest.mark.parametrize("mode", ["nearest", "interpolate"])
def test_epsilon_adapter_round_trip(mode, gen):
    prior = _oracle_prior(gen)
    ab = ddpm_alphas_cumprod(1000)
    log_sig = 0.5 * torch.log((1 - ab) / ab)
    d_u = _net_units_denoiser(prior, -1.0, 1.0)

    def net(x_t, t):  # the eps an exact network predicts at (possibly fractional) timestep t
        t = t.double()
        i0 = t.floor().long().clamp(0, 998)
        frac = t - i0
        s_u = torch.exp(log_sig[i0] * (1 - frac) + log_sig[i0 + 1] * frac)
        a = 1.0 / (1.0 + s_u**2)
        u = x_t / a.sqrt()[:, None]
        return (u - d_u(u, s_u)) / s_u[:, None]

    den = EpsilonDenoiser(net, ab, data_range=(-1.0, 1.0), timestep=mode)
    x = torch.rand(3, 4, generator=gen, dtype=F64)
    if mode == "nearest":  # noise levels on the training grid: exact
        sigma = (log_sig[[10, 300, 900]].exp() / 2).to(F64)
    else:
        sigma = torch.tensor([0.03, 0.3, 3.0], dtype=F64)
    assert torch.allclose(den(x, sigma), prior(x, sigma), atol=1e-8)


def test_epsilon_adapter_drops_learned_variance_channels(gen):
    ab = ddpm_alphas_cumprod(1000)

    def net(x_t, t):
        return torch.cat([torch.zeros_like(x_t), torch.ones_like(x_t)], 1)  # 6-channel style

    den = EpsilonDenoiser(net, ab)
    x = torch.rand(2, 3, 4, 4, generator=gen)
    assert torch.allclose(den(x, torch.full((2,), 0.1)), x, atol=1e-6)


def test_deepinv_adapter_passes_units_through(gen):
    class Shrink(torch.nn.Module):
        def forward(self, x, sigma):
            return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)

    den = DeepinvDenoiser(Shrink())
    x = torch.rand(2, 1, 4, 4, generator=gen)
    s = torch.tensor([0.1, 0.5])
    assert torch.allclose(den(x, s), x / (1 + s.reshape(-1, 1, 1, 1) ** 2))
    assert torch.allclose(den(x, 0.5), x / 1.25)  # scalar sigma broadcasts


@pytest.mark.parametrize("kind", ["full", "lowrank_diag", "mixture"])
def test_exact_prior_file_round_trip(kind, gen, tmp_path):
    from recon.errors import UserError
    from recon.priors import load_exact_prior, save_exact_prior

    d = 5
    if kind == "full":
        prior = GaussianPrior(torch.randn(d, generator=gen, dtype=F64), _spd(d, gen))
    elif kind == "lowrank_diag":
        prior = GaussianPrior(
            torch.randn(d, generator=gen, dtype=F64),
            (
                torch.randn(d, 2, generator=gen, dtype=F64),
                torch.rand(d, generator=gen, dtype=F64) + 0.1,
            ),
        )
    else:
        prior = GaussianMixturePrior(
            torch.tensor([0.2, 0.8]),
            torch.randn(2, d, generator=gen),
            [_spd(d, gen), torch.ones(d, dtype=F64)],
        )
    path = save_exact_prior(prior, tmp_path / "p.safetensors")
    back = load_exact_prior(path)
    x = torch.randn(3, d, generator=gen, dtype=F64)
    s = torch.tensor([0.1, 0.5, 2.0], dtype=F64)
    assert torch.allclose(back(x, s), prior(x, s), atol=1e-12)
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(UserError, match=r"bad\.safetensors"):
        load_exact_prior(tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match="not found"):
        load_exact_prior(tmp_path / "missing.safetensors")


def test_load_diffunet_from_a_local_checkpoint(tmp_path, gen):
    """A guided-diffusion-format DiffUNet state dict (random weights) loads from a path, and
    deepinv's own saved state_dict (with its two schedule buffers) loads too. The denoiser uses
    the network's eps unclamped: it equals deepinv's (clamped) estimate wherever that is inside
    (0, 1), and goes outside where deepinv clamps (a random network's x0 often does)."""
    import deepinv as dinv

    from recon.priors import load_diffunet

    net = dinv.models.DiffUNet(in_channels=3, out_channels=6, pretrained=None).eval()
    path = tmp_path / "adm.pt"
    torch.save(net.state_dict(), path)  # includes the buffers deepinv's own loader trips on
    den = load_diffunet(path)
    x = torch.rand(1, 3, 32, 32, generator=gen)
    with torch.no_grad():
        a = den(x, torch.tensor([0.1]))
        b = net(x, torch.tensor([0.1]), type_t="noise_level")
    inside = (b > 1e-4) & (b < 1 - 1e-4)
    assert inside.float().mean() > 0.2
    assert torch.allclose(a[inside], b[inside], atol=2e-3)
    assert torch.allclose(a.clamp(0, 1), b, atol=2e-3)
    from recon.priors import PriorError, load_checkpoint

    via_registry = load_checkpoint(path, format="adm")
    with torch.no_grad():
        assert torch.equal(via_registry(x, torch.tensor([0.1])), a)
    bad = tmp_path / "bad.pt"
    torch.save({"weight": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a DiffUNet checkpoint"):
        load_diffunet(bad)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_diffunet(tmp_path / "missing.pt")
    with pytest.raises(PriorError, match="not a DiffUNet"):
        load_checkpoint(bad, format="adm")


def test_diagonal_mixture_fast_path_equals_general_path(gen):
    """Diagonal mixtures take a GEMM path; it equals the per-component path (full covariances
    holding the same diagonals) for mixed noise levels, in value and in gradient."""
    d, k = 6, 5
    w = torch.rand(k, generator=gen, dtype=torch.float64)
    means = 4 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    diags = 0.2 + torch.rand(k, d, generator=gen, dtype=torch.float64)
    fast = GaussianMixturePrior(w, means, diags)
    slow = GaussianMixturePrior(w, means, torch.stack([torch.diag(v) for v in diags]))
    assert fast._diagonals() is not None and slow._diagonals() is None
    x = 3 * torch.randn(40, d, generator=gen, dtype=torch.float64)
    sigma = torch.cat([torch.full((20,), 0.7), 0.05 + torch.rand(20, generator=gen)]).double()
    for f in ("__call__", "score", "log_prob"):
        assert torch.allclose(getattr(fast, f)(x, sigma), getattr(slow, f)(x, sigma), atol=1e-10)
    grads = []
    for prior in (fast, slow):
        xg = x.clone().requires_grad_()
        grads.append(torch.autograd.grad(prior(xg, sigma).square().sum(), xg)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-9)


def test_matrix_free_posterior_on_a_float32_ct_operator():
    """Regression: the float64 CG solve applied a float32 CT operator (grid_sample refused)."""
    from recon import operators as O
    from recon.priors import GaussianPrior

    ph = O.build(O.CTConfig(img_size=(16, 16), n_angles=10, sigma_y=0.01))
    prior = GaussianPrior(torch.zeros(1, 16, 16), torch.full((256,), 0.1))
    y = ph.A(torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    post = prior.posterior(ph, y, method="cg")
    dense = prior.posterior(ph, y, method="dense")
    assert torch.allclose(post.mean, dense.mean, atol=1e-4)


def test_speed_options_wrap_the_network_only():
    """bfloat16 autocast and channels-last act on the network inside the adapters (also
    through ComplexFromReal), return float32 close to the float32 network, leave the caller's
    denoiser untouched, and are refused for an exact prior."""
    from recon.errors import UserError
    from recon.priors import EDMDenoiser, GaussianPrior, UNet, UNetConfig, to_complex
    from recon.priors.speed import FastNet, accelerate

    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=1, base=8, mults=(1, 2), blocks=1)).eval()
    with torch.no_grad():  # the output layer starts at zero: give every weight a value
        for p in net.parameters():
            p.normal_(0, 0.2)
    den = EDMDenoiser(net, sigma_data=0.5, data_range=(-1.0, 1.0))
    x = torch.rand(3, 1, 8, 8)
    s = torch.full((3,), 0.3)
    with torch.no_grad():
        ref = den(x, s)
        bf = accelerate(den, dtype="bfloat16")
        out = bf(x, s)
        cl = accelerate(den, channels_last=True)(x, s)
        cplx = accelerate(to_complex(den), dtype="bfloat16")
        z = cplx(torch.rand(3, 2, 8, 8), s)
    assert den.net is net and isinstance(bf.net, FastNet)
    assert out.dtype == torch.float32 and z.dtype == torch.float32
    assert float((out - ref).abs().max() / ref.abs().max()) < 0.05
    assert float((out - ref).abs().max()) > 0  # it did run in bfloat16
    assert torch.allclose(cl, ref, atol=1e-5)
    assert accelerate(den) is den
    g = GaussianPrior(torch.zeros(4), torch.ones(4), shape=(4,))
    with pytest.raises(UserError, match="no network"):
        accelerate(g, dtype="float16")
