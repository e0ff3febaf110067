"""Pipeline, scan I/O and CLI tests on tiny inputs (exact priors, few steps)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recon import operators as O
from recon.cli.main import app
from recon.config import RunConfig, validate
from recon.errors import UserError
from recon.io import fastmri_info, read_fastmri_slice
from recon.phantoms import random_phantoms
from recon.pipeline import rows_folder, run
from recon.samplers import SAMPLERS
from recon.simulate import simulate

runner = CliRunner()
SIZE = 16
PRIOR = {"kind": "phantom_gaussian", "size": SIZE, "n_train": 200, "rank": 16}
FAST = {"name": "karras", "n_steps": 8, "sigma_max": 5.0}


def _prior(complex_: bool):
    return {**PRIOR, "complex": complex_}


@pytest.fixture(scope="module")
def images():
    return random_phantoms(3, SIZE, seed=4242)


def _sim(tmp_path, images, op, name="scan.h5"):
    return simulate(images, op, tmp_path / name, seed=0)


def _cfg(**kw):
    base = {"sampler": {"name": "dds"}, "schedule": FAST, "prior": _prior(False)}
    base.update(kw)
    return validate(RunConfig, base)


MRI = O.MRIConfig(img_size=(SIZE, SIZE), acceleration=4, center_fraction=0.25, sigma_y=0.01)
MC = O.MultiCoilMRIConfig(
    img_size=(SIZE, SIZE), acceleration=2, center_fraction=0.25, n_coils=4, sigma_y=0.01
)
CT = O.CTConfig(img_size=(SIZE, SIZE), n_angles=12, sigma_y=0.005)
INP = O.InpaintingConfig(img_size=(1, SIZE, SIZE), keep_ratio=0.4, sigma_y=0.01)
SR = O.SuperResolutionConfig(img_size=(1, SIZE, SIZE), factor=2, sigma_y=0.01)


@pytest.mark.parametrize("op", [MRI, MC, CT, INP, SR], ids=lambda o: o.name)
def test_simulate_reconstruct_round_trip(op, images, tmp_path):
    scan = _sim(tmp_path, images, op)
    is_mri = op.name.startswith("mri")
    out = tmp_path / "out.h5"
    res = run(
        _cfg(
            input=str(scan),
            output=str(out),
            prior=_prior(is_mri),
            n_samples=2,
            figure=str(tmp_path / "f.png"),
        )
    )
    assert res.reconstruction.shape == (3, SIZE, SIZE)
    assert bool(torch.isfinite(res.reconstruction).all())
    with h5py.File(out) as f:
        assert f["reconstruction"].shape == (3, SIZE, SIZE)
        assert f["std"].shape == (3, SIZE, SIZE)
        cfg = json.loads(f.attrs["config"])
        assert cfg["sampler"]["name"] == "dds" and f.attrs["seed"] == 0
        assert "recon_version" in f.attrs and "wall_time_s" in f.attrs
    # the ground truth came through, and the figure was drawn
    assert res.truth is not None and res.truth.shape == res.reconstruction.shape
    assert (tmp_path / "f.png").stat().st_size > 5000


def test_fastmri_layout_round_trip(images, tmp_path):
    scan = _sim(tmp_path, images, MC)
    info = fastmri_info(scan)
    assert info.multicoil and info.n_coils == 4 and info.n_slices == 3
    assert info.mask is not None and info.mask.shape == (SIZE,)
    k, truth = read_fastmri_slice(info, 1)
    assert k.shape == (4, SIZE, SIZE) and k.dtype == torch.complex64
    assert torch.allclose(truth, images[1, 0], atol=1e-6)
    # unmeasured columns are zero, measured ones are not
    assert float(k[:, :, info.mask == 0].abs().max()) == 0.0
    assert float(k[:, :, info.mask == 1].abs().max()) > 0.0


def test_fastmri_file_without_mask_and_header(images, tmp_path):
    """A fully sampled fastMRI-style file with an ismrmrd header: the image is reconstructed on
    the header's reconstruction grid."""
    x = torch.zeros(2, SIZE + 4, SIZE)
    x[:, 2:-2] = images[:2, 0]
    k = torch.fft.fftshift(
        torch.fft.fft2(torch.fft.ifftshift(x.to(torch.complex64), dim=(-2, -1)), norm="ortho"),
        dim=(-2, -1),
    )
    header = (
        '<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
        f"<reconSpace><matrixSize><x>{SIZE}</x><y>{SIZE}</y><z>1</z></matrixSize></reconSpace>"
        "</encoding></ismrmrdHeader>"
    )
    path = tmp_path / "full.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k.numpy())
        f.create_dataset("ismrmrd_header", data=np.bytes_(header))
        f.create_dataset("reconstruction_esc", data=images[:2, 0].numpy())
    info = fastmri_info(path)
    assert info.recon_size == (SIZE, SIZE) and info.mask is None
    op = {"name": "mri", "img_size": [SIZE + 4, SIZE], "acceleration": 2, "center_fraction": 0.25}
    cfg = validate(
        RunConfig,
        {"input": str(path), "sampler": {"name": "dds"}, "prior": _prior(True), "operator": op},
    )
    # the unknown is the image on the header's 16x16 reconstruction grid inside the 20x16
    # k-space (Embedded operator): a 16x16 prior serves it, the output is 16x16
    res = run(cfg)
    assert res.reconstruction.shape == res.truth.shape == (2, SIZE, SIZE)
    # a sampler without a prior never builds or checks one
    no_prior = cfg.model_copy(update={"sampler": SAMPLERS["pinv"].config()})
    assert run(no_prior).reconstruction.shape == (2, SIZE, SIZE)
    from recon.priors import GaussianPrior, save_exact_prior

    shape = (2, SIZE + 4, SIZE)
    prior_path = save_exact_prior(
        GaussianPrior(torch.zeros(shape), torch.full((2 * (SIZE + 4) * SIZE,), 0.1), shape=shape),
        tmp_path / "p.safetensors",
    )
    cfg = cfg.model_copy(
        update={
            "prior": validate(
                RunConfig,
                {"prior": {"kind": "exact", "path": str(prior_path)}, "sampler": {"name": "dds"}},
            ).prior
        }
    )
    with pytest.raises(UserError, match=r"prior serves images of shape \(2, 20, 16\)"):
        run(cfg)  # a prior of the k-space grid, not of the reconstruction grid


def test_item_result_independent_of_batch_and_of_other_items(images, tmp_path):
    scan = _sim(tmp_path, images, MRI)
    base = dict(input=str(scan), prior=_prior(True), n_samples=2)
    all_items = run(_cfg(**base, batch_size=6))
    alone = run(_cfg(**base, batch_size=1, items=[1]))
    assert torch.allclose(all_items.reconstruction[1], alone.reconstruction[0], atol=1e-6)
    assert torch.allclose(all_items.std[1], alone.std[0], atol=1e-6)
    other_seed = run(_cfg(**base, items=[1], seed=5))
    assert float((other_seed.reconstruction[0] - alone.reconstruction[0]).abs().max()) > 1e-4


def test_cli_reconstruct_simulate_evaluate(tmp_path):
    scan = tmp_path / "scan.h5"
    r = runner.invoke(
        app,
        ["simulate", f"phantoms:2:{SIZE}", "-o", str(scan), "--operator", "ct", "--angles", "10"],
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "rec.h5"
    cfgfile = tmp_path / "run.yaml"
    cfgfile.write_text(
        f"prior:\n  kind: phantom_gaussian\n  size: {SIZE}\n  n_train: 200\n"
        "  rank: 16\nschedule:\n  name: karras\n  n_steps: 6\n  sigma_max: 5.0\n"
    )
    r = runner.invoke(
        app,
        [
            "reconstruct",
            str(scan),
            "-o",
            str(out),
            "-c",
            str(cfgfile),
            "--sampler",
            "tv",
            "--set",
            "sampler.n_iter=20",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "PSNR" in r.stdout and out.exists()
    bench = tmp_path / "bench"
    bench.mkdir()
    scan.rename(bench / "scan.h5")
    res = tmp_path / "eval"
    args = ["evaluate", "-b", str(bench), "-o", str(res), "-c", str(cfgfile), "--sampler", "fbp"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = (res / "items.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 items
    summary = (res / "summary.md").read_text()
    assert "Metric convention: **image**" in summary
    assert (res / "figure.png").exists() and (res / "results.json").exists()
    # resumable: drop one item, rerun, same table
    before = json.loads((res / "results.json").read_text())
    (res / "items" / "0001.npz").unlink()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    after = json.loads((res / "results.json").read_text())
    assert after["psnr"]["mean"] == pytest.approx(before["psnr"]["mean"], abs=1e-9)
    # a killed run: a torn last CSV row and a truncated .npz are recomputed, not fatal
    with (res / "items.csv").open("a") as f:
        f.write("1,12.3")
    npz = res / "items" / "0000.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    again = json.loads((res / "results.json").read_text())
    assert again["psnr"]["mean"] == pytest.approx(before["psnr"]["mean"], abs=1e-9)
    assert len((res / "items.csv").read_text().splitlines()) == 3
    # one evaluate per folder at a time
    import fcntl

    with (res / ".lock").open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = runner.invoke(app, args)
        assert r.exit_code != 0 and "another `recon evaluate`" in str(r.exception)
    # a folder whose run of another config finished nothing is taken over, not refused
    fresh = tmp_path / "eval2"
    fresh.mkdir()
    (fresh / "config.json").write_text(json.dumps({"hash": "another"}))
    fargs = ["evaluate", "-b", str(bench), "-o", str(fresh), "-c", str(cfgfile)]
    r = runner.invoke(app, [*fargs, "--sampler", "fbp"])
    assert r.exit_code == 0, r.output
    fargs = ["evaluate", "-b", str(bench), "-o", str(fresh), "-c", str(cfgfile)]
    r = runner.invoke(app, [*fargs, "--sampler", "pinv"])
    assert r.exit_code != 0 and "another config" in str(r.exception)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "recon.cli.main", *args], capture_output=True, text=True
    )


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def mri_scan(tmp_path_factory, images):
    d = tmp_path_factory.mktemp("scan")
    return simulate(images, MRI, d / "scan.h5", seed=0)


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, mri_scan):
    out = str(tmp_path / "o.h5")
    _one_line_error(
        _cli("reconstruct", str(tmp_path / "missing.h5"), "-o", out), "missing.h5", "not found"
    )
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(Path(mri_scan).read_bytes()[:2000])
    _one_line_error(_cli("reconstruct", str(trunc), "-o", out), "trunc.h5", "truncated")
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f.create_dataset("kspacex", data=np.zeros((1, 4, 4), np.complex64))
    _one_line_error(_cli("reconstruct", str(wrong), "-o", out), "wrong.h5", "kspacex")
    nan = tmp_path / "nan.h5"
    with h5py.File(mri_scan) as src, h5py.File(nan, "w") as f:
        k = src["kspace"][()]
        k[0, 3, 3] = np.nan
        f.create_dataset("kspace", data=k)
        f.create_dataset("mask", data=src["mask"][()])
    _one_line_error(
        _cli("reconstruct", str(nan), "-o", out, "--prior", "phantom-gaussian"), "nan.h5", "NaN"
    )
    badmask = tmp_path / "badmask.h5"
    with h5py.File(mri_scan) as src, h5py.File(badmask, "w") as f:
        f.create_dataset("kspace", data=src["kspace"][()])
        f.create_dataset("mask", data=np.ones(SIZE + 3, np.float32))
    _one_line_error(_cli("reconstruct", str(badmask), "-o", out), "badmask.h5", "mask")
    _one_line_error(
        _cli("reconstruct", str(mri_scan), "-o", out, "--sampler", "dsp"), "unknown sampler", "dds"
    )
    _one_line_error(
        _cli("reconstruct", str(mri_scan), "-o", out, "--prior", "nope"), "unknown prior"
    )
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("sampler:\n  name: dds\n  n_gc: 3\n")
    _one_line_error(
        _cli("reconstruct", str(mri_scan), "-o", out, "-c", str(cfg)),
        "bad.yaml",
        "n_gc",
        "unknown key",
    )
    exists = tmp_path / "exists.h5"
    exists.write_bytes(b"precious")
    _one_line_error(_cli("reconstruct", str(mri_scan), "-o", str(exists)), "--force")
    assert exists.read_bytes() == b"precious"
    _one_line_error(
        _cli("reconstruct", str(mri_scan), "-o", str(tmp_path / "no" / "o.h5")), "does not exist"
    )
    assert not list(tmp_path.glob(".*tmp*"))


def test_outputs_never_lose_data_and_are_checked_before_work(tmp_path, mri_scan):
    """-o equal to the input is refused even with --force; an existing figure needs --force;
    a figure path matplotlib cannot write and an all-zero k-space fail before any sampling."""
    before = Path(mri_scan).read_bytes()
    for flags in ([], ["--force"]):
        _one_line_error(
            _cli("reconstruct", str(mri_scan), "-o", str(mri_scan), "--sampler", "pinv", *flags),
            "input",
        )
    assert Path(mri_scan).read_bytes() == before
    fig = tmp_path / "fig.png"
    fig.write_bytes(b"old figure")
    out = tmp_path / "o.h5"
    _one_line_error(
        _cli(
            "reconstruct", str(mri_scan), "-o", str(out), "--figure", str(fig), "--sampler", "pinv"
        ),
        "fig.png",
        "--force",
    )
    assert fig.read_bytes() == b"old figure" and not out.exists()
    _one_line_error(
        _cli("reconstruct", str(mri_scan), "-o", str(out), "--figure", str(tmp_path / "f.xyz")),
        "f.xyz",
        "suffix",
    )
    zero = tmp_path / "zero.h5"
    with h5py.File(mri_scan) as src, h5py.File(zero, "w") as f:
        f.create_dataset("kspace", data=np.zeros_like(src["kspace"][()]))
        f.create_dataset("mask", data=src["mask"][()])
    _one_line_error(_cli("reconstruct", str(zero), "-o", str(out)), "zero.h5", "zero")
    assert not out.exists()
    args = ["reconstruct", str(mri_scan), "-o", str(out), "--figure", str(fig), "--force"]
    r = runner.invoke(app, [*args, "--sampler", "pinv"])
    assert r.exit_code == 0, r.output
    assert fig.read_bytes()[:4] == b"\x89PNG" and out.exists()


def test_fastmri_slice_preparation_is_shared_by_reconstruction_and_acquisition(images):
    """One preparation: the zero-filled coil-combined magnitude of the scaled k-space peaks at
    1, and acquisition's scale for a given mask equals reconstruction's."""
    from recon.active import acquire_fastmri_slice
    from recon.sources import prepare_kspace

    x = torch.zeros(1, 2, SIZE, SIZE)
    x[:, 0] = images[:1, 0]
    maps = O.birdcage_maps(4, (SIZE, SIZE))
    cfg = O.MultiCoilMRIConfig(img_size=(SIZE, SIZE), mask="given", coil_maps="given")
    full = O.build(cfg, mask=torch.ones(SIZE, SIZE), coil_maps=maps[None]).A(x)[0]
    k = torch.complex(full[0], full[1])  # (coils, H, W)
    n_low = O.masks.num_low_frequencies(SIZE, 0.25)
    lines = torch.zeros(SIZE)
    start = (SIZE - n_low + 1) // 2
    lines[start : start + n_low] = 1
    prep = prepare_kspace(k, lines, n_low, multicoil=True)
    ph = O.build(
        cfg, mask=prep.inputs["mask"][None, None], coil_maps=prep.inputs["coil_maps"][None]
    )
    zf = ph.A_adjoint(prep.y[None])[0]
    assert float(zf.norm(dim=0).max()) == pytest.approx(1.0, rel=1e-4)
    from recon.phantoms import phantom_gaussian_prior

    prior = phantom_gaussian_prior(SIZE, complex_valued=True, n_train=200, rank=16)
    sigmas = torch.tensor([0.5, 0.0], dtype=torch.float64)
    _, scale = acquire_fastmri_slice(
        k, prior, sigmas, acceleration=SIZE / (n_low + 1), center_fraction=0.25, n_particles=2
    )
    assert scale == pytest.approx(prep.scale, rel=1e-6)


def test_digits_split_and_benchmark_sets():
    from recon.datasets import benchmark_sets
    from recon.digits import load_digits

    train, ytr = load_digits("train")
    test, _ = load_digits("test")
    assert train.shape == (4000, 1, 32, 32) and test.shape == (1000, 1, 32, 32)
    assert float(train.min()) >= 0.0 and float(train.max()) <= 1.0
    assert float(train[:, :, :2].abs().max()) == 0.0  # zero padding
    assert set(ytr.tolist()) == set(range(10))
    sets = benchmark_sets()
    assert {"digits_inpaint_70", "digits_sr_x4", "mri_x4_multicoil", "ct_sparse_30"} <= set(sets)
    # the held-out digits in the sets are test digits, never training ones
    with h5py.File(sets["digits_sr_x4"].scan) as f:
        gt = torch.from_numpy(f["ground_truth"][()])
    assert torch.allclose(gt, test[:6])
    flat = train.reshape(4000, -1)
    for g in gt.reshape(6, -1):
        assert float((flat - g).abs().sum(1).min()) > 0


def test_read_images_hdf5_and_png_folder(tmp_path, images):
    from PIL import Image

    from recon.io import read_images

    h5 = tmp_path / "imgs.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("images", data=images[:, 0].numpy())  # (N, H, W)
    got = read_images(h5)
    assert got.shape == (3, 1, SIZE, SIZE) and torch.allclose(got, images)
    folder = tmp_path / "png"
    folder.mkdir()
    for i, img in enumerate(images[:, 0]):
        Image.fromarray((img.numpy() * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    got = read_images(folder)
    assert got.shape == (3, 1, SIZE, SIZE)
    assert float((got - images).abs().max()) <= 0.5 / 255 + 1e-6
    # simulate from a PNG folder through the CLI
    out = tmp_path / "scan.h5"
    r = runner.invoke(app, ["simulate", str(folder), "-o", str(out), "--operator", "inpainting"])
    assert r.exit_code == 0, r.output
    with pytest.raises(UserError, match=r"no \.png files"):
        read_images(tmp_path)


def test_atomic_write_removes_what_a_killed_writer_left(tmp_path):
    """A temporary file of a dead process is removed by the next write to that path; one of a
    live process (a concurrent writer) is left alone."""
    import os

    from recon import io

    dead = tmp_path / ".out.tmp-999999999.h5"
    dead.write_bytes(b"partial")
    alive = tmp_path / f".out.tmp-{os.getppid()}.h5"
    alive.write_bytes(b"writing")
    io.write_result(tmp_path / "out.h5", reconstruction=np.zeros((1, 2, 2), np.float32))
    assert not dead.exists() and alive.exists()
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["reconstruction"].shape == (1, 2, 2)


def test_readout_oversampled_file_reconstructs_on_the_recon_grid(tmp_path, images):
    """`recon simulate --readout-oversampling 2` writes fastMRI raw layout (k-space 2H x W,
    ismrmrd_header with a H x W reconstruction space); reconstruct gives (slices, H, W),
    comparable with reconstruction_rss; fully sampled, pinv recovers the image."""
    src = tmp_path / "img.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("images", data=images[:2, 0].numpy())
    for op in ("mri", "mri_multicoil"):
        scan = tmp_path / f"{op}.h5"
        args = ["simulate", str(src), "-o", str(scan), "--operator", op, "--coils", "4"]
        r = runner.invoke(app, [*args, "--readout-oversampling", "2", "--center-fraction", "0.25"])
        assert r.exit_code == 0, r.output
        info = fastmri_info(scan)
        assert info.shape == (2 * SIZE, SIZE) and info.image_size == (SIZE, SIZE)
        for sampler in ("pinv", "tv"):
            out = tmp_path / f"{op}-{sampler}.h5"
            r = runner.invoke(
                app, ["reconstruct", str(scan), "-o", str(out), "--sampler", sampler]
            )
            assert r.exit_code == 0, r.output
            with h5py.File(out) as f, h5py.File(scan) as s:
                assert (
                    f["reconstruction"].shape == s["reconstruction_rss"].shape == (2, SIZE, SIZE)
                )
    full = tmp_path / "full.h5"
    args = ["simulate", str(src), "-o", str(full), "--operator", "mri", "--mask", "full"]
    r = runner.invoke(app, [*args, "--readout-oversampling", "2", "--sigma-y", "0"])
    assert r.exit_code == 0, r.output
    with h5py.File(full, "a") as f:
        f.create_dataset("mask", data=np.ones(SIZE, np.float32))
    res = run(_cfg(input=str(full), sampler={"name": "pinv"}))
    assert torch.allclose(res.reconstruction.float(), images[:2, 0], atol=1e-4)


def test_run_time_benchmark_set_is_simulated_once_and_cached(tmp_path, monkeypatch):
    """fastmri_knee_like has no committed scan: it is simulated from its seed into the cache
    (fastMRI raw layout at knee size), once; a second access reuses the file."""
    from recon.datasets import resolve_benchmark

    monkeypatch.setenv("RECON_CACHE", str(tmp_path))
    bench = resolve_benchmark("fastmri_knee_like")
    scan = bench.scan
    assert scan.parent == tmp_path / "benchmarks"
    info = fastmri_info(scan)
    assert info.shape == (640, 368) and info.n_coils == 15 and info.image_size == (320, 320)
    assert info.n_slices == bench.n_items == 4 and info.mask is not None
    stamp = scan.stat().st_mtime_ns
    assert resolve_benchmark("fastmri_knee_like").scan.stat().st_mtime_ns == stamp


def test_coil_estimator_is_a_run_setting(images, tmp_path):
    """Multi-coil k-space reconstructs as well with every coil-map estimator (coil_estimator)
    as with the low-resolution ones, and the results file records the choice."""
    mc48 = MC.model_copy(update={"img_size": (48, 48)})
    scan = simulate(random_phantoms(2, 48, seed=3), mc48, tmp_path / "scan.h5", seed=0)
    psnr = {}
    for est in O.COIL_ESTIMATORS:
        out = tmp_path / f"{est}.h5"
        cfg = _cfg(input=str(scan), output=str(out), sampler={"name": "tv"}, coil_estimator=est)
        res = run(cfg)
        psnr[est] = sum(res.metrics["psnr"]) / len(res.metrics["psnr"])
        with h5py.File(out) as f:
            assert json.loads(f.attrs["config"])["coil_estimator"] == est
    assert all(p > psnr["lowres"] - 1.0 for p in psnr.values()), psnr


def test_resume_is_keyed_by_what_the_scan_holds(images, tmp_path):
    """A scan replaced by another of the same size, its old modification time restored, is a
    different scan: the finished rows of the first are not reused (they were, by path, size
    and mtime)."""
    import os
    import shutil

    from recon.distributed import RowStore

    a = _sim(tmp_path, images, MRI, "a.h5")
    b = simulate(images.flip(-1), MRI, tmp_path / "b.h5", seed=0)
    assert a.stat().st_size == b.stat().st_size
    scan = tmp_path / "scan.h5"
    shutil.copy(a, scan)
    cfg = _cfg(input=str(scan), output=str(tmp_path / "o.h5"), batch_size=1, prior=_prior(True))

    def stop(done: int, total: int) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, on_rows=stop)
    assert len(RowStore(rows_folder(cfg)).load()) == 1
    st = scan.stat()
    shutil.copy(b, scan)
    os.utime(scan, ns=(st.st_atime_ns, st.st_mtime_ns))
    res = run(cfg)
    with h5py.File(tmp_path / "o.h5") as f:
        assert f.attrs["rows_resumed"] == 0
    fresh = run(_cfg(input=str(b), prior=_prior(True)))
    assert torch.equal(res.reconstruction, fresh.reconstruction)


def test_a_written_output_takes_every_run_s_rows_for_it_along(images, tmp_path):
    """Rows another run left for the same output (another seed, here interrupted) go once the
    output is written: nothing is left beside it forever."""
    scan = _sim(tmp_path, images, MRI)
    out = tmp_path / "o.h5"
    base = dict(input=str(scan), output=str(out), batch_size=1, prior=_prior(True))

    def stop(done: int, total: int) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(_cfg(**base, seed=1), on_rows=stop)
    rows = tmp_path / ".o.h5.rows"
    assert rows.is_dir()
    run(_cfg(**base, seed=2))
    assert out.is_file() and not rows.exists()


def test_pipeline_records_particle_health(images, tmp_path):
    """A particle sampler's run records each draw's cloud health in attr 'support'
    (recon.support.cloud_health)."""
    scan = _sim(tmp_path, images[:1], MRI)
    cfg = _cfg(
        input=str(scan),
        output=str(tmp_path / "o.h5"),
        prior=_prior(True),
        sampler={"name": "tds", "n_particles": 4},
        n_samples=2,
    )
    run(cfg)
    with h5py.File(tmp_path / "o.h5") as f:
        parts = json.loads(f.attrs["support"])["particles"]
    assert len(parts) == 1 and len(parts[0]) == 2
    assert parts[0][0]["n_particles"] == 4 and len(parts[0][0]["ess"]) == FAST["n_steps"]
