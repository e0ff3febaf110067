"""Priors of any image size from patch priors: an exact Gaussian mixture on p x p patches
(EPLL) and a patch diffusion network, both denoising whole images by assembling patches.

**Patch mixture** (Zoran and Weiss, "From learning models of natural image patches to whole
image restoration", ICCV 2011). Patches ``z`` (d = C p^2 values) follow
``sum_k w_k N(mu_k, Sigma_k)`` with full covariances kept as eigendecompositions
``Sigma_k = V_k diag(lam_k) V_k^T``. For a noisy patch ``z + sigma n`` the exact patch MMSE is

    ``E[z | y] = y - sigma^2 sum_k r_k(y) V_k diag(1 / (lam_k + sigma^2)) V_k^T (y - mu_k)``,

with ``r_k`` the responsibilities under ``N(mu_k, Sigma_k + sigma^2 I)``. The whole-image
denoiser takes every overlapping patch (stride ``stride``; the image is reflect-padded by
``p - 1`` so every pixel lies in the same number of patches), denoises each exactly and
averages the estimates of each pixel (EPLL's patch averaging at a fixed noise level, as in
its first half-quadratic step). It serves any size and is not an exact whole-image prior: a
sampler that needs an exact prior (``exact``) refuses it.

**Patch diffusion network** (Wang et al., "Patch Diffusion: Faster and More Data-Efficient
Training of Diffusion Models", NeurIPS 2023; Hu et al., "Learning Image Priors through
Patch-based Diffusion Models for Solving Inverse Problems" (PaDIS), NeurIPS 2024). The UNet
sees a patch and two extra channels holding each pixel's coordinates in the whole image,
normalised to [-1, 1]; it is trained on random crops of random sizes. A whole image is
denoised by overlapping tiles of the training patch size, blended with a separable
``sin^2`` window (the deterministic counterpart of PaDIS's randomly shifted tilings).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .adapters import EDMDenoiser
from .base import as_sigma, fixed_calls
from .covariance import LOG2PI


def _pad(x: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
    """Reflect padding where the image is large enough for it, replicate otherwise."""
    h, w = x.shape[-2:]
    mode = "reflect" if max(pads[0], pads[1]) < w and max(pads[2], pads[3]) < h else "replicate"
    return F.pad(x, pads, mode=mode)


def assemble_patches(
    x: Tensor, sigma: Tensor, denoise, *, patch: int, stride: int, max_patches: int = 4096
) -> Tensor:
    """Denoise every ``patch`` x ``patch`` patch of ``x`` (B, C, H, W) at stride ``stride``
    with ``denoise(patches (N, C * patch^2), sigma (N,)) -> (N, C * patch^2)`` and average the
    estimates of each pixel. The image is reflect-padded by ``patch - 1`` (plus what makes the
    last stride fit), so every pixel lies in ``(patch / stride)^2`` patches when ``stride``
    divides ``patch``. At most ``max_patches`` patches are denoised at a time."""
    b, c, h, w = x.shape
    p, s = patch, stride
    pad_b = p - 1 + (-(h + p - 1 - p) % s)
    pad_r = p - 1 + (-(w + p - 1 - p) % s)
    xp = _pad(x, (p - 1, pad_r, p - 1, pad_b))
    hp, wp = xp.shape[-2:]
    cols = F.unfold(xp, p, stride=s)  # (B, C p^2, L)
    n_per = cols.shape[-1]
    flat = cols.transpose(1, 2).reshape(b * n_per, c * p * p)
    sig = as_sigma(sigma, x).repeat_interleave(n_per)
    out = torch.empty_like(flat)
    for lo in range(0, flat.shape[0], max_patches):
        out[lo : lo + max_patches] = denoise(
            flat[lo : lo + max_patches], sig[lo : lo + max_patches]
        )
    folded = F.fold(out.reshape(b, n_per, -1).transpose(1, 2), (hp, wp), p, stride=s)
    count = F.fold(torch.ones_like(cols[:1]), (hp, wp), p, stride=s)
    return (folded / count)[..., p - 1 : p - 1 + h, p - 1 : p - 1 + w]


class PatchMixturePrior:
    """An exact Gaussian mixture on patches, denoising images of any size by patch averaging
    (module docstring).

    Args:
        weights: (K,) mixture weights (normalised here).
        means: (K, d) component means, d = channels * patch^2, patches flattened (C, p, p).
        covs: (K, d, d) covariances (symmetrised, eigenvalues floored at ``eps``).
        patch: patch side p.
        channels: image channels C.
        stride: patch stride of the whole-image denoiser (1: every patch; must divide p).
        eps: eigenvalue floor (data units squared).
    """

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        covs: Tensor,
        *,
        patch: int,
        channels: int = 1,
        stride: int = 1,
        eps: float = 1e-6,
    ) -> None:
        d = channels * patch * patch
        means = torch.as_tensor(means, dtype=torch.float64).reshape(-1, d)
        k = means.shape[0]
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}), got {tuple(covs.shape)}")
        if patch % stride:
            raise ValueError(f"stride {stride} must divide the patch size {patch}")
        w = torch.as_tensor(weights, dtype=torch.float64)
        self.log_weights = torch.log(w / w.sum())
        self.means = means
        lam, v = torch.linalg.eigh(0.5 * (covs + covs.transpose(1, 2)))
        self.lam, self.V = lam.clamp_min(eps), v
        self.patch, self.channels, self.stride, self.dim = patch, channels, stride, d

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def covs(self) -> Tensor:
        """(K, d, d) covariances."""
        return (self.V * self.lam[:, None, :]) @ self.V.transpose(1, 2)

    @property
    def data_std(self) -> float:
        """The pixel std of the mixture (data units), ``sqrt(E||z - E z||^2 / d)``."""
        w = self.log_weights.exp()
        center = (w[:, None] * self.means).sum(0)
        within = self.lam.sum(1) / self.dim
        between = ((self.means - center) ** 2).mean(1)
        return float((w * (within + between)).sum().sqrt())

    def to(self, device: torch.device | str) -> PatchMixturePrior:
        for name in ("log_weights", "means", "lam", "V"):
            setattr(self, name, getattr(self, name).to(device))
        self.__dict__.pop("_cast", None)
        return self

    def _params(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        cache = self.__dict__.setdefault("_cast", {})
        if dtype not in cache:
            v = self.V.to(dtype)
            mv = torch.einsum("kd,kde->ke", self.means, self.V).to(dtype)  # mu_k in V_k's basis
            cache[dtype] = (self.log_weights.to(dtype), v, mv, self.lam.to(dtype))
        return cache[dtype]

    def _terms(self, z: Tensor, s2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For patches z (N, d) with noise variances s2 (N,): ``V_k^T (z - mu_k)`` (K, N, d),
        ``1 / (lam_k + s2)`` (K, N, d) and the log joint ``log w_k N(z; mu_k, Sigma_k + s2)``
        (K, N)."""
        logw, v, mv, lam = self._params(z.dtype)
        proj = torch.einsum("nd,kde->kne", z, v) - mv[:, None, :]
        inv = 1.0 / (lam[:, None, :] + s2[None, :, None])
        quad = (proj**2 * inv).sum(-1)
        logdet = -torch.log(inv).sum(-1)
        return proj, inv, logw[:, None] - 0.5 * (quad + logdet + self.dim * LOG2PI)

    def _posterior(self, z: Tensor, s2: Tensor) -> Tensor:
        """``sum_k r_k (Sigma_k + s2)^-1 (z - mu_k)`` (N, d): minus the noised patch score."""
        proj, inv, log_joint = self._terms(z, s2)
        r = torch.softmax(log_joint, dim=0)
        return torch.einsum("kne,kde->nd", r[..., None] * proj * inv, self._params(z.dtype)[1])

    def denoise_patches(self, z: Tensor, sigma: Tensor) -> Tensor:
        """Exact patch MMSE ``E[z0 | z0 + sigma n = z]``; z (N, d), sigma (N,)."""
        s2 = as_sigma(sigma, z) ** 2
        return z - s2[:, None] * self._posterior(z, s2)

    def log_prob(self, z: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """``log p_sigma(z)`` per patch, (N,), for patches z (N, d)."""
        s2 = as_sigma(sigma, z) ** 2
        return torch.logsumexp(self._terms(z, s2)[2], dim=0)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Patch-averaged MMSE of x (B, C, H, W) at noise sigma (B,) (data units); any H, W.
        Computed in float32 (float64 for float64 inputs)."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"patch prior: expects (B, {self.channels}, H, W) images, got {tuple(x.shape)}"
            )
        work = x if x.dtype == torch.float64 else x.float()
        out = assemble_patches(
            work,
            as_sigma(sigma, work),
            self.denoise_patches,
            patch=self.patch,
            stride=self.stride,
        )
        return out.to(x.dtype)

    def sample_patches(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n exact patch draws, (n, C, p, p), float64."""
        comp = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        out = self.means[comp] + torch.einsum(
            "nd,nde->ne", z * self.lam[comp].sqrt(), self.V[comp].transpose(1, 2)
        )
        return out.reshape(n, self.channels, self.patch, self.patch)

    # -- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        patches: Tensor,
        n_components: int,
        *,
        n_iter: int = 30,
        eps: float = 1e-6,
        stride: int = 1,
        generator: torch.Generator | None = None,
        return_history: bool = False,
        log: Any = None,
        separate_dc: bool = False,
    ) -> PatchMixturePrior | tuple[PatchMixturePrior, list[float]]:
        """EM fit (float64) of a full-covariance mixture to patches (N, C, p, p).

        k-means++ seeds the means (:func:`recon.priors.kmeans_pp`); each M-step is the exact
        maximiser given the responsibilities (weighted means and covariances, eigenvalues
        floored at ``eps``), so the mean log-likelihood (``return_history``) never decreases
        beyond the floor's effect.

        With ``separate_dc`` (EPLL's choice, Zoran and Weiss 2011) the mixture is fitted to
        the patches minus their mean (DC), and the DC gets one Gaussian ``N(m, v)`` (its sample
        mean and variance) shared by every component, independent of the rest: each
        component's mean gains ``m 1`` and its covariance ``v 1 1^T``, so every component
        serves every brightness and the components are spent on structure.
        """
        from .fitting import kmeans_pp

        n, c, p, _ = patches.shape
        z = patches.reshape(n, -1).double()
        d = z.shape[1]
        dc_mean, dc_var = 0.0, 0.0
        if separate_dc:
            dc = z.mean(1, keepdim=True)
            dc_mean, dc_var = float(dc.mean()), float(dc.var())
            z = z - dc
        centres = kmeans_pp(z, n_components, generator=generator)
        scale = float(z.var(dim=0).sum()) / d
        resp = torch.softmax(-(torch.cdist(z, centres) ** 2) / (2 * scale), dim=1).T  # (K, N)
        history: list[float] = []
        model = None
        zeros = torch.zeros(n, dtype=torch.float64)
        for it in range(n_iter + 1):
            nk = resp.sum(1) + 1e-10
            means = (resp @ z) / nk[:, None]
            covs = torch.stack(
                [
                    ((z - means[k]) * resp[k, :, None]).T @ (z - means[k]) / nk[k]
                    for k in range(len(nk))
                ]
            )
            covs = covs + eps * torch.eye(d, dtype=torch.float64)
            model = cls(nk / n, means, covs, patch=p, channels=c, stride=stride, eps=eps)
            if it == n_iter:
                break
            log_joint = torch.cat(
                [model._terms(z[i : i + 8192], zeros[i : i + 8192])[2] for i in range(0, n, 8192)],
                dim=1,
            )
            history.append(float(torch.logsumexp(log_joint, dim=0).mean()))
            resp = torch.softmax(log_joint, dim=0)
            if log is not None:
                log(f"EM iteration {it}: mean log-likelihood {history[-1]:.4f}")
        assert model is not None
        if separate_dc:
            ones = torch.ones(d, dtype=torch.float64)
            covs = model.covs + dc_var * torch.outer(ones, ones)
            model = cls(nk / n, means + dc_mean, covs, patch=p, channels=c, stride=stride, eps=eps)
        return (model, history) if return_history else model

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | Path, **info: Any) -> Path:
        """Write to ``.safetensors`` (tensors + JSON metadata; ``info`` goes into it)."""
        from safetensors.torch import save_file

        meta = {
            "recon_prior": "patch-mixture",
            "patch": str(self.patch),
            "channels": str(self.channels),
            "stride": str(self.stride),
            "info": json.dumps(info),
        }
        tensors = {
            "log_weights": self.log_weights,
            "means": self.means,
            "V": self.V,
            "lam": self.lam,
        }
        save_file({k: t.contiguous().cpu() for k, t in tensors.items()}, str(path), metadata=meta)
        return Path(path)

    @classmethod
    def from_file(
        cls, tensors: dict[str, Tensor], meta: dict[str, str], *, stride: int | None = None
    ) -> PatchMixturePrior:
        """From the tensors and metadata :meth:`save` wrote."""
        obj = cls.__new__(cls)
        obj.log_weights = tensors["log_weights"].double()
        obj.means = tensors["means"].double()
        obj.V, obj.lam = tensors["V"].double(), tensors["lam"].double()
        obj.patch, obj.channels = int(meta["patch"]), int(meta["channels"])
        obj.stride = int(meta["stride"]) if stride is None else int(stride)
        obj.dim = obj.means.shape[1]
        return obj


def extract_patches(
    images: Tensor, n: int, patch: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """n patches (n, C, p, p) at uniformly random positions of random images (N, C, H, W)."""
    b, _c, h, w = images.shape
    idx = torch.randint(0, b, (n,), generator=generator)
    top = torch.randint(0, h - patch + 1, (n,), generator=generator)
    left = torch.randint(0, w - patch + 1, (n,), generator=generator)
    rows = (top[:, None] + torch.arange(patch))[:, :, None]
    cols = (left[:, None] + torch.arange(patch))[:, None, :]
    return images[idx[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------------
# patch diffusion networks


def pixel_coords(
    top: Tensor, left: Tensor, size: int, height: int, width: int, *, dtype=torch.float32
) -> Tensor:
    """Coordinate channels (N, 2, size, size): each pixel's row and column in the whole
    (height x width) image, normalised to [-1, 1] (Wang et al. 2023), for patches whose top
    left corners are ``top``, ``left`` (N,) (pixels, may be negative in padding)."""
    ar = torch.arange(size, dtype=dtype, device=top.device)
    rows = (top[:, None].to(dtype) + ar) * (2.0 / max(height - 1, 1)) - 1.0
    cols = (left[:, None].to(dtype) + ar) * (2.0 / max(width - 1, 1)) - 1.0
    n = top.shape[0]
    return torch.stack(
        [rows[:, :, None].expand(n, size, size), cols[:, None, :].expand(n, size, size)], 1
    )


def _with_coords(net: torch.nn.Module, coords: Tensor, x_in: Tensor, c_noise: Tensor) -> Tensor:
    return net(torch.cat([x_in, coords.to(x_in.dtype)], dim=1), c_noise)


def coord_denoiser(
    net: torch.nn.Module,
    coords: Tensor,
    sigma_data: float = 0.5,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> EDMDenoiser:
    """The EDM denoiser of patches whose coordinate channels are ``coords`` (N, 2, t, t): the
    preconditioning scales the image channels only. It makes one network call of all N
    (the caller fixes the call's shape)."""
    net_fn = functools.partial(_with_coords, net, coords)
    return EDMDenoiser(net_fn, sigma_data, data_range, call_rows=0)


def _starts(n: int, tile: int, stride: int) -> list[int]:
    """Tile starts covering [0, n): 0, stride, ..., and a last one ending at n."""
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile + 1, stride))
    if starts[-1] != n - tile:
        starts.append(n - tile)
    return starts


def _window(tile: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    t = (torch.arange(tile, dtype=dtype, device=device) + 0.5) / tile
    w = torch.sin(math.pi * t) ** 2 + 1e-3
    return w[:, None] * w[None, :]


class PatchNetworkDenoiser:
    """A patch diffusion network as a denoiser of any image size (module docstring).

    Args:
        net: a :class:`recon.priors.UNet` with ``coord_channels = 2`` (input: the C image
            channels, then row and column coordinates), EDM-preconditioned.
        sigma_data: the data std of training (network units).
        tile: the tile side (the largest training patch size; a multiple of the UNet's
            downsampling factor).
        stride: tile stride (tiles overlap by ``tile - stride``).
        data_range: the network's data range.
        max_tiles: about the most tiles per network call (:func:`tile_rows`).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        *,
        sigma_data: float = 0.5,
        tile: int = 64,
        stride: int | None = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        max_tiles: int = 16,
    ) -> None:
        self.net = net
        self.sigma_data, self.data_range = float(sigma_data), data_range
        self.tile = int(tile)
        self.stride = int(stride) if stride is not None else self.tile // 2
        self.max_tiles = int(max_tiles)

    @property
    def data_std(self) -> float:
        return self.sigma_data / (self.data_range[1] - self.data_range[0])

    def denoise_tiles(self, tiles: Tensor, sigma: Tensor, coords: Tensor) -> Tensor:
        """Denoise tiles (N, C, t, t) at sigma (N,) with their coordinate channels, in one
        network call."""
        den = coord_denoiser(self.net, coords, self.sigma_data, self.data_range)
        return den(tiles, sigma)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``E[x0 | x]`` assembled from overlapping tiles; x (B, C, H, W) of any size. The
        tiles go through the network in calls of :func:`tile_rows` tiles, a number fixed by
        the image size, so a row's result never depends on its batch-mates."""
        b, _c, h, w = x.shape
        t = self.tile
        s = as_sigma(sigma, x)
        ph, pw = max(t - h, 0), max(t - w, 0)
        xp = _pad(x, (0, pw, 0, ph)) if ph or pw else x
        hp, wp = xp.shape[-2:]
        ys, xs = _starts(hp, t, self.stride), _starts(wp, t, self.stride)
        pos = [(i, j) for i in ys for j in xs]
        win = _window(t, x.dtype, x.device)
        acc = torch.zeros_like(xp)
        weight = torch.zeros(hp, wp, dtype=x.dtype, device=x.device)
        for i, j in pos:
            weight[i : i + t, j : j + t] += win
        jobs = [(n, i, j) for n in range(b) for i, j in pos]
        tiles = torch.stack([xp[n, :, i : i + t, j : j + t] for n, i, j in jobs])
        top = torch.tensor([i for _, i, _ in jobs], device=x.device)
        left = torch.tensor([j for _, _, j in jobs], device=x.device)
        coords = pixel_coords(top, left, t, hp, wp, dtype=x.dtype)
        rows = tile_rows(len(pos), self.max_tiles)
        den = fixed_calls(self.denoise_tiles, rows, tiles, s.repeat_interleave(len(pos)), coords)
        for (n, i, j), d in zip(jobs, den, strict=True):
            acc[n, :, i : i + t, j : j + t] += d * win
        return (acc / weight)[..., :h, :w]


#: the most tiles of a call that packs whole small images (fewer tiles each than ``cap / 2``):
#: one 64 x 64 image alone pays for the padding of its call, so such calls stay small
SMALL_CALL_TILES = 4


def tile_rows(per_row: int, cap: int) -> int:
    """Tiles per network call for images of ``per_row`` tiles, about ``cap`` at most: fixed by
    the image size, never by the batch (:func:`recon.priors.base.fixed_calls`). Small images
    (fewer than ``cap / 2`` tiles) go whole, ``max(1, SMALL_CALL_TILES // per_row)`` images a
    call; larger ones in calls of the size between ``cap / 2`` and ``cap`` that pads a row's
    tiles least (a 320 x 320 image's 81 tiles in 9 calls of 9, a 256 x 256 image's 49 in 5
    calls of 10)."""
    if 2 * per_row < cap:
        return per_row * max(1, SMALL_CALL_TILES // per_row)
    return min(range(cap, max(cap // 2, 1) - 1, -1), key=lambda k: -(-per_row // k) * k)
