from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
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


def test_acquire_from_fully_sampled_kspace(tmp_path):
    """recon simulate --mask full, then recon acquire: the result file has the masks (grown to
    W/R lines from the ACS block), the ordered acquisition list and provenance; an
    undersampled file is refused with one line and nothing written."""
    full = tmp_path / "full.h5"
    r = runner.invoke(
        app,
        ["simulate", "phantoms:1:16", "-o", str(full), "--operator", "mri", "--mask", "full"],
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "ads.h5"
    args = ["acquire", str(full), "-o", str(out), "--acceleration", "4", "--steps", "12"]
    r = runner.invoke(app, [*args, "--particles", "4", "--center-fraction", "0.125"])
    assert r.exit_code == 0, r.output
    assert "PSNR" in r.stdout and "2 lines acquired" in r.stdout and "final R = 4" in r.stdout
    # an ACS block larger than the budget: the reported R is the written masks' (8 of 16 lines)
    r = runner.invoke(
        app, [*args, "--particles", "2", "--center-fraction", "0.5", "-o", str(tmp_path / "b.h5")]
    )
    assert r.exit_code == 0 and "final R = 2" in r.stdout, r.output
    with h5py.File(out) as f:
        mask = f["mask"][0]
        order = f["acquisition_order"][0]
        assert mask.shape == (16, 16) and mask[0].sum() == 4
        assert len(set(order.tolist())) == 2 and all(mask[:, order].min(0) == 1)
        for key in ("config", "seed", "wall_time_s", "psnr", "metric_convention"):
            assert key in f.attrs
        assert json.loads(f.attrs["config"])["hard_consistency"] is False
    r = runner.invoke(
        app,
        [*args, "--particles", "4", "--center-fraction", "0.125", "--hard-consistency", "--force"],
    )
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        assert json.loads(f.attrs["config"])["hard_consistency"] is True
    under = tmp_path / "under.h5"
    r = runner.invoke(app, ["simulate", "phantoms:1:16", "-o", str(under), "--operator", "mri"])
    assert r.exit_code == 0, r.output
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "recon.cli.main",
            "acquire",
            str(under),
            "-o",
            str(tmp_path / "x.h5"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "fully sampled" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.h5").exists()


def test_list_samplers_is_the_registry():
    from recon.samplers import SAMPLERS

    r = runner.invoke(app, ["list", "samplers"])
    assert r.exit_code == 0, r.output
    names = {line.split()[0] for line in r.stdout.splitlines() if line and not line[0].isspace()}
    assert names == set(SAMPLERS)
    for what in ("priors", "benchmarks"):
        assert runner.invoke(app, ["list", what]).exit_code == 0


def test_usage_errors_through_the_entry_point_exit_2_without_traceback(tmp_path):
    """``main()`` (the console script), not CliRunner: unknown command, missing option, a
    value that does not parse: one line naming the help to read, not click's block."""
    cases = (
        ["no-such-command"],
        ["reconstruct", "x.h5"],
        ["reconstruct", "x.h5", "-o"],
        ["reconstruct", "x.h5", "-o", "y.h5", "--samples", "abc"],
    )
    for args in cases:
        out = subprocess.run(
            [sys.executable, "-m", "recon.cli.main", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("recon: error: ") and "--help`)" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_sampler_without_prior_never_resolves_one(tmp_path):
    scan = tmp_path / "scan.h5"
    r = runner.invoke(app, ["simulate", "phantoms:2:16", "-o", str(scan), "--operator", "mri"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out.h5"
    r = runner.invoke(
        app, ["reconstruct", str(scan), "-o", str(out), "--sampler", "pinv", "--prior", "nope"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["reconstruct", str(scan), "-o", str(tmp_path / "o2.h5"), "--prior", "nope"]
    )
    assert r.exit_code != 0 and "nope" in str(r.exception or r.output)


def test_evaluate_a_sampler_without_prior_records_none(tmp_path):
    """Regression: the summary of a no-prior sampler used to read the unresolved prior name."""
    out = tmp_path / "res"
    r = runner.invoke(
        app, ["evaluate", "-b", "phantom_sr_x4", "-o", str(out), "--sampler", "pinv"]
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "results.json").read_text())
    assert summary["prior"] is None and summary["sampler"] == "pinv"
    assert len(summary["items"]) == 6


def test_evaluate_runs_only_the_requested_items_and_resumes_to_the_rest(tmp_path):
    """Regression: ``RunConfig.items`` was ignored by ``evaluate`` (every item ran, and the
    benchmarks' ``--items`` with it)."""
    from recon.config import run_config
    from recon.datasets import resolve_benchmark
    from recon.errors import UserError
    from recon.evaluate import evaluate

    bench, out = resolve_benchmark("phantom_sr_x4"), tmp_path / "res"
    part = evaluate(bench, run_config(None, sampler="pinv", items=[4, 1]), out)
    assert [r["index"] for r in part["items"]] == [1, 4]
    rows = (out / "items.csv").read_text().splitlines()[1:]
    assert sorted(int(r.split(",")[0]) for r in rows) == [1, 4]
    full = evaluate(bench, run_config(None, sampler="pinv"), out)
    assert [r["index"] for r in full["items"]] == list(range(6))
    same = {r["index"]: r["psnr"] for r in full["items"]}
    assert all(same[r["index"]] == r["psnr"] for r in part["items"])
    # the subset's summary is over the subset, though the folder now holds every item
    again = evaluate(bench, run_config(None, sampler="pinv", items=[1]), out)
    assert [r["index"] for r in again["items"]] == [1]
    with pytest.raises(UserError, match="item 6 does not exist"):
        evaluate(bench, run_config(None, sampler="pinv", items=[6]), out)


def test_tuned_values_apply_only_where_the_config_leaves_the_default(tmp_path):
    """A set's recorded ``tuned`` values (``scripts/tune_baselines.py``; DDS's may be the word
    ``auto`` or a number) fill the fields a config leaves unset; a set value wins."""
    from recon.config import run_config
    from recon.datasets import BenchmarkSet
    from recon.evaluate import apply_tuned

    (tmp_path / "info.json").write_text(
        json.dumps({"tuned": {"dds": {"gamma": 10.0, "tuning_psnr": 1.0}, "tv": {"lam": 3e-4}}})
    )
    bench = BenchmarkSet("t", tmp_path, "", "ct", 1)
    assert apply_tuned(bench, run_config(None, sampler="dds")).sampler.gamma == 10.0
    mine = run_config(None, sampler="dds", overrides=["sampler.gamma=auto"])
    assert apply_tuned(bench, mine).sampler.gamma == "auto"
    assert apply_tuned(bench, run_config(None, sampler="tv")).sampler.lam == 3e-4
    assert apply_tuned(bench, run_config(None, sampler="dps")) == run_config(None, sampler="dps")


def test_train_prior_zero_is_a_value_not_unset(tmp_path):
    """Regression: --steps 0 / --batch-size 0 used to train the default 5,000 steps."""
    for flag in ("--steps", "--batch-size", "--threads"):
        out = tmp_path / flag.strip("-")
        r = subprocess.run(
            [sys.executable, "-m", "recon.cli.main", "train-prior", str(out), flag, "0"],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, (flag, r.stderr)
        assert not out.exists() or not any(out.iterdir())


def test_ctrl_c_inside_a_command_exits_130_not_0(tmp_path, monkeypatch, capsys):
    """Regression: typer turns a KeyboardInterrupt inside a command into a *returned* 130 under
    standalone_mode=False, which main() ignored (exit 0, nothing written, no message)."""
    import pytest

    import recon.pipeline
    from recon.cli.main import main

    scan = tmp_path / "scan.h5"
    r = runner.invoke(app, ["simulate", "phantoms:1:16", "-o", str(scan), "--operator", "mri"])
    assert r.exit_code == 0, r.output

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recon.pipeline, "run", interrupted)
    out = tmp_path / "out.h5"
    monkeypatch.setattr(sys, "argv", ["recon", "reconstruct", str(scan), "-o", str(out)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 130
    assert "interrupted" in capsys.readouterr().err and not out.exists()


def test_internal_error_is_one_line_exit_1_and_traceback_only_with_debug(tmp_path, monkeypatch):
    import pytest

    import recon.pipeline
    from recon.cli.main import main

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(recon.pipeline, "run", bug)
    for argv, expect in (
        (["x.h5", "-o", "o.h5"], SystemExit),
        (["x.h5", "-o", "o.h5", "--debug"], ZeroDivisionError),
    ):
        monkeypatch.setattr(sys, "argv", ["recon", "reconstruct", *argv])
        with pytest.raises(expect) as exc:
            main()
        if expect is SystemExit:
            assert exc.value.code == 1


def test_evaluate_reports_coverage_and_exact_runs_with_an_exact_prior(tmp_path):
    """`--sampler exact` reaches an exact prior through the pipeline's NFE counter (it used to
    be hidden by it), and 2+ samples give per-pixel coverage and a calibration curve. The
    default prior (a patch prior of any size) is not exact: one line names the way out."""
    out = tmp_path / "res"
    args = ["evaluate", "-b", "phantom_inpaint_70", "-o", str(out), "--sampler", "exact"]
    r = runner.invoke(app, [*args, "--samples", "3"])
    # a UserError (main() turns it into one line and exit 2), raised before any item runs
    assert "--prior phantom-gaussian" in str(r.exception), r.output
    args += ["--prior", "phantom-gaussian"]  # a corrected rerun into the same folder
    r = runner.invoke(app, [*args, "--samples", "3", "--set", "sampler.method=cg"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "results.json").read_text())
    cov = summary["coverage"]
    assert set(cov) == {str(v) for v in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}
    assert 0 < cov["0.5"] <= cov["0.9"] <= 1
    assert (out / "calibration.png").is_file() and "coverage" in (out / "summary.md").read_text()


def test_dangling_links_and_undecodable_configs_are_user_errors(tmp_path):
    """Two classes of bad input, each one line on stderr and exit 2: an HDF5 dataset that is a
    soft or external link to nothing (every read opens files through ``recon.io.open_h5``),
    and a config that is not UTF-8 text or is nested past the parser's recursion limit
    (every config goes through ``recon.config.read_mapping``)."""
    import numpy as np

    ext, soft = tmp_path / "ext.h5", tmp_path / "soft.h5"
    with h5py.File(ext, "w") as f:
        f["kspace"] = h5py.ExternalLink(str(tmp_path / "missing.h5"), "/kspace")
        f["mask"] = np.ones(8, np.float32)
    with h5py.File(soft, "w") as f:
        f["kspace"] = h5py.SoftLink("/nowhere")
    scan = tmp_path / "scan.h5"
    assert (
        runner.invoke(
            app, ["simulate", "phantoms:1:16", "-o", str(scan), "--operator", "mri"]
        ).exit_code
        == 0
    )
    configs = {
        "utf16.yaml": "sampler:\n  name: tv\n".encode("utf-16"),
        "latin1.yaml": "sampler:\n  name: 'tév'\n".encode("latin-1"),
        "deep.json": ('{"a": ' + "[" * 100000 + "]" * 100000 + "}").encode(),
    }
    cases = [[str(p), "-o", str(tmp_path / "o.h5")] for p in (ext, soft)]
    for name, data in configs.items():
        (tmp_path / name).write_bytes(data)
        cases.append([str(scan), "-o", str(tmp_path / "o.h5"), "-c", str(tmp_path / name)])
    for args in cases:
        r = subprocess.run(
            [sys.executable, "-m", "recon.cli", "reconstruct", *args],
            capture_output=True,
            text=True,
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "internal error" not in r.stderr, (
            args,
            r.stderr,
        )
        assert lines[0].startswith("recon: error: ") and str(tmp_path) in lines[0]
    assert not (tmp_path / "o.h5").exists()


def test_simulate_refuses_a_mask_fastmri_layout_cannot_store(tmp_path):
    """A 2-D (vd2d) mask samples points, not columns: fastMRI's one-entry-per-column ``mask``
    cannot hold it, so simulate refuses in one line and writes nothing (it wrote an all-zero
    mask, a scan no command could reconstruct)."""
    out = tmp_path / "vd.h5"
    r = runner.invoke(
        app, ["simulate", "phantoms:1:16", "-o", str(out), "--operator", "mri", "--mask", "vd2d"]
    )
    from recon.errors import UserError  # main() turns it into one line and exit 2

    assert isinstance(r.exception, UserError), r.output
    assert "whole phase-encode columns" in str(r.exception)
    assert not out.exists()


def test_numeric_options_and_set_values_are_validated_where_they_enter(tmp_path):
    """acquire's sampler options meet the DPS parameters' own bounds (NaN wrote an all-NaN
    result with exit 0; a negative step was accepted), and train-prior's ``augment`` takes
    only the augmentations that exist (a bogus one was ignored): one line, nothing written."""
    from recon.errors import UserError

    full = tmp_path / "full.h5"
    r = runner.invoke(
        app, ["simulate", "phantoms:1:16", "-o", str(full), "--operator", "mri", "--mask", "full"]
    )
    assert r.exit_code == 0, r.output
    for value, says in (("nan", "finite"), ("-1", "greater than or equal to 0")):
        out = tmp_path / f"a{value}.h5"
        r = runner.invoke(app, ["acquire", str(full), "-o", str(out), "--zeta", value])
        assert isinstance(r.exception, UserError) and says in str(r.exception), r.output
        assert "zeta" in str(r.exception) and not out.exists()
    folder = tmp_path / "tp"
    r = runner.invoke(app, ["train-prior", str(folder), "--set", "augment=[bogus]"])
    assert isinstance(r.exception, UserError) and "augment" in str(r.exception), r.output
    assert not folder.exists()


def test_outputs_are_claimed_and_a_refused_run_leaves_nothing(tmp_path):
    """A results folder is recon's only if recon made it: a user's folder holding their own
    items.csv is refused, not overwritten; a file or a dangling link is refused as an
    output; a refused evaluate leaves no folder behind."""
    from recon.errors import UserError

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "items.csv").write_text("my data\n")
    args = ["evaluate", "-b", "phantom_sr_x4", "--sampler", "pinv", "-o"]
    r = runner.invoke(app, [*args, str(mine)])
    assert isinstance(r.exception, UserError) and "did not write" in str(r.exception)
    assert (mine / "items.csv").read_text() == "my data\n"
    (tmp_path / "afile").write_text("x")
    r = runner.invoke(app, [*args, str(tmp_path / "afile")])
    assert isinstance(r.exception, UserError) and "is a file" in str(r.exception)
    ev = tmp_path / "ev"
    r = runner.invoke(app, [*args, str(ev), "--set", "items=[99]"])
    assert isinstance(r.exception, UserError) and not ev.exists()
    r = runner.invoke(app, [*args, str(ev), "--set", "items=[0]"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*args, str(ev), "--set", "items=[1]"])  # its own folder: reused
    assert r.exit_code == 0, r.output
    scan, link = tmp_path / "s.h5", tmp_path / "dangling.h5"
    r = runner.invoke(app, ["simulate", "phantoms:1:16", "-o", str(scan), "--operator", "mri"])
    assert r.exit_code == 0, r.output
    link.symlink_to(tmp_path / "nowhere" / "x.h5")
    r = runner.invoke(app, ["reconstruct", str(scan), "-o", str(link), "--sampler", "pinv"])
    assert isinstance(r.exception, UserError) and "link to nothing" in str(r.exception)
    assert link.is_symlink() and not link.exists()


def test_a_fully_sampled_file_names_options_that_work(tmp_path):
    """reconstruct on fully sampled k-space suggested --acceleration, an option it does not
    have; the suggestion is now a set of --set options, and following it works."""
    import re

    from recon.errors import UserError

    full = tmp_path / "full.h5"
    r = runner.invoke(
        app, ["simulate", "phantoms:1:16", "-o", str(full), "--operator", "mri", "--mask", "full"]
    )
    assert r.exit_code == 0, r.output
    base = ["reconstruct", str(full), "--sampler", "pinv", "-o"]
    r = runner.invoke(app, [*base, str(tmp_path / "a.h5")])
    assert isinstance(r.exception, UserError), r.output
    suggested = re.findall(r"--set (\S+)", str(r.exception))
    assert len(suggested) == 3, str(r.exception)
    r = runner.invoke(
        app, [*base, str(tmp_path / "b.h5"), *[a for s in suggested for a in ("--set", s)]]
    )
    assert r.exit_code == 0, r.output


def test_messages_name_the_thing_that_is_wrong(tmp_path):
    """A folder given as the scan, a named pipe, an output under a file, an output folder in
    which nothing can be created: one line each, naming what the user typed and why."""
    import os

    from recon.errors import UserError

    scan = tmp_path / "s.h5"
    r = runner.invoke(app, ["simulate", "phantoms:1:16", "-o", str(scan), "--operator", "mri"])
    assert r.exit_code == 0, r.output
    (tmp_path / "adir").mkdir()
    pipe = tmp_path / "pipe.h5"
    os.mkfifo(pipe)
    (tmp_path / "afile").write_text("x")
    rec = ["reconstruct", "--sampler", "pinv"]
    cases = [
        ([*rec, str(tmp_path / "adir"), "-o", str(tmp_path / "o.h5")], "a folder; reconstruct"),
        ([*rec, str(pipe), "-o", str(tmp_path / "o.h5")], "not a regular file"),
        ([*rec, str(scan), "-o", str(tmp_path / "afile" / "o.h5")], "is a file, not a folder"),
        (
            ["evaluate", "-b", "phantom_sr_x4", "--sampler", "pinv", "-o", f"{tmp_path}/afile/ev"],
            "is a file, not a folder",
        ),
    ]
    if Path("/proc").is_dir():  # a file system in which no file can be created, even by root
        cases.append(([*rec, str(scan), "-o", "/proc/o.h5"], "/proc is not writable"))
    for args, says in cases:
        r = runner.invoke(app, args)
        assert isinstance(r.exception, UserError) and says in str(r.exception), (args, r.output)


def test_requests_larger_than_memory_are_refused_before_allocating(tmp_path, monkeypatch):
    """Say what was asked and what is available, before allocating: phantoms of a huge size,
    a billion samples, a declared k-space slice larger than memory; an impossible step count
    and an empty item list are refused by the config's bounds."""
    from recon import memory
    from recon.errors import UserError

    monkeypatch.setattr(memory, "_available_cpu", lambda: 2 * 10**9)  # any machine: 2 GB
    scan = tmp_path / "s.h5"
    r = runner.invoke(app, ["simulate", "phantoms:1:16", "-o", str(scan), "--operator", "mri"])
    assert r.exit_code == 0, r.output
    big = tmp_path / "big.h5"
    with h5py.File(big, "w") as f:  # declared, never written: no disk used
        f.create_dataset("kspace", (1, 15, 40000, 40000), "complex64", chunks=(1, 1, 64, 64))
        f["mask"] = np.ones(40000, np.float32)
    out = str(tmp_path / "o.h5")
    cases = [
        (["simulate", "phantoms:2:100000", "-o", out, "--operator", "mri"], "is available"),
        (["reconstruct", str(scan), "-o", out, "--samples", "1000000000"], "is available"),
        (["reconstruct", str(big), "-o", out, "--sampler", "pinv"], "one slice of 'kspace'"),
        (["reconstruct", str(scan), "-o", out, "--steps", "100000000"], "less than or equal"),
        (["reconstruct", str(scan), "-o", out, "--set", "items=[]"], "at least 1 item"),
    ]
    for args, says in cases:
        r = runner.invoke(app, args)
        assert isinstance(r.exception, UserError) and says in str(r.exception), (args, r.output)
        assert not (tmp_path / "o.h5").exists()


def test_a_ct_attr_that_contradicts_the_sinogram_is_refused(tmp_path):
    from recon.errors import UserError

    ct = tmp_path / "ct.h5"
    r = runner.invoke(
        app, ["simulate", "phantoms:1:16", "-o", str(ct), "--operator", "ct", "--angles", "10"]
    )
    assert r.exit_code == 0, r.output
    with h5py.File(ct, "a") as f:
        f.attrs["n_angles"] = 12
    r = runner.invoke(
        app, ["reconstruct", str(ct), "-o", str(tmp_path / "o.h5"), "--sampler", "fbp"]
    )
    assert isinstance(r.exception, UserError) and "n_angles=12" in str(r.exception), r.output
    with h5py.File(ct, "a") as f:
        f.attrs["n_angles"] = 10  # agreeing: fine
    r = runner.invoke(
        app, ["reconstruct", str(ct), "-o", str(tmp_path / "o.h5"), "--sampler", "fbp"]
    )
    assert r.exit_code == 0, r.output


def test_a_config_operator_a_fastmri_file_would_ignore_is_refused(tmp_path):
    """The result's recorded config never claims what did not run: an operator setting
    that a fastMRI file with its own mask ignores is refused in one line."""
    from recon.errors import UserError

    scan = tmp_path / "s.h5"
    r = runner.invoke(app, ["simulate", "phantoms:1:16", "-o", str(scan), "--operator", "mri"])
    assert r.exit_code == 0, r.output
    op = ["--set", "operator.name=mri", "--set", "operator.img_size=[16,16]"]
    base = ["reconstruct", str(scan), "--sampler", "pinv", *op, "-o"]
    r = runner.invoke(app, [*base, str(tmp_path / "a.h5"), "--set", "operator.acceleration=8"])
    assert isinstance(r.exception, UserError) and "acceleration" in str(r.exception), r.output
    r = runner.invoke(app, [*base, str(tmp_path / "b.h5"), "--set", "operator.sigma_y=0.02"])
    assert r.exit_code == 0, r.output  # the noise level is taken


def test_one_rule_for_image_stacks(tmp_path):
    """simulate accepted 0..255, negative or uint8 images (and wrote a truth with max 255)
    while train-prior refused them: both now refuse in one line, by the same rule."""
    from recon.errors import UserError

    for name, arr in (
        ("u8.h5", np.full((1, 16, 16), 200, np.uint8)),
        ("neg.h5", -np.ones((1, 16, 16))),
    ):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            f["images"] = arr
        for args in (
            ["simulate", str(path), "-o", str(tmp_path / "s.h5"), "--operator", "mri"],
            ["train-prior", str(tmp_path / "tp"), "--set", f"data=['{path}']", "--steps", "1"],
        ):
            r = runner.invoke(app, args)
            assert isinstance(r.exception, UserError), (args, r.output)
            assert "must lie in [0, 1]" in str(r.exception), r.output
        assert not (tmp_path / "s.h5").exists() and not (tmp_path / "tp").exists()


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """A file-size limit (as a full disk): one line naming the file, exit 2, no output; and
    when the results file fails after its figure, the figure goes too (both or neither)."""
    import resource

    from recon import io as rio
    from recon.errors import UserError

    scan = tmp_path / "s.h5"
    r = runner.invoke(app, ["simulate", "phantoms:1:16", "-o", str(scan), "--operator", "mri"])
    assert r.exit_code == 0, r.output
    out, fig = tmp_path / "o.h5", tmp_path / "o.png"
    args = ["reconstruct", str(scan), "-o", str(out), "--sampler", "pinv", "--figure", str(fig)]

    def limit() -> None:  # 8 KB files at most, in the child only
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    p = subprocess.run(
        [sys.executable, "-m", "recon.cli.main", *args],
        capture_output=True,
        text=True,
        preexec_fn=limit,
    )
    assert p.returncode == 2, p.stderr
    assert "could not be written (File too large)" in p.stderr.strip().splitlines()[-1]
    assert not out.exists() and not fig.exists()

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rio, "write_result", lambda *a, **k: rio.atomic(out, False, full))
    r = runner.invoke(app, args)
    assert isinstance(r.exception, UserError) and "No space left" in str(r.exception)
    assert not out.exists() and not fig.exists()


def test_corrupt_images_info_files_and_demo_paths_are_user_errors(tmp_path):
    """A corrupt image in an image folder, a corrupt benchmark info.json, a demo output
    that is a file: one line each (they were internal errors)."""
    import shutil

    from PIL import Image

    from recon.errors import UserError

    pngs = tmp_path / "pngs"
    pngs.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(pngs / "a.png")
    (pngs / "b.png").write_text("not a png")
    bset = tmp_path / "bset"
    bset.mkdir()
    shutil.copy(Path(__file__).parents[1] / "data/benchmarks/phantom_sr_x4/scan.h5", bset)
    (bset / "info.json").write_text("{bad")
    (tmp_path / "afile").write_text("x")
    cases = [
        (["simulate", str(pngs), "-o", str(tmp_path / "s.h5"), "--operator", "mri"], "b.png"),
        (
            ["evaluate", "-b", str(bset), "-o", str(tmp_path / "ev"), "--sampler", "pinv"],
            "info.json",
        ),
        (["demo", "-o", str(tmp_path / "afile")], "is a file"),
    ]
    for args, says in cases:
        r = runner.invoke(app, args)
        assert isinstance(r.exception, UserError) and says in str(r.exception), (args, r.output)
