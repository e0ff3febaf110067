"""Baselines that share the sampler signature: zero filling, the pseudo-inverse and
exact-posterior draws.

``zero_filled``: :func:`recon.operators.zero_filled`, fastMRI's zero-filled baseline on MRI
(multi-coil: the root-sum-of-squares of the coils' zero-filled images, no coil maps), the
adjoint ``A^H y`` elsewhere; ignores the prior and the noise.

``pinv``: ``A_dagger(y)`` (zero-filled inverse FFT for single-coil MRI, least squares for CT
and multi-coil MRI: the unregularised SENSE solution, whose noise grows with the acceleration),
ignoring the prior.

``exact``: one draw from the exact posterior of an exact prior (``GaussianPrior`` or
``GaussianMixturePrior``) with a linear operator: the reference every diffusion sampler is
checked against, and the fast path for those priors.
"""

from __future__ import annotations

from typing import Annotated, Literal

import deepinv as dinv
import torch
from pydantic import Field
from torch import Tensor

from recon.errors import SamplerInputError
from recon.priors.base import Denoiser

from ._registry import Sampler
from ._steps import Callback, Generators, make_streams, measurement_sigma, one_shot


def sample_pinv(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
) -> Tensor:
    """``A_dagger(y)``, (B, *x_shape); the prior, schedule and generator are unused."""
    del denoiser, x_init, generator, sigma_y
    with torch.no_grad():
        x = physics.A_dagger(y)
        return one_shot(x, sigmas, callback)


def sample_zero_filled(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
) -> Tensor:
    """The zero-filled image (B, *x_shape) (module docstring); prior, schedule and generator
    are unused."""
    del denoiser, x_init, generator, sigma_y
    from recon.operators import zero_filled

    with torch.no_grad():
        x = zero_filled(physics, y)
        return one_shot(x, sigmas, callback)


#: the one-line refusal of a prior without a closed-form posterior (also raised up front by
#: the pipeline, before any work)
NEEDS_EXACT_PRIOR = (
    "sampler 'exact' needs an exact whole-image prior (GaussianPrior or GaussianMixturePrior, "
    "e.g. --prior phantom-gaussian); patch priors and networks have no closed-form posterior"
)


def sample_exact(
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    x_init: Tensor | None = None,
    generator: Generators = None,
    callback: Callback = None,
    sigma_y: float | None = None,
    method: Annotated[
        Literal["auto", "dense", "cg"],
        Field(description="Gaussian prior: dense algebra or matrix-free CG"),
    ] = "auto",
) -> Tensor:
    """One exact posterior draw per row of y, (B, *x_shape), in y's dtype.

    Row i is drawn from stream i alone, so rows do not depend on each other.
    """
    del x_init
    posterior_fn = getattr(denoiser, "posterior", None)
    if posterior_fn is None:
        raise SamplerInputError(NEEDS_EXACT_PRIOR)
    s_y = measurement_sigma(physics, sigma_y)
    streams = make_streams(generator, y.shape[0], torch.device("cpu"))
    kw = {"method": method} if "method" in posterior_fn.__code__.co_varnames else {}
    with torch.no_grad():
        if _has_per_sample_params(physics, y.shape[0]):
            rows = [
                posterior_fn(
                    _row_physics(physics, i, y.shape[0]), y[i : i + 1], sigma_y=s_y, **kw
                ).sample_rows(streams[i : i + 1])[0]
                for i in range(y.shape[0])
            ]
            x = torch.stack(rows)
        else:
            x = posterior_fn(physics, y, sigma_y=s_y, **kw).sample_rows(streams)
        x = x.to(dtype=y.dtype, device=y.device)
        return one_shot(x, sigmas, callback)


#: operator buffers that may carry one entry per batch row (deepinv MRI/inpainting masks,
#: multi-coil maps); others (e.g. a dense matrix whose row count happens to equal the batch
#: size) are shared
PER_SAMPLE_BUFFERS = ("mask", "coil_maps")


def _per_sample_buffers(physics: dinv.physics.Physics, batch: int) -> list[str]:
    if batch <= 1:
        return []
    out = []
    for name in PER_SAMPLE_BUFFERS:
        buf = getattr(physics, name, None)
        if isinstance(buf, Tensor) and buf.ndim >= 1 and buf.shape[0] == batch:
            out.append(name)
    return out


def _has_per_sample_params(physics: dinv.physics.Physics, batch: int) -> bool:
    return bool(_per_sample_buffers(physics, batch))


def _row_physics(physics: dinv.physics.Physics, i: int, batch: int) -> dinv.physics.Physics:
    """The operator of row i: per-sample buffers (masks, coil maps) are sliced; a shared
    operator is returned as is. The caller's operator is never modified (a copy is sliced)."""
    names = _per_sample_buffers(physics, batch)
    if not names:
        return physics
    import copy

    row = copy.deepcopy(physics)
    for name in names:
        setattr(row, name, getattr(physics, name)[i : i + 1].clone())
    return row


SAMPLERS = (
    Sampler(
        sample_zero_filled,
        title="Zero-filled",
        summary="zero filling, fastMRI's baseline (multi-coil: root-sum-of-squares of the "
        "coils' zero-filled images); A^H y for other operators",
        kind="approximate",
        stochastic=False,
        uses_prior=False,
        keeps_noise=True,
    ),
    Sampler(
        sample_pinv,
        title="Pinv",
        summary="pseudo-inverse A_dagger(y) (zero-filled single-coil MRI; least squares for CT "
        "and multi-coil MRI, SENSE without regularisation)",
        kind="approximate",
        stochastic=False,
        uses_prior=False,
        keeps_noise=True,
    ),
    Sampler(
        sample_exact,
        title="Exact",
        summary="exact posterior draws for exact Gaussian / Gaussian-mixture priors: the "
        "reference",
        kind="exact",
    ),
)
