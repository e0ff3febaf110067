"""Analytical teleportation: the exact Gaussian start, the schedule cut, auto, the run."""

from __future__ import annotations

import json

import h5py
import pytest
import torch

from recon import operators as O
from recon.config import RunConfig, validate
from recon.errors import UserError
from recon.phantoms import random_phantoms
from recon.pipeline import run
from recon.priors import GaussianPrior
from recon.simulate import simulate
from recon.teleport import auto_sigma, compare, cut, teleport

SIZE = 16


def test_cut_starts_at_the_largest_level_at_or_below_sigma_skip():
    s = torch.tensor([80.0, 10.0, 2.0, 0.5, 0.0], dtype=torch.float64)
    assert cut(s, 10.0).tolist() == [10.0, 2.0, 0.5, 0.0]
    assert cut(s, 9.9).tolist() == [2.0, 0.5, 0.0]
    assert cut(s, 100.0).tolist() == s.tolist()
    assert cut(s, 1e-3).tolist() == [0.5, 0.0]  # at least one step is left


def test_auto_sigma_is_the_lowest_level_of_the_agreeing_top():
    levels = [0.1, 1.0, 10.0, 80.0]
    assert auto_sigma(levels, [0.9, 0.02, 0.01, 0.0], tolerance=0.05) == 1.0
    assert auto_sigma(levels, [0.01, 0.2, 0.01, 0.0], tolerance=0.05) == 10.0
    assert auto_sigma(levels, [0.0, 0.0, 0.0, 0.1], tolerance=0.05) is None


def _gaussian(d: int, seed: int, scale: float = 1.0) -> GaussianPrior:
    g = torch.Generator().manual_seed(seed)
    data = scale * torch.rand(400, 1, 1, d, generator=g, dtype=torch.float64)
    return GaussianPrior.fit(data, rank=6)


def test_compare_is_zero_for_the_same_denoiser_and_finds_the_better_one():
    """On samples of prior a, a's denoiser is the exact one (least MSE): the other one has
    positive excess error, and a has negative excess against it."""
    a, b = _gaussian(16, 0), _gaussian(16, 1, scale=0.5)
    imgs = a.sample(64, generator=torch.Generator().manual_seed(2)).float()
    same = compare(a, a, imgs, [0.1, 10.0])
    assert max(same["discrepancy"]) < 1e-10 and max(map(abs, same["excess_mse"])) < 1e-6
    levels = [0.05, 0.3, 1.0, 50.0]
    ab, ba = compare(a, b, imgs, levels), compare(b, a, imgs, levels)
    assert min(ab["discrepancy"]) > 0 and min(ab["excess_mse"]) > 0
    assert max(ba["excess_mse"]) < 0


def test_teleport_draws_x_sigma_given_y_exactly():
    """x_sigma | y ~ N(m, C + sigma^2 I) under the Gaussian prior: the teleported draws'
    mean and per-pixel variance match, within 5 Monte-Carlo standard errors."""
    d, n, sigma = 16, 4000, 0.7
    prior = _gaussian(d, 0)
    g = torch.Generator().manual_seed(3)
    phys = O.from_matrix(torch.randn(6, d, generator=g, dtype=torch.float64), sigma_y=0.1)
    y = torch.randn(1, 6, generator=g, dtype=torch.float64)
    post = prior.posterior(phys, y, sigma_y=0.1)
    m, var = post.mean.reshape(d), post.std.reshape(d) ** 2 + sigma**2
    gens = [torch.Generator().manual_seed(100 + i) for i in range(n)]
    x = teleport(prior, y.expand(n, 6), phys, sigma, gens, sigma_y=0.1).reshape(n, d)
    se = (var / n).sqrt()
    assert ((x.mean(0) - m).abs() / se).max() < 5
    assert ((x.var(0) - var).abs() / (var * (2 / n) ** 0.5)).max() < 5


def _cfg(**kw):
    prior = {"kind": "phantom_gaussian", "size": SIZE, "n_train": 200, "rank": 16}
    base = {
        "sampler": {"name": "dds"},
        "schedule": {"name": "karras", "n_steps": 8, "sigma_max": 5.0},
        "prior": prior,
        "teleport_prior": "phantom-gaussian",
    }
    return validate(RunConfig, {**base, **kw})


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    op = O.InpaintingConfig(img_size=(1, SIZE, SIZE), keep_ratio=0.5, sigma_y=0.02)
    path = tmp_path_factory.mktemp("tp") / "scan.h5"
    return simulate(random_phantoms(3, SIZE, seed=5), op, path, seed=0)


def test_a_teleported_run_skips_levels_records_them_and_keeps_rows_independent(scan, tmp_path):
    full = run(_cfg(input=str(scan)))
    out = tmp_path / "out.h5"
    tp = run(_cfg(input=str(scan), output=str(out), teleport=1.0, batch_size=3))
    sig = _cfg().schedule.build()
    skipped = int((sig > 1.0).sum())
    assert skipped >= 2 and tp.nfe_per_sample == full.nfe_per_sample - skipped
    with h5py.File(out) as f:
        rec = json.loads(f.attrs["teleport"])
    assert rec["levels_skipped"] == skipped and rec["gaussian"] == "phantom-gaussian"
    assert rec["sigma_skip"] <= 1.0
    one = run(_cfg(input=str(scan), teleport=1.0, batch_size=1, items=[2]))
    assert torch.allclose(one.reconstruction[0], tp.reconstruction[2], atol=1e-6)
    # the start is an exact posterior draw: the teleported reconstruction is as good
    assert sum(tp.metrics["psnr"]) > sum(full.metrics["psnr"]) - 3 * 1.0


def test_a_teleported_tds_cloud_skips_levels_and_keeps_rows_independent(scan):
    """TDS teleports its whole cloud (recon.teleport.cloud_start): the skipped levels save
    their network calls, and an item's result is the same alone as in a batch."""
    tds = {"name": "tds", "n_particles": 8}
    full = run(_cfg(input=str(scan), sampler=tds, items=[0, 1]))
    tp = run(_cfg(input=str(scan), sampler=tds, teleport=1.0, batch_size=2, items=[0, 1]))
    skipped = int((_cfg().schedule.build() > 1.0).sum())
    assert skipped >= 2 and tp.nfe_per_sample < full.nfe_per_sample
    one = run(_cfg(input=str(scan), sampler=tds, teleport=1.0, batch_size=1, items=[1]))
    assert torch.allclose(one.reconstruction[0], tp.reconstruction[1], atol=1e-6)


def test_teleport_refusals_name_the_way_out(scan):
    with pytest.raises(UserError, match="does not start from noise"):
        run(_cfg(input=str(scan), teleport=1.0, sampler={"name": "reddiff"}))
    with pytest.raises(UserError, match="auto needs"):
        run(_cfg(input=str(scan), teleport="auto"))
    with pytest.raises(UserError, match="serves"):
        run(_cfg(input=str(scan), teleport=1.0, teleport_prior="digits-gaussian"))


def test_a_ppca_gaussian_stays_exact_on_complex_images():
    """to_complex keeps a PPCA Gaussian an exact Gaussian (with a posterior) on (2, H, W):
    the real channel denoises as the real prior does, the imaginary one shrinks to 0."""
    from recon.priors import to_complex

    real = GaussianPrior.fit(random_phantoms(100, 8, seed=0).double(), rank=8, eps=1e-4)
    cplx = to_complex(real)
    assert isinstance(cplx, GaussianPrior) and cplx.shape == (2, 8, 8)
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    s = torch.tensor([0.1, 0.5], dtype=torch.float64)
    out = cplx(x, s)
    assert torch.allclose(out[:, :1], real(x[:, :1], s), atol=1e-10)
    assert out[:, 1:].abs().max() < x[:, 1:].abs().max()
