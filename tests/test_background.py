"""Real scans have a dark background around the body; nothing there may be invented.

A photograph placed in the centre of a field of view twice its size (no medical image), as
multi-coil k-space with coil maps estimated from the ACS lines, is reconstructed by the
default run (DDS, the default network prior, its default steps), and fastMRI's zero-filled
baseline is recon's ``zero_filled`` exactly.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from recon.cli.main import app

SIZE = 64


@pytest.fixture(scope="module")
def dark_scan(tmp_path_factory):
    from skimage import data
    from skimage.transform import resize

    tmp = tmp_path_factory.mktemp("dark")
    img = np.zeros((SIZE, SIZE), np.float32)
    q = SIZE // 4
    img[q : 3 * q, q : 3 * q] = resize(data.camera() / 255.0, (2 * q, 2 * q), anti_aliasing=True)
    with h5py.File(tmp / "img.h5", "w") as f:
        f["images"] = img[None]
    scan = tmp / "scan.h5"
    args = ["simulate", str(tmp / "img.h5"), "-o", str(scan), "--operator", "mri_multicoil"]
    args += ["--coils", "8", "--acceleration", "4", "--center-fraction", "0.16"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    return scan


def _background(x: np.ndarray) -> np.ndarray:
    """The pixels at least SIZE / 16 away from the object's box."""
    keep = np.ones(x.shape[-2:], bool)
    m = SIZE // 4 - SIZE // 16
    keep[m : SIZE - m, m : SIZE - m] = False
    return x[..., keep]


def test_default_reconstruction_keeps_the_dark_background_dark(dark_scan, tmp_path):
    """The default run's background stays within twice the RMS of the measurement noise
    (complex Gaussian with std sigma_y per component: RMS magnitude sqrt(2) sigma_y). With
    coil maps cropped to the object (the support model recon used before), the background is
    invisible to the operator and the prior fills it: RMS 7x the noise's."""
    import json

    out = tmp_path / "out.h5"
    r = CliRunner().invoke(app, ["reconstruct", str(dark_scan), "-o", str(out)])
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        rec = f["reconstruction"][()]
        cfg = json.loads(f.attrs["config"])
    with h5py.File(dark_scan) as f:
        truth = f["reconstruction_rss"][()]
        sigma_y = json.loads(f.attrs["operator"])["sigma_y"]
    assert cfg["sampler"]["name"] == "dds" and cfg["prior"]["kind"] == "network"
    assert float(np.abs(_background(truth)).max()) == 0.0
    rms = float(np.sqrt((_background(rec) ** 2).mean()))
    assert rms < 2 * np.sqrt(2) * sigma_y, rms


def test_zero_filled_is_fastmris_baseline(dark_scan, tmp_path):
    """``--sampler zero_filled`` writes the root-sum-of-squares of the coils' zero-filled
    inverse FFTs (fastMRI's ``run_zero_filled``), computed here from the file with numpy."""
    out = tmp_path / "zf.h5"
    r = CliRunner().invoke(
        app, ["reconstruct", str(dark_scan), "-o", str(out), "--sampler", "zero_filled"]
    )
    assert r.exit_code == 0, r.output
    with h5py.File(dark_scan) as f:
        k = f["kspace"][()].astype(np.complex128) * f["mask"][()]
    imgs = np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    rss = np.sqrt((np.abs(imgs) ** 2).sum(1))
    with h5py.File(out) as f:
        rec = f["reconstruction"][()]
        zf = f["zero_filled"][()]
    np.testing.assert_allclose(rec, rss, rtol=1e-5, atol=1e-6 * rss.max())
    np.testing.assert_allclose(zf, rss, rtol=1e-5, atol=1e-6 * rss.max())


def test_support_checks_measure_the_fit_and_the_unseen_field_of_view(dark_scan):
    """``data_fit`` of the truth is the noise's energy ratio, 1 within its Monte-Carlo error
    (std sqrt(2 / m) for m measured real entries); a reconstruction that ignores the data is
    reported. Coil maps cropped to the object leave most of this field of view unseen
    (``blind_fraction``, reported); the default maps leave none."""
    import torch

    from recon import operators as O
    from recon import support
    from recon.operators.masks import num_low_frequencies
    from recon.operators.mri_multicoil import smooth_coil_maps

    cfg = O.MultiCoilMRIConfig(
        img_size=(SIZE, SIZE), n_coils=8, sigma_y=0.01, center_fraction=0.16
    )
    physics = O.build(cfg)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, SIZE, SIZE, generator=g)
    y = physics.A(x)
    y = y + 0.01 * torch.randn(y.shape, generator=g) * (y != 0)
    fit = support.data_fit(physics, x, y, 0.01)
    m = float((y[0] != 0).sum())
    assert bool(((fit - 1).abs() < 5 * (2 / m) ** 0.5).all()), fit
    bad = support.data_fit(physics, torch.zeros_like(x), y, 0.01)
    assert bool((bad > support.FIT_LIMIT).all())
    assert support.warnings("scan.h5", 0, float(bad[0]), 0.0)
    assert not support.warnings("scan.h5", 0, float(fit[0]), 0.0)

    with h5py.File(dark_scan) as f:
        k = torch.from_numpy(f["kspace"][()] * f["mask"][()])
    num_low = num_low_frequencies(SIZE, 0.16)
    given = O.MultiCoilMRIConfig(img_size=(SIZE, SIZE), coil_maps="given")
    for maps, blind in (
        (smooth_coil_maps(k, num_low, crop=0.05)[0], True),
        (smooth_coil_maps(k, num_low)[0], False),
        (O.estimate_coil_maps(k, num_low)[0], False),
    ):
        frac = support.blind_fraction(O.build(given, coil_maps=maps))
        assert (frac > support.BLIND_LIMIT) is blind, frac


def test_a_nan_ground_truth_gives_no_metrics_and_says_so(dark_scan, tmp_path):
    """A ground truth with NaN values: the reconstruction is written, with no metrics (a
    'PSNR nan' would read as a score), and the run says why in one line and records it."""
    import json
    import shutil

    scan = tmp_path / "nan.h5"
    shutil.copy(dark_scan, scan)
    with h5py.File(scan, "a") as f:
        t = f["reconstruction_rss"][()]
        t[0, 0, 0] = np.nan
        f["reconstruction_rss"][...] = t
    out = tmp_path / "out.h5"
    r = CliRunner().invoke(app, ["reconstruct", str(scan), "-o", str(out), "--sampler", "pinv"])
    assert r.exit_code == 0, r.output
    assert "PSNR" not in r.stdout and "NaN/Inf" in r.output
    with h5py.File(out) as f:
        assert "metrics" not in f.attrs and "NaN/Inf" in f.attrs["metrics_skipped"]
        assert json.loads(f.attrs["support"])["warnings"]


def _rec(scan, out, *args: str) -> tuple[np.ndarray, np.ndarray]:
    r = CliRunner().invoke(app, ["reconstruct", str(scan), "-o", str(out), *args])
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        return f["reconstruction"][()], f["noise_std_per_coil"][()]


def test_fastmri_files_get_the_noise_floor_of_their_rss_target(dark_scan, tmp_path):
    """fastMRI's targets are the root-sum-of-squares of noisy fully sampled coil images:
    E[RSS^2] = |x|^2 + sum_c 2 sigma_c^2. On a file that is not recon's simulation (its
    'simulated' attr removed) an estimate of the noise-free image is written as
    sqrt(|x|^2 + floor^2), with the floor from the per-coil noise the file's data give;
    zero filling keeps its own noise and gets none; recon's simulated files (noise-free
    truth) get none unless asked."""
    import shutil

    plain = tmp_path / "fastmri.h5"
    shutil.copy(dark_scan, plain)
    with h5py.File(plain, "a") as f:
        del f.attrs["simulated"]
    fast = ("--sampler", "tv")
    on, per_coil = _rec(plain, tmp_path / "on.h5", *fast)
    off, _ = _rec(plain, tmp_path / "off.h5", *fast, "--no-noise-floor")
    floor = np.sqrt(2 * (per_coil**2).sum(axis=1))  # per slice, in the file's units
    assert floor.min() > 0
    np.testing.assert_allclose(on**2, off**2 + floor[:, None, None] ** 2, rtol=1e-5)
    sim_default, _ = _rec(dark_scan, tmp_path / "sim.h5", *fast)
    np.testing.assert_array_equal(sim_default, off)
    sim_on, _ = _rec(dark_scan, tmp_path / "sim-on.h5", *fast, "--noise-floor")
    np.testing.assert_allclose(sim_on, on, rtol=1e-6)
    zf_plain, _ = _rec(plain, tmp_path / "zf.h5", "--sampler", "zero_filled")
    zf_sim, _ = _rec(dark_scan, tmp_path / "zf-sim.h5", "--sampler", "zero_filled")
    np.testing.assert_array_equal(zf_plain, zf_sim)
