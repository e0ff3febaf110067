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
from pydantic import Field, model_validator
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
    encoded_size: tuple[int, int] | None = Field(
        None,
        description="k-space grid (H, W) when larger than img_size (readout oversampling, "
        "phase padding): the image is zero-padded into it, centred as fastMRI's "
        "complex_center_crop; None: img_size",
    )

    @model_validator(mode="after")
    def _encoded_holds_image(self) -> MRIMaskFields:
        if self.encoded_size is not None and (
            self.encoded_size[0] < self.img_size[0] or self.encoded_size[1] < self.img_size[1]
        ):
            raise ValueError(
                f"encoded_size {tuple(self.encoded_size)} must be at least img_size "
                f"{tuple(self.img_size)} in both axes"
            )
        return self

    @property
    def kspace_size(self) -> tuple[int, int]:
        """(H, W) of k-space and of the mask: ``encoded_size`` or ``img_size``."""
        return tuple(self.encoded_size or self.img_size)  # type: ignore[return-value]


class MRIConfig(MRIMaskFields):
    """Config of the single-coil MRI operator."""

    name: Literal["mri"] = "mri"


def resolve_mask(cfg: MRIMaskFields, mask: Tensor | None) -> Tensor:
    """The mask a config asks for on the k-space grid, shape (H, W) or (B, 1, H, W), 0/1."""
    h, w = cfg.kspace_size
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


def crop_box(big: tuple[int, int], small: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of a ``small`` window centred in ``big`` as fastMRI's
    ``complex_center_crop`` takes it: ``((H - h) // 2, (W - w) // 2)``."""
    if small[0] > big[0] or small[1] > big[1]:
        raise ValueError(f"cannot crop {tuple(small)} out of {tuple(big)}")
    return (big[0] - small[0]) // 2, (big[1] - small[1]) // 2


def center_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The centred ``size`` window of the last two axes (fastMRI's geometry, :func:`crop_box`)."""
    top, left = crop_box(tuple(x.shape[-2:]), size)
    return x[..., top : top + size[0], left : left + size[1]]


def center_pad(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero-pad the last two axes to ``size``, x centred: the adjoint of :func:`center_crop`."""
    h, w = x.shape[-2:]
    top, left = crop_box(size, (h, w))
    out = x.new_zeros(*x.shape[:-2], *size)
    out[..., top : top + h, left : left + w] = x
    return out


class Embedded(dinv.physics.LinearPhysics):
    """``A = inner.A o P``: an image on the reconstruction grid (B, 2, h, w), zero-padded
    (centred, :func:`center_pad`) to the encoded grid of an MRI operator ``inner``.

    This is the forward model of fastMRI raw data with readout oversampling: the k-space is on
    the encoded grid (e.g. 640 x 368) and the object on the reconstruction grid (320 x 320). The
    adjoint crops (``P^T``); ``A_dagger`` is the least-squares solution by ``dagger_iters``
    conjugate-gradient steps on ``A^T A x = A^T y`` (per sample).
    """

    def __init__(
        self, inner: dinv.physics.LinearPhysics, img_size: tuple[int, int], dagger_iters: int = 30
    ) -> None:
        super().__init__(noise_model=inner.noise_model)
        self.inner = inner
        self.img_size = (2, *img_size)
        self.encoded_size = tuple(inner.img_size[-2:])
        self.dagger_iters = dagger_iters

    @property
    def mask(self) -> Tensor:
        return self.inner.mask

    @property
    def coil_maps(self) -> Tensor:
        return self.inner.coil_maps

    def A(self, x: Tensor, **kwargs) -> Tensor:
        return self.inner.A(center_pad(x, self.encoded_size), **kwargs)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        return center_crop(self.inner.A_adjoint(y, **kwargs), self.img_size[-2:])

    def zero_filled(self, y: Tensor) -> Tensor:
        """The inner operator's zero-filled image (:func:`zero_filled`) on the reconstruction
        grid (fastMRI's ``complex_center_crop``)."""
        return center_crop(zero_filled(self.inner, y), self.img_size[-2:])

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        from recon.linalg import conjugate_gradient

        if kwargs:
            raise TypeError("build a new operator to change its mask or coil maps")
        return conjugate_gradient(
            lambda v: self.A_adjoint(self.A(v)),
            self.A_adjoint(y),
            n_iter=self.dagger_iters,
            tol=1e-6,
        )


def zero_filled(physics: dinv.physics.LinearPhysics, y: Tensor) -> Tensor:
    """The zero-filled image of ``y`` (B, *x_shape): the operator's own ``zero_filled`` where it
    has one (multi-coil MRI: fastMRI's root-sum-of-squares of the coils' zero-filled images;
    an :class:`Embedded` operator: that, cropped to the reconstruction grid), else the adjoint
    ``A^H y`` (single-coil MRI: the zero-filled inverse FFT; inpainting: the observed pixels,
    zeros elsewhere). fastMRI's baseline: ``run_zero_filled`` in its repository."""
    own = getattr(physics, "zero_filled", None)
    return own(y) if own is not None else physics.A_adjoint(y)


def embed(
    inner: dinv.physics.LinearPhysics, cfg: MRIMaskFields, dagger_iters: int = 30
) -> dinv.physics.LinearPhysics:
    """``inner`` (on the k-space grid) wrapped in :class:`Embedded` when ``cfg`` has an
    ``encoded_size`` larger than its ``img_size``; ``inner`` itself otherwise."""
    if tuple(cfg.kspace_size) == tuple(cfg.img_size):
        return inner
    return Embedded(inner, tuple(cfg.img_size), dagger_iters)


def build(
    cfg: MRIConfig, *, device: torch.device | str = "cpu", mask: Tensor | None = None
) -> dinv.physics.LinearPhysics:
    """Build deepinv's single-coil ``MRI`` operator for (B, 2, H, W) images (embedded in the
    encoded grid when ``cfg.encoded_size`` is set, :class:`Embedded`)."""
    m = resolve_mask(cfg, mask).to(device)
    inner = dinv.physics.MRI(
        mask=m,
        img_size=(2, *cfg.kspace_size),
        noise_model=gaussian_noise(cfg.sigma_y),
        device=device,
    )
    return embed(inner, cfg)
