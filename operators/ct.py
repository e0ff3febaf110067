"""Parallel-beam CT: ``y = R P x + sigma_y n``, ``P`` the Radon transform, ``R`` detector
resampling.

x has shape (B, 1, W, W); y has shape (B, 1, n_detectors, n_angles) (deepinv's layout:
detector cells along dim 2, angles along dim 3). Line integrals are in units of the field of
view: the image is taken to span a unit width, so a pixel has size ``1 / W`` and ``y`` stays
O(1) whatever the resolution (post-log attenuation for an attenuation image in 1/FOV units).

``P`` is deepinv's ``Tomography`` (pure torch, differentiable, CPU/GPU) with ``ceil(sqrt(2) W)``
native detector cells spanning the image diagonal; its adjoint is the exact autograd one.
``R`` linearly interpolates the native detector to ``n_detectors`` cells over the same span
(identity when ``n_detectors`` is None). Angles:

``sparse_view``: ``n_angles`` equispaced in [0, 180) degrees;
``limited_angle``: ``n_angles`` equispaced in [0, ``angle_range``) degrees.

``A_dagger`` is a per-sample CG least-squares solve (``dagger_iters`` iterations);
``fbp(y)`` is filtered back-projection (ramp filter), the classical baseline.
``metric_sqrt(y)`` is the square root of the ramp filter, the data-space preconditioner of the
gradient samplers (:func:`recon.operators.preconditioned`).
"""

from __future__ import annotations

import math
from typing import Literal

import deepinv as dinv
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from recon.linalg import conjugate_gradient

from ._common import OperatorConfigBase, gaussian_noise


class CTConfig(OperatorConfigBase):
    """Config of the parallel-beam CT operator."""

    name: Literal["ct"] = "ct"
    img_size: tuple[int, int] = Field(description="(W, W): square images")
    geometry: Literal["sparse_view", "limited_angle"] = "sparse_view"
    n_angles: int = Field(30, ge=1, description="number of projection angles")
    angle_range: float = Field(
        180.0, gt=0.0, le=180.0, description="limited_angle: angular span in degrees"
    )
    n_detectors: int | None = Field(
        None, ge=2, description="detector cells (native ceil(sqrt(2) W) if None)"
    )
    dagger_iters: int = Field(50, ge=1, description="CG iterations of A_dagger")


def interpolation_matrix(n_out: int, n_in: int) -> Tensor:
    """(n_out, n_in) linear-interpolation matrix between two grids spanning the same interval."""
    pos = (torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5
    pos = pos.clamp(0, n_in - 1)
    lo = pos.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = pos - lo
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[torch.arange(n_out), lo] += 1 - frac
    m[torch.arange(n_out), hi] += frac
    return m


class ParallelBeamCT(dinv.physics.LinearPhysics):
    """Parallel-beam CT with field-of-view units and a configurable detector count."""

    def __init__(
        self,
        width: int,
        angles: Tensor,
        *,
        n_detectors: int | None = None,
        dagger_iters: int = 50,
        device: torch.device | str = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(img_size=(1, width, width), device=device, **kwargs)
        self.tomo = dinv.physics.Tomography(
            angles=angles.to(device),
            img_width=width,
            circle=False,
            normalize=False,
            adjoint_via_backprop=True,
            device=device,
        )
        n_native = math.ceil(math.sqrt(2) * width)
        self.n_native = n_native
        self.n_detectors = n_detectors or n_native
        self.pixel_size = 1.0 / width
        self.dagger_iters = dagger_iters
        r = None if n_detectors is None else interpolation_matrix(n_detectors, n_native)
        self.register_buffer("resample", None if r is None else r.float().to(device))

    def _resample(self, s: Tensor, m: Tensor | None) -> Tensor:
        return s if m is None else torch.einsum("od,bcda->bcoa", m.to(s.dtype), s)

    def A(self, x: Tensor, **kwargs) -> Tensor:
        """Sinogram of shape (B, 1, n_detectors, n_angles)."""
        return self._resample(self.tomo.A(x) * self.pixel_size, self.resample)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        """Exact adjoint (back-projection), shape (B, 1, W, W)."""
        m = None if self.resample is None else self.resample.T
        return self._radon_adjoint(self._resample(y, m)) * self.pixel_size

    def _radon_adjoint(self, s: Tensor) -> Tensor:
        """Exact adjoint of the native Radon transform (back-projection), (B, C, W, W)."""
        w = self.tomo.img_width
        x0 = torch.zeros((s.shape[0], s.shape[1], w, w), dtype=s.dtype, device=s.device)
        # the Radon transform is linear, so its VJP at 0 is its adjoint; torch.func.vjp works
        # inside no_grad and keeps no state (deepinv's cached adjoint is float32-only)
        _, pullback = torch.func.vjp(self.tomo.A, x0)
        return pullback(s)[0]

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        """Least-squares solution by ``dagger_iters`` per-sample CG steps on ``A^T A``."""
        if kwargs:
            raise TypeError("build a new operator to change its settings")
        return conjugate_gradient(
            self.A_adjoint_A, self.A_adjoint(y), n_iter=self.dagger_iters, tol=1e-6
        )

    def metric_sqrt(self, y: Tensor) -> Tensor:
        """``M y``: the square root of the ramp filter ``|f|`` along the detector axis, by a
        zero-padded FFT (at least twice the detector count, so no wrap-around); shape of y.

        ``M`` is self-adjoint and positive semi-definite (a crop of a circulant with a real,
        even, non-negative symbol), and ``A^T M^2`` is a filtered back-projection up to a
        constant (the ramp on this detector grid; no quadrature weight), so ``A^T M^2 A`` has a
        nearly flat spectrum on its range. Per row: no batch-mate enters a row's output.
        """
        n = y.shape[-2]
        n_fft = 2 ** math.ceil(math.log2(2 * n))
        ramp = torch.fft.rfftfreq(n_fft, dtype=y.dtype, device=y.device).sqrt()
        spec = torch.fft.rfft(y, n=n_fft, dim=-2) * ramp[:, None]
        return torch.fft.irfft(spec, n=n_fft, dim=-2)[..., :n, :]

    def fbp(self, y: Tensor) -> Tensor:
        """Filtered back-projection (ramp filter), shape (B, 1, W, W)."""
        s = y / self.pixel_size
        if self.resample is not None:
            s = F.interpolate(
                s.reshape(-1, 1, s.shape[-2], s.shape[-1]),
                size=(self.n_native, s.shape[-1]),
                mode="bilinear",
                align_corners=False,
            ).reshape(y.shape[0], y.shape[1], self.n_native, y.shape[-1])
        # ramp filter, back-projection, and the pi / (2 n_angles) quadrature weight (as
        # deepinv's Tomography.fbp, with the exact adjoint in the sinogram's dtype)
        filtered = self.tomo.iradon.filter(s)
        return self._radon_adjoint(filtered) * math.pi / (2 * s.shape[-1])


def build(cfg: CTConfig, *, device: torch.device | str = "cpu") -> ParallelBeamCT:
    """Build the CT operator for (B, 1, W, W) images."""
    h, w = cfg.img_size
    if h != w:
        raise ValueError(f"CT needs square images, got {h}x{w}")
    span = 180.0 if cfg.geometry == "sparse_view" else cfg.angle_range
    angles = torch.arange(cfg.n_angles, dtype=torch.float32) * (span / cfg.n_angles)
    return ParallelBeamCT(
        w,
        angles,
        n_detectors=cfg.n_detectors,
        dagger_iters=cfg.dagger_iters,
        noise_model=gaussian_noise(cfg.sigma_y),
        device=device,
    )
