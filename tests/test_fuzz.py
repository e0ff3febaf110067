"""Fuzzing the scan readers and `recon reconstruct` through `main()` with generated HDF5 files.

The property (the README's promise for bad input): the command exits 0 with a finite output,
or exits 2 with one line on stderr and nothing written; the input file is never modified;
never an internal error (exit 1) or a traceback. The suite runs a short profile
(``RECON_FUZZ_EXAMPLES``, 60 by default); a longer run: ``RECON_FUZZ_EXAMPLES=2000 pytest
tests/test_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("RECON_FUZZ_EXAMPLES", "60"))

DTYPES = st.sampled_from(["complex64", "float32", "float64", "int16", "bool"])
SPECIAL = st.sampled_from([None, "nan", "inf", "zero"])


@st.composite
def arrays(draw, ndim_range=(1, 5), max_side=9):
    ndim = draw(st.integers(*ndim_range))
    shape = tuple(draw(st.integers(0, max_side)) for _ in range(ndim))
    dtype = draw(DTYPES)
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if dtype == "complex64":
        a = a + 1j * rng.standard_normal(shape)
    a = a.astype(dtype)
    special = draw(SPECIAL)
    if a.size and special is not None and a.dtype.kind in "fc":
        flat = a.reshape(-1)
        flat[draw(st.integers(0, a.size - 1))] = {"nan": np.nan, "inf": np.inf, "zero": 0}[special]
    return a


@st.composite
def scan_files(draw):
    """A dict of dataset name -> array or "group", plus attrs, loosely shaped like a scan."""
    kind = draw(st.sampled_from(["kspace", "sinogram", "data", "measurements", "images", "junk"]))
    items: dict[str, object] = {}
    if kind == "kspace":
        n = draw(st.sampled_from([1, 1, 2, 0]))
        c = draw(st.sampled_from([1, 3, 2, 0]))
        h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        shape = (n, c, h, w) if draw(st.booleans()) else (n, h, w)
        rng = np.random.default_rng(draw(st.integers(0, 999)))
        k = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype("complex64")
        if k.size and draw(st.booleans()):
            k.reshape(-1)[0] = draw(st.sampled_from([np.nan, np.inf, 0]))
        items["kspace"] = k if draw(st.integers(0, 5)) else draw(arrays())
        if draw(st.booleans()):
            mask = draw(st.sampled_from(["ones", "zeros", "random", "values", "wrong"]))
            m = {
                "ones": np.ones(w),
                "zeros": np.zeros(w),
                "random": (rng.random(w) > 0.5).astype(float),
                "values": rng.standard_normal(w),
                "wrong": np.ones(w + 1),
            }[mask]
            items["mask"] = m.astype("float32")
        if draw(st.booleans()):
            items["reconstruction_rss"] = draw(arrays((3, 3)))
        if draw(st.booleans()):
            x, y = draw(st.integers(-5, 14)), draw(st.integers(-5, 14))
            items["ismrmrd_header"] = np.bytes_(
                '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding><reconSpace>'
                f"<matrixSize><x>{x}</x><y>{y}</y><z>1</z></matrixSize></reconSpace>"
                "</encoding></ismrmrdHeader>"
            )
    elif kind == "measurements":
        rng = np.random.default_rng(draw(st.integers(0, 999)))
        op = draw(st.sampled_from(["inpainting", "super_resolution", "random"]))
        if op == "random":
            items["measurements"] = draw(arrays((2, 5)))
            if draw(st.booleans()):
                items["ground_truth"] = draw(arrays((2, 5)))
        else:  # well-formed apart from what is drawn below
            n = draw(st.integers(1, 2))
            shape = (n, 1, 4, 4)
            items["measurements"] = rng.random(shape).astype("float32")
            items["ground_truth"] = rng.random(
                (n, 1, 4, 4) if op == "inpainting" else (n, 1, 8, 8)
            )
            if op == "inpainting":
                items["mask"] = (rng.random((n, 4, 4)) > 0.5).astype("float32")
            if draw(st.booleans()):
                victim = draw(st.sampled_from(sorted(items)))
                items[victim] = draw(arrays())
        attrs_op = {
            "inpainting": {"name": "inpainting", "img_size": [1, 4, 4]},
            "super_resolution": {"name": "super_resolution", "img_size": [1, 8, 8], "factor": 2},
            "random": {"name": "inpainting", "img_size": [1, 4, 4]},
        }[op]
        items["_operator"] = json.dumps(attrs_op)
    else:
        items[kind] = "group" if draw(st.integers(0, 4)) == 0 else draw(arrays())
    attrs = {}
    if "_operator" in items:
        attrs["operator"] = items.pop("_operator")
    if draw(st.integers(0, 3)) == 0:
        attrs["operator"] = draw(
            st.sampled_from(
                [
                    "{not json",
                    json.dumps({"name": "inpainting", "img_size": [1, 4, 4]}),
                    json.dumps({"name": "super_resolution", "img_size": [1, 8, 8], "factor": 2}),
                    json.dumps({"name": "nope"}),
                    "[]",
                ]
            )
        )
    if draw(st.booleans()):
        attrs["img_size"] = draw(st.sampled_from(["[8, 8]", "[0, 8]", "junk", "[4]"]))
    if draw(st.booleans()):
        attrs["n_angles"] = draw(st.integers(-2, 12))
    return items, attrs


def _write(path: Path, items: dict, attrs: dict) -> None:
    with h5py.File(path, "w") as f:
        for name, value in items.items():
            if isinstance(value, str) and value == "group":
                f.create_group(name)
            else:
                f.create_dataset(name, data=value)
        for k, v in attrs.items():
            f.attrs[k] = v


def _main(argv: list[str]) -> tuple[int, str]:
    from recon.cli.main import main

    err = io.StringIO()
    old = sys.argv
    sys.argv = ["recon", *argv]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    return code, err.getvalue()


def _assert_clean(code, err, out, what, more_lines_from: str | None = None) -> None:
    """The README's promise: exit 0 with a finite output, or exit 2 with one line (a config
    error: one line per problem, each naming ``more_lines_from``) and nothing written."""
    assert code in (0, 2), (code, err, what)
    assert "Traceback" not in err, err
    if code == 0:
        with h5py.File(out) as f:
            assert np.isfinite(f["reconstruction"][()]).all()
        return
    assert not out.exists(), err
    lines = err.strip().split("\n")  # a progress bar redraws one line with \r
    assert lines[0].split("\r")[-1].startswith("recon: error"), err
    if more_lines_from is None:
        assert len(lines) == 1, err
    else:
        assert all(line.startswith(more_lines_from) for line in lines[1:]), err


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scan=scan_files(), sampler=st.sampled_from(["pinv", "tv", "fbp"]))
def test_reconstruct_never_crashes_loses_data_or_writes_garbage(scan, sampler):
    items, attrs = scan
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "scan.h5", Path(tmp) / "out.h5"
        _write(src, items, attrs)
        before = hashlib.sha256(src.read_bytes()).hexdigest()
        code, err = _main(["reconstruct", str(src), "-o", str(out), "--sampler", sampler])
        assert hashlib.sha256(src.read_bytes()).hexdigest() == before
        _assert_clean(code, err, out, (items.keys(), attrs))
        assert not [p for p in Path(tmp).iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("argv", [["reconstruct"], ["simulate", "x"], ["list", "nothing"]])
def test_usage_errors_in_process_exit_2(argv):
    code, err = _main(argv)
    assert code == 2 and "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# run configs: every sampler, fuzzed hyperparameters and run settings, on a valid scan

FUZZ_VALUES = st.sampled_from(
    [0, 1, -1, 0.5, 3, 100, float("nan"), float("inf"), -float("inf"), "x", None, True, [1, 2]]
)
RUN_FIELDS = {
    "n_samples": [1, 2, 0, -1, "x", 2.5],
    "seed": [0, 7, -5, 2**70, "s"],
    "batch_size": ["auto", 1, 3, 0, "x", -2],
    "max_memory": ["1KB", "4GB", "junk", "0GB", None],
    "items": [[0], [1, 0], [5], [-1], [], "x", [0, 0]],
    "bogus": [1],
    "device": ["cpu", "tpu", "cuda:99"],
    "keep_samples": [True, "maybe"],
}
SCHEDULE_FIELDS = {
    "n_steps": [1, 2, 4, 0, -3, "a", 2.5],
    "sigma_max": [5.0, 0.0, -1.0, float("inf"), float("nan"), 1e30, "big"],
    "sigma_min": [0.002, 0.0, -1.0, 10.0, float("nan")],
    "name": ["karras", "ddpm", "nope"],
}


def _fuzz_scan() -> Path:
    """One valid 2-image inpainting scan, made once per process."""
    path = Path(tempfile.gettempdir()) / f"recon-fuzz-scan-{os.getpid()}.h5"
    if not path.exists():
        from recon.operators import InpaintingConfig
        from recon.phantoms import random_phantoms
        from recon.simulate import simulate

        op = InpaintingConfig(img_size=(1, 16, 16), keep_ratio=0.5, sigma_y=0.01)
        simulate(random_phantoms(2, 16, seed=1), op, path, seed=0)
    return path


@st.composite
def run_configs(draw):
    from recon.samplers import SAMPLERS

    name = draw(st.sampled_from(sorted(SAMPLERS)))
    model = SAMPLERS[name].config
    keys = [k for k in model.model_fields if k != "name"]
    sampler: dict[str, object] = {"name": name}
    for key in draw(st.lists(st.sampled_from(keys), unique=True, max_size=3)) if keys else []:
        sampler[key] = draw(FUZZ_VALUES)
    schedule: dict[str, object] = {"name": "karras", "n_steps": 4, "sigma_max": 5.0}
    for key in draw(st.lists(st.sampled_from(sorted(SCHEDULE_FIELDS)), unique=True, max_size=2)):
        schedule[key] = draw(st.sampled_from(SCHEDULE_FIELDS[key]))
    cfg: dict[str, object] = {
        "prior": {"kind": "phantom_gaussian", "size": 16, "n_train": 200, "rank": 16},
        "sampler": sampler,
        "schedule": schedule,
    }
    for key in draw(st.lists(st.sampled_from(sorted(RUN_FIELDS)), unique=True, max_size=3)):
        cfg[key] = draw(st.sampled_from(RUN_FIELDS[key]))
    return cfg


@settings(
    max_examples=max(EXAMPLES // 2, 1),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cfg=run_configs())
def test_run_configs_never_crash(cfg):
    """Any sampler with fuzzed hyperparameters, schedule and run settings: exit 0 with a
    finite output, or exit 2 with one line and nothing written; never an internal error."""
    scan = _fuzz_scan()
    before = hashlib.sha256(scan.read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path, out = Path(tmp) / "run.json", Path(tmp) / "out.h5"
        cfg_path.write_text(json.dumps(cfg))
        code, err = _main(["reconstruct", str(scan), "-o", str(out), "-c", str(cfg_path)])
        _assert_clean(code, err, out, cfg, more_lines_from=str(cfg_path))
        assert not [p for p in Path(tmp).iterdir() if ".tmp-" in p.name]
    assert hashlib.sha256(scan.read_bytes()).hexdigest() == before
