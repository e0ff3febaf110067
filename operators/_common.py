"""Pieces every operator builder shares: config base, noise model, adjointness check."""

from __future__ import annotations

from collections.abc import Sequence

import deepinv as dinv
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from recon.linalg import batch_dot, batch_norm, bview


class OperatorConfigBase(BaseModel):
    """Fields common to every operator config (frozen, unknown keys rejected)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    sigma_y: float = Field(
        0.0, ge=0.0, description="std of the Gaussian measurement noise, in data units ([0, 1])"
    )


def gaussian_noise(sigma_y: float) -> dinv.physics.NoiseModel:
    """A fresh noise model per operator (deepinv shares one default object between operators)."""
    if sigma_y > 0:
        return dinv.physics.GaussianNoise(sigma=float(sigma_y))
    return dinv.physics.ZeroNoise()


def noise_sigma(physics: dinv.physics.Physics) -> float:
    """The Gaussian noise std of an operator's noise model (0 for ``ZeroNoise``)."""
    model = getattr(physics, "noise_model", None)
    sigma = getattr(model, "sigma", None)
    if sigma is None:
        return 0.0
    s = torch.as_tensor(sigma).reshape(-1)
    if s.numel() != 1:
        raise ValueError("per-sample noise levels in the noise model: pass sigma_y explicitly")
    return float(s[0])


class AdjointError(ValueError):
    """A supplied adjoint does not match the forward operator."""


def adjointness_error(
    physics: dinv.physics.LinearPhysics,
    x_shape: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> float:
    """Relative adjointness error ``|<Ax, y> - <x, A^H y>| / (||Ax|| ||y||)`` on random probes.

    Args:
        physics: a linear operator.
        x_shape: input shape including the batch dimension, e.g. (2, 1, 32, 32).
        dtype: real dtype of the probes (complex inputs are not used by recon operators).
        device: device of the probes.
        generator: random stream for the probes (a fixed seed when None).

    Returns:
        The largest relative error over the batch.
    """
    g = generator if generator is not None else torch.Generator(device).manual_seed(1234)
    x = torch.randn(tuple(x_shape), dtype=dtype, device=device, generator=g)
    ax = physics.A(x)
    y = torch.randn(ax.shape, dtype=ax.dtype, device=device, generator=g)
    aty = physics.A_adjoint(y)
    lhs = batch_dot(ax, y)
    rhs = batch_dot(x, aty)
    ax_norm = batch_dot(ax, ax).sqrt()
    scale = ax_norm * batch_dot(y, y).sqrt()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return float(((lhs - rhs).abs() / scale).max())


def cast(physics: dinv.physics.Physics, dtype: torch.dtype) -> dinv.physics.Physics:
    """A copy of an operator with real buffers in ``dtype`` and complex ones in the matching
    complex dtype.

    ``torch.nn.Module.to(torch.float64)`` casts complex buffers (coil maps, Fourier filters) to
    real and silently drops their imaginary part; this does not.
    """
    import copy

    complex_dtype = {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(dtype)
    if complex_dtype is None:
        raise ValueError(f"cast supports float32 and float64, got {dtype}")

    def convert(t: Tensor) -> Tensor:
        if t.is_complex():
            return t.to(complex_dtype)
        if t.is_floating_point():
            return t.to(dtype)
        return t

    out = copy.deepcopy(physics)
    out._apply(convert)
    return out


class Preconditioned(dinv.physics.LinearPhysics):
    """``A' = M A`` for an operator with a data-space preconditioner ``M = metric_sqrt``
    (self-adjoint, positive semi-definite): ``A'^T A' = A^T M^2 A``, so a gradient step on
    ``||M (y - A x)||`` moves along ``A^T M^2 r`` instead of ``A^T r``. Built by
    :func:`preconditioned`; only ``A`` and ``A_adjoint`` are defined."""

    def __init__(self, base: dinv.physics.LinearPhysics) -> None:
        super().__init__(noise_model=dinv.physics.ZeroNoise())
        self.base = base

    def A(self, x: Tensor, **kwargs) -> Tensor:
        return self.base.metric_sqrt(self.base.A(x))

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        return self.base.A_adjoint(self.base.metric_sqrt(y))


def preconditioned(
    physics: dinv.physics.Physics, y: Tensor
) -> tuple[dinv.physics.Physics, Tensor]:
    """``(M A, M y)`` where the operator defines a data-space preconditioner
    ``metric_sqrt = M`` (CT: the square root of the ramp filter, so ``A^T M^2`` is filtered
    back-projection), else ``(physics, y)`` unchanged (MRI, inpainting, super-resolution: their
    ``A^T A`` is already a scaled projection, nothing to precondition).

    Gradient samplers (DPS, STSL, RED-Diff) use it for their data term: ``A^T r`` fits each
    singular direction at a rate proportional to its squared singular value, and the Radon
    transform's fall off like ``1 / |frequency|``, so in 50 steps the fine detail that FBP
    recovers stays unfit; with ``M`` the spectrum of ``A'^T A'`` is nearly flat (the ramp
    filter inverts it). The classical counterpart is ramp-filter preconditioning of iterative
    CT reconstruction (Fessler and Booth, "Conjugate-gradient preconditioning methods for
    shift-variant PET image reconstruction", IEEE TIP 1999); in diffusion guidance, Song et
    al.'s pseudo-inverse guidance (PiGDM, ICLR 2023) puts ``A^+`` where DPS has ``A^T``.

    Args:
        physics: an operator, batched over rows (``M`` acts per row, so rows stay independent).
        y: measurements (B, *meas_shape).
    """
    if getattr(physics, "metric_sqrt", None) is None:
        return physics, y
    wrapped = physics.__dict__.get("_recon_preconditioned")
    if wrapped is None:  # kept out of the module tree: no parameters, no cycle
        wrapped = physics.__dict__["_recon_preconditioned"] = Preconditioned(physics)
    return wrapped, physics.metric_sqrt(y)


#: fixed-seed probes of the Hutchinson estimate of ``tr(A A^T)`` behind ``twist_scale="auto"``
RHO_PROBES = 8


def mean_row_norm_sq(physics: dinv.physics.Physics, like: Tensor) -> float:
    """``rho = tr(A A^T) / m``: the mean squared norm of the operator's ``m`` measurement rows
    (real entries of ``A x`` as the samplers' likelihoods count them; zero rows of a mask
    count), the variance per measured entry of ``A e`` for an error ``e`` of unit variance per
    pixel. The SMC samplers' isotropic stand-in for ``A A^T`` (TDS's twist, AFDPS's
    tempering), where ``||A||^2`` (its largest eigenvalue, :func:`norm_sq`) would be ~60x too
    large on CT (0.45 against 0.0077).

    Hutchinson estimate with :data:`RHO_PROBES` Gaussian probes from a fixed seed, so it
    depends on the operator only (relative standard error ``sqrt(2) ||A^T A||_F / (tr(A^T A)
    sqrt(RHO_PROBES))``, ~ ``sqrt(2 / (RHO_PROBES r))`` for ``r`` comparable singular values).

    Args:
        physics: a linear operator (shared by every row it is applied to).
        like: a tensor of the input shape (1, *x_shape); only its shape, dtype, device are
            used.
    """
    g = torch.Generator().manual_seed(0)
    z = torch.randn((RHO_PROBES, *like.shape[1:]), generator=g, dtype=torch.float64)
    az = physics.A(z.to(dtype=like.dtype, device=like.device))
    return float(batch_dot(az, az).mean()) / az[0].numel()


def norm_sq(physics: dinv.physics.Physics, x_like: Tensor, *, n_iter: int = 30) -> Tensor:
    """Per-row squared operator norm ``||A||^2`` (largest eigenvalue of ``A^T A``), (B,).

    Power iteration with a fixed number of steps from one fixed-seed start shared by every row,
    so a row's value depends only on its own operator (never on its batch-mates). After
    ``n_iter`` steps the estimate is a lower bound within a few percent for the operators recon
    ships (exactly 1 for Cartesian MRI and inpainting masks); samplers use it to scale steps,
    not as an exact quantity. Cached on the physics object per input shape, dtype and device.

    Args:
        physics: a linear operator (batched: row b of x goes through row b's operator).
        x_like: a tensor of the input shape (B, *x_shape); only its shape, dtype, device are used.
        n_iter: power iterations.
    """
    key = (tuple(x_like.shape), x_like.dtype, str(x_like.device), n_iter)
    cache = physics.__dict__.setdefault("_recon_norm_sq", {})
    if key not in cache:
        g = torch.Generator().manual_seed(0)
        v0 = torch.randn(tuple(x_like.shape[1:]), generator=g, dtype=torch.float64)
        v = v0.to(dtype=x_like.dtype, device=x_like.device).expand_as(x_like).clone()
        v = v / bview(batch_norm(v), v)
        lam = torch.zeros(x_like.shape[0], dtype=x_like.dtype, device=x_like.device)
        with torch.no_grad():
            for _ in range(n_iter):
                w = physics.A_adjoint(physics.A(v))
                lam = batch_dot(v, w)
                v = w / bview(batch_norm(w).clamp_min(torch.finfo(w.dtype).tiny), w)
        cache[key] = lam.clamp_min(torch.finfo(lam.dtype).tiny)
    return cache[key]
