"""Evaluation on a benchmark set: per-item metrics, a summary with the convention named, a
figure; resumable (a rerun skips the items already done with the same config).

Output folder:
    ``config.json``    the run config and its hash (a rerun with another config is refused
                       once the folder holds a finished item of this one)
    ``items.csv``      one row per item: index, psnr, ssim, nmse, seconds, nfe
    ``items/NNNN.npz`` reconstruction, std, input (A^+ y) and truth of each item
    ``results.json``   per-item rows, mean +- std, the metric convention, config, versions
    ``summary.md``     a Markdown table
    ``figure.png``     truth / input / reconstruction / |error| / std of the first items
    ``calibration.png`` with 2+ samples per item: nominal vs empirical per-pixel coverage of
                       the posterior credible intervals (``cov10`` ... ``cov90`` in the CSV)

Metrics: MRI sets use the ``fastmri`` convention (per slice: data range = the volume's max,
SSIM 7x7 uniform; the summary adds the per-volume fastMRI numbers); other sets the ``image``
convention (per image, data range 1, SSIM 11x11 Gaussian).

Every file is written atomically; a killed run's torn CSV row or truncated ``.npz`` is
recomputed on the rerun; one ``evaluate`` at a time per folder (a lock on ``.lock``).
"""

from __future__ import annotations

import contextlib
import csv
import io as io_text
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon import io, metrics, results
from recon.config import RunConfig, fingerprint
from recon.datasets import BenchmarkSet, read_info
from recon.distributed import SINGLE, Context, run_rows
from recon.errors import UserError
from recon.pipeline import RunResult, build_prior, resolve_prior, run
from recon.samplers import SAMPLERS

#: per-pixel credible-interval coverage columns (NaN with one sample per item)
COVERAGE = {f"cov{round(lev * 100)}": lev for lev in metrics.COVERAGE_LEVELS}
FIELDS = ["index", "psnr", "ssim", "nmse", "seconds", "nfe", *COVERAGE]


def _write_atomic(path: Path, text: str) -> None:
    io.atomic(path, True, lambda tmp: tmp.write_text(text))


def evaluate(
    bench: BenchmarkSet,
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    on_item: Callable[[int, int, dict[str, float] | None], None] | None = None,
    context: Context = SINGLE,
) -> dict[str, Any] | None:
    """Evaluate ``cfg`` (prior, sampler, schedule, samples, seed) on a benchmark set; with
    ``cfg.items``, on those items only (the run and the summary; finished items of the folder
    are reused either way).

    Under torchrun (``context``) the items are dealt to the ranks; each rank writes its items'
    ``.npz`` files, and rank 0 holds the folder's lock, records every finished row in
    ``items.csv`` after each round and writes the summary. Returns the summary on rank 0 (None
    on the other ranks)."""
    ctx = context
    out = Path(out_dir)
    cfg = apply_tuned(bench, cfg)
    entry = SAMPLERS[cfg.sampler.name]
    if entry.uses_prior and isinstance(cfg.prior, str):
        info = bench.path / "info.json"
        if "prior" not in cfg.model_fields_set and info.is_file():
            default = read_info(info).get("default_prior")
            cfg = cfg.model_copy(update={"prior": default or cfg.prior})
        cfg = resolve_prior(cfg, io.scan_image_shape(bench.scan))
    cfg = cfg.model_copy(update={"input": str(bench.scan), "output": None, "figure": None})
    info_n = _n_items(bench)
    wanted = list(range(info_n)) if cfg.items is None else sorted(set(cfg.items))
    for i in wanted:
        if not 0 <= i < info_n:
            raise UserError(f"{bench.name}: item {i} does not exist (it has {info_n})")
    with contextlib.ExitStack() as stack:

        def claim() -> dict[int, dict[str, float]] | None:
            if not ctx.is_main:
                return None
            if _foreign(out):
                raise UserError(_foreign(out))
            made = not out.exists()
            (out / "items").mkdir(parents=True, exist_ok=True)
            stack.enter_context(_locked(out))
            if made:  # made here, and locked: removed again if nothing finishes
                stack.callback(_remove_if_unfinished, out)
            return _claim(out, cfg, bench)

        done = ctx.broadcast(ctx.collective(claim))
        vmax = io.truth_max(bench.scan)
        mri = bench.kind.startswith("mri")
        device = ctx.device(cfg.device)
        prior = build_prior(cfg, device) if entry.uses_prior else None
        keep = cfg.n_samples > 1  # the samples give the credible intervals
        item_cfg = cfg.model_copy(update={"keep_samples": keep, "device": device})

        def compute(chunk: list[tuple[int, ...]]) -> dict[tuple[int, ...], dict[str, Any]]:
            ((i,),) = chunk
            t = time.perf_counter()
            res = run(item_cfg.model_copy(update={"items": [i]}), prior=prior)
            secs = time.perf_counter() - t
            if res.truth is None:
                raise UserError(f"{bench.scan}: has no ground truth to evaluate against")
            row = _item_metrics(res, mri=mri, vmax=vmax)
            row.update(index=i, seconds=secs, nfe=res.nfe_per_sample)
            cov = metrics.coverage(res.samples[0], res.truth[0]) if keep else {}
            row.update({k: cov.get(lev, float("nan")) for k, lev in COVERAGE.items()})
            arrays = {
                "reconstruction": res.reconstruction[0].numpy(),
                "std": res.std[0].numpy(),
                "input": res.inputs[0].numpy(),
                "truth": res.truth[0].numpy(),
            }
            (out / "items").mkdir(parents=True, exist_ok=True)  # a rank on another node
            io.atomic(
                out / "items" / f"{i:04d}.npz", True, lambda tmp, a=arrays: np.savez(tmp, **a)
            )
            return {(i,): {k: float(row[k]) for k in FIELDS}}

        def record(rows: dict[tuple[int, ...], dict[str, Any]]) -> None:
            for (i,), row in sorted(rows.items()):
                done[i] = row
            _write_csv(out / "items.csv", done)
            if on_item is not None:
                for (i,), row in sorted(rows.items()):
                    on_item(i, info_n, row)

        if on_item is not None and ctx.is_main:
            for i in sorted(done):
                on_item(i, info_n, None)
        run_rows(
            [(i,) for i in wanted if i not in done],
            compute,
            batch_size=1,
            ctx=ctx,
            on_done=record,
            describe=lambda chunk: f"{bench.scan}: item {chunk[0][0]}",
        )
        if not ctx.is_main:
            return None
        # the requested items only (the folder may hold others, from a run with other items)
        return _summarize(bench, cfg, out, {i: done[i] for i in wanted if i in done}, mri=mri)


NPZ_KEYS = ("reconstruction", "std", "input", "truth")
#: what ``evaluate`` writes into its folder; a folder holding anything else is not recon's
OWN = frozenset(
    {".lock", "config.json", "items", "items.csv", "results.json", "summary.md", "figure.png"}
)


def _foreign(out: Path) -> str | None:
    """Why ``out`` cannot be an evaluate folder (None when it can): a results folder is
    recon's only if recon made it (its ``config.json`` records a config hash), so a user's
    folder, or a file, is never written into."""
    if out.is_symlink() and not out.exists():
        return f"{out}: a link to nothing; remove it or choose another --output folder"
    if out.exists() and not out.is_dir():
        return f"{out}: is a file, not a folder; choose another --output folder"
    io.check_folder(out)
    if not out.is_dir():
        return None
    names = sorted(p.name for p in out.iterdir())
    try:
        ours = "hash" in json.loads((out / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    others = [n for n in names if n not in OWN and not n.startswith(".")]
    if names and (not ours or others):
        shown = ", ".join((others or names)[:3])
        return (
            f"{out}: holds files recon evaluate did not write ({shown}); choose a new or "
            "empty --output folder"
        )
    return None


def _remove_if_unfinished(out: Path) -> None:
    """Remove a folder this run made when it ends with no finished item (a refused or
    failed run leaves nothing behind)."""
    import shutil

    if out.is_dir() and not _finished(out):
        shutil.rmtree(out, ignore_errors=True)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """An exclusive lock on the results folder: a second ``evaluate`` into the same folder
    stops with one line instead of writing every row twice."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with (out / ".lock").open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{out}: another `recon evaluate` is writing to this folder; wait for it or "
                "choose another --output"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _finished(out: Path) -> dict[int, dict[str, float]]:
    """Rows of ``items.csv`` whose values parse and whose ``.npz`` loads; a torn row or a
    truncated file (a killed run) is dropped, so that item is computed again."""
    done: dict[int, dict[str, float]] = {}
    csv_path = out / "items.csv"
    if not csv_path.exists():
        return done
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                i = int(row["index"])
                values = {k: float(row[k]) for k in FIELDS}
                with np.load(out / "items" / f"{i:04d}.npz") as a:
                    for key in NPZ_KEYS:
                        a[key]
            except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile):
                continue
            done[i] = values
    return done


def _write_csv(path: Path, done: dict[int, dict[str, float]]) -> None:
    """Rewrite ``items.csv`` atomically, rows sorted by index (never a torn row)."""
    buf = io_text.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    for i in sorted(done):
        w.writerow({k: (i if k == "index" else done[i][k]) for k in FIELDS})
    _write_atomic(path, buf.getvalue())


def _claim(out: Path, cfg: RunConfig, bench: BenchmarkSet) -> dict[int, dict[str, float]]:
    """The finished items of this config in ``out``; the folder is claimed for this config
    (``config.json``) when it holds no finished item of another one."""
    h = fingerprint(cfg, exclude={"input", "device"})
    cfg_path = out / "config.json"
    done = _finished(out)
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text()).get("hash")
        except (ValueError, AttributeError):
            old = None
        if old != h and done:
            raise UserError(
                f"{out}: holds {len(done)} finished item(s) of another config (hash {old}); "
                "choose another --output folder"
            )
        if old != h:  # a run of another config that finished nothing: start over here
            done = {}
            (out / "items.csv").unlink(missing_ok=True)
    if not cfg_path.exists() or json.loads(cfg_path.read_text()).get("hash") != h:
        _write_atomic(
            cfg_path,
            json.dumps(
                {"hash": h, "config": cfg.model_dump(mode="json"), "benchmark": bench.name},
                indent=2,
            ),
        )
    _write_csv(out / "items.csv", done)  # drops a torn row of a killed run
    return done


def apply_tuned(bench: BenchmarkSet, cfg: RunConfig) -> RunConfig:
    """Use the set's recorded tuned hyperparameters (``info.json`` ``tuned``) for fields the
    config leaves at their defaults."""
    info_path = bench.path / "info.json"
    if not info_path.is_file():
        return cfg
    tuned = read_info(info_path).get("tuned", {}).get(cfg.sampler.name, {})
    fields = type(cfg.sampler).model_fields
    update = {
        k: v for k, v in tuned.items() if k in fields and k not in cfg.sampler.model_fields_set
    }
    if not update:
        return cfg
    return cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update=update)})


def _n_items(bench: BenchmarkSet) -> int:
    layout = io.detect_layout(bench.scan)
    if layout == "fastmri":
        return io.fastmri_info(bench.scan).n_slices
    if layout == "ct":
        return io.ct_info(bench.scan).n_slices
    import h5py

    with h5py.File(bench.scan, "r") as f:
        return int(f["measurements"].shape[0])


def _item_metrics(res: RunResult, *, mri: bool, vmax: float | None) -> dict[str, float]:
    x, t = res.reconstruction[:1, None], res.truth[:1, None]
    if mri:
        rng = vmax if vmax is not None else float(t.max())
        return {
            "psnr": float(metrics.psnr(x, t, data_range=rng)[0]),
            "ssim": float(metrics.ssim(x, t, data_range=rng, window="uniform7")[0]),
            "nmse": float(metrics.nmse(x, t)[0]),
        }
    m = metrics.image_metrics(x.clamp(0, 1), t)
    return {k: float(v[0]) for k, v in m.items()}


def _calibration_figure(path: Path, cov: dict[str, float], title: str) -> None:
    """Nominal vs empirical coverage (the diagonal is calibrated), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def draw(tmp: Path) -> None:
        fig, ax = plt.subplots(figsize=(3.6, 3.6))
        levels = [float(k) for k in cov]
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="calibrated")
        ax.plot(levels, list(cov.values()), "o-", label="empirical")
        ax.set(xlabel="nominal level", ylabel="pixels inside the interval", xlim=(0, 1))
        ax.set(ylim=(0, 1), title=title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(tmp, dpi=110)
        plt.close(fig)

    io.atomic(path, True, draw)


def _summarize(bench, cfg, out: Path, done, *, mri: bool) -> dict[str, Any]:
    idx = sorted(done)
    rows = [done[i] for i in idx]
    conv = "fastmri" if mri else "image"
    prior = cfg.prior.model_dump(mode="json") if SAMPLERS[cfg.sampler.name].uses_prior else None
    summary: dict[str, Any] = {
        "benchmark": bench.name,
        "description": bench.description,
        "sampler": cfg.sampler.name,
        "prior": prior,
        "n_samples": cfg.n_samples,
        "seed": cfg.seed,
        "metric_convention": conv,
        "convention_text": metrics.CONVENTIONS[conv],
        "items": rows,
        **io.versions(),
    }
    for k in ("psnr", "ssim", "nmse", "seconds", "nfe"):
        mean, std = metrics.summarize(torch.tensor([r[k] for r in rows], dtype=torch.float64))
        summary[k] = {"mean": mean, "std": std}
    if cfg.n_samples > 1 and rows:
        summary["coverage"] = {
            str(lev): metrics.summarize(torch.tensor([r[k] for r in rows]).double())[0]
            for k, lev in COVERAGE.items()
        }
    arrays = [np.load(out / "items" / f"{i:04d}.npz") for i in idx]
    if mri and arrays:
        vol = torch.from_numpy(np.stack([a["reconstruction"] for a in arrays]))
        gt = torch.from_numpy(np.stack([a["truth"] for a in arrays]))
        summary["volume"] = metrics.fastmri_volume_metrics(vol, gt)
    _write_atomic(out / "results.json", json.dumps(summary, indent=2))
    lines = [
        f"# {bench.name}: {cfg.sampler.name}",
        "",
        f"{bench.description}. Prior: `{json.dumps(prior)}`; "
        f"{cfg.n_samples} sample(s) per item; seed {cfg.seed}.",
        "",
        f"Metric convention: **{conv}** ({metrics.CONVENTIONS[conv]}).",
        "",
        "| items | PSNR (dB) | SSIM | NMSE | NFE / sample | s / item |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {len(rows)} | {summary['psnr']['mean']:.2f} ± {summary['psnr']['std']:.2f} | "
        f"{summary['ssim']['mean']:.3f} ± {summary['ssim']['std']:.3f} | "
        f"{summary['nmse']['mean']:.4f} ± {summary['nmse']['std']:.4f} | "
        f"{summary['nfe']['mean']:.0f} | {summary['seconds']['mean']:.2f} |",
    ]
    if "volume" in summary:
        v = summary["volume"]
        lines += [
            "",
            f"fastMRI per-volume: PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.3f}, "
            f"NMSE {v['nmse']:.4f}.",
        ]
    if "coverage" in summary:
        c = summary["coverage"]
        lines += [
            "",
            f"Per-pixel coverage of the posterior credible intervals from {cfg.n_samples} "
            f"samples (calibrated: the nominal level; even the samples' full range covers only "
            f"{(cfg.n_samples - 1) / (cfg.n_samples + 1):.2f} of new draws with this many): "
            f"50 % -> {c['0.5']:.3f}, 90 % -> {c['0.9']:.3f} (curve: calibration.png).",
        ]
        _calibration_figure(out / "calibration.png", c, f"{bench.name}, {cfg.sampler.name}")
    _write_atomic(out / "summary.md", "\n".join(lines) + "\n")
    if arrays:
        shown = arrays[:4]
        rows, caps = results.panels(
            [a["reconstruction"] for a in shown],
            [a["std"] for a in shown],
            truth=[a["truth"] for a in shown],
            inputs=[a["input"] for a in shown],
            scores={k: [done[i][k] for i in idx[:4]] for k in ("psnr", "ssim")},
        )
        results.save_figure(
            out / "figure.png",
            rows,
            captions=caps,
            title=f"{bench.name}, {cfg.sampler.name}; {metrics.CONVENTIONS[conv]}",
        )
    return summary
