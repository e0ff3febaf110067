"""Memory budgets: sizes, the measured probe, and --batch-size auto never changing a result."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from recon import memory
from recon.config import RunConfig, validate
from recon.errors import UserError
from recon.operators import MRIConfig
from recon.phantoms import random_phantoms
from recon.pipeline import run
from recon.simulate import simulate


def test_parse_size_units_and_refusals():
    assert memory.parse_size("4GB") == 4 * 10**9
    assert memory.parse_size("512MiB") == 512 * 2**20
    assert memory.parse_size("1.5 gb") == 1_500_000_000
    assert memory.parse_size("2000") == 2000
    for bad in ("", "4XB", "-1GB", "0", "GB"):
        with pytest.raises(UserError, match="--max-memory"):
            memory.parse_size(bad)


def test_rows_per_call_from_the_measured_row():
    assert memory.rows_per_call(100, 1000, 200, 50) == 7  # (1000 - 200) // (100 * 1.1)
    assert memory.rows_per_call(100, 10**6, 200, 50) == 13  # a quarter of the rows left
    assert memory.rows_per_call(100, 1000, 200, 3) == 1
    assert memory.rows_per_call(10**6, 1000, 200, 50) == 1  # over budget: one row at a time
    assert memory.rows_per_call(None, 1000, 200, 50) == memory.FALLBACK_ROWS


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_meter_sees_an_allocation():
    """A 64 MiB tensor touched inside the block is measured (the resident set grows by it)."""
    with memory.PeakMeter(torch.device("cpu")) as m:
        x = torch.ones(16 * 2**20)  # float32: 64 MiB, written (resident)
        del x
    assert m.peak is not None and m.peak >= 48 * 2**20


def test_batch_size_auto_equals_fixed_and_records_its_choice(tmp_path):
    scan = simulate(
        random_phantoms(3, 16, seed=1),
        MRIConfig(img_size=(16, 16), acceleration=4, center_fraction=0.25, sigma_y=0.01),
        tmp_path / "scan.h5",
        seed=0,
    )
    base = {
        "input": str(scan),
        "sampler": {"name": "dds"},
        "schedule": {"name": "karras", "n_steps": 6, "sigma_max": 5.0},
        "prior": {
            "kind": "phantom_gaussian",
            "size": 16,
            "n_train": 200,
            "rank": 16,
            "complex": True,
        },
        "n_samples": 2,
    }
    auto = run(validate(RunConfig, {**base, "output": str(tmp_path / "a.h5")}))
    fixed = run(validate(RunConfig, {**base, "batch_size": 1}))
    assert torch.equal(auto.reconstruction, fixed.reconstruction)
    with h5py.File(tmp_path / "a.h5") as f:
        assert f.attrs["rows_per_call"] == 2  # probe 1, then ceil(5 / 4) = 2, 1, 1, 1
        rec = dict(f.attrs)
    assert "budget_bytes" in str(rec["memory"])
    tight = run(
        validate(RunConfig, {**base, "max_memory": "1B", "output": str(tmp_path / "b.h5")})
    )
    assert torch.equal(tight.reconstruction, fixed.reconstruction)
    with h5py.File(tmp_path / "b.h5") as f:
        assert f.attrs["rows_per_call"] in (1, memory.FALLBACK_ROWS)
    assert np.isfinite(auto.reconstruction.numpy()).all()


_FAULTS = """
import resource, sys, torch
from recon.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
a = torch.ones(16 * 2**20)  # 64 MiB
for _ in range(10):  # the heap settles (a few blocks grow it once)
    b = a + 1
    del b
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):  # a solver's iterations: the same full-size temporary, freed each time
    b = a + 1
    del b
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux glibc")
def test_keep_freed_memory_stops_refaulting_large_buffers():
    """glibc unmaps a freed 64 MiB buffer, so each new one faults in its 16384 pages again;
    after keep_freed_memory the heap reuses it (what made TV at fastMRI size kernel-bound)."""
    import subprocess
    import sys

    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
        ).stdout.split()
        return out[0], int(out[1])

    kept, with_keep = faults("keep")
    _, without = faults("default")
    assert kept == "True"
    assert without >= 5 * 16384 * 0.9  # every page of every temporary, again
    assert with_keep < 0.5 * without  # mostly 0; the heap may still grow once or twice


def test_a_budget_below_one_row_is_said_and_recorded(tmp_path):
    """--max-memory below what one row needs: the run goes on one row at a time and says so
    (it exceeded the budget without a word)."""
    import h5py
    from typer.testing import CliRunner

    from recon.cli.main import app

    runner = CliRunner()
    scan, out = tmp_path / "s.h5", tmp_path / "o.h5"
    r = runner.invoke(app, ["simulate", "phantoms:1:16", "-o", str(scan), "--operator", "mri"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["reconstruct", str(scan), "-o", str(out), "--max-memory", "1KB", "--steps", "2"]
    )
    assert r.exit_code == 0, r.output
    assert "above the budget of 0.001 MB (--max-memory)" in r.output
    with h5py.File(out) as f:
        assert "above the budget" in f.attrs["support"]
