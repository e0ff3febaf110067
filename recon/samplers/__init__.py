"""Posterior samplers, one file each, collected in :data:`SAMPLERS`.

Every sampler is ``sample_<name>(denoiser, y, physics, sigmas, *, x_init=None, generator=None,
callback=None, sigma_y=None, <hyperparameters>) -> Tensor`` in ``recon/samplers/<name>.py``,
whose module ends with ``SAMPLERS = (Sampler(sample_<name>, ...),)``
(:class:`~recon.samplers._registry.Sampler`). This package imports every such module, so a new
file is a new sampler: the registry, its config (generated from the keyword signature), the run
config's union, the CLI's help, ``recon list samplers`` and the contract tests pick it up. Each
``sample_<name>`` and ``<Title>Config`` is importable from here.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Any, Union

from pydantic import Field

from ._particles import ParticleResult
from ._registry import Kind, Sampler, hyperparameters
from ._steps import CountingDenoiser, StepInfo, make_streams, row_generator


def _collect() -> dict[str, Sampler]:
    """Every public module's ``SAMPLERS`` entries, by sampler name."""
    found: dict[str, Sampler] = {}
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        for entry in getattr(module, "SAMPLERS", ()):
            if entry.name in found:
                raise RuntimeError(f"sampler {entry.name!r} is declared twice")
            found[entry.name] = entry
    return dict(sorted(found.items()))


#: name -> :class:`Sampler` (function, generated config, kind, summary)
SAMPLERS: dict[str, Sampler] = _collect()

#: The discriminated union of every sampler's config (``name`` picks the member).
SamplerConfig = Annotated[
    Union[tuple(s.config for s in SAMPLERS.values())],  # noqa: UP007 (built at run time)
    Field(discriminator="name"),
]

_exported: dict[str, Any] = {}
for _s in SAMPLERS.values():
    _exported[_s.fn.__name__] = _s.fn
    _exported[_s.config.__name__] = _s.config
globals().update(_exported)

__all__ = [
    "SAMPLERS",
    "CountingDenoiser",
    "Kind",
    "ParticleResult",
    "Sampler",
    "SamplerConfig",
    "StepInfo",
    "hyperparameters",
    "make_streams",
    "row_generator",
    *sorted(_exported),
]
