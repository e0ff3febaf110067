"""Noise schedules as descending ``sigmas`` tensors ending in 0.

All sigmas are in the variance-exploding form ``x = x0 + sigma * n`` and in data units (the
units of the images the denoiser receives, [0, 1] for images). Samplers receive a schedule;
they never build one.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

#: the most noise levels a schedule takes: 100 times the 1,000 of DDPM and DPS, far above any
#: published sampler (a larger count is a typo, and would run for days)
MAX_STEPS = 100_000


def karras(
    n_steps: Annotated[int, Field(ge=1, le=MAX_STEPS, description="non-zero noise levels")] = 50,
    *,
    sigma_min: Annotated[float, Field(gt=0, description="smallest sigma (data units)")] = 0.002,
    sigma_max: Annotated[float, Field(gt=0, description="largest sigma (data units)")] = 10.0,
    rho: Annotated[float, Field(gt=0, description="EDM curvature exponent")] = 7.0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """EDM schedule ``sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``.

    Args:
        n_steps: number of non-zero noise levels.
        sigma_min: smallest non-zero sigma (data units).
        sigma_max: largest sigma (data units). 10 by default: 33x the std of [0, 1] images
            (EDM's 80 is for [-1, 1] data; recon's bundled priors are sampled from 10).
        rho: the EDM curvature exponent (7 in the paper).
        dtype: dtype of the returned tensor.

    Returns:
        Tensor of shape (n_steps + 1,), descending, last entry 0.

    Reference:
        Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models",
        NeurIPS 2022, eq. 5.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(n_steps, dtype=torch.float64)
    denom = max(n_steps - 1, 1)
    inv_rho = 1.0 / rho
    s = (sigma_max**inv_rho + i / denom * (sigma_min**inv_rho - sigma_max**inv_rho)) ** rho
    return torch.cat([s, s.new_zeros(1)]).to(dtype)


def ddpm_alphas_cumprod(
    n_train_steps: int = 1000, *, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Tensor:
    """Cumulative products ``ab_t = prod_{s<=t} (1 - beta_s)`` of the DDPM linear-beta schedule.

    Returns:
        Tensor of shape (n_train_steps,), float64, index t = 0..T-1 (decreasing).

    Reference:
        Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
    """
    betas = torch.linspace(beta_start, beta_end, n_train_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def ddpm(
    n_train_steps: Annotated[
        int, Field(ge=2, le=MAX_STEPS, description="training timesteps T")
    ] = 1000,
    *,
    beta_start: Annotated[float, Field(gt=0, description="first beta")] = 1e-4,
    beta_end: Annotated[float, Field(gt=0, lt=1, description="last beta")] = 0.02,
    scale: Annotated[
        float, Field(gt=0, description="network units -> data units (0.5 for [-1, 1])")
    ] = 1.0,
    n_steps: Annotated[
        int | None, Field(ge=1, description="respace to this many levels (DDIM)")
    ] = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The DDPM linear-beta schedule as VE sigmas, ``sigma_t = scale * sqrt((1 - ab_t) / ab_t)``.

    A VP state ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` divided by ``sqrt(ab_t)`` is the VE
    state ``x0 + sigma_t eps``. ``scale`` converts from network units to data units: a network
    trained on [-1, 1] images used on [0, 1] data needs ``scale=0.5``.

    Returns:
        Tensor of shape (n_train_steps + 1,) (``(n_steps + 1,)`` when respaced, see
        :func:`respace`), descending, last entry 0.
    """
    ab = ddpm_alphas_cumprod(n_train_steps, beta_start=beta_start, beta_end=beta_end)
    s = scale * torch.sqrt((1.0 - ab) / ab)
    out = torch.cat([s.flip(0), s.new_zeros(1)]).to(dtype)
    return out if n_steps is None else respace(out, n_steps)


def respace(sigmas: Tensor, n_steps: int) -> Tensor:
    """Sub-sample a schedule to ``n_steps`` noise levels (DDIM respacing), fractional stride.

    Keeps the training timesteps ``t_i = round(i (T - 1) / (n_steps - 1))``, i = 0..n_steps-1
    (the top level ``T - 1`` and the bottom level 0 always included; ``n_steps = 1`` keeps the
    top), in descending order, and appends 0. The stride is at least 1, so the kept levels are
    distinct and strictly decreasing for every ``n_steps <= T``.

    DDIM's "uniform" skip ``t = 0, k, 2k, ...`` with ``k = T // n_steps`` (the paper's code)
    drops the high-noise end when ``n_steps`` does not divide ``T`` (at T = 1000, 501 steps
    start from t = 500, sigma 3.4 instead of 157 in DDPM's units) and is not used.

    Args:
        sigmas: descending schedule ending in 0, shape (T + 1,).
        n_steps: number of noise levels to keep, 1 <= n_steps <= T.

    Returns:
        Tensor of shape (n_steps + 1,).

    Reference:
        Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021, Sec. 4.2;
        Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021,
        Sec. 4 (respacing with fractional strides).
    """
    levels = sigmas[:-1].flip(0)  # ascending: index t = 0..T-1
    t_count = levels.shape[0]
    if not 1 <= n_steps <= t_count:
        raise ValueError(f"n_steps must be in [1, {t_count}], got {n_steps}")
    if n_steps == 1:
        idx = torch.tensor([t_count - 1])
    else:
        idx = torch.round(torch.linspace(0, t_count - 1, n_steps, dtype=torch.float64)).long()
    kept = levels[idx].flip(0)
    return torch.cat([kept, kept.new_zeros(1)])


SCHEDULES = {"karras": karras, "ddpm": ddpm}
