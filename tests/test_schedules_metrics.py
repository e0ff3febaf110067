from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from recon import metrics, schedules


def test_karras_schedule():
    s = schedules.karras(10, sigma_min=0.01, sigma_max=10.0)
    assert s.shape == (11,) and s[-1] == 0
    assert float(s[0]) == pytest.approx(10.0) and float(s[-2]) == pytest.approx(0.01)
    assert bool((s[:-1] > s[1:]).all())
    # eq. 5 of Karras et al. at the midpoint
    rho = 7.0
    mid = (10.0 ** (1 / rho) + 0.5 * (0.01 ** (1 / rho) - 10.0 ** (1 / rho))) ** rho
    s_odd = schedules.karras(11, sigma_min=0.01, sigma_max=10.0)
    assert float(s_odd[5]) == pytest.approx(mid)


def test_ddpm_schedule_and_respacing():
    s = schedules.ddpm(1000)
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    ref = np.sqrt((1 - ab) / ab)[::-1]
    assert np.allclose(s[:-1].numpy(), ref)
    assert s[-1] == 0 and bool((s[:-1] > s[1:]).all())
    assert torch.allclose(schedules.ddpm(1000, scale=0.5), 0.5 * s)
    r = schedules.respace(s, 50)
    assert r.shape == (51,) and r[-1] == 0
    # fractional stride: timesteps round(i * 999 / 49), i = 0..49 (0 and 999 included)
    t = np.round(np.arange(50) * 999 / 49).astype(int)
    assert np.allclose(r[:-1].numpy(), np.sqrt((1 - ab) / ab)[t][::-1])
    with pytest.raises(ValueError):
        schedules.respace(s, 0)
    with pytest.raises(ValueError):
        schedules.respace(s, 1001)


def test_respace_keeps_the_top_level_for_every_step_count():
    """Every n in 1..T: the first level is the schedule's top, levels strictly decrease, the
    last kept level is the bottom one (n >= 2), and the schedule ends in 0."""
    s = schedules.ddpm(1000)
    for n in range(1, 1001):
        r = schedules.respace(s, n)
        assert r.shape == (n + 1,) and r[-1] == 0
        assert r[0] == s[0], n
        assert bool((r[:-1] > r[1:]).all()), n
        if n >= 2:
            assert r[-2] == s[-2], n


def _pair(gen, shape=(3, 1, 32, 32)):
    x = torch.rand(shape, generator=gen, dtype=torch.float64)
    noisy = (x + 0.1 * torch.randn(shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return noisy, x


def test_psnr_equals_skimage(gen):
    xh, x = _pair(gen)
    got = metrics.psnr(xh, x, data_range=1.0)
    for b in range(3):
        ref = peak_signal_noise_ratio(x[b].numpy(), xh[b].numpy(), data_range=1.0)
        assert abs(float(got[b]) - ref) < 1e-5


def test_ssim_image_convention_equals_skimage(gen):
    xh, x = _pair(gen, (2, 3, 32, 32))
    got = metrics.ssim(xh, x, data_range=1.0, window="gaussian11")
    for b in range(2):
        ref = structural_similarity(
            x[b].numpy(),
            xh[b].numpy(),
            data_range=1.0,
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert abs(float(got[b]) - ref) < 1e-4


def _fastmri_reference(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """fastMRI evaluate.py, written out: volume max, PSNR/NMSE per volume, SSIM per slice."""
    maxval = gt.max()
    psnr = peak_signal_noise_ratio(gt, pred, data_range=maxval)
    nmse = np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2
    ssim = np.mean(
        [structural_similarity(gt[i], pred[i], data_range=maxval) for i in range(gt.shape[0])]
    )
    return {"psnr": psnr, "ssim": ssim, "nmse": nmse}


def test_fastmri_convention_on_a_synthetic_volume(gen):
    gt = torch.rand(4, 40, 36, generator=gen, dtype=torch.float64) * 3.0
    gt[2] *= 0.2  # slices with different ranges: the volume max matters
    pred = gt + 0.05 * torch.randn(gt.shape, generator=gen, dtype=torch.float64)
    got = metrics.fastmri_volume_metrics(pred, gt)
    ref = _fastmri_reference(gt.numpy(), pred.numpy())
    assert abs(got["psnr"] - ref["psnr"]) < 1e-5
    assert abs(got["ssim"] - ref["ssim"]) < 1e-4
    assert abs(got["nmse"] - ref["nmse"]) < 1e-10


def test_metric_edge_cases(gen):
    x = torch.rand(2, 1, 16, 16, generator=gen)
    assert bool(torch.isinf(metrics.psnr(x, x)).all())
    assert torch.allclose(metrics.ssim(x, x), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(x, x[:, :, :8])
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        metrics.ssim(x[:, :, :5, :5], x[:, :, :5, :5])
    assert set(metrics.CONVENTIONS) == {"image", "fastmri"}
    m, s = metrics.summarize(torch.tensor([1.0, 3.0]))
    assert m == 2.0 and s == pytest.approx(math.sqrt(2))
