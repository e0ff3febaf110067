from __future__ import annotations

import subprocess
import sys

import h5py
from typer.testing import CliRunner

from recon.cli.main import app

runner = CliRunner()


def test_version_and_help():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("recon ")
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "demo" in r.stdout and "list" in r.stdout


def test_list_commands():
    for what, expect in [
        ("operators", "mri_multicoil"),
        ("samplers", "dds"),
        ("schedules", "karras"),
    ]:
        r = runner.invoke(app, ["list", what])
        assert r.exit_code == 0, r.output
        assert expect in r.stdout


def test_demo_end_to_end_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "-o", str(out), "--samples", "2"])
    assert r.exit_code == 0, r.output
    assert "PSNR" in r.stdout and "wrote" in r.stdout
    with h5py.File(out / "demo.h5") as f:
        assert f["reconstruction"].shape == (1, 64, 64)
        assert f["std"].shape == (1, 64, 64)
        for key in ("recon_version", "deepinv_version", "config", "seed", "wall_time_s", "nfe"):
            assert key in f.attrs
    assert (out / "demo.png").stat().st_size > 10_000
    assert not list(out.glob(".*tmp*"))  # no temporary file left behind


def test_user_error_is_one_line_exit_2(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.h5").write_bytes(b"keep me")
    proc = subprocess.run(
        [sys.executable, "-m", "recon.cli.main", "demo", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "output exists" in lines[0] and "--force" in lines[0]
    assert "Traceback" not in proc.stderr
    assert (out / "demo.h5").read_bytes() == b"keep me"
