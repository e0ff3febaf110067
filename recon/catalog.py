"""What ``recon list`` prints, generated from the registries (nothing here is written twice).

Imports only inside the listing functions, so the CLI can offer the choices without torch.
"""

from __future__ import annotations

from collections.abc import Callable

NOISE_FLOOR_HELP = (
    "fastMRI k-space: write sqrt(|x|^2 + sum_c 2 sigma_c^2) (sigma_c: each coil's noise std per "
    "real component, estimated from the data), the expected root-sum-of-squares magnitude of "
    "the fully sampled coil images with their noise floor, which is how fastMRI's "
    "reconstruction_rss / _esc targets are made and scored; off: |x|, the noise-free "
    "magnitude. Default: on for fastMRI's files, off for recon's simulated ones (their truth "
    "is noise-free)"
)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text else ""


def operators() -> list[tuple[str, str]]:
    """Forward operators and their config fields."""
    from recon.operators import OPERATORS

    rows = []
    for name, (cls, _) in OPERATORS.items():
        fields = ", ".join(f for f in cls.model_fields if f != "name")
        rows.append((name, f"{_first_line(cls.__doc__)}\nfields: {fields}"))
    return rows


def samplers() -> list[tuple[str, str]]:
    """Samplers: paper, kind, and every hyperparameter with its default."""
    from recon.samplers import SAMPLERS

    rows = []
    for name, s in SAMPLERS.items():
        params = ", ".join(f"{k}={d}" for k, d, _ in s.describe()) or "(no hyperparameters)"
        flags = [s.kind] + ([] if s.stochastic else ["deterministic"])
        flags += [] if s.uses_prior else ["no prior"]
        flags += ["teleports"] if s.starts_from_noise or s.teleports_cloud else []
        rows.append((name, f"{s.title}: {s.summary} [{', '.join(flags)}]\n{params}"))
    return rows


def priors() -> list[tuple[str, str]]:
    """Priors a run can name (bundled, built-in, by path)."""
    from recon.priors.configs import catalogue

    return catalogue()


def schedules() -> list[tuple[str, str]]:
    """Noise schedules and their arguments."""
    from recon.config import DDPMScheduleConfig, KarrasScheduleConfig

    return [
        (
            cls.model_fields["name"].default,
            f"{cls.__doc__}\n"
            + ", ".join(f"{k}={f.default}" for k, f in cls.model_fields.items() if k != "name"),
        )
        for cls in (KarrasScheduleConfig, DDPMScheduleConfig)
    ]


def benchmarks() -> list[tuple[str, str]]:
    """Bundled benchmark sets."""
    from recon.datasets import benchmark_sets

    return [(name, f"{b.n_items} items  {b.description}") for name, b in benchmark_sets().items()]


#: ``recon list WHAT`` -> its listing
LISTINGS: dict[str, Callable[[], list[tuple[str, str]]]] = {
    "samplers": samplers,
    "priors": priors,
    "operators": operators,
    "schedules": schedules,
    "benchmarks": benchmarks,
}


def render(what: str) -> str:
    """A listing as text: the name, then its description indented under it."""
    rows = LISTINGS[what]()
    width = max((len(n) for n, _ in rows), default=0) + 2
    out = []
    for name, text in rows:
        lines = text.splitlines() or [""]
        out.append(f"{name:{width}s}{lines[0]}")
        out.extend(f"{'':{width}s}{line}" for line in lines[1:])
    return "\n".join(out)
