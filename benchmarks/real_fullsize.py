"""Real anatomy at full size under fastMRI's protocol: every method beside zero filling.

Builds fastMRI-layout raw multi-coil data (15 coils, k-space 2S x 1.15 S with 2x readout
oversampling, reconstruction space S x S: 640 x 368 and 320 x 320 at S = 320, as fastMRI's
knees) from real slices with the dark background real scans have: pydicom's ``MR_small.dcm``
(64 x 64) and ``CT_small.dcm`` (128 x 128), min-max normalised, resized to half the field of
view and placed in its centre (zero phase; recon's birdcage coil maps; complex Gaussian
k-space noise of ``--noise`` times the coil images' peak). Undersamples each the way fastMRI
does (``fastmri.data.subsample.EquispacedMaskFractionFunc`` / ``RandomMaskFunc``, seeded by
the file name as fastMRI's validation transform does, ``transforms.apply_mask``), writes the
target as fastMRI makes ``reconstruction_rss`` (root-sum-of-squares of the fully sampled coil
images, centre-cropped), runs ``recon reconstruct`` per method (each with its defaults, under
``/usr/bin/time -v``) and scores with ``fastmri.evaluate`` (NMSE, PSNR, SSIM; maxval = the
target's max; one image per volume).

Methods: fastMRI's zero-filled baseline computed by fastMRI's own functions (``fastmri_zf``:
``fastmri.rss`` of ``fastmri.ifft2c`` of the masked k-space, ``complex_center_crop``, as its
``run_zero_filled``), recon's ``zero_filled``, ``pinv``, TV at its default
weight and at the best of ``--tv-lams`` (chosen on these images: an oracle, labelled so), DDS,
DPS, RED-Diff, DAPS and the default run (no ``--sampler``). Nothing is tuned on these images.
The data are simulated at run time and never written to the repository.

Needs fastMRI's package as the reference: ``pip install --no-deps fastmri==0.3.0 runstats``.

Run: .venv/bin/python benchmarks/real_fullsize.py [--size 320] [--masks equispaced random]
     [--accelerations 4 8] [--methods default tv dds ...] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from full_size import _timed  # this folder is on sys.path when run as a script

from recon import io
from recon import operators as O

#: fastMRI's centre fractions for its x4 / x8 challenge masks
CENTER = {4: 0.08, 8: 0.04}
#: methods that take no prior
CLASSICAL = ("fastmri_zf", "zero_filled", "pinv", "tv", "tv_best")
METHODS = [
    "fastmri_zf",
    "zero_filled",
    "pinv",
    "tv",
    "tv_best",
    "dds",
    "dps",
    "reddiff",
    "daps",
    "default",
]


def _image(name: str, size: int) -> np.ndarray:
    """A real slice, min-max normalised to [0, 1], resized to half the field of view and
    placed at its centre: (size, size) float64 with a dark background."""
    import pydicom
    from pydicom.data import get_testdata_file
    from skimage.transform import resize

    a = pydicom.dcmread(get_testdata_file(name)).pixel_array.astype(np.float64)
    a = (a - a.min()) / (a.max() - a.min())
    inner = size // 2
    a = np.clip(resize(a, (inner, inner), order=3, anti_aliasing=True), 0, 1)
    out = np.zeros((size, size))
    o = (size - inner) // 2
    out[o : o + inner, o : o + inner] = a
    return out


def _raw(img: np.ndarray, coils: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fully sampled fastMRI-layout k-space (coils, 2S, W) and its target (S, S)."""
    s = img.shape[0]
    enc = (2 * s, 2 * round(s * 1.15 / 2))
    x = O.center_pad(torch.from_numpy(img).to(torch.complex128), enc)
    maps = O.birdcage_maps(coils, enc).to(torch.complex128)
    coil_imgs = maps * x
    k = torch.fft.fftshift(
        torch.fft.fft2(torch.fft.ifftshift(coil_imgs, dim=(-2, -1)), norm="ortho"), dim=(-2, -1)
    )
    g = torch.Generator().manual_seed(seed)
    std = noise * float(coil_imgs.abs().max())
    n = torch.randn(2, *k.shape, generator=g, dtype=torch.float64) * std
    k = (k + torch.complex(n[0], n[1])).to(torch.complex64)
    target = O.center_crop(O.ifft2c(k).abs().pow(2).sum(0).sqrt(), (s, s))
    return k.numpy(), target.numpy()


def _score(evaluate, target: np.ndarray, rec: np.ndarray) -> dict[str, float]:
    """fastMRI's ``evaluate`` metrics of one image (one volume), as floats."""
    gt, x = target[None].astype(np.float64), rec[None].astype(np.float64)
    return {f: np.asarray(getattr(evaluate, f)(gt, x)).item() for f in ("nmse", "psnr", "ssim")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--coils", type=int, default=15)
    ap.add_argument("--images", nargs="+", default=["MR_small.dcm", "CT_small.dcm"])
    ap.add_argument("--masks", nargs="+", default=["equispaced", "random"])
    ap.add_argument("--accelerations", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--tv-lams", type=float, nargs="+", default=[0.001, 0.003, 0.01, 0.03])
    ap.add_argument("--noise", type=float, default=0.01, help="k-space noise / coil peak")
    ap.add_argument(
        "--prior", default=None, help="prior of the diffusion methods (a name or path)"
    )
    ap.add_argument("--extra", nargs="*", default=[], help="more `recon reconstruct` options")
    ap.add_argument("--out", type=Path, default=None, help="append results as JSON lines")
    args = ap.parse_args()
    try:
        import fastmri
        from fastmri import evaluate
        from fastmri.data import subsample, transforms
    except ImportError:
        sys.exit("needs fastMRI's package: pip install --no-deps fastmri==0.3.0 runstats")
    recon = [sys.executable, "-m", "recon.cli"]
    print(
        "| image | mask | R | method | PSNR | SSIM | NMSE | s/slice | peak GB |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name in args.images:
            img = _image(name, args.size)
            full, target = _raw(img, args.coils, args.noise, seed=0)
            for kind in args.masks:
                for r in args.accelerations:
                    cls = {
                        "equispaced": subsample.EquispacedMaskFractionFunc,
                        "random": subsample.RandomMaskFunc,
                    }[kind]
                    mask_func = cls([CENTER[r]], [r])
                    fname = f"{Path(name).stem}_{kind}_x{r}.h5"
                    seed = tuple(map(ord, fname))  # fastMRI's validation seeding
                    kt = transforms.to_tensor(full)  # (coils, H, W, 2)
                    masked, mask, _ = transforms.apply_mask(kt, mask_func, seed=seed)
                    km = torch.view_as_complex(masked.contiguous()).numpy()
                    scan = tmp / fname
                    io.write_fastmri(
                        scan,
                        kspace=km[None],
                        mask=mask.reshape(-1).numpy(),
                        truth=target[None],
                        attrs={"acceleration": r, "source": name},
                        recon_size=(args.size, args.size),
                    )
                    for method in args.methods:
                        if method == "fastmri_zf":
                            t0 = time.perf_counter()
                            zf = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(masked)), dim=0)
                            zf = transforms.center_crop(zf, (args.size, args.size)).numpy()
                            m = _score(evaluate, target, zf)
                            print(
                                f"| {Path(name).stem} | {kind} | {r} | fastMRI zero-filled | "
                                f"{m['psnr']:.2f} | {m['ssim']:.3f} | {m['nmse']:.4f} | "
                                f"{time.perf_counter() - t0:.1f} | - |",
                                flush=True,
                            )
                            continue
                        lams = args.tv_lams if method == "tv_best" else [None]
                        best = None
                        for lam in lams:
                            out = tmp / f"{method}_{lam}.h5"
                            cmd = [*recon, "reconstruct", str(scan), "-o", str(out), "--force"]
                            if method not in ("default", "tv_best"):
                                cmd += ["--sampler", method]
                            if method == "tv_best":
                                cmd += ["--sampler", "tv", "--set", f"sampler.lam={lam}"]
                            if args.prior and method not in CLASSICAL:
                                cmd += ["--prior", args.prior]
                            cmd += args.extra
                            wall, peak = _timed(cmd)
                            with h5py.File(out) as f:
                                rec = f["reconstruction"][()]
                                attrs = {k: f.attrs[k] for k in ("nfe", "rows_per_call")}
                            m = _score(evaluate, target, rec[0])
                            if best is None or m["psnr"] > best[0]["psnr"]:
                                best = (m, wall, peak, lam, attrs)
                        m, wall, peak, lam, attrs = best
                        label = method if lam is None else f"tv_best (lam {lam:g}, oracle)"
                        print(
                            f"| {Path(name).stem} | {kind} | {r} | {label} | {m['psnr']:.2f} | "
                            f"{m['ssim']:.3f} | {m['nmse']:.4f} | {wall:.1f} | {peak:.2f} |",
                            flush=True,
                        )
                        if args.out:
                            row = {
                                "image": name,
                                "mask": kind,
                                "acceleration": r,
                                "method": method,
                                "lam": lam,
                                **m,
                                "s_per_slice": wall,
                                "peak_gb": peak,
                                **{k: int(v) for k, v in attrs.items()},
                                "size": args.size,
                                "extra": args.extra,
                                "prior": args.prior,
                                "fastmri": fastmri.__version__,
                            }
                            with open(args.out, "a") as fh:
                                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
