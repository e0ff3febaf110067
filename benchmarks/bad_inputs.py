"""A sweep of bad inputs and faults through the installed entry point, by category.

Each case builds its inputs in a temporary folder, runs ``python -m recon.cli ...`` in a
subprocess (``main()``, as a user's shell does) and checks what the README promises:

* user and usage errors: exit 2, one ``recon: error:`` line,
  no traceback, nothing written (no output, no figure, no hidden temporary file), inputs
  unchanged (sha256);
* faults (Ctrl-C): exit 130 with "interrupted", nothing half-written;
* recoveries (a torn evaluate row, a truncated item file): exit 0 on the rerun.

Categories follow issue 17's classes (1 usage, 2 Ctrl-C, 3 data loss, 4 failure reported as
success, 5 resumability, 6 invalid values, 7 unvalidated structure, 8 misleading messages,
9 found while verifying). Prints one line per failing case and a table of counts.

Run: .venv/bin/python benchmarks/bad_inputs.py [--only 3 7]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

FAST = ["--steps", "4"]


@dataclass
class Case:
    category: int
    name: str
    argv: Callable[[Path], list[str]]  # tmp -> arguments after `recon`
    setup: Callable[[Path], None] = lambda tmp: None
    expect: int = 2
    outputs: Callable[[Path], list[Path]] = lambda tmp: [tmp / "out.h5"]
    must_contain: str = ""
    usage: bool = False
    interrupt_after: float | None = None
    rerun: bool = False  # run twice (a recovery): the second run must succeed
    extra: dict = field(default_factory=dict)


def _recon(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recon.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def _sha(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- inputs -----------------------------------------------------------------------------------


def _scan(tmp: Path, name: str = "scan.h5", op: str = "mri", extra: list[str] = ()) -> Path:
    images = tmp / "img.h5"
    if not images.exists():
        rng = np.random.default_rng(0)
        with h5py.File(images, "w") as f:
            f.create_dataset("images", data=rng.random((2, 16, 16)).astype(np.float32))
    r = _recon(["simulate", str(images), "-o", str(tmp / name), "--operator", op, *extra])
    if r.returncode:
        raise RuntimeError(r.stderr)
    return tmp / name


def _edit(name: str, fn: Callable[[h5py.File], None], op: str = "mri", extra=()):
    def setup(tmp: Path) -> None:
        _scan(tmp, name, op, extra)
        with h5py.File(tmp / name, "a") as f:
            fn(f)

    return setup


def _replace(key: str, value) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        del f[key]
        f[key] = value

    return fn


def _as_group(key: str) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        del f[key]
        f.create_group(key)

    return fn


def _attr(key: str, value) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        if value is None:
            del f.attrs[key]
        else:
            f.attrs[key] = value

    return fn


def _header(matrix: str) -> Callable[[h5py.File], None]:
    xml = (
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding><encodedSpace>'
        f"<matrixSize><x>{matrix}</x><y>16</y><z>1</z></matrixSize></encodedSpace><reconSpace>"
        f"<matrixSize><x>{matrix}</x><y>16</y><z>1</z></matrixSize></reconSpace></encoding>"
        "</ismrmrdHeader>"
    )
    return _dataset("ismrmrd_header", xml.encode())


def _dataset(key: str, value) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        if key in f:
            del f[key]
        f[key] = value

    return fn


def _rec(name: str = "scan.h5", *more: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["reconstruct", str(tmp / name), "-o", str(tmp / "out.h5"), *more]


def _kspace_zero(f: h5py.File) -> None:
    f["kspace"][...] = 0


def _mask_values(v: list[float]) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        m = np.asarray(f["mask"][()], dtype=np.float32)
        m[: len(v)] = v
        del f["mask"]
        f["mask"] = m

    return fn


def _evaluate_argv(tmp: Path) -> list[str]:
    return ["evaluate", "-b", "digits_inpaint_70", "--sampler", "pinv", "-o", str(tmp / "ev")]


def _evaluated(tmp: Path) -> Path:
    """An evaluate folder with every item finished."""
    r = _recon(_evaluate_argv(tmp))
    if r.returncode:
        raise RuntimeError(r.stderr)
    return tmp / "ev"


def _torn_csv(tmp: Path) -> None:
    csv = _evaluated(tmp) / "items.csv"
    csv.write_text(csv.read_text() + "3,17.2")  # a torn last row


def _truncated_npz(tmp: Path) -> None:
    item = sorted((_evaluated(tmp) / "items").glob("*.npz"))[-1]
    item.write_bytes(item.read_bytes()[:100])


def _pinv(category: int, name: str, edit: Callable[[h5py.File], None], **kw) -> Case:
    """``reconstruct scan.h5 --sampler pinv`` on a simulated MRI scan changed by ``edit``."""
    return Case(category, name, _rec("scan.h5", "--sampler", "pinv"), _edit("scan.h5", edit, **kw))


def _train_prior(category: int, flag: str, value: str) -> Case:
    """``train-prior FOLDER --data digits FLAG VALUE``: a usage error, no folder written."""
    return Case(
        category,
        f"train-prior {flag} {value}",
        lambda t: ["train-prior", str(t / "tp"), "--data", "digits", flag, value],
        outputs=lambda t: [t / "tp"],
        usage=True,
    )


def cases() -> list[Case]:
    mri = _edit("scan.h5", lambda f: None)
    mc = ["--coils", "4"]
    return [
        # 1 usage errors
        Case(1, "unknown command", lambda t: ["reconstrct"], usage=True),
        Case(1, "missing -o", lambda t: ["reconstruct", str(t / "scan.h5")], mri, usage=True),
        Case(1, "--samples 0", _rec("scan.h5", "--samples", "0"), mri, usage=True),
        Case(1, "unknown option", _rec("scan.h5", "--sampels", "2"), mri, usage=True),
        Case(1, "--steps -1", _rec("scan.h5", "--steps", "-1"), mri, usage=True),
        Case(1, "no arguments to simulate", lambda t: ["simulate"], usage=True),
        # 2 Ctrl-C
        Case(
            2,
            "Ctrl-C in reconstruct",
            _rec("scan.h5", "--sampler", "dds", "--steps", "400"),
            mri,
            expect=130,
            must_contain="interrupted",
            interrupt_after=12.0,
        ),
        # 3 data loss
        Case(
            3,
            "-o equal to the input with --force",
            lambda t: ["reconstruct", str(t / "scan.h5"), "-o", str(t / "scan.h5"), "--force"],
            mri,
            outputs=lambda t: [],
        ),
        Case(
            3,
            "existing --figure without --force",
            lambda t: [*_rec("scan.h5", "--sampler", "pinv")(t), "--figure", str(t / "fig.png")],
            lambda t: (_scan(t), (t / "fig.png").write_bytes(b"mine")),
            outputs=lambda t: [t / "out.h5"],
        ),
        Case(
            3,
            "figure in a missing folder",
            lambda t: [*_rec("scan.h5", "--sampler", "pinv")(t), "--figure", str(t / "no/f.png")],
            mri,
        ),
        Case(
            3,
            "-o an existing directory with --force",
            lambda t: ["reconstruct", str(t / "scan.h5"), "-o", str(t / "d"), "--force"],
            lambda t: (_scan(t), (t / "d").mkdir()),
            outputs=lambda t: [],
        ),
        # 4 failure reported as success
        _pinv(4, "all-zero k-space", _kspace_zero),
        Case(
            4,
            "sigma_max inf",
            _rec("scan.h5", "--set", "schedule.sigma_max=.inf", *FAST),
            mri,
        ),
        Case(
            4,
            "sigma_max nan",
            _rec("scan.h5", "--set", "schedule.sigma_max=nan", *FAST),
            mri,
        ),
        # 5 resumability
        Case(
            5,
            "evaluate after a torn CSV row",
            _evaluate_argv,
            _torn_csv,
            expect=0,
            outputs=lambda t: [],
        ),
        Case(
            5,
            "evaluate after a truncated item file",
            _evaluate_argv,
            _truncated_npz,
            expect=0,
            outputs=lambda t: [],
        ),
        # 6 invalid values
        _train_prior(6, "--steps", "0"),
        _train_prior(6, "--batch-size", "0"),
        Case(
            6,
            "acquire --center-fraction 2",
            lambda t: [
                "acquire",
                str(t / "full.h5"),
                "-o",
                str(t / "out.h5"),
                "--center-fraction",
                "2",
            ],
            lambda t: _scan(t, "full.h5", extra=["--mask", "full"]),
            usage=True,
        ),
        _pinv(6, "mask value 0.5", _mask_values([0.5])),
        _pinv(6, "negative mask", _mask_values([-1.0])),
        _pinv(6, "all-zero mask", lambda f: _replace("mask", np.zeros(16, np.float32))(f)),
        Case(6, "--sigma-y -1", _rec("scan.h5", "--sigma-y", "-1"), mri, usage=True),
        Case(6, "--teleport -1", _rec("scan.h5", "--teleport", "-1"), mri),
        # 7 unvalidated structure
        _pinv(7, "kspace stored as a group", _as_group("kspace")),
        _pinv(7, "mask stored as a group", _as_group("mask")),
        _pinv(7, "NaN in the mask", _mask_values([np.nan])),
        _pinv(7, "zero slices", _replace("kspace", np.zeros((0, 16, 16), np.complex64))),
        _pinv(
            7, "zero coils", _replace("kspace", np.zeros((2, 0, 16, 16), np.complex64)), extra=mc
        ),
        _pinv(7, "real-valued k-space", _replace("kspace", np.zeros((2, 16, 16), np.float32))),
        _pinv(7, "NaN in k-space", lambda f: f["kspace"].__setitem__((0, 0, 0), np.nan)),
        Case(
            7,
            "malformed operator JSON",
            _rec("inp.h5", "--sampler", "pinv"),
            _edit("inp.h5", _attr("operator", "{not json"), op="inpainting"),
        ),
        Case(
            7,
            "phantoms:0:32",
            lambda t: ["simulate", "phantoms:0:32", "-o", str(t / "out.h5"), "--operator", "mri"],
        ),
        _train_prior(7, "--threads", "0"),
        Case(
            7,
            "truncated HDF5",
            _rec("scan.h5", "--sampler", "pinv"),
            lambda t: (_scan(t), (t / "scan.h5").write_bytes((t / "scan.h5").read_bytes()[:500])),
        ),
        Case(
            7,
            "not HDF5 at all",
            _rec("scan.h5", "--sampler", "pinv"),
            lambda t: (t / "scan.h5").write_text("hello"),
        ),
        Case(
            7,
            "ground truth of another size than the header's grid",
            _rec("scan.h5", "--sampler", "pinv"),
            _edit(
                "scan.h5",
                _replace("reconstruction_rss", np.zeros((2, 8, 8), np.float32)),
                extra=["--readout-oversampling", "2"],
            ),
        ),
        Case(7, "unknown --set key", _rec("scan.h5", "--set", "sampler.zeta2=1"), mri),
        # 8 misleading messages
        Case(
            8, "a directory as the scan", _rec("d"), lambda t: (t / "d").mkdir(), must_contain="d"
        ),
        Case(
            8,
            "CT file without img_size",
            _rec("ct.h5", "--sampler", "fbp"),
            _edit("ct.h5", _attr("img_size", None), op="ct"),
            must_contain="img_size",
        ),
        Case(
            8,
            "measurements without operator",
            _rec("inp.h5", "--sampler", "pinv"),
            _edit("inp.h5", _attr("operator", None), op="inpainting"),
            must_contain="operator",
        ),
        Case(
            8,
            "header matrix size 0",
            _rec("scan.h5", "--sampler", "pinv"),
            _edit("scan.h5", _header("0")),
            must_contain="ismrmrd_header",
        ),
        Case(
            8,
            "header matrix size -5",
            _rec("scan.h5", "--sampler", "pinv"),
            _edit("scan.h5", _header("-5")),
            must_contain="ismrmrd_header",
        ),
        Case(
            8,
            "--set operator.sigma_y without a name",
            _rec("scan.h5", "--set", "operator.sigma_y=0.01"),
            mri,
            must_contain="--sigma-y",
        ),
        # 9 found while verifying
        Case(
            9,
            "--sampler exact with a network default prior",
            _rec("scan.h5", "--sampler", "exact"),
            mri,
            must_contain="phantom-gaussian",
        ),
        Case(
            9,
            "--teleport with a prior-less sampler",
            _rec("scan.h5", "--sampler", "tv", "--teleport", "1"),
            mri,
            must_contain="teleport",
        ),
    ]


def check(case: Case, tmp: Path) -> str | None:
    """None if the case is handled as promised, else why not."""
    case.setup(tmp)
    before = _sha(tmp)
    argv = case.argv(tmp)
    if case.interrupt_after is not None:
        p = subprocess.Popen(
            [sys.executable, "-m", "recon.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp,
            # as from a terminal: a sweep started in the background inherits an ignored SIGINT
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        time.sleep(case.interrupt_after)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
        r = subprocess.CompletedProcess(argv, p.returncode, out, err)
    else:
        r = _recon(argv, cwd=tmp)
        if case.rerun:
            r = _recon(argv, cwd=tmp)
    err = r.stderr
    lines = [ln for ln in err.splitlines() if ln.strip() and "\r" not in ln and "it/s" not in ln]
    if r.returncode != case.expect:
        return f"exit {r.returncode}, expected {case.expect}: {err.strip()[-300:]}"
    if "Traceback" in err:
        return "a traceback"
    if case.expect == 2:  # usage errors too: one line naming the command's --help
        errs = [ln for ln in lines if ln.startswith("recon: error:")]
        if len(errs) != 1 or len(lines) > 1:
            return f"not one error line: {lines[:4]}"
    if case.must_contain and case.must_contain not in err:
        return f"the message does not name {case.must_contain!r}: {err.strip()[-200:]}"
    if case.expect != 0:
        for out in case.outputs(tmp):
            if out.exists():
                return f"{out.name} was written"
        hidden = [p.name for p in tmp.rglob(".*tmp*")]
        if hidden:
            return f"temporary files left: {hidden}"
        after = _sha(tmp)
        changed = [Path(k).name for k in before if after.get(k) != before[k]]
        if changed:
            return f"inputs changed: {changed}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", type=int, nargs="*", default=None, metavar="CATEGORY")
    args = ap.parse_args()
    tried, clean = Counter(), Counter()
    failures = []
    for case in cases():
        if args.only and case.category not in args.only:
            continue
        tried[case.category] += 1
        with tempfile.TemporaryDirectory() as d:
            try:
                why = check(case, Path(d))
            except Exception as exc:  # the case's own setup failed: report it, go on
                why = f"setup failed: {exc}"
        if why is None:
            clean[case.category] += 1
        else:
            failures.append(f"[{case.category}] {case.name}: {why}")
            print(failures[-1], flush=True)
    print("\n| category | cases | handled as promised | failures |")
    print("| --- | --- | --- | --- |")
    for c in sorted(tried):
        print(f"| {c} | {tried[c]} | {clean[c]} | {tried[c] - clean[c]} |")
    print(f"| all | {sum(tried.values())} | {sum(clean.values())} | {len(failures)} |")
    print(json.dumps({"tried": sum(tried.values()), "clean": sum(clean.values())}))


if __name__ == "__main__":
    main()
