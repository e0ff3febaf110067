"""Forward operators: configs and builders returning deepinv ``LinearPhysics``.

Every operator kind has a config class (frozen pydantic model, discriminated on ``name``) and a
``build(cfg, *, device) -> LinearPhysics`` function, listed in :data:`OPERATORS`. Custom
operators come from :func:`from_functions` (plain callables) and :func:`from_matrix` (dense
matrices); any deepinv ``LinearPhysics`` is accepted as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import torch
from pydantic import Field

from . import ct, inpainting, mri, mri_multicoil, super_resolution
from ._common import (
    AdjointError,
    OperatorConfigBase,
    adjointness_error,
    cast,
    mean_row_norm_sq,
    noise_sigma,
    norm_sq,
    preconditioned,
)
from .ct import CTConfig, ParallelBeamCT
from .custom import FunctionalPhysics, MatrixPhysics, from_functions, from_matrix, operator_matrix
from .inpainting import InpaintingConfig
from .masks import make_mask
from .mri import Embedded, MRIConfig, center_crop, center_pad, crop_box, ifft2c, zero_filled
from .mri_multicoil import (
    COIL_ESTIMATORS,
    MultiCoilMRI,
    MultiCoilMRIConfig,
    birdcage_maps,
    espirit_maps,
    estimate_coil_maps,
)
from .super_resolution import SuperResolutionConfig

OperatorConfig = Annotated[
    InpaintingConfig | SuperResolutionConfig | MRIConfig | MultiCoilMRIConfig | CTConfig,
    Field(discriminator="name"),
]

#: name -> (config class, builder)
OPERATORS: dict[str, tuple[type[OperatorConfigBase], Callable[..., Any]]] = {
    "inpainting": (InpaintingConfig, inpainting.build),
    "super_resolution": (SuperResolutionConfig, super_resolution.build),
    "mri": (MRIConfig, mri.build),
    "mri_multicoil": (MultiCoilMRIConfig, mri_multicoil.build),
    "ct": (CTConfig, ct.build),
}


def build(cfg: OperatorConfigBase, *, device: torch.device | str = "cpu", **inputs: Any):
    """Build the operator a config describes (``inputs``: given masks, coil maps, k-space)."""
    name = cfg.name  # type: ignore[attr-defined]
    if name not in OPERATORS:
        raise ValueError(f"unknown operator {name!r}; known: {', '.join(OPERATORS)}")
    return OPERATORS[name][1](cfg, device=device, **inputs)


def input_shape(cfg: OperatorConfigBase) -> tuple[int, ...]:
    """Shape of one input image (without batch) for a built-in operator config."""
    name = cfg.name  # type: ignore[attr-defined]
    if name in ("mri", "mri_multicoil"):
        return (2, *cfg.img_size)  # type: ignore[attr-defined]
    if name == "ct":
        return (1, *cfg.img_size)  # type: ignore[attr-defined]
    return tuple(cfg.img_size)  # type: ignore[attr-defined]


__all__ = [
    "COIL_ESTIMATORS",
    "OPERATORS",
    "AdjointError",
    "CTConfig",
    "Embedded",
    "FunctionalPhysics",
    "InpaintingConfig",
    "MRIConfig",
    "MatrixPhysics",
    "MultiCoilMRI",
    "MultiCoilMRIConfig",
    "OperatorConfig",
    "ParallelBeamCT",
    "SuperResolutionConfig",
    "adjointness_error",
    "birdcage_maps",
    "build",
    "cast",
    "center_crop",
    "center_pad",
    "crop_box",
    "espirit_maps",
    "estimate_coil_maps",
    "from_functions",
    "from_matrix",
    "ifft2c",
    "input_shape",
    "make_mask",
    "mean_row_norm_sq",
    "noise_sigma",
    "norm_sq",
    "operator_matrix",
    "preconditioned",
    "zero_filled",
]
