"""Priors of any size from patches: assembly against exact whole-image priors, the patch
mixture's EM, coordinate channels, the generic corpus, and the default prior per scan kind."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from recon.corpus import HELD_OUT_PHOTOS, PARTS, TRAIN_PHOTOS, generic_image, generic_images
from recon.priors import GaussianPrior
from recon.priors.patches import (
    PatchMixturePrior,
    PatchNetworkDenoiser,
    assemble_patches,
    extract_patches,
    pixel_coords,
)

F64 = torch.float64


def _ar1(n: int, rho: float) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    return rho ** (i[:, None] - i[None, :]).abs()


def _stationary(size: int, patch: int, rho: float, var: float = 0.04):
    """A stationary Gaussian on size x size images (separable AR(1) covariance) and the same
    field's exact marginal on patch x patch patches."""
    whole = GaussianPrior(
        torch.full((1, size, size), 0.5, dtype=torch.float64),
        var * torch.kron(_ar1(size, rho), _ar1(size, rho)),
    )
    cov_p = var * torch.kron(_ar1(patch, rho), _ar1(patch, rho))
    mix = PatchMixturePrior(
        torch.ones(1), torch.full((1, patch * patch), 0.5), cov_p[None], patch=patch, eps=0.0
    )
    return whole, mix


def test_patch_assembly_is_exact_for_a_white_prior():
    # independent pixels: each patch's estimate of a pixel is the exact whole-image one, so
    # the average is exact everywhere, borders (reflect padding) included
    whole, mix = _stationary(20, 4, 0.0)
    g = torch.Generator().manual_seed(0)
    y = 0.5 + 0.3 * torch.randn(3, 1, 20, 20, dtype=torch.float64, generator=g)
    sig = torch.tensor([0.05, 0.2, 1.0], dtype=torch.float64)
    assert torch.allclose(mix(y, sig), whole(y, sig), atol=1e-12)


def test_patch_assembly_matches_a_stationary_whole_image_prior():
    """With correlation rho = 0.5 between neighbours, the whole-image posterior mean of a pixel
    depends on observations beyond any 8x8 patch, so patch averaging is an approximation.
    Away from the border (8 px) it recovers the whole-image correction ``D(y) - y`` to within
    15 % (measured 3-11 %, the most at the smallest noise where the correction is small), and
    its squared error to the clean image is within 3 % of the exact denoiser's (measured
    0.2-1.2 % over sigma 0.05-0.4), while the noisy input's is 15-540 % larger."""
    size, p = 32, 8
    whole, mix = _stationary(size, p, 0.5)
    g = torch.Generator().manual_seed(1)
    x0 = whole.sample(8, generator=g).reshape(8, 1, size, size)
    sig = torch.tensor([0.05, 0.1, 0.2, 0.4] * 2, dtype=torch.float64)
    y = x0 + sig[:, None, None, None] * torch.randn(x0.shape, dtype=torch.float64, generator=g)
    exact, approx = whole(y, sig), mix(y, sig)
    inner = (..., slice(p, size - p), slice(p, size - p))
    for b in range(8):
        corr = (exact[b][inner] - y[b][inner]).norm()
        err = (approx[b][inner] - exact[b][inner]).norm()
        assert err < 0.15 * corr, (b, float(err / corr))
    for level in range(4):
        rows = [level, level + 4]
        mse_exact = ((exact[rows] - x0[rows]) ** 2).mean()
        mse_patch = ((approx[rows] - x0[rows]) ** 2).mean()
        mse_noisy = ((y[rows] - x0[rows]) ** 2).mean()
        assert mse_patch < 1.03 * mse_exact < mse_noisy, level


def test_assembly_chunks_patches_and_serves_any_size():
    _, mix = _stationary(8, 4, 0.3)
    seen = []

    def spy(z, s):
        seen.append(z.shape[0])
        return mix.denoise_patches(z, s)

    for shape in [(1, 1, 13, 9), (2, 1, 50, 70), (1, 1, 3, 5)]:
        x = torch.rand(shape, dtype=torch.float64)
        seen.clear()
        out = assemble_patches(
            x, torch.full((shape[0],), 0.1), spy, patch=4, stride=2, max_patches=64
        )
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert max(seen) <= 64
        # stride 2 and stride 1 average different patch sets of the same exact patch MMSE
        ref = assemble_patches(
            x, torch.full((shape[0],), 0.1), mix.denoise_patches, patch=4, stride=1
        )
        assert (out - ref).abs().max() < 0.05
    big = mix(torch.rand(1, 1, 320, 320), torch.tensor([0.1]))
    assert big.shape == (1, 1, 320, 320) and big.dtype == torch.float32


def test_patch_mixture_em_recovers_known_components():
    """Three components on 2x2 patches, 6000 draws. Tolerances from Monte-Carlo error: a
    weight's standard error is sqrt(w (1 - w) / N) <= 0.0065 (bound 0.03, ~5 se); a mean
    coordinate's is sqrt(lam_max / (N w)) <= 0.1 / sqrt(1000) = 0.0032 (bound 0.016)."""
    g = torch.Generator().manual_seed(0)
    d = 4
    means = torch.tensor([[0.1] * d, [0.5, 0.9, 0.5, 0.1], [0.9] * d], dtype=torch.float64)
    covs = []
    for k in range(3):
        q = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))[0]
        lam = torch.tensor([0.01, 0.004, 0.002, 0.001], dtype=torch.float64) * (k + 1) / 3
        covs.append(q @ torch.diag(lam) @ q.T)
    truth = PatchMixturePrior(torch.tensor([0.2, 0.3, 0.5]), means, torch.stack(covs), patch=2)
    data = truth.sample_patches(6000, generator=g)
    fit, hist = PatchMixturePrior.fit(
        data, 3, n_iter=40, generator=torch.Generator().manual_seed(1), return_history=True
    )
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(hist))
    order = [int(torch.cdist(m[None], fit.means).argmin()) for m in means]
    assert sorted(order) == [0, 1, 2]
    w = fit.log_weights.exp()[order]
    assert torch.allclose(w, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), atol=0.03)
    assert (fit.means[order] - means).abs().max() < 0.016
    # the exact patch MMSE: one component, any noise level, against the Gaussian formula
    one = PatchMixturePrior(torch.ones(1), means[:1], torch.stack(covs[:1]), patch=2)
    z = torch.rand(5, d, dtype=torch.float64)
    s = torch.full((5,), 0.2, dtype=torch.float64)
    ref = GaussianPrior(means[0], covs[0])(z, s)
    assert torch.allclose(one.denoise_patches(z, s), ref, atol=1e-10)


def test_patch_mixture_save_load_roundtrip(tmp_path):
    from recon.priors import load

    _, mix = _stationary(8, 4, 0.3)
    mix.save(tmp_path / "p.safetensors", note="test")
    back = load(tmp_path / "p.safetensors")
    x = torch.rand(2, 1, 11, 7)
    assert torch.equal(back(x, torch.tensor([0.1, 0.3])), mix(x, torch.tensor([0.1, 0.3])))
    assert math.isclose(back.data_std, mix.data_std)


class _WhiteNet(torch.nn.Module):
    """An EDM raw network F whose denoiser is exact for i.i.d. N(m, v) pixels (network units)
    and which checks that it gets exactly two coordinate channels in [-1, 1]."""

    def __init__(self, m: float, v: float, sd: float = 0.5) -> None:
        super().__init__()
        self.m, self.v, self.sd = m, v, sd

    def forward(self, x_in, c_noise):
        assert x_in.shape[1] == 3 and x_in[:, 1:].abs().max() <= 1 + 1e-6
        s = torch.exp(4 * c_noise)[:, None, None, None]
        u = x_in[:, :1] * torch.sqrt(s**2 + self.sd**2)
        d = (u * self.v + self.m * s**2) / (self.v + s**2)
        c_skip = self.sd**2 / (s**2 + self.sd**2)
        c_out = s * self.sd / torch.sqrt(s**2 + self.sd**2)
        return (d - c_skip * u) / c_out


@pytest.mark.parametrize("shape", [(1, 1, 50, 70), (2, 1, 13, 9), (1, 1, 64, 64)])
def test_patch_network_tiles_assemble_exactly(shape):
    # pixel data: m = 0.5 -> u = 0 in [-1, 1]; v = 0.04 (data) -> 0.16 (network units)
    den = PatchNetworkDenoiser(_WhiteNet(0.0, 0.16), tile=16, stride=8, max_tiles=5)
    x = torch.rand(shape, dtype=torch.float64)
    s = torch.linspace(0.05, 0.5, shape[0], dtype=torch.float64)
    exact = (x * 0.04 + 0.5 * s[:, None, None, None] ** 2) / (0.04 + s[:, None, None, None] ** 2)
    assert torch.allclose(den(x, s), exact, atol=1e-9)


def test_coordinate_channels_are_the_whole_image_coordinates():
    full = pixel_coords(torch.tensor([0]), torch.tensor([0]), 64, 64, 64)[0]
    assert torch.allclose(full[0, :, 0], torch.linspace(-1, 1, 64))
    top, left = torch.tensor([5, 40]), torch.tensor([17, 0])
    crops = pixel_coords(top, left, 16, 64, 64)
    for k in range(2):
        t, lf = int(top[k]), int(left[k])
        assert torch.allclose(crops[k], full[:, t : t + 16, lf : lf + 16])


def test_patch_training_batch_has_random_sizes_and_matching_coordinates():
    from recon.priors.train import PRESETS, patch_batch

    cfg = PRESETS["generic-patch"]
    x = torch.rand(4, 1, cfg.resolution, cfg.resolution)
    sizes = set()
    for step in range(12):
        crops, coords = patch_batch(cfg, x, step)
        p = crops.shape[-1]
        sizes.add(p)
        assert crops.shape == (4, 1, p, p) and coords.shape == (4, 2, p, p)
        # each crop sits where its coordinates say
        r = cfg.resolution
        top = ((coords[:, 0, 0, 0] + 1) * (r - 1) / 2).round().long()
        left = ((coords[:, 1, 0, 0] + 1) * (r - 1) / 2).round().long()
        for i in range(4):
            t, lf = int(top[i]), int(left[i])
            assert torch.equal(crops[i], x[i, :, t : t + p, lf : lf + p])
    assert sizes == set(cfg.patch_sizes)


def test_train_config_refuses_half_a_patch_setup():
    from pydantic import ValidationError

    from recon.priors.train import PRESETS

    data = PRESETS["generic-patch"].model_dump()
    with pytest.raises(ValidationError, match="go together"):
        type(PRESETS["generic-patch"]).model_validate({**data, "patch_sizes": ()})
    with pytest.raises(ValidationError, match="multiple of 8"):
        type(PRESETS["generic-patch"]).model_validate({**data, "patch_sizes": (12,)})


def test_generic_corpus_is_seeded_and_in_range():
    a = generic_images(6, 32, seed=3)
    assert a.shape == (6, 1, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a[4], generic_image(32, 4, seed=3))
    assert not torch.equal(a[0], generic_image(32, 0, seed=4))
    assert not set(TRAIN_PHOTOS) & set(HELD_OUT_PHOTOS)
    medical = {"retina", "immunohistochemistry", "cell", "microaneurysms", "kidney", "brain"}
    assert not medical & set(TRAIN_PHOTOS)
    assert math.isclose(sum(p for p, _, _ in PARTS.values()), 1.0)


def test_extract_patches_positions():
    imgs = torch.arange(2 * 6 * 5, dtype=torch.float32).reshape(2, 1, 6, 5)
    p = extract_patches(imgs, 50, 3, generator=torch.Generator().manual_seed(0))
    assert p.shape == (50, 1, 3, 3)
    # each patch is a contiguous block: rows differ by the width, columns by one
    assert torch.all(p[:, 0, 1:, :] - p[:, 0, :-1, :] == 5)
    assert torch.all(p[:, 0, :, 1:] - p[:, 0, :, :-1] == 1)


def test_separate_dc_gives_every_component_the_shared_dc_gaussian():
    """EPLL's DC handling: patches with random brightness; the fitted components all carry
    the DC's sample mean and, along the all-ones direction, its variance (times d)."""
    g = torch.Generator().manual_seed(3)
    n, p = 4000, 2
    ac = 0.05 * torch.randn(n, 1, p, p, dtype=torch.float64, generator=g)
    ac = ac - ac.mean(dim=(1, 2, 3), keepdim=True)
    dc = 0.5 + 0.2 * torch.randn(n, 1, 1, 1, dtype=torch.float64, generator=g)
    fit = PatchMixturePrior.fit(ac + dc, 2, n_iter=5, generator=g, separate_dc=True)
    assert torch.allclose(
        fit.means.mean(1), torch.full((2,), float(dc.mean()), dtype=F64), atol=1e-6
    )
    u = torch.full((p * p,), 0.5, dtype=torch.float64)  # unit vector along the DC
    var_dc = torch.einsum("d,kde,e->k", u, fit.covs, u)
    assert torch.allclose(var_dc, torch.full((2,), p * p * float(dc.var()), dtype=F64), rtol=1e-3)


@pytest.mark.parametrize("operator", ["mri", "mri_multicoil", "inpainting", "ct"])
def test_default_prior_serves_every_scan_kind(tmp_path, operator):
    """`recon reconstruct` without ``--prior`` resolves the default generic prior at the scan's
    own image size, whatever the scan kind: complex for k-space, real for images and sinograms,
    on a non-square size that is no multiple of the network's tile (20 x 28; CT is square,
    24 x 24), and records it in the result file."""
    import json

    import h5py
    import numpy as np
    from typer.testing import CliRunner

    from recon.cli.main import app
    from recon.priors.configs import DEFAULT_PRIOR

    runner = CliRunner()
    src, scan, out = tmp_path / "img.h5", tmp_path / "scan.h5", tmp_path / "out.h5"
    if operator == "ct":
        images, shape = "phantoms:1:24", (1, 24, 24)
    else:
        with h5py.File(src, "w") as f:
            rng = np.random.default_rng(0)
            f.create_dataset("images", data=rng.random((1, 20, 28)).astype(np.float32))
        images, shape = str(src), (1, 20, 28)
    args = ["simulate", images, "-o", str(scan), "--operator", operator, "--coils", "4"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["reconstruct", str(scan), "-o", str(out), "--steps", "2"])
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        assert f["reconstruction"].shape == shape
        assert np.isfinite(f["reconstruction"][()]).all()
        prior = json.loads(f.attrs["config"])["prior"]
    assert prior["kind"] == "network" and prior["source"] == DEFAULT_PRIOR
    assert prior["complex"] is operator.startswith("mri")
