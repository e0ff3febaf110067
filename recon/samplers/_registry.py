"""What a sampler module declares about itself, and the config derived from its signature.

A sampler module ends with ``SAMPLERS = (Sampler(sample_x, ...),)``; the package collects every
module's entries (:mod:`recon.samplers`), so adding a sampler is adding one file. The config
model (``XConfig``: ``name`` plus every hyperparameter) is generated from the function's keyword
parameters annotated ``Annotated[T, Field(...)]``: each default, constraint and help text is
written once, in the signature.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from recon._models import Frozen, annotated_parameters, config_from_signature

#: What a sampler's output is, tested per kind (tests/test_samplers.py):
#: ``exact``: draws from the exact posterior (exact priors); ``asymptotic``: converges to it as
#: particles/steps grow; ``approximate``: a stated property only (data fit, moves towards the
#: posterior, a deterministic estimate).
Kind = Literal["exact", "asymptotic", "approximate"]


@dataclass(frozen=True)
class Sampler:
    """A registry entry.

    Attributes:
        fn: ``sample_<name>(denoiser, y, physics, sigmas, *, x_init, generator, callback,
            sigma_y, <hyperparameters>)``.
        title: the method's name as its paper spells it (``RED-Diff``); the config class is
            ``<title without punctuation>Config``.
        summary: one line for listings and help.
        kind: see :data:`Kind`.
        stochastic: its output depends on the random stream.
        uses_prior: False for classical baselines (pinv, fbp, tv), which never need a prior.
        starts_from_noise: its state at ``sigmas[0]`` is ``x_init`` (``sigmas[0] z`` when
            None), so it can start part-way down from a teleported draw (:mod:`recon.teleport`).
        teleports_cloud: a particle sampler whose cloud can start part-way down from exact
            Gaussian draws: it takes ``teleport_from`` (the Gaussian; :mod:`recon.teleport`).
        keeps_noise: its output keeps the measurement noise (zero filling, pseudo-inverse,
            FBP), so the noise floor of fastMRI's magnitude convention is not added to it
            (:meth:`recon.sources.FastMRISource.output`).
        name: ``fn``'s name without ``sample_`` (derived).
        config: the generated config model (derived).
    """

    fn: Callable[..., Any]
    title: str
    summary: str
    kind: Kind
    stochastic: bool = True
    uses_prior: bool = True
    starts_from_noise: bool = False
    teleports_cloud: bool = False
    keeps_noise: bool = False
    name: str = field(init=False)
    config: type[Frozen] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        name = self.fn.__name__.removeprefix("sample_")
        cls_name = re.sub(r"\W", "", self.title) + "Config"
        cfg = config_from_signature(
            self.fn, tag="name", value=name, cls_name=cls_name, doc=f"{self.title}: {self.summary}"
        )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "config", cfg)

    def defaults(self) -> dict[str, Any]:
        """Every hyperparameter's default, by name."""
        return {k: d for k, (_, d) in annotated_parameters(self.fn).items()}

    def describe(self) -> list[tuple[str, Any, str]]:
        """``(name, default, help)`` of each hyperparameter, for listings and CLI help."""
        fields = self.config.model_fields
        return [(k, f.default, f.description or "") for k, f in fields.items() if k != "name"]


def hyperparameters(cfg: Frozen) -> dict[str, Any]:
    """A sampler config's keyword hyperparameters (every field but ``name``)."""
    return {k: getattr(cfg, k) for k in type(cfg).model_fields if k != "name"}
