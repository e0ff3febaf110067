"""Runs under torchrun (gloo, 2 CPU ranks): bit-identical to one process, resumable at row
granularity after a kill, errors named by rank, DDP training, a 2-node c10d rendezvous.

Every launch costs seconds of imports, so one launch (``torchrun_worker.py``) runs several
commands; single-process baselines run in this process with one thread, as each rank does.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from recon.cli.main import app
from recon.config import RunConfig, validate
from recon.distributed import RowStore
from recon.pipeline import rows_folder, run

runner = CliRunner()
HERE = Path(__file__).parent
RUN_YAML = (
    "prior: {kind: phantom_gaussian, size: 16, n_train: 200, rank: 16, complex: true}\n"
    "schedule: {name: karras, n_steps: 8, sigma_max: 5.0}\n"
    "sampler: {name: dds}\n"
)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "RECON_DIST_TIMEOUT": "60"}


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args, f"--nproc-per-node={nproc}"]


def _launch(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


class one_thread:
    """One torch thread, as each rank has under torchrun (results are bit-identical for equal
    thread counts)."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _cli(*args: str) -> None:
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output


def _datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        return {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}


def _assert_same(a: Path, b: Path) -> None:
    da, db = _datasets(a), _datasets(b)
    assert da.keys() == db.keys()
    for k in da:
        assert np.array_equal(da[k], db[k]), k


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    (tmp / "run.yaml").write_text(RUN_YAML)
    from test_invariance import _tiny_patch_prior

    net = _tiny_patch_prior(tmp / "net.safetensors")
    prior = f"prior: {{kind: network, source: '{net}', complex: true}}\n"
    (tmp / "run-net.yaml").write_text(prior + RUN_YAML.split("\n", 1)[1])
    (tmp / "bench").mkdir()
    _cli("simulate", "phantoms:5:16", "-o", str(tmp / "bench" / "scan.h5"), "--operator", "mri")
    _cli("simulate", "phantoms:6:16", "-o", str(tmp / "scan.h5"), "--operator", "mri_multicoil")
    full = str(tmp / "full.h5")
    _cli("simulate", "phantoms:4:16", "-o", full, "--operator", "mri", "--mask", "full")
    return tmp


@pytest.fixture(scope="module")
def worker(work):
    """One 2-rank launch of evaluate, acquire and a failing row loop."""
    _launch([*_torchrun("--standalone"), str(HERE / "torchrun_worker.py"), str(work)])
    return work


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _same_items(one: Path, two: Path, n: int = 5) -> None:
    """Two evaluate folders hold the same n items, row for row and bit for bit."""
    rows1, rows2 = _csv(one / "items.csv"), _csv(two / "items.csv")
    assert len(rows1) == n and rows1 == rows2
    for i in range(n):
        with (
            np.load(one / "items" / f"{i:04d}.npz") as a,
            np.load(two / "items" / f"{i:04d}.npz") as b,
        ):
            for key in a.files:
                assert np.array_equal(a[key], b[key]), (i, key)


def test_evaluate_and_acquire_on_two_ranks_equal_one_process(worker):
    """evaluate (items dealt to 2 ranks) and acquire (slices dealt) give bit-identical items,
    metrics and result files to one process."""
    tmp = worker
    with one_thread():
        cfg = str(tmp / "run.yaml")
        bench = str(tmp / "bench")
        _cli("evaluate", "-b", bench, "-o", str(tmp / "eval1"), "-c", cfg, "--samples", "2")
        _cli(
            *("acquire", str(tmp / "full.h5"), "-o", str(tmp / "ads1.h5"), "--steps", "8"),
            *("--particles", "2", "--center-fraction", "0.125", "--acceleration", "4"),
        )
    _same_items(tmp / "eval1", tmp / "eval2")
    assert (tmp / "eval2" / "summary.md").is_file()


def test_evaluate_with_a_network_prior_on_two_ranks_equals_one_process(worker):
    """With a (tiny, random) patch network prior, 2 ranks (each its own batch of items) give
    the same bits as one process: the network is called in calls of a fixed shape."""
    tmp = worker
    with one_thread():
        _cli(
            *("evaluate", "-b", str(tmp / "bench"), "-o", str(tmp / "eval-net1")),
            *("-c", str(tmp / "run-net.yaml"), "--samples", "2"),
        )
    _same_items(tmp / "eval-net1", tmp / "eval-net2")
    _assert_same(tmp / "ads1.h5", tmp / "ads2.h5")
    assert not list(tmp.glob(".ads2.h5.rows"))  # finished: the shard folder is gone


def test_rank_error_names_rank_and_item_once(worker):
    """An error in one rank's rows stops every rank with the same error, naming the rank and
    the rows; only rank 0 reports it (the others are quiet)."""
    outcomes = [json.loads((worker / f"error-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(o["raised"] and o["user"] for o in outcomes)
    assert outcomes[0]["message"] == "rank 1 of 2: rows [(3,)]: item 3 is bad"  # rank 1's row
    assert outcomes[0]["message"] == outcomes[1]["message"]
    assert [o["quiet"] for o in outcomes] == [False, True]


def _rec_args(tmp: Path, out: Path) -> list[str]:
    return [
        *("reconstruct", str(tmp / "scan.h5"), "-o", str(out), "-c", str(tmp / "run.yaml")),
        *("--samples", "3", "--batch-size", "1", "--steps", "60"),
    ]


@pytest.fixture(scope="module")
def baseline(work):
    """The one-process reconstruction every multi-process one must equal, bit for bit."""
    out = work / "rec1.h5"
    with one_thread():
        _cli(*_rec_args(work, out))
    return out


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _kill_one_rank_when(p: subprocess.Popen, ready, timeout: float = 90) -> None:
    """SIGKILL one rank (a child of the launcher) once ``ready()``; torchrun then stops the
    others and exits."""
    t0 = time.time()
    while not ready() and p.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.01)
    ranks = _children(p.pid)
    assert ranks, "no rank to kill"
    os.kill(ranks[-1], signal.SIGKILL)
    assert p.wait(timeout=60) != 0


def _two_nodes(args: list[str]) -> None:
    """``args`` on 2 "nodes" of one process each, meeting through the c10d rendezvous on
    127.0.0.1 (as on two machines, with ``--rdzv-endpoint`` the first one's address)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = [
        *_torchrun("--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}"),
        *("--rdzv-id=recon-test", *args),
    ]
    node[node.index("--nproc-per-node=2")] = "--nproc-per-node=1"
    # each node's output goes to a file, never a pipe: a pipe read only after the other node
    # exits can fill, block its writer and so both nodes (they wait for each other at exit)
    with tempfile.TemporaryDirectory() as logs:
        files = [open(Path(logs) / f"node{i}.log", "w+b") for i in range(2)]
        procs = [
            subprocess.Popen(node, env=_env(), stdout=f, stderr=subprocess.STDOUT) for f in files
        ]
        try:
            for p, f in zip(procs, files, strict=True):
                p.wait(timeout=180)
                f.seek(0)
                assert p.returncode == 0, f.read().decode(errors="replace")[-3000:]
        finally:
            for p, f in zip(procs, files, strict=True):
                if p.poll() is None:
                    p.kill()
                f.close()


def test_reconstruct_killed_then_rerun_on_two_nodes(work, baseline):
    """kill -9 of one rank of a 2-rank reconstruct once some rows are finished: the run stops
    (torchrun stops the other rank) with no output. The rerun, on 2 "nodes" of one process
    each (c10d rendezvous on localhost), loads the finished rows, computes the rest on both
    and writes a file bit-identical to one process's."""
    out = work / "rec2.h5"
    args = ["-m", "recon.cli", *_rec_args(work, out)]
    shards = work / ".rec2.h5.rows"
    p = subprocess.Popen(
        [*_torchrun("--standalone"), *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _kill_one_rank_when(p, lambda: len(list(shards.glob("*/r*.safetensors"))) >= 2)
    (folder,) = shards.iterdir()
    finished = len(RowStore(folder).load())
    assert not out.exists() and 2 <= finished < 18 - 2, finished
    _two_nodes(args)
    _assert_same(baseline, out)
    with h5py.File(out) as f:
        assert f.attrs["rows_resumed"] == finished and f.attrs["world_size"] == 2
    assert not shards.exists()


def test_ddp_train_prior_killed_and_resumed_equals_one_process(work):
    """train-prior on 2 ranks (DistributedDataParallel, each rank half of the global batch),
    one rank killed after a checkpoint, rerun to the end: the weights equal, bit for bit, one
    process's that computes the same halves as two accumulated micro-batches (the ranks'
    gradients halved and summed is the one process's arithmetic, so the comparison is exact;
    against one full batch they would differ by float32 rounding, amplified by 60 Adam steps
    by a factor that depends on the CPU)."""
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(16, 1, 8, 8, generator=g)
    with h5py.File(work / "imgs.h5", "w") as f:
        f["images"] = imgs.numpy()
    (work / "tiny.yaml").write_text(
        f"name: tiny\ndata: ['{work / 'imgs.h5'}']\nresolution: 8\n"
        "unet: {channels: 1, base: 8, mults: [1, 2], blocks: 1}\n"
        "batch_size: 8\nlr: 0.002\nwarmup: 1\ncheckpoint_every: 10\nsample_grid: 1\nsteps: 60\n"
    )
    from recon.config import read_mapping
    from recon.priors.train import TrainConfig, train_prior

    one, two = work / "train1", work / "train2"
    cfg = TrainConfig(**read_mapping(work / "tiny.yaml"))
    train_prior(cfg.model_copy(update={"accumulate": 2}), one, threads=1, progress=False)
    cmd = [*_torchrun("--standalone"), "-m", "recon.cli", "train-prior", str(two)]
    cmd += ["-c", str(work / "tiny.yaml")]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_one_rank_when(p, lambda: (two / "checkpoint.json").is_file())
    killed_at = json.loads((two / "checkpoint.json").read_text())["step"]
    assert 10 <= killed_at < 60
    r = _launch(cmd)
    assert f"resuming {two} at step" in r.stderr
    a = load_file(str(one / "checkpoint.safetensors"))
    b = load_file(str(two / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        if k.startswith(("net.", "ema.")):
            assert torch.equal(a[k], b[k]), (k, float((a[k] - b[k]).abs().max()))
    state = json.loads((two / "checkpoint.json").read_text())
    assert state["step"] == 60 and state["world_size"] == 2


def test_one_process_resumes_at_row_granularity(work, baseline):
    """Interrupted after its first chunk, a one-process run keeps that chunk; the rerun
    computes only the other rows and equals an uninterrupted run. Rows of another config
    or of a changed scan are never reused."""
    out = work / "rec-resume.h5"
    base = yaml.safe_load(RUN_YAML)
    base["schedule"]["n_steps"] = 60
    data = {"input": str(work / "scan.h5"), "output": str(out), "n_samples": 3}
    cfg = validate(RunConfig, {**base, **data, "batch_size": 4})

    def stop(done: int, total: int) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with one_thread():
        with pytest.raises(KeyboardInterrupt):
            run(cfg, on_rows=stop)
        folder = rows_folder(cfg)
        assert len(RowStore(folder).load()) == 4 and not out.exists()
        assert rows_folder(cfg.model_copy(update={"seed": 1})) != folder
        assert rows_folder(cfg.model_copy(update={"batch_size": 1, "n_samples": 1})) == folder
        seen = []
        res = run(cfg, on_rows=lambda d, t: seen.append(d))
    assert seen[0] == 4 and seen[-1] == 18
    with h5py.File(out) as f:
        assert f.attrs["rows_resumed"] == 4 and f.attrs["world_size"] == 1
    assert res.reconstruction.shape[0] == 6
    _assert_same(baseline, out)
    assert not folder.parent.exists()
