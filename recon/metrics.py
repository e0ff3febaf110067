"""Image-quality metrics with named conventions, one value per image (or per volume).

Two conventions, and every number recon reports names the one it used:

``image``
    Per image, data range fixed to 1 (images in [0, 1]); SSIM with an 11x11 Gaussian window,
    sigma 1.5, population covariance (Wang et al. 2004; scikit-image with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``); channels averaged.
``fastmri``
    Per volume, as fastMRI's ``evaluate.py``: data range = max of the whole ground-truth volume;
    PSNR and NMSE over the whole volume; SSIM per slice with a 7x7 uniform window and sample
    covariance (scikit-image defaults), averaged over slices.

PSNR equals ``skimage.metrics.peak_signal_noise_ratio`` and SSIM equals
``skimage.metrics.structural_similarity`` in the matching settings (tested).

Reference:
    Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to
    structural similarity", IEEE TIP 2004; Zbontar et al., "fastMRI", arXiv 1811.08839.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.errors import UserError


class ImageTooSmall(UserError, ValueError):
    """Images smaller than the SSIM window of a metric convention."""


Convention = Literal["image", "fastmri"]

CONVENTIONS: dict[str, str] = {
    "image": "per image, data range 1, SSIM Gaussian 11x11 sigma 1.5 (Wang 2004)",
    "fastmri": (
        "per volume, data range = volume max, SSIM 7x7 uniform window per slice "
        "(fastMRI evaluate.py)"
    ),
}

_K1, _K2 = 0.01, 0.03


def _per_image(a: Tensor) -> Tensor:
    return a.reshape(a.shape[0], -1)


def _as_range(data_range: float | Tensor, n: int, like: Tensor) -> Tensor:
    r = torch.as_tensor(data_range, dtype=torch.float64, device=like.device)
    return r.expand(n) if r.ndim == 0 else r.reshape(n)


def mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Per-image mean squared error, shape (B,), float64."""
    return _per_image((x_hat.double() - x.double()) ** 2).mean(dim=1)


def psnr(x_hat: Tensor, x: Tensor, *, data_range: float | Tensor = 1.0) -> Tensor:
    """Per-image PSNR in dB, ``10 log10(data_range^2 / MSE)``.

    Args:
        x_hat: reconstruction, shape (B, *).
        x: ground truth, shape (B, *).
        data_range: scalar or (B,) tensor (1 for [0, 1] images).

    Returns:
        Tensor of shape (B,), float64 (``inf`` for a perfect match).
    """
    _check_shapes(x_hat, x)
    r = _as_range(data_range, x.shape[0], x)
    return 10.0 * torch.log10(r**2 / mse(x_hat, x))


def nmse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Per-image normalised MSE ``||x_hat - x||^2 / ||x||^2``, shape (B,), float64."""
    _check_shapes(x_hat, x)
    num = _per_image((x_hat.double() - x.double()) ** 2).sum(dim=1)
    return num / _per_image(x.double() ** 2).sum(dim=1)


def _window(kind: str, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, float]:
    """1-D separable window and the covariance normaliser."""
    if kind == "uniform7":
        w = torch.full((7,), 1.0 / 7, dtype=dtype, device=device)
        n = 49
        return w, n / (n - 1)
    if kind == "gaussian11":
        # scipy.ndimage.gaussian_filter with sigma 1.5, truncate 3.5 -> radius 5.
        t = torch.arange(-5, 6, dtype=dtype, device=device)
        w = torch.exp(-0.5 * (t / 1.5) ** 2)
        return w / w.sum(), 1.0
    raise ValueError(f"unknown SSIM window {kind!r}; use 'uniform7' or 'gaussian11'")


def ssim(
    x_hat: Tensor,
    x: Tensor,
    *,
    data_range: float | Tensor = 1.0,
    window: Literal["uniform7", "gaussian11"] = "gaussian11",
) -> Tensor:
    """Per-image SSIM, averaged over channels.

    Args:
        x_hat: reconstruction, shape (B, C, H, W) or (B, H, W).
        x: ground truth, same shape.
        data_range: scalar or (B,) tensor.
        window: ``"gaussian11"`` (the ``image`` convention) or ``"uniform7"`` (fastMRI).

    Returns:
        Tensor of shape (B,), float64. Only positions where the window lies fully inside the
        image are averaged (scikit-image crops the same border).
    """
    _check_shapes(x_hat, x)
    if x.ndim == 3:
        x_hat, x = x_hat[:, None], x[:, None]
    if x.ndim != 4:
        raise ValueError(
            f"ssim needs (B, C, H, W) or (B, H, W) tensors, got shape {tuple(x.shape)}"
        )
    b, c, h, w_ = x.shape
    win, cov_norm = _window(window, torch.float64, x.device)
    k = win.numel()
    if h < k or w_ < k:
        raise ImageTooSmall(f"images of size {h}x{w_} are smaller than the SSIM window {k}x{k}")
    r = _as_range(data_range, b, x)
    c1 = ((_K1 * r) ** 2).reshape(b, 1, 1, 1)
    c2 = ((_K2 * r) ** 2).reshape(b, 1, 1, 1)
    xa = x_hat.double().reshape(b * c, 1, h, w_)
    xb = x.double().reshape(b * c, 1, h, w_)
    kh = win.reshape(1, 1, k, 1)
    kw = win.reshape(1, 1, 1, k)

    def filt(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, kh), kw).reshape(b, c, h - k + 1, w_ - k + 1)

    ux, uy = filt(xa), filt(xb)
    uxx, uyy, uxy = filt(xa * xa), filt(xb * xb), filt(xa * xb)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def image_metrics(x_hat: Tensor, x: Tensor) -> dict[str, Tensor]:
    """The ``image`` convention: PSNR, SSIM, NMSE per image for [0, 1] images (B, C, H, W)."""
    return {
        "psnr": psnr(x_hat, x, data_range=1.0),
        "ssim": ssim(x_hat, x, data_range=1.0, window="gaussian11"),
        "nmse": nmse(x_hat, x),
    }


def fastmri_volume_metrics(pred: Tensor, gt: Tensor) -> dict[str, float]:
    """The ``fastmri`` convention for one volume of magnitude images (S, H, W).

    Equal to fastMRI's ``evaluate.py``: ``maxval = gt.max()``; PSNR and NMSE over the whole
    volume; SSIM per slice (7x7 uniform window, sample covariance) averaged over slices.
    """
    if gt.ndim != 3:
        raise ValueError(f"fastMRI metrics take a (slices, H, W) volume, got {tuple(gt.shape)}")
    _check_shapes(pred, gt)
    maxval = gt.double().max()
    err = ((pred.double() - gt.double()) ** 2).mean()
    return {
        "psnr": float(10.0 * torch.log10(maxval**2 / err)),
        "ssim": float(ssim(pred, gt, data_range=maxval, window="uniform7").mean()),
        "nmse": float(((pred.double() - gt.double()) ** 2).sum() / (gt.double() ** 2).sum()),
    }


#: nominal levels of the calibration curve; 0.5 and 0.9 are the ones tables report
COVERAGE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def coverage(
    samples: Tensor, truth: Tensor, levels: tuple[float, ...] = COVERAGE_LEVELS
) -> dict[float, float]:
    """Empirical coverage of per-pixel central credible intervals.

    For each nominal level ``l`` the interval is ``[q_{(1-l)/2}, q_{(1+l)/2}]`` of the samples at
    each pixel (linear interpolation between order statistics), and the coverage is the
    fraction of pixels whose true value lies inside it. A calibrated sampler whose truth is a
    draw from the prior covers ``l`` on average as S grows; with few samples the intervals are
    narrow (even the full range of S samples covers only ``(S - 1) / (S + 1)`` of new draws in
    expectation, S = 8: 0.78), so few samples read low.

    Args:
        samples: (S, ...) posterior draws of one item, S >= 2.
        truth: (...) the true image.
        levels: nominal levels in (0, 1).

    Returns:
        ``{level: coverage}``.
    """
    if samples.shape[0] < 2:
        raise ValueError("coverage needs at least 2 samples")
    s = samples.double().reshape(samples.shape[0], -1)
    t = truth.double().reshape(-1)
    out = {}
    for lev in levels:
        q = torch.quantile(s, torch.tensor([(1 - lev) / 2, (1 + lev) / 2], dtype=s.dtype), dim=0)
        out[lev] = float(((t >= q[0]) & (t <= q[1])).double().mean())
    return out


def _check_shapes(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"shapes differ: reconstruction {tuple(a.shape)} vs truth {tuple(b.shape)}"
        )


def summarize(values: Tensor) -> tuple[float, float]:
    """Mean and sample standard deviation of a 1-D tensor of per-item values."""
    v = values.double()
    mean = float(v.mean())
    std = float(v.std(unbiased=True)) if v.numel() > 1 else math.nan
    return mean, std


def sliced_wasserstein(
    a: Tensor, b: Tensor, *, n_projections: int = 100, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-1 distance between two equal-size point clouds (N, d).

    The mean over ``n_projections`` random unit directions of the 1-D W1 distance between the
    projected samples (sorted-sample formula), as in the MCGdiff benchmark (arXiv 2308.07983).
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"need two (N, d) clouds of equal size, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    d = a.shape[1]
    dirs = torch.randn(d, n_projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa = torch.sort(a.double() @ dirs, dim=0).values
    pb = torch.sort(b.double() @ dirs, dim=0).values
    return float((pa - pb).abs().mean())
