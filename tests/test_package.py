import importlib
import subprocess
import sys

import pytest


def test_one_namespace():
    for name in ("recon", "recon.operators", "recon.priors", "recon.cli"):
        importlib.import_module(name)


def test_generic_names_are_not_importable():
    code = (
        "import importlib,sys\nfor n in ('operators','priors','cli'):\n"
        "    try:\n        importlib.import_module(n)\n    except ImportError:\n        continue\n"
        "    sys.exit('importable: ' + n)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_version():
    import recon

    assert recon.__version__.count(".") == 2


@pytest.mark.parametrize("mod", ["recon.schedules", "recon.metrics", "recon.config"])
def test_modules_import(mod):
    importlib.import_module(mod)


def test_wheel_installs_and_runs_outside_the_clone(tmp_path):
    """A wheel built from the tree, installed into a fresh virtual environment (dependencies
    from this environment, no editable hooks), runs from an unrelated folder: every subpackage,
    the bundled priors, benchmark sets and configs are in it."""
    import shutil
    import sysconfig
    import zipfile
    from pathlib import Path

    src = Path(__file__).resolve().parents[1]
    root = tmp_path / "src"  # a copy: an in-tree build/ could carry stale modules
    shutil.copytree(
        src, root, ignore=shutil.ignore_patterns(".venv", ".git", "build", "out", "*.egg-info")
    )
    dist = tmp_path / "dist"
    run = dict(capture_output=True, text=True, timeout=600)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(root),
        ],
        **run,
    )
    assert out.returncode == 0, out.stderr
    (whl,) = dist.glob("recon-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for module in ("recon/samplers/__init__.py", "recon/samplers/dds.py", "recon/cli/main.py"):
        assert module in names
    assert "recon/data/priors/manifest.json" in names
    assert "recon/data/benchmarks/ct_sparse_30/scan.h5" in names
    env_dir = tmp_path / "venv"
    out = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], **run)
    assert out.returncode == 0, out.stderr
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], **run
    ).stdout.strip()
    Path(site, "recon_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(whl),
        ],
        **run,
    )
    assert out.returncode == 0, out.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    recon = str(env_dir / "bin" / "recon")
    env = {k: v for k, v in __import__("os").environ.items() if k != "RECON_DATA"}

    def cli(*args):
        res = subprocess.run([recon, *args], cwd=work, env=env, **run)
        assert res.returncode == 0, res.stderr
        return res.stdout

    where = subprocess.run([str(py), "-c", "import recon; print(recon.__file__)"], cwd=work, **run)
    assert where.stdout.startswith(site), where
    assert "digits-32" in cli("list", "priors")
    assert "dds" in cli("list", "samplers")
    assert "ct_sparse_30" in cli("list", "benchmarks")
    cli("simulate", "phantoms:1:16", "-o", "scan.h5", "--operator", "mri")
    cli("reconstruct", "scan.h5", "-o", "out.h5", "--steps", "3", "--prior", "phantom-gaussian")
    assert (work / "out.h5").is_file()
