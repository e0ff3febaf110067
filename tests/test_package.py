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
