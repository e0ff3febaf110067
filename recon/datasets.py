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

from recon.errors import UserError


def data_dir() -> Path:
    """The bundled data folder."""
    env = os.environ.get("RECON_DATA")
    p = Path(env) if env else Path(str(resources.files("recon.data")))
    if not p.is_dir():
        raise UserError(f"recon's data folder {p} is missing; set RECON_DATA to its location")
    return p


@dataclass(frozen=True)
class BenchmarkSet:
    """A benchmark set: a folder with ``scan.h5``, ``README.md`` and ``info.json``."""

    name: str
    path: Path
    description: str
    kind: str
    n_items: int

    @property
    def scan(self) -> Path:
        return self.path / "scan.h5"


def benchmark_sets() -> dict[str, BenchmarkSet]:
    """All bundled benchmark sets, by name."""
    root = data_dir() / "benchmarks"
    out = {}
    for info_path in sorted(root.glob("*/info.json")):
        info = json.loads(info_path.read_text())
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
        info = json.loads((p / "info.json").read_text()) if (p / "info.json").is_file() else {}
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
