"""Posterior samplers, one file each, registered in :data:`SAMPLERS`.

Every sampler is ``sample_<name>(denoiser, y, physics, sigmas, *, x_init=None, generator=None,
callback=None, sigma_y=None, <hyperparameters>) -> Tensor`` and its config class's fields
(besides ``name``) are exactly its hyperparameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, Field

from ._particles import ParticleResult
from ._steps import CountingDenoiser, StepInfo, make_streams
from .afdps import AFDPSConfig, sample_afdps
from .baselines import ExactConfig, PinvConfig, sample_exact, sample_pinv
from .classical import FBPConfig, TVConfig, sample_fbp, sample_tv
from .dds import DDSConfig, sample_dds
from .dps import DPSConfig, sample_dps
from .fps import FPSConfig, sample_fps
from .mcgdiff import MCGdiffConfig, sample_mcgdiff
from .reddiff import REDDiffConfig, sample_reddiff
from .stsl import STSLConfig, sample_stsl
from .tds import TDSConfig, sample_tds

#: name -> (config class, sampler function)
SAMPLERS: dict[str, tuple[type[BaseModel], Callable[..., Any]]] = {
    "dps": (DPSConfig, sample_dps),
    "reddiff": (REDDiffConfig, sample_reddiff),
    "dds": (DDSConfig, sample_dds),
    "pinv": (PinvConfig, sample_pinv),
    "exact": (ExactConfig, sample_exact),
    "fbp": (FBPConfig, sample_fbp),
    "tv": (TVConfig, sample_tv),
    "tds": (TDSConfig, sample_tds),
    "stsl": (STSLConfig, sample_stsl),
    "mcgdiff": (MCGdiffConfig, sample_mcgdiff),
    "fps": (FPSConfig, sample_fps),
    "afdps": (AFDPSConfig, sample_afdps),
}

SamplerConfig = Annotated[
    DPSConfig
    | REDDiffConfig
    | DDSConfig
    | PinvConfig
    | ExactConfig
    | FBPConfig
    | TVConfig
    | TDSConfig
    | STSLConfig
    | MCGdiffConfig
    | FPSConfig
    | AFDPSConfig,
    Field(discriminator="name"),
]


def hyperparameters(cfg: BaseModel) -> dict[str, Any]:
    """A sampler config's keyword hyperparameters (every field but ``name``)."""
    return {k: getattr(cfg, k) for k in type(cfg).model_fields if k != "name"}


def run_sampler(cfg: BaseModel, denoiser, y, physics, sigmas, **kwargs: Any):
    """Call the sampler a config names with its hyperparameters."""
    name = cfg.name  # type: ignore[attr-defined]
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return SAMPLERS[name][1](denoiser, y, physics, sigmas, **kwargs, **hyperparameters(cfg))


__all__ = [
    "SAMPLERS",
    "AFDPSConfig",
    "CountingDenoiser",
    "DDSConfig",
    "DPSConfig",
    "ExactConfig",
    "FBPConfig",
    "FPSConfig",
    "MCGdiffConfig",
    "ParticleResult",
    "PinvConfig",
    "REDDiffConfig",
    "STSLConfig",
    "SamplerConfig",
    "StepInfo",
    "TDSConfig",
    "TVConfig",
    "hyperparameters",
    "make_streams",
    "run_sampler",
    "sample_afdps",
    "sample_dds",
    "sample_dps",
    "sample_exact",
    "sample_fbp",
    "sample_fps",
    "sample_mcgdiff",
    "sample_pinv",
    "sample_reddiff",
    "sample_stsl",
    "sample_tds",
    "sample_tv",
]
