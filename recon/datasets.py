"""Where recon's bundled data lives, and the benchmark sets in it.

``data/`` at the repository root installs as the package ``recon.data`` (wheel and editable
installs alike) and is found through :mod:`importlib.resources`. ``RECON_DATA`` overrides the
location.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from recon.errors import UserError


def read_info(path: str | Path) -> dict[str, Any]:
    """A set's ``info.json`` as a dict ({} when absent), or a one-line error naming it."""
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        info = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{p}: not readable JSON ({exc}); restore the file") from None
    if not isinstance(info, dict):
        raise UserError(f"{p}: holds {type(info).__name__}, not a JSON object; restore the file")
    return info


def data_dir() -> Path:
    """The bundled data folder."""
    env = os.environ.get("RECON_DATA")
    p = Path(env) if env else Path(str(resources.files("recon.data")))
    if not p.is_dir():
        raise UserError(f"recon's data folder {p} is missing; set RECON_DATA to its location")
    return p


def cache_dir() -> Path:
    """Where scans simulated at run time are kept: ``RECON_CACHE``, else
    ``$XDG_CACHE_HOME/recon`` (``~/.cache/recon``)."""
    env = os.environ.get("RECON_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "recon"


@dataclass(frozen=True)
class BenchmarkSet:
    """A benchmark set: a folder with ``README.md``, ``info.json`` and ``scan.h5``, or, for a
    set too big to commit, an ``info.json`` whose ``simulate`` entry makes the scan at run time
    from a seed (cached, see :func:`cache_dir`)."""

    name: str
    path: Path
    description: str
    kind: str
    n_items: int

    @property
    def baseline(self) -> str:
        """The classical baseline a sampler has to beat here: FBP on CT, else the
        pseudo-inverse (zero filling on MRI)."""
        return "fbp" if self.kind == "ct" else "pinv"

    @property
    def scan(self) -> Path:
        committed = self.path / "scan.h5"
        if committed.is_file():
            return committed
        info = read_info(self.path / "info.json")
        if "simulate" not in info:
            return committed  # reported as missing by the reader
        return simulated_scan(self.name, info)


def simulated_scan(name: str, info: dict) -> Path:
    """The scan of a set simulated at run time: recon's random phantoms of ``simulate.seed``
    (``n`` of ``size`` pixels) through the set's operator, noise seed 0; made once, atomically,
    under :func:`cache_dir`, keyed by the recipe's hash (a changed recipe makes a new file)."""
    import hashlib

    from recon import operators as O
    from recon.config import validate
    from recon.phantoms import random_phantoms
    from recon.simulate import simulate

    recipe = {"operator": info["operator"], "simulate": info["simulate"]}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "benchmarks" / f"{name}-{key}.h5"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = info["simulate"]
    op = validate(O.OPERATORS[info["operator"]["name"]][0], info["operator"], source=name)
    images = random_phantoms(int(spec["n"]), int(spec["size"]), seed=int(spec["seed"]))
    simulate(images, op, path, seed=0, force=True, source={"format": "phantoms", **spec})
    return path


def benchmark_sets() -> dict[str, BenchmarkSet]:
    """All bundled benchmark sets, by name."""
    root = data_dir() / "benchmarks"
    out = {}
    for info_path in sorted(root.glob("*/info.json")):
        info = read_info(info_path)
        out[info_path.parent.name] = BenchmarkSet(
            info_path.parent.name,
            info_path.parent,
            info["description"],
            info["kind"],
            info["n_items"],
        )
    return out


def resolve_benchmark(name_or_dir: str) -> BenchmarkSet:
    """A bundled set by name, or a folder laid out the same way."""
    p = Path(name_or_dir)
    if (p / "scan.h5").is_file():
        info = read_info(p / "info.json")
        return BenchmarkSet(
            p.name, p, info.get("description", ""), info.get("kind", "?"), info.get("n_items", -1)
        )
    sets = benchmark_sets()
    if name_or_dir not in sets:
        raise UserError(
            f"unknown benchmark {name_or_dir!r}; known: {', '.join(sets) or 'none'} "
            "(or give a folder holding scan.h5)"
        )
    return sets[name_or_dir]
