"""Is a reconstruction supported by its measurements? Two checks a run records and reports.

``data_fit``: ``||y - A x||^2 / (m sigma_y^2)`` per row, ``m`` the measured entries (the
nonzero entries of ``y``: unmeasured k-space and missing pixels are stored as 0). The truth
gives 1 on average (the noise's own energy); a draw from the posterior gives between 0 and 2.
Far above (:data:`FIT_LIMIT`), the reconstruction does not explain the data: the sampler
diverged, or the operator or noise level does not describe the scan.

``cloud_health``: for particle samplers (TDS, MCGdiff, FPS, AFDPS), the effective sample size
after each step and the number of distinct particles in the final cloud; a cloud that ended
as copies of one particle (:data:`COLLAPSED`) gives a draw whose spread across samples is not
the posterior's.

``blind_fraction``: the fraction of the image the operator cannot see. For multi-coil MRI,
the pixels where the coil maps vanish (``sum_c |S_c|^2 < 1/2``, e.g. maps cropped to the
object): the data say nothing there, and whatever a prior puts there is its invention.
"""

from __future__ import annotations

from typing import Any

import deepinv as dinv
import torch
from torch import Tensor

#: a row whose data residual exceeds this many times the noise's energy is reported
FIT_LIMIT = 4.0
#: a field of view more than this fraction of which is unseen by the operator is reported
BLIND_LIMIT = 0.01
#: a final cloud with at most this many distinct particles has collapsed
COLLAPSED = 1


def cloud_health(result: Any) -> list[dict[str, Any]]:
    """Per row of a :class:`recon.samplers.ParticleResult`: ``n_particles``, the ESS after
    each step (``ess``, before resampling), its minimum and final value, and ``distinct``:
    the distinct particles of the final cloud (resampling copies particles, so copies of one
    ancestor are equal)."""
    rows = []
    for parts, ess in zip(result.particles, result.ess, strict=True):
        flat = parts.flatten(1)
        distinct = int(torch.unique(flat, dim=0).shape[0])
        trace = [round(float(v), 3) for v in ess]
        rows.append(
            {
                "n_particles": int(flat.shape[0]),
                "ess": trace,
                "ess_min": min(trace) if trace else float("nan"),
                "ess_final": trace[-1] if trace else float("nan"),
                "distinct": distinct,
            }
        )
    return rows


def data_fit(physics: dinv.physics.Physics, x: Tensor, y: Tensor, sigma_y: float) -> Tensor:
    """``||y - A x||^2 / (m sigma_y^2)`` per row, float64 (B,); NaN when ``sigma_y`` is 0.

    Args:
        physics: the operator the rows were reconstructed with.
        x: reconstructions (B, *x_shape).
        y: their measurements (B, *y_shape).
        sigma_y: the measurement noise std, in y's units.
    """
    if sigma_y <= 0:
        return torch.full((x.shape[0],), float("nan"), dtype=torch.float64)
    with torch.no_grad():
        r = (physics.A(x.to(y.dtype)) - y).flatten(1).double()
        m = (y.flatten(1) != 0).sum(1).clamp_min(1).double()
        return (r.pow(2).sum(1) / (m * sigma_y**2)).cpu()


def blind_fraction(physics: dinv.physics.Physics) -> float:
    """The fraction of the image grid the operator cannot see: where a multi-coil operator's
    coil maps vanish (``sum_c |S_c|^2 < 1/2``), on the reconstruction grid; 0 for operators
    without coil maps."""
    maps = getattr(physics, "coil_maps", None)
    if maps is None:
        return 0.0
    power = maps.abs().pow(2).sum(-3)  # (B | 1, H, W) on the encoded grid
    size = tuple(getattr(physics, "img_size", power.shape[-2:]))[-2:]
    from recon.operators import center_crop

    return float((center_crop(power, size) < 0.5).double().mean())


def warnings(
    source: str, item: int, fit: float, blind: float, clouds: list[dict[str, Any]] = ()
) -> list[str]:
    """The one-line warnings for one item (none when every check passes); ``clouds``: the
    :func:`cloud_health` of each of its draws (particle samplers)."""
    out = []
    dead = [c for c in clouds if c["distinct"] <= COLLAPSED < c["n_particles"]]
    if dead:
        c = dead[0]
        out.append(
            f"{source}: item {item}: the particle cloud collapsed in {len(dead)} of "
            f"{len(clouds)} draw(s) ({c['distinct']} distinct of {c['n_particles']} particles "
            f"at the end, ESS down to {c['ess_min']:.1f}): its spread is not the posterior's; "
            "use more particles (n_particles); recorded in attr 'support'"
        )
    if fit > FIT_LIMIT:
        out.append(
            f"{source}: item {item}: the reconstruction does not fit the data: residual "
            f"{fit:.1f}x the noise's energy (expected about 1; the sampler, the noise level or "
            "the operator does not describe this scan); recorded in attr 'support'"
        )
    if blind > BLIND_LIMIT:
        out.append(
            f"{source}: item {item}: the coil maps vanish on {100 * blind:.0f} % of the field "
            "of view; the image there is not measured, and what the prior puts there is not "
            "supported by the data (estimate maps without a crop); recorded in attr 'support'"
        )
    return out
