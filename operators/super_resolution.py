"""Super-resolution: ``y = S (k * x) + sigma_y n``, anti-aliasing filter ``k`` then decimation.

``bicubic`` is deepinv's ``Downsampling`` with its bicubic kernel (circular boundary), with
``A`` and ``A_adjoint`` applied without deepinv's per-call parameter update (which recomputes
and stores the Fourier filter on every call) and ``A_dagger`` the minimum-norm solution
``A^T (A A^T)^{-1} y`` by per-sample conjugate gradient.
``box`` averages each ``factor x factor`` block; it is written here because deepinv's
``Downsampling`` with an even-sized kernel fails in its adjoint (deepinv 0.5.0). Its adjoint
spreads each value over its block divided by ``factor^2``, and its pseudo-inverse is
nearest-neighbour upsampling (``A A^T = I / factor^2``).
"""

from __future__ import annotations

from typing import Literal

import deepinv as dinv
import deepinv.physics.functional as dF
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from recon.linalg import conjugate_gradient

from ._common import OperatorConfigBase, gaussian_noise


class SuperResolutionConfig(OperatorConfigBase):
    """Config of the super-resolution operator."""

    name: Literal["super_resolution"] = "super_resolution"
    img_size: tuple[int, int, int] = Field(description="(C, H, W) of the high-resolution images")
    factor: Literal[2, 4] = 4
    filter: Literal["bicubic", "box"] = "bicubic"

    @model_validator(mode="after")
    def _divisible(self) -> SuperResolutionConfig:
        _, h, w = self.img_size
        if h % self.factor or w % self.factor:
            raise ValueError(f"image size {h}x{w} is not divisible by factor {self.factor}")
        return self


class BicubicDownsampling(dinv.physics.Downsampling):
    """deepinv ``Downsampling`` whose calls never modify the operator (see module docstring)."""

    def __init__(self, *args, dagger_iters: int = 50, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dagger_iters = dagger_iters

    def A(self, x: Tensor, **kwargs) -> Tensor:
        return dF.conv2d(x, self.filter.to(x.dtype), padding=self.padding)[
            :, :, :: self.factor, :: self.factor
        ]

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        c, h, w = self.imsize
        x = torch.zeros((y.shape[0], c, h, w), device=y.device, dtype=y.dtype)
        x[:, :, :: self.factor, :: self.factor] = y
        return dF.conv_transpose2d(x, self.filter.to(y.dtype), padding=self.padding)

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        z = conjugate_gradient(self.A_A_adjoint, y, n_iter=self.dagger_iters, tol=1e-10)
        return self.A_adjoint(z)


class BoxDownsampling(dinv.physics.LinearPhysics):
    """Block-mean downsampling by an integer factor: (B, C, H, W) -> (B, C, H/f, W/f)."""

    def __init__(self, img_size: tuple[int, int, int], factor: int, **kwargs) -> None:
        super().__init__(img_size=tuple(img_size), **kwargs)
        self.factor = int(factor)

    def A(self, x: Tensor, **kwargs) -> Tensor:
        return F.avg_pool2d(x, self.factor)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) / (f * f)

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)


def build(
    cfg: SuperResolutionConfig, *, device: torch.device | str = "cpu"
) -> dinv.physics.LinearPhysics:
    """Build the operator; output shape (B, C, H / factor, W / factor)."""
    if cfg.filter == "box":
        return BoxDownsampling(
            cfg.img_size, cfg.factor, noise_model=gaussian_noise(cfg.sigma_y), device=device
        )
    return BicubicDownsampling(
        img_size=cfg.img_size,
        filter="bicubic",
        factor=cfg.factor,
        padding="circular",
        noise_model=gaussian_noise(cfg.sigma_y),
        device=device,
    )
