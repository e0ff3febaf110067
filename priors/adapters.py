"""Adapters that turn networks of any parametrisation into a recon :class:`Denoiser`.

recon's convention: ``D(x, sigma) = E[x0 | x]`` with ``x = x0 + sigma n`` in data units ([0, 1]
images). A network trained on data in ``[lo, hi]`` sees ``u = lo + (hi - lo) x`` and noise level
``sigma_u = (hi - lo) sigma``; its answer ``u0`` maps back as ``x0 = (u0 - lo) / (hi - lo)``.
Each adapter shows its conversion in a few lines.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from .base import as_sigma, call_rows, fixed_calls


def _rows(fixed: int | None, x: Tensor) -> int:
    return call_rows(x) if fixed is None else int(fixed)


def _bview(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))


class _RangeMixin:
    lo: float
    hi: float

    def _to_net(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return self.lo + (self.hi - self.lo) * x, (self.hi - self.lo) * sigma

    def _from_net(self, u0: Tensor) -> Tensor:
        return (u0 - self.lo) / (self.hi - self.lo)


class EDMDenoiser(_RangeMixin):
    """An EDM-preconditioned network ``F(c_in u, c_noise)`` (Karras et al. 2022, Table 1).

    ``D_u(u, s) = c_skip u + c_out F(c_in u, c_noise)`` with ``c_skip = sd^2 / (s^2 + sd^2)``,
    ``c_out = s sd / sqrt(s^2 + sd^2)``, ``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = log(s) / 4``.

    Args:
        net: callable ``net(x_in (B, *), c_noise (B,)) -> F (B, *)``.
        sigma_data: the data std the network was trained with (0.5 in EDM).
        data_range: (lo, hi) of the network's training data.
        call_rows: rows per network call (:func:`recon.priors.base.fixed_calls`): None sizes
            calls from one row's shape, so results never depend on the batch; 0 makes one
            call as given.
    """

    def __init__(
        self,
        net: Callable[[Tensor, Tensor], Tensor],
        sigma_data: float = 0.5,
        data_range: tuple[float, float] = (-1.0, 1.0),
        call_rows: int | None = None,
    ) -> None:
        self.net = net
        self.sigma_data = float(sigma_data)
        self.lo, self.hi = (float(v) for v in data_range)
        self.call_rows = call_rows

    @property
    def data_std(self) -> float:
        """``sigma_data`` in data units (0.5 in [-1, 1] is 0.25 in [0, 1])."""
        return self.sigma_data / (self.hi - self.lo)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        u, s = self._to_net(x, as_sigma(sigma, x))
        sd = self.sigma_data
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / torch.sqrt(s**2 + sd**2)
        c_in = 1.0 / torch.sqrt(s**2 + sd**2)
        c_noise = torch.log(s.clamp_min(1e-20)) / 4
        f = fixed_calls(self.net, _rows(self.call_rows, u), _bview(c_in, u) * u, c_noise)
        return self._from_net(_bview(c_skip, u) * u + _bview(c_out, u) * f)


class EpsilonDenoiser(_RangeMixin):
    """A DDPM epsilon-prediction network ``eps(x_t, t)`` on the VP process.

    VP state ``x_t = sqrt(ab_t) u0 + sqrt(1 - ab_t) eps`` divided by ``sqrt(ab_t)`` is the VE state
    ``u0 + sigma_u eps`` with ``sigma_u^2 = (1 - ab) / ab``. So, for a VE input ``u`` at
    ``sigma_u``: ``ab = 1 / (1 + sigma_u^2)``, ``x_t = sqrt(ab) u``, and Tweedie gives
    ``u0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab) = u - sigma_u eps``. The timestep is the one whose
    ``sigma_t`` is nearest in log-sigma (``timestep="nearest"``, an integer) or linearly
    interpolated in log-sigma (``"interpolate"``, a float, for networks with continuous
    embeddings).

    Args:
        net: ``net(x_t (B, *), t (B,)) -> eps (B, *)``; extra output channels (learned variance,
            as in guided-diffusion's 6-channel output) are dropped.
        alphas_cumprod: (T,) training schedule ``ab_t``, decreasing in t.
        data_range: (lo, hi) of the network's training data ([-1, 1] for DDPM/ADM).
        timestep: ``"nearest"`` or ``"interpolate"``.
        call_rows: rows per network call, as for :class:`EDMDenoiser`.
    """

    def __init__(
        self,
        net: Callable[[Tensor, Tensor], Tensor],
        alphas_cumprod: Tensor,
        data_range: tuple[float, float] = (-1.0, 1.0),
        timestep: str = "nearest",
        call_rows: int | None = None,
    ) -> None:
        if timestep not in ("nearest", "interpolate"):
            raise ValueError(f"timestep must be 'nearest' or 'interpolate', got {timestep!r}")
        self.net = net
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.log_sigmas = 0.5 * torch.log((1 - ab) / ab)  # increasing in t
        self.lo, self.hi = (float(v) for v in data_range)
        self.timestep = timestep
        self.call_rows = call_rows

    def sigma_to_t(self, sigma_u: Tensor) -> Tensor:
        """Timestep for a VE noise level in network units (nearest or interpolated)."""
        ls = self.log_sigmas.to(sigma_u.device)
        q = torch.log(sigma_u.double().clamp_min(1e-20))
        if self.timestep == "nearest":
            return (q[:, None] - ls[None, :]).abs().argmin(dim=1)
        idx = torch.searchsorted(ls, q).clamp(1, ls.numel() - 1)
        lo, hi = ls[idx - 1], ls[idx]
        frac = ((q - lo) / (hi - lo)).clamp(0, 1)
        return (idx - 1).double() + frac

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        u, s = self._to_net(x, as_sigma(sigma, x))
        ab = 1.0 / (1.0 + s**2)
        x_t = _bview(ab.sqrt(), u) * u
        t = self.sigma_to_t(s)
        t = t if self.timestep == "nearest" else t.to(x.dtype)
        eps = fixed_calls(self.net, _rows(self.call_rows, u), x_t, t)
        eps = eps[:, : u.shape[1]] if eps.shape[1] != u.shape[1] else eps
        return self._from_net(u - _bview(s, u) * eps)


class DeepinvDenoiser:
    """Any deepinv denoiser ``model(x, sigma)`` working on [0, 1] images with sigma in the same
    units (deepinv's convention equals recon's, so no conversion is needed); ``call_rows`` as
    for :class:`EDMDenoiser`."""

    def __init__(self, denoiser: nn.Module, call_rows: int | None = None) -> None:
        self.denoiser = denoiser
        self.call_rows = call_rows

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return fixed_calls(self.denoiser, _rows(self.call_rows, x), x, as_sigma(sigma, x))


_DIFFUNET_BUFFERS = ("sqrt_1m_alphas_cumprod", "sqrt_alphas_cumprod")


class _DiffUNetEps(nn.Module):
    """The raw epsilon of deepinv's ``DiffUNet`` at integer timesteps (its 6 output channels:
    eps and the learned variance; :class:`EpsilonDenoiser` keeps the first C)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.net.forward_diffusion(x_t, t)


def load_diffunet(
    path: str | Path,
    *,
    in_channels: int = 3,
    out_channels: int = 6,
    large_model: bool = False,
    device: torch.device | str = "cpu",
) -> EpsilonDenoiser:
    """Load a guided-diffusion/ADM checkpoint (e.g. ``ffhq_10m.pt``) into deepinv's ``DiffUNet``.

    Local paths only, ``torch.load(..., weights_only=True)`` (no pickle code runs). deepinv's own
    ``DiffUNet(pretrained=path)`` loads strictly before its two schedule buffers exist and so
    fails on its own saved ``state_dict()``; here those buffers are ignored and every other key
    must match exactly.

    The denoiser is the network's own epsilon through :class:`EpsilonDenoiser`
    (``x0 = u - sigma_u eps``), not deepinv's ``forward_denoise``, which clamps ``x0`` to
    [-1, 1]: samplers that derive eps from ``x0`` (DDS's renoising, RED-Diff's score) then see
    the network's eps, as the official codes do, and not one bent by the clamp.
    """
    import deepinv as dinv

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p} (recon never downloads weights)")
    state = torch.load(p, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k not in _DIFFUNET_BUFFERS}
    net = dinv.models.DiffUNet(
        in_channels=in_channels,
        out_channels=out_channels,
        large_model=large_model,
        pretrained=None,
    )
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in _DIFFUNET_BUFFERS]
    if missing or unexpected:
        raise ValueError(
            f"{p}: not a DiffUNet checkpoint for in={in_channels}, out={out_channels}, "
            f"large={large_model}: missing {missing[:3]}, unexpected {list(unexpected)[:3]}"
        )
    net = net.to(device).eval()
    alphas_cumprod = (net.sqrt_alphas_cumprod.detach().double() ** 2).cpu()
    return EpsilonDenoiser(_DiffUNetEps(net), alphas_cumprod, data_range=(-1.0, 1.0))
