"""Update rules shared by every sampler, in the variance-exploding sigma parametrisation.

State ``x_t = x0 + sigma_t n`` (data units). A VP/DDPM state ``x_vp = sqrt(ab) x0 + sqrt(1-ab) n``
maps to it by ``x = x_vp / sqrt(ab)``, ``sigma^2 = (1 - ab) / ab``, so the DDPM/DDIM updates
below are the papers' updates written in this form.

* Tweedie: ``x0_hat = D(x_t, sigma_t)``, ``eps_hat = (x_t - x0_hat) / sigma_t``.
* DDIM step ``t -> s`` (Song et al. 2021, eq. 12): ``x_s = x0_hat + sqrt(sigma_s^2 - c^2) eps_hat
  + c z`` with ``c = eta * sigma_s * sqrt(1 - sigma_s^2 / sigma_t^2)``; ``eta = 1`` is the DDPM
  ancestral step (the exact Gaussian posterior ``q(x_s | x_t, x0_hat)``), ``eta = 0`` the
  deterministic DDIM step.

Random streams are per batch row: a sampler turns its ``generator`` argument into one
``torch.Generator`` per row (:func:`make_streams`), so a row's noise never depends on how many
rows share the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple

import deepinv as dinv
import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from recon.linalg import batch_dot, batch_norm, bview, conjugate_gradient
from recon.operators import noise_sigma, norm_sq
from recon.priors.base import Denoiser

Generators = torch.Generator | Sequence[torch.Generator] | None

# the data-term preconditioner switch of the gradient samplers (DPS, STSL, RED-Diff)
Precondition = Annotated[
    bool,
    Field(
        description="weigh the residual by the operator's preconditioner where it has one "
        "(CT: square root of the ramp filter, the gradient is an FBP of the residual); "
        "False: the paper's plain A^T r"
    ),
]

__all__ = [
    "CountingDenoiser",
    "StepInfo",
    "batch_dot",
    "batch_norm",
    "bview",
    "conjugate_gradient",
    "ddim_step",
    "denoise",
    "make_streams",
    "measurement_sigma",
    "randn",
    "row_generator",
    "start",
]


@dataclass(frozen=True)
class StepInfo:
    """What a sampler reports to its callback after each step.

    Attributes:
        i: step index (0-based).
        sigma: noise level of the step's input, float (data units).
        x: the new iterate, (B, *).
        x0_hat: the step's estimate of the clean signal, (B, *).
    """

    i: int
    sigma: float
    x: Tensor
    x0_hat: Tensor


Callback = Callable[[StepInfo], None] | None


class CountingDenoiser:
    """Wraps a denoiser and counts its evaluations.

    ``nfe`` counts calls (network evaluations of the whole batch; per sample, each call is one
    evaluation), ``rows`` the rows evaluated, ``vjp`` the calls made with a graph for a
    vector-Jacobian product (an input that requires grad).
    """

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser
        self.nfe = 0
        self.rows = 0
        self.vjp = 0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.nfe += 1
        self.rows += x.shape[0]
        if torch.is_grad_enabled() and x.requires_grad:
            self.vjp += 1
        return self.denoiser(x, sigma)

    def __getattr__(self, name: str):
        """Everything else is the wrapped prior's (``shape``, ``posterior`` of exact priors,
        ``score``): counting must not hide what a sampler asks of its prior."""
        if name == "denoiser":
            raise AttributeError(name)
        return getattr(self.denoiser, name)


def make_streams(generator: Generators, batch: int, device: torch.device) -> list[torch.Generator]:
    """One random stream per batch row.

    Args:
        generator: a list of ``batch`` generators (used as they are: row i draws only from
            stream i), one generator (row i gets the i-th seed drawn from it), or None
            (fresh seeds from torch's global generator).
        batch: number of rows.
        device: device of the streams (the data's device).
    """
    if isinstance(generator, Sequence):
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch}")
        return list(generator)
    seeds = torch.randint(0, 2**62, (batch,), generator=generator).tolist()
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def particle_randn(
    streams: Sequence[torch.Generator], n: int, shape: Sequence[int], like: Tensor
) -> Tensor:
    """Standard normal (B * n, *shape): rows ``b*n .. b*n + n - 1`` from ``streams[b]`` alone."""
    return torch.cat(
        [
            torch.randn((n, *shape), generator=g, dtype=like.dtype, device=like.device)
            for g in streams
        ]
    )


def randn(streams: Sequence[torch.Generator], shape: Sequence[int], like: Tensor) -> Tensor:
    """Standard normal tensor (B, *shape), row i drawn from ``streams[i]``."""
    return particle_randn(streams, 1, shape, like)


def denoise(denoiser: Denoiser, x: Tensor, sigma: float) -> Tensor:
    """``x0_hat = D(x, sigma)`` with the scalar ``sigma`` broadcast to (B,) in x's dtype."""
    return denoiser(x, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device))


def row_generator(
    seed: int, item: int, sample: int, device: torch.device | str
) -> torch.Generator:
    """The stream of row (item, sample) of a run seeded ``seed``: independent of every other
    row, of the batching and of the process that computes it (the one seeding scheme of
    ``reconstruct``, ``evaluate`` and ``acquire``)."""
    state = np.random.SeedSequence([seed, item, sample]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device).manual_seed(int(state[0]) << 31 ^ int(state[1]))


def ddim_step(
    x: Tensor,
    x0_hat: Tensor,
    sigma: float,
    sigma_next: float,
    noise: Tensor | None,
    *,
    eta: float = 1.0,
) -> Tensor:
    """One DDIM(eta) step from ``sigma`` to ``sigma_next`` (see module docstring).

    Args:
        x: current state (B, *) at ``sigma``.
        x0_hat: Tweedie estimate (B, *).
        sigma, sigma_next: noise levels, ``sigma > sigma_next >= 0``.
        noise: standard normal (B, *) (ignored when ``eta == 0`` or ``sigma_next == 0``).
        eta: 1 = DDPM ancestral, 0 = deterministic DDIM.
    """
    if sigma_next <= 0:
        return x0_hat
    eps_hat = (x - x0_hat) / sigma
    c = eta * sigma_next * (1.0 - sigma_next**2 / sigma**2) ** 0.5
    out = x0_hat + (max(sigma_next**2 - c**2, 0.0)) ** 0.5 * eps_hat
    if c > 0:
        out = out + c * noise
    return out


def measurement_sigma(physics: dinv.physics.Physics, sigma_y: float | None) -> float:
    """The measurement noise std: ``sigma_y`` if given, else the operator's noise model's."""
    return noise_sigma(physics) if sigma_y is None else float(sigma_y)


def one_shot(x: Tensor, sigmas: Tensor, callback: Callback) -> Tensor:
    """``x``, after the one :class:`StepInfo` of a one-shot method (zero filling, pinv, FBP,
    an exact draw) went to ``callback``."""
    if callback is not None:
        callback(StepInfo(0, float(sigmas[0]), x, x))
    return x


def check_inputs(y: Tensor, sigmas: Tensor) -> None:
    """Validate the common sampler inputs."""
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError("sigmas must be a 1-D schedule with at least 2 entries")
    if float(sigmas[-1]) != 0.0:
        raise ValueError("sigmas must end in 0")
    if bool((sigmas[:-1] <= sigmas[1:]).any()):
        raise ValueError("sigmas must be strictly descending")
    if not torch.isfinite(y).all():
        raise ValueError("y contains NaN or Inf")


def initial_state(
    physics: dinv.physics.Physics,
    y: Tensor,
    sigma_max: float,
    streams: Sequence[torch.Generator],
    x_init: Tensor | None,
) -> Tensor:
    """``x_init`` (copied) or ``sigma_max * z``, z standard normal shaped like ``A^T y``."""
    if x_init is not None:
        return x_init.detach().clone()
    like = physics.A_adjoint(y)
    return sigma_max * randn(streams, like.shape[1:], like)


def guidance_step(
    zeta: float,
    vp_scale: float | None,
    sigma: float,
    sigma_next: float,
    physics: dinv.physics.Physics,
    x: Tensor,
    normalize: bool,
) -> Tensor:
    """DPS's per-row step size from ``sigma`` to ``sigma_next``, shaped to broadcast on x.

    ``zeta sqrt(w(sigma) w(sigma_next))`` with ``w(s) = 1 + (s / vp_scale)^2`` (the VP
    weighting, ``1 / sqrt(ab_t ab_{t-1})``, see :mod:`recon.samplers.dps`), or the constant
    ``zeta`` when ``vp_scale`` is None; divided by the row's ``||A||`` (the square root of
    :func:`recon.operators.norm_sq`) when ``normalize``: the gradient of the un-squared
    ``||y - A x0||`` scales with ``||A||``, so the step is then invariant to the units of y
    (``A, y -> c A, c y`` gives the same samples).
    """
    step = zeta
    if vp_scale is not None:
        step *= math.sqrt((1.0 + (sigma / vp_scale) ** 2) * (1.0 + (sigma_next / vp_scale) ** 2))
    scale = torch.full((x.shape[0],), step, dtype=x.dtype, device=x.device)
    if normalize:
        scale = scale / norm_sq(physics, x).to(x.dtype).sqrt()
    return bview(scale, x)


class Start(NamedTuple):
    """The shared opening of a sampler (:func:`start`)."""

    streams: list[torch.Generator]  # one per row of y
    sigmas: list[float]  # the schedule as floats
    x: Tensor | None  # the initial state (B, *x_shape), or None for ``init=None``
    sigma_y: float  # measurement noise std (argument, else the operator's)


def start(
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    generator: Generators,
    *,
    x_init: Tensor | None = None,
    sigma_y: float | None = None,
    init: Literal["noise", "pinv"] | None = "noise",
) -> Start:
    """Every sampler's opening: check the inputs, make the per-row streams, the schedule as
    floats, the initial state and the measurement noise level.

    Args:
        y, physics, sigmas, generator, x_init, sigma_y: the sampler's own arguments.
        init: ``"noise"``: ``x_init`` or ``sigmas[0] * z`` (:func:`initial_state`);
            ``"pinv"``: ``x_init`` or ``A_dagger(y)``; None: no state (particle samplers).
    """
    check_inputs(y, sigmas)
    streams = make_streams(generator, y.shape[0], y.device)
    sig = [float(s) for s in sigmas]
    x = None
    if init == "noise":
        x = initial_state(physics, y, sig[0], streams, x_init)
    elif init == "pinv":
        x = (physics.A_dagger(y) if x_init is None else x_init).detach().clone()
    return Start(streams, sig, x, measurement_sigma(physics, sigma_y))


def require_noise(sigma_y: float, sampler: str, why: str) -> None:
    """Refuse ``sigma_y <= 0`` for samplers whose weights or targets divide by it."""
    if sigma_y <= 0:
        from recon.errors import SamplerInputError

        raise SamplerInputError(
            f"{sampler} needs sigma_y > 0 ({why}): set the operator's sigma_y or pass sigma_y"
        )
