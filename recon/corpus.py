"""A generic training corpus that needs no download: dead leaves, textures and smooth fields,
recon's phantoms, and the photographs scikit-image ships.

Image ``i`` of :func:`generic_images` depends only on ``(seed, i)``: its part is drawn first
(with the probabilities of :data:`PARTS`), then the image from a generator seeded by both.
Every image is (1, size, size) in [0, 1].

No medical image from any package is used: scikit-image's retina, microscopy and
histology images are left out, and :data:`HELD_OUT_PHOTOS` are kept for evaluation (the
real-image development set, :mod:`scripts.make_benchmark_sets`).

References:
    Achddou, Gousseau, Ladjal, "Synthetic images as a regularity prior for image restoration
    neural networks", SSVM 2021 (dead leaves with power-law radii, for training denoisers);
    Lee, Mumford, Huang, "Occlusion models for natural images", IJCV 2001 (the dead-leaves
    model and its r^-3 radius law).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: scikit-image photographs used for training (grey, [0, 1]); none is medical
TRAIN_PHOTOS = (
    "astronaut",
    "brick",
    "cat",
    "clock",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "moon",
    "page",
    "rocket",
    "text",
)
#: scikit-image photographs never trained on: the real-image development set uses them
HELD_OUT_PHOTOS = ("camera", "coffee", "chelsea")


@functools.cache
def photo(name: str) -> Tensor:
    """A scikit-image photograph as a grey (H, W) float32 tensor in [0, 1] (offline)."""
    import skimage.data
    from skimage.color import rgb2gray

    a = getattr(skimage.data, name)()
    if a.ndim == 3:
        a = rgb2gray(a[..., :3])
    a = np.asarray(a, dtype=np.float64)
    if a.max() > 1.0:
        a = a / 255.0
    return torch.from_numpy(a.astype(np.float32))


def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _grid(size: int) -> tuple[Tensor, Tensor]:
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return torch.meshgrid(t, t, indexing="ij")


def dead_leaves(size: int, *, generator: torch.Generator) -> Tensor:
    """Dead leaves: occluding discs with power-law radii ``p(r) ~ r^-3`` on [1.5 px, size/2]
    (Lee et al. 2001; Achddou et al. 2021), each with a random grey level, a linear shading
    and, for some, a fine texture; a mild blur for some images. (1, size, size) in [0, 1]."""
    g = generator
    yy, xx = _grid(size)
    r_min, r_max = 1.5 / size, 0.5
    n = 40 + int(_u(g, 0, 200))
    # inverse-CDF draws of p(r) ~ r^-3 on [r_min, r_max]
    v = torch.rand(n, generator=g, dtype=torch.float64)
    r = (r_min**-2 - v * (r_min**-2 - r_max**-2)) ** -0.5
    cx, cy = torch.rand(n, generator=g), torch.rand(n, generator=g)
    grey = torch.rand(n, generator=g)
    tilt = (torch.rand(n, 2, generator=g) - 0.5) * 0.6
    img = torch.full((size, size), _u(g))
    for k in range(n):  # painted back to front: later discs occlude earlier ones
        d2 = (xx - cx[k]) ** 2 + (yy - cy[k]) ** 2
        inside = d2 <= float(r[k]) ** 2
        shade = grey[k] + tilt[k, 0] * (xx - cx[k]) + tilt[k, 1] * (yy - cy[k])
        img = torch.where(inside, shade, img)
    if _u(g) < 0.3:
        img = img + _u(g, 0.0, 0.08) * _field(size, _u(g, 0.5, 1.5), g)
    if _u(g) < 0.4:
        w = torch.tensor([0.25, 0.5, 0.25])
        w2 = (w[:, None] * w[None, :])[None, None]
        img = F.conv2d(F.pad(img[None, None], (1, 1, 1, 1), mode="replicate"), w2)[0, 0]
    return img.clamp(0, 1)[None]


def _field(size: int, alpha: float, g: torch.Generator) -> Tensor:
    """A Gaussian random field with power spectrum ``1 / f^(2 alpha)``, zero mean, unit std."""
    f = torch.fft.fftfreq(size)
    rad = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).clamp_min(1.0 / size)
    amp = rad ** (-alpha)
    amp[0, 0] = 0.0
    spec = torch.complex(
        torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    )
    field = torch.fft.ifft2(spec * amp).real
    return field / field.std().clamp_min(1e-8)


def texture(size: int, *, generator: torch.Generator) -> Tensor:
    """A texture or smooth field: a ``1/f^alpha`` Gaussian field (alpha in [1, 3], from rough
    texture to smooth shading), sometimes through a sigmoid (blobs with edges) or plus an
    oriented grating. (1, size, size) in [0, 1]."""
    g = generator
    field = _field(size, _u(g, 1.0, 3.0), g)
    kind = _u(g)
    if kind < 0.3:
        field = torch.tanh(_u(g, 1.0, 4.0) * field)
    elif kind < 0.5:
        yy, xx = _grid(size)
        th, freq = _u(g, 0, math.pi), _u(g, 2, size / 4)
        grating = torch.sin(2 * math.pi * freq * (xx * math.cos(th) + yy * math.sin(th)))
        field = field + _u(g, 0.3, 1.0) * grating
    lo, hi = field.min(), field.max()
    field = (field - lo) / (hi - lo).clamp_min(1e-8)
    contrast, mid = _u(g, 0.3, 1.0), _u(g, 0.3, 0.7)
    return (mid + contrast * (field - 0.5)).clamp(0, 1)[None]


def phantom(size: int, *, generator: torch.Generator) -> Tensor:
    """One of recon's random phantoms (:func:`recon.phantoms.random_phantom`)."""
    from recon.phantoms import random_phantom

    return random_phantom(size, generator=generator)


def photo_crop(size: int, *, generator: torch.Generator) -> Tensor:
    """A random crop of a training photograph (:data:`TRAIN_PHOTOS`) at a random scale
    (1/1 to 1/4, area-averaged), flipped and rotated by a random multiple of 90 degrees."""
    g = generator
    img = photo(TRAIN_PHOTOS[int(_u(g) * len(TRAIN_PHOTOS))])
    h, w = img.shape
    scale = min(_u(g, 1.0, 4.0), h / size, w / size)
    side = int(size * scale)
    top, left = int(_u(g) * (h - side + 1)), int(_u(g) * (w - side + 1))
    crop = img[top : top + side, left : left + side][None, None]
    crop = F.interpolate(crop, size=(size, size), mode="area")[0]
    if _u(g) < 0.5:
        crop = crop.flip(-1)
    return torch.rot90(crop, int(_u(g) * 4), dims=(-2, -1)).contiguous().clamp(0, 1)


#: part name -> (probability, draw function, description for the model card)
PARTS: dict[str, tuple[float, Callable[..., Tensor], str]] = {
    "dead_leaves": (
        0.35,
        dead_leaves,
        "procedural dead leaves: occluding shaded discs, radii ~ r^-3 (Achddou et al. 2021)",
    ),
    "textures": (
        0.15,
        texture,
        "procedural 1/f^alpha Gaussian fields (textures to smooth shading), thresholded "
        "blobs and gratings",
    ),
    "phantoms": (0.15, phantom, "recon.phantoms.random_phantom (head-like ellipse phantoms)"),
    "photos": (
        0.35,
        photo_crop,
        "random crops (scale 1 to 1/4) of scikit-image photographs: " + ", ".join(TRAIN_PHOTOS),
    ),
}


def on_dark(size: int, *, generator: torch.Generator) -> Tensor:
    """One to three objects on a dark background, the field of view of every MR and CT slice.

    Each object is an image of another part of :data:`PARTS` (its content) cut out by a
    random smooth star-shaped outline ``r(theta) = R (1 + sum_k a_k cos(k theta + phi_k))``,
    ``k = 2..4``, ``R`` from 0.15 to 0.45 of the side, centred anywhere (it may leave the
    frame), with a one-pixel soft edge; later objects occlude earlier ones. The background is
    exactly 0 half of the time, else a constant level up to 0.03 (the noise floor of a
    magnitude image)."""
    g = generator
    yy, xx = (2 * t - 1 for t in _grid(size))  # [-1, 1], in half-sides
    background = 0.0 if _u(g) < 0.5 else _u(g, 0.0, 0.03)
    img = torch.full((1, size, size), background)
    names = list(PARTS)
    probs = torch.tensor([PARTS[n][0] for n in names], dtype=torch.float64)
    for _ in range(1 + int(_u(g) * 3)):
        content = PARTS[names[int(torch.multinomial(probs, 1, generator=g))]][1](size, generator=g)
        cy, cx, radius = _u(g, -0.3, 0.3), _u(g, -0.3, 0.3), _u(g, 0.3, 0.9)
        theta = torch.atan2(yy - cy, xx - cx)
        r = torch.ones_like(theta)
        for k in (2, 3, 4):
            r = r + _u(g, 0.0, 0.25 / k) * torch.cos(k * theta + _u(g, 0.0, 2 * math.pi))
        dist = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - radius * r
        alpha = (0.5 - dist * size / 2).clamp(0, 1)  # a one-pixel soft edge
        img = img * (1 - alpha) + content * alpha
    return img.clamp(0, 1)


def corpus_notes(
    parts: dict[str, tuple[float, Callable[..., Tensor], str]] | None = None,
) -> list[str]:
    """The corpus (``parts``: :data:`PARTS` by default), one line per part, for model cards."""
    return [f"{name} ({p:.0%}): {desc}" for name, (p, _, desc) in (parts or PARTS).items()]


#: the generic corpus with a quarter of its images objects on a dark background
#: (``generic-dark``): the other parts keep their relative weights
DARK_PARTS: dict[str, tuple[float, Callable[..., Tensor], str]] = {
    **{name: (0.75 * p, fn, desc) for name, (p, fn, desc) in PARTS.items()},
    "on_dark": (
        0.25,
        on_dark,
        "1-3 objects (images of the other parts cut out by random smooth outlines, 15-45 % "
        "of the side) on a dark background (0, or a constant up to 0.03)",
    ),
}


def generic_image(
    size: int,
    index: int,
    *,
    seed: int = 0,
    parts: dict[str, tuple[float, Callable[..., Tensor], str]] | None = None,
) -> Tensor:
    """Image ``index`` of the generic corpus (``parts``: :data:`PARTS` by default, or
    :data:`DARK_PARTS`), (1, size, size) in [0, 1]."""
    parts = parts or PARTS
    g = torch.Generator().manual_seed((seed * 1_000_003 + index) % (1 << 63))
    probs = torch.tensor([p for p, _, _ in parts.values()], dtype=torch.float64)
    part = int(torch.multinomial(probs, 1, generator=g))
    draw = list(parts.values())[part][1]
    return draw(size, generator=g)


def generic_images(
    n: int,
    size: int,
    *,
    seed: int = 0,
    start: int = 0,
    parts: dict[str, tuple[float, Callable[..., Tensor], str]] | None = None,
) -> Tensor:
    """Images ``start .. start + n - 1`` of the generic corpus, (n, 1, size, size) in [0, 1]."""
    return torch.stack([generic_image(size, start + i, seed=seed, parts=parts) for i in range(n)])
