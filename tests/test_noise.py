"""The measurement noise level: estimated from fastMRI data, recorded, overridable."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recon import io
from recon import operators as O
from recon.cli.main import app
from recon.config import ConfigError, run_config
from recon.phantoms import random_phantoms
from recon.simulate import simulate
from recon.sources import FastMRISource, noise_std, open_source

runner = CliRunner()
SIGMA = 0.02


def _raw(tmp_path, op, n, seed=0, name="raw.h5"):
    """A recon-simulated fastMRI file without recon's record of the noise (as fastMRI's)."""
    size = op.img_size[-1]
    path = simulate(random_phantoms(n, size, seed=seed), op, tmp_path / name, seed=seed)
    with h5py.File(path, "a") as f:
        del f.attrs["operator"]
    return path


@pytest.mark.parametrize(
    "op, n",
    [
        (O.MRIConfig(img_size=(96, 96), encoded_size=(192, 96), acceleration=2), 4),
        (O.MultiCoilMRIConfig(img_size=(48, 48), encoded_size=(96, 48), n_coils=8), 3),
    ],
    ids=["singlecoil", "multicoil"],
)
def test_noise_is_estimated_from_the_oversampled_readout(tmp_path, op, n):
    """With 2x readout oversampling the estimate is within 5 % of the simulated std: the
    Monte-Carlo error of the MAD estimate is about 1.2 / sqrt(values), here >= 4600 values
    per slice and coil, so 5 % is over 3 standard errors of a slice's estimate (the volume
    takes the median over slices)."""
    path = _raw(tmp_path, op.model_copy(update={"sigma_y": SIGMA, "center_fraction": 0.125}), n)
    with io.open_h5(path) as f:
        src = FastMRISource(f, None)
    assert src.noise.origin.startswith("estimated from the data (readout oversampling")
    assert src.noise.file_units == pytest.approx(SIGMA, rel=0.05)
    assert src.noise.sigma_y == pytest.approx(src.noise.file_units / src.scale)
    n_coils = getattr(op, "n_coils", 1)
    assert src.noise.per_coil.shape == (n, n_coils)
    assert np.allclose(src.noise.per_coil, SIGMA, rtol=0.1)
    assert src.operator.sigma_y == src.noise.sigma_y


def test_noise_free_data_estimates_no_noise(tmp_path):
    op = O.MRIConfig(img_size=(32, 32), encoded_size=(64, 32), sigma_y=0.0)
    path = _raw(tmp_path, op, 2)
    with io.open_h5(path) as f:
        src = FastMRISource(f, None)
    assert src.noise.file_units < 1e-5


def test_noise_std_uses_the_periphery_without_oversampling():
    """Pure noise, no oversampling: the k-space periphery rule, per coil."""
    g = torch.Generator().manual_seed(0)
    k = torch.complex(torch.randn(3, 64, 64, generator=g), torch.randn(3, 64, 64, generator=g))
    std, rule = noise_std(k * torch.tensor([1.0, 2.0, 3.0])[:, None, None], torch.ones(64) > 0, 64)
    assert rule == "k-space periphery"
    assert torch.allclose(std, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), rtol=0.06)


def test_the_files_record_wins_over_the_estimate_and_sigma_y_wins_over_both(tmp_path):
    """A file recon simulated records its noise (attr operator); --sigma-y, in the file's
    units, overrides it; the results file records the value and its origin."""
    op = O.MRIConfig(img_size=(16, 16), acceleration=4, center_fraction=0.25, sigma_y=0.01)
    scan = simulate(random_phantoms(2, 16, seed=1), op, tmp_path / "scan.h5", seed=0)
    src = open_source(run_config(None, sampler="pinv", input=str(scan)))
    assert src.noise.file_units == 0.01 and "record" in src.noise.origin
    out = tmp_path / "out.h5"
    args = ["reconstruct", str(scan), "-o", str(out), "--sampler", "pinv", "--sigma-y", "0.05"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        noise = json.loads(f.attrs["noise"])
        assert noise["origin"] == "--sigma-y" and noise["sigma_y_file_units"] == 0.05
        assert noise["sigma_y"] == pytest.approx(0.05 / src.scale)
        assert f["noise_std_per_coil"].shape == (2, 1)
        assert json.loads(f.attrs["config"])["sigma_y"] == 0.05


def test_sigma_y_overrides_a_ct_files_record(tmp_path):
    op = O.CTConfig(img_size=(16, 16), n_angles=8, sigma_y=0.005)
    scan = simulate(random_phantoms(1, 16, seed=1), op, tmp_path / "ct.h5", seed=0)
    src = open_source(run_config(None, sampler="fbp", input=str(scan)))
    assert src.operator.sigma_y == 0.005 and src.noise.origin == "the file's record"
    src = open_source(run_config(None, sampler="fbp", input=str(scan), sigma_y=0.02))
    assert src.operator.sigma_y == 0.02 and src.noise.origin == "--sigma-y"


def test_an_operator_field_without_its_name_names_the_way_out():
    with pytest.raises(ConfigError, match=r"operator\.sigma_y without operator\.name.*--sigma-y"):
        run_config(None, overrides=["operator.sigma_y=0.01"])
