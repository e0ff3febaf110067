"""Inpainting: keep a subset of pixels, ``y = m * x + sigma_y * m * n``.

Masks are pixelwise (shared by all channels). A random mask keeps each pixel with probability
``keep_ratio``; a box mask removes one centred (or placed) rectangle; a given mask is any 0/1
tensor. With ``n_masks`` set, the operator holds one independent mask per batch element
(shape (n_masks, 1, H, W)) and must be applied to batches of exactly that size.
"""

from __future__ import annotations

from typing import Literal

import deepinv as dinv
import torch
from pydantic import Field, model_validator
from torch import Tensor

from ._common import OperatorConfigBase, gaussian_noise


class InpaintingConfig(OperatorConfigBase):
    """Config of the inpainting operator."""

    name: Literal["inpainting"] = "inpainting"
    img_size: tuple[int, int, int] = Field(description="(C, H, W) of the images")
    mask: Literal["random", "box", "given"] = "random"
    keep_ratio: float = Field(0.3, gt=0.0, le=1.0, description="random mask: kept fraction")
    box: tuple[int, int, int, int] | None = Field(
        None, description="box mask: (top, left, height, width); centred half-size box if None"
    )
    n_masks: int | None = Field(
        None, ge=1, description="independent per-sample masks (batch size); one shared if None"
    )
    seed: int = Field(0, description="seed of the random mask")

    @model_validator(mode="after")
    def _box_fits(self) -> InpaintingConfig:
        if self.box is not None:
            top, left, h, w = self.box
            _, hh, ww = self.img_size
            if top < 0 or left < 0 or h <= 0 or w <= 0 or top + h > hh or left + w > ww:
                raise ValueError(f"box {self.box} does not fit in an image of size {hh}x{ww}")
        return self


def random_mask(
    shape: tuple[int, ...], keep_ratio: float, *, generator: torch.Generator
) -> Tensor:
    """Bernoulli(keep_ratio) 0/1 mask of the given shape (float32, on the generator's device)."""
    u = torch.rand(shape, generator=generator, device=generator.device)
    return (u < keep_ratio).float()


def box_mask(hw: tuple[int, int], box: tuple[int, int, int, int] | None) -> Tensor:
    """0/1 mask of shape (H, W) that is 0 inside the box and 1 elsewhere."""
    h, w = hw
    if box is None:
        box = (h // 4, w // 4, h // 2, w // 2)
    top, left, bh, bw = box
    m = torch.ones(h, w)
    m[top : top + bh, left : left + bw] = 0.0
    return m


def build(
    cfg: InpaintingConfig, *, device: torch.device | str = "cpu", mask: Tensor | None = None
) -> dinv.physics.Inpainting:
    """Build the deepinv ``Inpainting`` operator.

    Args:
        cfg: the operator config.
        device: where the mask lives.
        mask: the 0/1 mask for ``cfg.mask == "given"``, shape (H, W), (1, H, W) or (B, 1, H, W).

    Returns:
        ``deepinv.physics.Inpainting`` with a mask of shape (1 or B, 1, H, W).
    """
    _, h, w = cfg.img_size
    n = cfg.n_masks or 1
    if cfg.mask == "given":
        if mask is None:
            raise ValueError("inpainting with mask='given' needs the mask tensor")
        m = torch.as_tensor(mask, dtype=torch.float32)
        while m.ndim < 4:
            m = m.unsqueeze(0)
        if m.shape[-2:] != (h, w):
            raise ValueError(f"mask of shape {tuple(m.shape)} does not match image size {h}x{w}")
    elif cfg.mask == "random":
        g = torch.Generator("cpu").manual_seed(cfg.seed)
        m = random_mask((n, 1, h, w), cfg.keep_ratio, generator=g)
    else:
        m = box_mask((h, w), cfg.box).expand(n, 1, h, w).clone()
    return dinv.physics.Inpainting(
        img_size=cfg.img_size,
        mask=m.to(device),
        noise_model=gaussian_noise(cfg.sigma_y),
        device=device,
    )
