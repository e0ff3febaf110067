"""Single-coil Cartesian MRI: ``y = M F x + sigma_y M n``.

Images are complex, carried as 2 real channels (real, imaginary): x of shape (B, 2, H, W);
k-space y has the same shape. ``F`` is the centred orthonormal 2-D FFT (fastMRI's
``fft2c``), ``M`` the 0/1 sampling mask. ``A_dagger`` is the zero-filled inverse FFT, the exact
pseudo-inverse. deepinv's ``MRI`` (decomposable, with an SVD) is the operator.
"""

from __future__ import annotations

from typing import Literal

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from ._common import OperatorConfigBase, gaussian_noise
from .masks import make_mask


def ifft2c(k: Tensor) -> Tensor:
    """Centred orthonormal inverse 2-D FFT over the last two axes (fastMRI's ``ifft2c``):
    complex k-space (..., H, W) -> complex image (..., H, W)."""
    dims = (-2, -1)
    return torch.fft.fftshift(
        torch.fft.ifft2(torch.fft.ifftshift(k, dim=dims), norm="ortho"), dim=dims
    )


class MRIMaskFields(OperatorConfigBase):
    """Sampling-mask fields shared by single- and multi-coil MRI."""

    img_size: tuple[int, int] = Field(description="(H, W) of k-space and of the image")
    mask: Literal["random", "equispaced", "vd2d", "given"] = "equispaced"
    acceleration: float = Field(4.0, ge=2.0, le=12.0, description="nominal acceleration R")
    center_fraction: float = Field(0.08, ge=0.0, lt=1.0, description="ACS fraction of columns")
    n_masks: int | None = Field(None, ge=1, description="per-sample masks (batch size)")
    seed: int = Field(0, description="seed of the random mask / equispaced offset")


class MRIConfig(MRIMaskFields):
    """Config of the single-coil MRI operator."""

    name: Literal["mri"] = "mri"


def resolve_mask(cfg: MRIMaskFields, mask: Tensor | None) -> Tensor:
    """The mask a config asks for, shape (H, W) or (B, 1, H, W), float 0/1."""
    h, w = cfg.img_size
    if cfg.mask == "given":
        if mask is None:
            raise ValueError("MRI with mask='given' needs the mask tensor")
        m = torch.as_tensor(mask, dtype=torch.float32)
        if m.shape[-1] != w or (m.ndim >= 2 and m.shape[-2] not in (1, h)):
            raise ValueError(
                f"mask of shape {tuple(m.shape)} does not match k-space of size {h}x{w}"
            )
        if m.ndim == 1:
            m = m.expand(h, w)
        return m.expand(*m.shape[:-2], h, w).clone()
    return make_mask(
        cfg.mask,
        (h, w),
        acceleration=cfg.acceleration,
        center_fraction=cfg.center_fraction,
        seed=cfg.seed,
        n_masks=cfg.n_masks,
    )


def build(
    cfg: MRIConfig, *, device: torch.device | str = "cpu", mask: Tensor | None = None
) -> dinv.physics.MRI:
    """Build deepinv's single-coil ``MRI`` operator for (B, 2, H, W) images."""
    m = resolve_mask(cfg, mask).to(device)
    return dinv.physics.MRI(
        mask=m,
        img_size=(2, *cfg.img_size),
        noise_model=gaussian_noise(cfg.sigma_y),
        device=device,
    )
