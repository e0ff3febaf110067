"""Seeded head-like phantoms: randomised Shepp-Logan-style ellipse sets with texture.

Each phantom, on the square [-1, 1]^2 sampled at ``size x size`` pixel centres:

1. a skull: an ellipse ring (outer semi-axes ~0.69 x 0.92, random +-8 %, rotated by up to
   +-10 degrees) of intensity 1, filled with brain tissue of intensity ~0.3;
2. 3 to 8 inner ellipses (ventricles, lesions) with random centres inside the brain, semi-axes
   0.03-0.25, rotations, and intensity offsets in [-0.25, 0.35];
3. a smooth multiplicative bias field ``1 + 0.15 (a x + b y + c x y)`` and a band-limited
   texture (an 8 x 8 white-noise grid upsampled bicubically, amplitude 0.03) inside the head;
4. clipped to [0, 1].

``shepp_logan(size)`` is the classical modified Shepp-Logan phantom (Toft 1996 intensities),
deterministic, for demos and figures.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=8)
def _grid(size: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    t = (torch.arange(size, dtype=dtype) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(-t, t, indexing="ij")
    return xx, yy


def _ellipse(
    xx: Tensor, yy: Tensor, cx: float, cy: float, a: float, b: float, deg: float
) -> Tensor:
    th = math.radians(deg)
    xr = (xx - cx) * math.cos(th) + (yy - cy) * math.sin(th)
    yr = -(xx - cx) * math.sin(th) + (yy - cy) * math.cos(th)
    return ((xr / a) ** 2 + (yr / b) ** 2 <= 1.0).to(xx.dtype)


# (intensity, a, b, cx, cy, angle) of the modified Shepp-Logan phantom
_SHEPP_LOGAN = [
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
]


def shepp_logan(size: int) -> Tensor:
    """Modified Shepp-Logan phantom, shape (1, size, size), values in [0, 1]."""
    xx, yy = _grid(size)
    img = torch.zeros(size, size)
    for val, a, b, cx, cy, deg in _SHEPP_LOGAN:
        img += val * _ellipse(xx, yy, cx, cy, a, b, deg)
    return img.clamp(0, 1)[None]


def _smooth_noise(size: int, generator: torch.Generator, cells: int = 8) -> Tensor:
    """Band-limited noise: a (cells x cells) white-noise grid upsampled bicubically, unit std."""
    n = torch.randn(1, 1, cells, cells, generator=generator)
    n = F.interpolate(n, size=(size, size), mode="bicubic", align_corners=False)
    return (n / n.std().clamp_min(1e-8))[0, 0]


def random_phantom(size: int, *, generator: torch.Generator) -> Tensor:
    """One random phantom (see module docstring), shape (1, size, size), in [0, 1]."""
    g = generator
    draws = iter(torch.rand(64, generator=g, dtype=torch.float64).tolist())

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * next(draws)

    xx, yy = _grid(size)
    a, b, rot = 0.69 * u(0.92, 1.08), 0.92 * u(0.92, 1.08), u(-10, 10)
    skull = _ellipse(xx, yy, 0, 0, a, b, rot)
    brain = _ellipse(xx, yy, 0, -0.0184, a * 0.96, b * 0.95, rot)
    tissue = u(0.2, 0.4)
    img = skull * 1.0 - brain * (1.0 - tissue)
    for _ in range(3 + int(u(0, 6 - 1e-9))):
        r, phi = u(0, 0.6), u(0, 2 * math.pi)
        cx, cy = r * a * math.cos(phi), r * b * math.sin(phi)
        img += (
            u(-0.25, 0.35)
            * _ellipse(xx, yy, cx, cy, u(0.03, 0.25), u(0.03, 0.25), u(0, 180))
            * brain
        )
    bias = 1 + 0.15 * (u(-1, 1) * xx + u(-1, 1) * yy + u(-1, 1) * xx * yy)
    texture = 0.03 * _smooth_noise(size, g) * skull
    return ((img * bias + texture) * skull).clamp(0, 1)[None]


def random_phantoms(n: int, size: int, *, seed: int) -> Tensor:
    """n phantoms (n, 1, size, size); phantom i depends only on (seed, i)."""
    out = [
        random_phantom(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
        for i in range(n)
    ]
    return torch.stack(out)


@functools.lru_cache(maxsize=4)
def phantom_gaussian_prior(
    size: int = 64,
    *,
    n_train: int = 2000,
    rank: int = 128,
    seed: int = 1,
    complex_valued: bool = False,
):
    """Gaussian prior (PPCA, ``rank`` components) fitted to ``n_train`` random phantoms.

    With ``complex_valued`` the prior is on (2, size, size) images: the phantom model in the
    real channel, the PPCA residual variance as isotropic variance elsewhere (including the
    imaginary channel), for MRI. Cached per process (the same arguments give the same
    object; do not modify it).
    """
    from recon.priors import GaussianPrior

    data = random_phantoms(n_train, size, seed=seed).double()
    real = GaussianPrior.fit(data, rank=rank, eps=1e-5)
    return real.to_complex() if complex_valued else real
