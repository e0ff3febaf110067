"""DICOM series and NIfTI volumes as image stacks (recon.volumes, recon.io.read_image_stack)."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from recon.cli.main import app
from recon.errors import UserError
from recon.io import read_image_stack

runner = CliRunner()
CT = get_testdata_file("CT_small.dcm")  # a real CT slice (pydicom's test data): evaluation only


def _series(folder, n=3):
    """n copies of the CT slice at z = 10, 0, 20 (written out of order), values shifted by z."""
    folder.mkdir()
    for k, z in enumerate((10.0, 0.0, 20.0)[:n]):
        ds = pydicom.dcmread(CT)
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        arr = ds.pixel_array.astype(np.int16) + int(z)
        ds.PixelData = arr.tobytes()
        ds.save_as(folder / f"im{k}", enforce_file_format=True)
    return folder


def test_dicom_series_sorted_rescaled_and_normalised(tmp_path):
    x, info = read_image_stack(_series(tmp_path / "series"))
    assert x.shape == (3, 1, 128, 128) and float(x.min()) == 0.0 and float(x.max()) == 1.0
    ds = pydicom.dcmread(CT)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert info["format"] == "dicom" and info["v_min"] == pytest.approx(hu.min())
    assert info["v_max"] == pytest.approx(hu.max() + 20)
    # slices come out ordered along z (0, 10, 20): each is the next plus 10 HU
    back = x[:, 0].double() * (info["v_max"] - info["v_min"]) + info["v_min"]
    assert np.allclose((back[1] - back[0]).numpy(), 10.0, atol=1e-3)
    assert np.allclose((back[2] - back[1]).numpy(), 10.0, atol=1e-3)
    one, _ = read_image_stack(CT)
    assert one.shape == (1, 1, 128, 128)


def test_bad_dicom_gets_one_line(tmp_path):
    folder = _series(tmp_path / "mixed", n=2)
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))  # 64 x 64
    mr.save_as(folder / "mr", enforce_file_format=True)
    with pytest.raises(UserError, match="different sizes"):
        read_image_stack(folder)
    nopix = tmp_path / "nopix"
    nopix.mkdir()
    ds = pydicom.dcmread(CT)
    del ds.PixelData
    ds.save_as(nopix / "a.dcm", enforce_file_format=True)
    with pytest.raises(UserError, match="without pixel data"):
        read_image_stack(nopix)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match=r"no \.png files and no DICOM files"):
        read_image_stack(empty)


def test_nifti_volume(tmp_path):
    import nibabel as nib

    vol = np.stack([np.full((6, 5), float(k)) for k in range(4)], axis=-1)  # slices on axis -1
    vol[0, 0, :] = -3.0
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    x, info = read_image_stack(tmp_path / "v.nii.gz")
    assert x.shape == (4, 1, 6, 5) and info["format"] == "nifti"
    assert info["v_min"] == -3.0 and info["v_max"] == 3.0
    assert float(x[3, 0, 1, 1]) == pytest.approx(1.0)
    (tmp_path / "bad.nii").write_bytes(b"not nifti")
    with pytest.raises(UserError, match="not a readable NIfTI"):
        read_image_stack(tmp_path / "bad.nii")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2)), np.eye(4)), tmp_path / "flat.nii")
    with pytest.raises(UserError, match="constant"):
        read_image_stack(tmp_path / "flat.nii")


def test_simulate_from_a_dicom_slice_records_the_normalisation(tmp_path):
    src = tmp_path / "ct.dcm"
    shutil.copy(CT, src)
    scan = tmp_path / "scan.h5"
    r = runner.invoke(
        app, ["simulate", str(src), "-o", str(scan), "--operator", "ct", "--angles", "20"]
    )
    assert r.exit_code == 0, r.output
    with h5py.File(scan) as f:
        source = json.loads(f.attrs["source"])
        assert source["format"] == "dicom" and "rule" in source
        assert f["ground_truth"].shape == (1, 128, 128)
    out = tmp_path / "fbp.h5"
    r = runner.invoke(app, ["reconstruct", str(scan), "-o", str(out), "--sampler", "fbp"])
    assert r.exit_code == 0, r.output
