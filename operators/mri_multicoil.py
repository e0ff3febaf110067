"""Multi-coil Cartesian MRI (SENSE model): ``y_c = M F (S_c x) + sigma_y M n_c``.

x has shape (B, 2, H, W) (complex as 2 real channels), y has shape (B, 2, N, H, W) for N coils.
Coil maps ``S`` (complex, (N, H, W) or (B, N, H, W)) come from one of:

``simulated``
    birdcage maps: coil c sits at angle ``2 pi c / N`` on a circle of radius 1.5 (in units of
    the half field of view); its map is ``exp(i phi_c) / r_c`` (``r_c`` the distance to the
    coil, ``phi_c`` the angle seen from it), normalised so ``sum_c |S_c|^2 = 1``.
``estimated``
    from the k-space's own ACS region, batched and on any device (``coil_estimator``):
    ``smooth`` (the default): :func:`smooth_coil_maps`, a smooth non-periodic (cosine-basis)
    fit to the low-resolution coil images that leaves out the band at the field of view's
    edge where their periodic window wraps, cropped as ``lowres``;
    ``lowres``: :func:`estimate_coil_maps`, the central ``num_low`` columns (and the same
    fraction of rows) Hann-windowed and inverse transformed into low-resolution coil images
    ``I_c``; ``S_c = I_c / sqrt(sum_c |I_c|^2)``: the
    sum-of-squares-normalised low-resolution estimator (Pruessmann et al. 1999, "SENSE", Sec.
    "sensitivity assessment"; also the initial estimate of the E2E-VarNet sensitivity
    network), wrong near the edge where the object reaches it;
    ``espirit``: :func:`espirit_maps`.
``given``
    explicit complex maps.

Estimated maps cover the whole field of view (``sum_c |S_c|^2 = 1`` everywhere, the dark
background around the body included), with no crop by default (``crop=0``). Coils are
sensitive in the air around the body too: there the image is 0, and the data say so. A map
zeroed in the background (ESPIRiT's eigenvalue crop, a threshold on the sum-of-squares) makes
every background pixel invisible to ``A``: nothing in the data then constrains it, and a prior
fills it with invented texture (on a real slice at 320 x 320 with 15 coils, a field of view
twice the body's, the default run lost 20 dB to zero filling that way). ``crop > 0`` keeps
that support model available.

``A_dagger`` solves the normal equations ``A^H A x = A^H y`` per sample by conjugate gradient
(recon's batched CG, ``dagger_iters`` iterations), instead of deepinv's solver whose settings
persist on the object.

Reference:
    Pruessmann, Weiger, Scheidegger, Boesiger, "SENSE: Sensitivity encoding for fast MRI",
    MRM 1999.
"""

from __future__ import annotations

import math
from typing import Literal

import deepinv as dinv
import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from recon.errors import UserError
from recon.linalg import conjugate_gradient

from ._common import gaussian_noise
from .masks import num_low_frequencies
from .mri import MRIMaskFields, center_pad, embed, ifft2c, resolve_mask

#: names of the coil-map estimators (:data:`COIL_ESTIMATORS`)
CoilEstimator = Literal["lowres", "smooth", "espirit"]
COIL_ESTIMATOR_HELP = (
    "how coil maps are estimated from the ACS: smooth (a smooth non-periodic fit to the "
    "low-resolution coil images, right up to the field of view's edge), lowres (windowed "
    "low-resolution images over their root-sum-of-squares) or espirit (Uecker et al. 2014, "
    "through sigpy's EspiritCalib)"
)


class MultiCoilMRIConfig(MRIMaskFields):
    """Config of the multi-coil MRI operator."""

    name: Literal["mri_multicoil"] = "mri_multicoil"
    coil_maps: Literal["simulated", "estimated", "given"] = "simulated"
    coil_estimator: CoilEstimator = Field("smooth", description=COIL_ESTIMATOR_HELP)
    n_coils: int = Field(8, ge=1, description="number of coils for simulated maps")
    dagger_iters: int = Field(30, ge=1, description="CG iterations of A_dagger")


def birdcage_maps(n_coils: int, shape: tuple[int, int], *, radius: float = 1.5) -> Tensor:
    """Simulated birdcage coil maps, complex64 of shape (n_coils, H, W), ``sum |S|^2 = 1``."""
    h, w = shape
    c = torch.arange(n_coils, dtype=torch.float64)[:, None, None]
    y = torch.arange(h, dtype=torch.float64)[None, :, None]
    x = torch.arange(w, dtype=torch.float64)[None, None, :]
    angle = 2 * math.pi * c / n_coils
    x_co = (x - w / 2.0) / (w / 2.0) - radius * torch.cos(angle)
    y_co = (y - h / 2.0) / (h / 2.0) - radius * torch.sin(angle)
    rr = torch.sqrt(x_co**2 + y_co**2)
    phi = torch.atan2(x_co, -y_co) - angle
    maps = torch.polar(1.0 / rr, phi)
    rss = torch.sqrt((maps.abs() ** 2).sum(dim=0, keepdim=True))
    return (maps / rss).to(torch.complex64)


def _acs_rows(h: int, w: int, num_low: int) -> int:
    """Rows of the ACS block: the same fraction of ``h`` as ``num_low`` is of ``w``."""
    return max(round(h * num_low / w), 1)


def _acs_images(kspace: Tensor, num_low: int) -> Tensor:
    """Hann-windowed low-resolution coil images from the ACS region, complex (B, N, H, W):
    the central ``num_low`` columns and the same fraction of rows."""
    if not kspace.is_complex():
        kspace = torch.complex(kspace[:, 0], kspace[:, 1])
    h, w = kspace.shape[-2:]
    nrow = _acs_rows(h, w, num_low)
    win_w = torch.hann_window(num_low + 2, periodic=False, dtype=torch.float64)[1:-1]
    win_h = torch.hann_window(nrow + 2, periodic=False, dtype=torch.float64)[1:-1]
    window = torch.zeros(h, w, dtype=torch.float64, device=kspace.device)
    c0 = (w - num_low + 1) // 2
    r0 = (h - nrow + 1) // 2
    window[r0 : r0 + nrow, c0 : c0 + num_low] = (win_h[:, None] * win_w[None, :]).to(kspace.device)
    return ifft2c(kspace * window.to(kspace.real.dtype))


#: maps are zeroed where the low-resolution root-sum-of-squares is below this fraction of its
#: maximum (a support constraint for SENSE); 0: no crop, the maps cover the field of view
#: (module docstring: a cropped background is unobserved, and a prior invents it)
MAP_CROP = 0.0


def _crop(maps: Tensor, rss: Tensor, crop: float) -> Tensor:
    """``maps`` (B, N, H, W) zeroed where ``rss`` (B, 1, H, W) is below ``crop`` of its peak."""
    peak = rss.flatten(1).amax(1).reshape(-1, 1, 1, 1)
    return torch.where(rss >= crop * peak, maps, torch.zeros_like(maps))


def estimate_coil_maps(
    kspace: Tensor, num_low: int, *, eps: float = 1e-6, crop: float = MAP_CROP
) -> Tensor:
    """Sum-of-squares-normalised low-resolution coil maps from the ACS region (batched).

    Args:
        kspace: complex multi-coil k-space, shape (B, N, H, W) (centred), or the 2-channel
            real form (B, 2, N, H, W).
        num_low: number of central (ACS) columns; the same fraction of rows is used.
        eps: floor of the sum-of-squares, relative to its maximum per sample.
        crop: maps are set to 0 where the low-resolution sum-of-squares is below ``crop``
            times its maximum (0, the default: nowhere; module docstring).

    Returns:
        Complex maps of shape (B, N, H, W), ``sum_c |S_c|^2 = 1`` where the sum-of-squares is
        above ``eps`` of its maximum (everywhere in a measured field of view).
    """
    imgs = _acs_images(kspace, num_low)
    b = imgs.shape[0]
    rss = torch.sqrt((imgs.abs() ** 2).sum(dim=1, keepdim=True))
    peak = rss.reshape(b, -1).amax(dim=1).reshape(b, 1, 1, 1)
    maps = imgs / torch.maximum(rss, eps * peak)
    return _crop(maps, rss, crop)


#: cosine functions per axis of :func:`smooth_coil_maps` (at most ``num_low``)
SMOOTH_BASIS = 8
#: band of :func:`smooth_coil_maps` left out of the fit, in units of ``W / (num_low + 1)``
SMOOTH_BORDER = 1.5


def _cosines(n: int, k: int, device: torch.device) -> Tensor:
    """The first ``k`` DCT-II functions on ``n`` points, float64 (k, n)."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    return torch.stack([torch.cos(math.pi * f * (i + 0.5) / n) for f in range(k)])


def smooth_coil_maps(
    kspace: Tensor,
    num_low: int,
    *,
    n_basis: int = SMOOTH_BASIS,
    border: float = SMOOTH_BORDER,
    crop: float = MAP_CROP,
) -> Tensor:
    """Coil maps fitted as smooth non-periodic functions to the low-resolution coil images.

    The low-resolution images ``I_c`` of :func:`estimate_coil_maps` are periodic: near the
    field of view's edges the window's point-spread function wraps around and mixes in the
    other edge, where the coils see the object differently. Wherever the object reaches the
    edge (photographs, tight fields of view) the ratio ``I_c / rss`` is wrong there. Here each
    map is ``S_c = sum_kl a_ckl cos_k(y) cos_l(x)`` (``n_basis`` DCT-II functions per axis,
    non-periodic), fitted by weighted least squares ``min sum w |S_c rss - I_c|^2`` with the
    weight ``w = rss`` inside the field of view and 0 in a band of ``border`` low-resolution
    pixels at each edge (a low-resolution pixel is ``H / (n_rows + 1)`` pixels down and
    ``W / (num_low + 1)`` across, ``n_rows`` the ACS rows), where the wrap acts; the fit
    extends the maps over that band and over the background, where ``w`` is small. Then
    ``sum_c |S_c|^2 = 1`` everywhere (with ``crop > 0``, zeroed where the low-resolution
    sum-of-squares is below ``crop`` of its maximum, as :func:`estimate_coil_maps`).
    A smooth parametric coil-sensitivity model, as JSENSE's polynomial one (Ying and Sheng,
    "Joint image reconstruction and sensitivity estimation in SENSE", MRM 2007), fitted once
    to the ACS images instead of alternated with the image.
    ``n_basis`` and ``border`` were chosen on tuning images only (crops of the generic
    corpus's training photographs and phantoms of another seed, simulated with 8 birdcage
    coils at x4; figures in ``benchmarks/README.md``, "Coil-map estimators").

    Args:
        kspace: complex multi-coil k-space (B, N, H, W), centred, or its 2-channel real form.
        num_low: ACS width (columns); the same fraction of rows is used.
        n_basis: cosine functions per axis (at most ``num_low``).
        border: width of the left-out band, in low-resolution pixels.
        crop: the background threshold (fraction of the peak sum-of-squares); 0: none.

    Returns:
        Complex maps (B, N, H, W), ``sum_c |S_c|^2 = 1`` where not cropped (everywhere by
        default).
    """
    imgs = _acs_images(kspace, num_low)  # the data's precision; the small solve in float64
    h, w = imgs.shape[-2:]
    nrow = _acs_rows(h, w, num_low)
    k = max(1, min(n_basis, num_low))
    bh, bw = _cosines(h, k, imgs.device), _cosines(w, k, imgs.device)
    rss = imgs.abs().pow(2).sum(1).sqrt()  # (B, H, W)
    weight = rss.clone()
    by = min(round(border * h / (nrow + 1)), (h - 1) // 2)
    bx = min(round(border * w / (num_low + 1)), (w - 1) // 2)
    if by:
        weight[:, :by] = 0
        weight[:, -by:] = 0
    if bx:
        weight[:, :, :bx] = 0
        weight[:, :, -bx:] = 0
    # an object only in the band (tiny grids): fit it all
    weight = torch.where(weight.flatten(1).sum(1)[:, None, None] > 0, weight, rss)
    # normal equations of the separable basis: G[kl, pq] = sum w rss^2 bh_k bh_p bw_l bw_q
    rows = torch.einsum("kh,ph,bhw->bkpw", bh, bh, (weight * rss.pow(2)).double())
    gram = torch.einsum("bkpw,lw,qw->bklpq", rows, bw, bw).reshape(-1, k * k, k * k)
    bh_c, bw_c = bh.to(imgs.dtype), bw.to(imgs.dtype)
    proj = torch.einsum("kh,bchw->bckw", bh_c, imgs * (weight * rss)[:, None])
    rhs = torch.einsum("bckw,lw->bklc", proj, bw_c).reshape(len(imgs), k * k, -1)
    ridge = 1e-9 * gram.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] + 1e-300
    eye = torch.eye(k * k, dtype=torch.float64, device=imgs.device)
    coef = torch.linalg.solve((gram + ridge * eye).to(torch.complex128), rhs.to(torch.complex128))
    coef = coef.reshape(len(imgs), k, k, -1).to(imgs.dtype)  # (B, k, k, N)
    maps = torch.einsum("kh,lw,bklc->bchw", bh_c, bw_c, coef)
    norm = maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    return _crop(maps / norm.clamp_min(torch.finfo(norm.dtype).tiny), rss[:, None], crop)


#: an ESPIRiT eigenvalue above this marks a calibrated pixel (sigpy's default crop); an ACS
#: with no such pixel is too narrow to calibrate
ESPIRIT_CALIBRATED = 0.95


def espirit_maps(
    kspace: Tensor,
    num_low: int,
    *,
    threshold: float = 0.02,
    kernel_width: int = 6,
    crop: float = MAP_CROP,
) -> Tensor:
    """ESPIRiT coil maps (Uecker et al., "ESPIRiT - an eigenvalue approach to autocalibrating
    parallel MRI", MRM 2014) from the central ``num_low`` x ``num_low`` calibration region,
    through sigpy's ``EspiritCalib`` (the implementation deepinv's ``estimate_coil_maps``
    uses), one sample at a time on the CPU.

    Args:
        kspace: complex multi-coil k-space (B, N, H, W), centred, or its 2-channel real form.
        num_low: ACS width (columns), the calibration region's side.
        threshold, kernel_width, crop: sigpy's ``thresh``, ``kernel_width`` (made narrower
            than a smaller ACS) and ``crop``, which zeroes the maps where the eigenvalue is
            below it: 0 here (sigpy's default 0.95 crops the background; module docstring).

    Returns:
        Complex maps (B, N, H, W) on ``kspace``'s device, in the phase gauge of
        :func:`estimate_coil_maps` (the coil-combined image is real where the object is).
    """
    try:
        from sigpy.mri.app import EspiritCalib
    except ImportError:  # a declared dependency; missing only in a broken install
        raise ImportError("coil_estimator='espirit' needs sigpy (pip install sigpy)") from None
    if not kspace.is_complex():
        kspace = torch.complex(kspace[:, 0], kspace[:, 1])
    arr = kspace.detach().cpu().to(torch.complex64).numpy()
    # the calibration region is the ACS block; a kernel narrower than it (small ACS: smaller)
    kernel = max(1, min(kernel_width, int(num_low) - 1))
    calib = [
        EspiritCalib(
            k,
            calib_width=int(num_low),
            thresh=threshold,
            kernel_width=kernel,
            crop=crop,
            output_eigenvalue=True,
            show_pbar=False,
        ).run()
        for k in arr
    ]
    maps_t = torch.from_numpy(np.stack([m for m, _ in calib])).to(kspace.device)
    eig = torch.from_numpy(np.stack([e for _, e in calib]))
    calibrated = eig.gt(ESPIRIT_CALIBRATED).flatten(1).float().mean(1)  # (B,)
    if bool((calibrated < 0.01).any()):
        raise UserError(
            f"ESPIRiT found no eigenvalue above {ESPIRIT_CALIBRATED} from a {int(num_low)}-line "
            "ACS (too narrow to calibrate; ~24 lines are typical); use coil_estimator smooth"
        )
    # ESPIRiT fixes each pixel's eigenvector only up to a phase; take the phase of the
    # low-resolution maps, so the coil-combined image is real and nonnegative on the object
    # (as the low-resolution maps make it, and as priors trained on magnitude images expect)
    phase = torch.sgn((estimate_coil_maps(kspace, num_low).conj() * maps_t).sum(1, keepdim=True))
    return maps_t * phase.conj()


#: coil-map estimators by name (``coil_estimator``): (k-space (B, N, H, W), ACS width) -> maps
COIL_ESTIMATORS = {
    "lowres": estimate_coil_maps,
    "smooth": smooth_coil_maps,
    "espirit": espirit_maps,
}


class MultiCoilMRI(dinv.physics.MultiCoilMRI):
    """deepinv ``MultiCoilMRI`` whose ``A_dagger`` is a per-sample CG least-squares solve."""

    def __init__(self, *args, dagger_iters: int = 30, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dagger_iters = dagger_iters

    def zero_filled(self, y: Tensor) -> Tensor:
        """fastMRI's zero-filled baseline: the root-sum-of-squares of the coils' zero-filled
        inverse FFTs, ``sqrt(sum_c |F^-1 M y_c|^2)``, as (B, 2, H, W) with the imaginary
        channel 0 (a magnitude image; no coil maps enter)."""
        m = self.mask[:, :1] if self.mask.ndim == 4 else self.mask  # (B | 1, 1, H, W)
        k = torch.complex(y[:, 0], y[:, 1]) * m
        rss = ifft2c(k).abs().pow(2).sum(1).sqrt()
        return torch.stack([rss, torch.zeros_like(rss)], dim=1).to(y.dtype)

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        """Least-squares solution of ``A x = y`` by ``dagger_iters`` CG steps, shape (B,2,H,W)."""
        if kwargs:
            raise TypeError("build a new operator to change its mask or coil maps")
        return conjugate_gradient(
            self.A_adjoint_A, self.A_adjoint(y), n_iter=self.dagger_iters, tol=1e-6
        )


def build(
    cfg: MultiCoilMRIConfig,
    *,
    device: torch.device | str = "cpu",
    mask: Tensor | None = None,
    coil_maps: Tensor | None = None,
    kspace: Tensor | None = None,
) -> dinv.physics.LinearPhysics:
    """Build the multi-coil operator.

    Args:
        cfg: the operator config.
        device: target device.
        mask: the mask for ``mask='given'``.
        coil_maps: complex maps (N, H, W) or (B, N, H, W) for ``coil_maps='given'``.
        kspace: the measured multi-coil k-space for ``coil_maps='estimated'``.
    """
    h, w = cfg.kspace_size
    m = resolve_mask(cfg, mask)
    if cfg.coil_maps == "simulated":
        maps = birdcage_maps(cfg.n_coils, (h, w))
    elif cfg.coil_maps == "given":
        if coil_maps is None:
            raise ValueError("coil_maps='given' needs the coil_maps tensor")
        maps = torch.as_tensor(coil_maps)
        if not maps.is_complex():
            raise ValueError("coil maps must be a complex tensor of shape (N, H, W)")
    else:
        if kspace is None:
            raise ValueError("coil_maps='estimated' needs the measured k-space")
        estimate = COIL_ESTIMATORS[cfg.coil_estimator]
        maps = estimate(kspace.to(device), num_low_frequencies(w, cfg.center_fraction))
    if maps.shape[-2:] == tuple(cfg.img_size) and (h, w) != tuple(cfg.img_size):
        maps = center_pad(maps, (h, w))  # maps on the reconstruction grid: zero outside it
    if maps.shape[-2:] != (h, w):
        raise ValueError(f"coil maps of shape {tuple(maps.shape)} do not match k-space {h}x{w}")
    inner = MultiCoilMRI(
        mask=m.to(device),
        coil_maps=maps.to(device=device, dtype=torch.complex64),
        img_size=(2, h, w),
        noise_model=gaussian_noise(cfg.sigma_y),
        device=device,
        dagger_iters=cfg.dagger_iters,
    )
    return embed(inner, cfg, cfg.dagger_iters)
