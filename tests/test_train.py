"""Training a prior (EDM loss, resume), the offline registry and users' checkpoints."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recon.cli.main import app
from recon.priors import (
    EDMDenoiser,
    GaussianPrior,
    ModuleDenoiser,
    PriorError,
    UNet,
    UNetConfig,
    load,
    load_checkpoint,
    to_complex,
)
from recon.priors import registry as R
from recon.priors.train import TrainConfig, edm_loss, sha256, train_prior

TINY = UNetConfig(channels=1, base=8, mults=(1, 2), blocks=1, attention=True)


@pytest.fixture
def tiny_data(tmp_path):
    """16 smooth 8x8 images in [0, 1] as an HDF5 image stack."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
    c = torch.rand(16, 2, generator=g) - 0.5
    imgs = torch.exp(-((xx - c[:, :1, None]) ** 2 + (yy - c[:, 1:, None]) ** 2) / 0.3)
    path = tmp_path / "imgs.h5"
    with h5py.File(path, "w") as f:
        f["images"] = imgs.numpy().astype(np.float32)
    return path


def _cfg(data, **kw):
    base = dict(
        name="tiny",
        data=(str(data),),
        resolution=8,
        unet=TINY,
        batch_size=8,
        lr=2e-3,
        warmup=1,
        checkpoint_every=2,
        sample_grid=2,
    )
    return TrainConfig(**{**base, **kw})


def test_edm_loss_decreases(tiny_data, tmp_path):
    """The EDM loss on a fixed batch and fixed noise falls after 40 steps on 16 images."""
    from recon.io import read_images

    x0 = read_images(tiny_data)[:8]
    cfg = _cfg(tiny_data, steps=40, checkpoint_every=40)
    torch.manual_seed(cfg.seed)
    net0 = UNet(cfg.unet)

    def loss_of(net):
        den = EDMDenoiser(net, sigma_data=0.5, data_range=(-1.0, 1.0))
        with torch.no_grad():
            return float(edm_loss(den, x0, cfg, torch.Generator().manual_seed(5)))

    before = loss_of(net0)
    train_prior(cfg, tmp_path / "run", progress=False)
    after = loss_of(load(tmp_path / "run").net)
    assert after < 0.7 * before, (before, after)


def test_resume_continues_steps_and_optimizer_state(tiny_data, tmp_path):
    """4 steps in one go equal 2 steps, a stop, then a resume to 4: the same weights, EMA
    weights and AdamW moments (the batch of step k depends only on (seed, k))."""
    a, b = tmp_path / "a", tmp_path / "b"
    train_prior(_cfg(tiny_data, steps=4), a, progress=False)
    train_prior(_cfg(tiny_data, steps=2), b, progress=False)
    assert json.loads((b / "checkpoint.json").read_text())["step"] == 2
    # a kill between the two replaces used to leave weights of one step with the counter of
    # another: the counter now lives inside the weights file, the JSON is only a copy
    (b / "checkpoint.json").write_text(json.dumps({"step": 0, "config": {}}))
    card = train_prior(_cfg(tiny_data, steps=4), b, progress=False)
    assert card["steps"] == 4
    from safetensors.torch import load_file

    ta, tb = (
        load_file(str(a / "checkpoint.safetensors")),
        load_file(str(b / "checkpoint.safetensors")),
    )
    assert set(ta) == set(tb) and any(k.startswith("opt.") and "exp_avg" in k for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert (b / "samples_000004.png").is_file() and card["sha256"] == sha256(
        b / "prior.safetensors"
    )
    with pytest.raises(ValueError, match="different run"):
        train_prior(_cfg(tiny_data, steps=6, lr=1e-4), b, progress=False)


def test_registry_verifies_sha256_and_loads(tiny_data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train_prior(_cfg(tiny_data, steps=2), run, progress=False)
    den = load(run)
    assert den.shape == (1, 8, 8)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        out = den(x, torch.tensor([0.1, 0.2, 0.3]))
    assert out.shape == x.shape and out.dtype == x.dtype
    # a bundled copy, found by name through a manifest
    bundled = tmp_path / "priors"
    (bundled / "tiny").mkdir(parents=True)
    w = bundled / "tiny" / "prior.safetensors"
    w.write_bytes((run / "prior.safetensors").read_bytes())
    entry = {
        "name": "tiny",
        "kind": "edm-unet",
        "file": "tiny/prior.safetensors",
        "sha256": sha256(w),
        "size_bytes": w.stat().st_size,
        "resolution": 8,
        "channels": 1,
    }
    (bundled / "manifest.json").write_text(json.dumps({"priors": [entry]}))
    monkeypatch.setattr(R, "priors_dir", lambda: bundled)
    with torch.no_grad():
        assert torch.equal(load("tiny")(x, torch.tensor([0.1, 0.2, 0.3])), out)
    w.write_bytes(w.read_bytes()[:-4] + b"oops")
    with pytest.raises(PriorError, match="sha256"):
        load("tiny")
    w.unlink()
    with pytest.raises(PriorError, match="missing"):
        load("tiny")
    with pytest.raises(PriorError, match="never downloads"):
        load("no-such-prior")
    r = CliRunner().invoke(app, ["list", "priors"])
    assert r.exit_code == 0 and "tiny" in r.stdout


def test_edm_state_dict_checkpoint_and_module_parametrisations(tmp_path):
    """A .pt state dict with its JSON config loads through load_checkpoint; a plain module in
    x0 / eps / score parametrisation (an oracle built from an exact Gaussian prior) gives the
    exact denoiser through ModuleDenoiser, in [-1, 1] network units."""
    net = UNet(TINY)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    cfg = {**TINY.model_dump(mode="json"), "sigma_data": 0.5, "resolution": 8}
    den = load_checkpoint(tmp_path / "net.pt", format="edm-unet", config=cfg)
    x = torch.rand(2, 1, 8, 8)
    ref = EDMDenoiser(net.eval(), 0.5, (-1.0, 1.0))
    with torch.no_grad():
        assert torch.allclose(den(x, torch.tensor([0.3, 0.4])), ref(x, torch.tensor([0.3, 0.4])))
    bad = dict(cfg, base=16)
    with pytest.raises(PriorError, match="does not match"):
        load_checkpoint(tmp_path / "net.pt", format="edm-unet", config=bad)

    g = torch.Generator().manual_seed(0)
    prior = GaussianPrior(
        torch.full((4,), 0.5, dtype=torch.float64),
        torch.rand(4, generator=g, dtype=torch.float64) + 0.1,
    )
    # the same prior in network units u = 2 x - 1
    prior_u = GaussianPrior(2 * prior.mean - 1, 4 * prior.cov.dense())

    class Oracle(torch.nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.kind = kind

        def forward(self, u, s):
            d = prior_u(u, s)
            if self.kind == "x0":
                return d
            if self.kind == "eps":
                return (u - d) / s[:, None]
            return (d - u) / s[:, None] ** 2

    xq = torch.rand(5, 4, dtype=torch.float64)
    sq = torch.tensor([0.05, 0.1, 0.3, 1.0, 3.0], dtype=torch.float64)
    want = prior(xq, sq)
    for kind in ("x0", "eps", "score"):
        got = ModuleDenoiser(Oracle(kind), kind, data_range=(-1.0, 1.0))(xq, sq)
        assert torch.allclose(got, want, atol=1e-10), kind


def test_to_complex_wraps_a_real_prior():
    prior = GaussianPrior(
        torch.full((1, 2, 2), 0.5, dtype=torch.float64),
        torch.full((4,), 0.1, dtype=torch.float64),
        shape=(1, 2, 2),
    )
    c = to_complex(prior, imag_var=0.01)
    assert c.shape == (2, 2, 2)
    x = torch.rand(3, 2, 2, 2, dtype=torch.float64)
    s = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    out = c(x, s)
    assert torch.allclose(out[:, :1], prior(x[:, :1], s))
    assert torch.allclose(out[:, 1:], x[:, 1:] * (0.01 / (0.01 + s**2))[:, None, None, None])


def test_train_prior_cli(tiny_data, tmp_path):
    out = tmp_path / "cli"
    args = ["train-prior", str(out), "--data", str(tiny_data), "--resolution", "8", "--steps", "2"]
    sets = ["--set", "unet.base=8", "--set", "unet.mults=[1,2]", "--set", "checkpoint_every=1"]
    sets += ["--set", "sample_grid=2"]
    r = CliRunner().invoke(app, [*args, *sets, "--batch-size", "4", "--threads", "1"])
    assert r.exit_code == 0, r.output
    card = json.loads((out / "model_card.json").read_text())
    assert card["steps"] == 2 and card["kind"] == "edm-unet" and "sha256" in card
    for key in (
        "resolution",
        "channels",
        "data_range",
        "parametrisation",
        "architecture",
        "training_data",
        "recipe",
        "wall_time_s",
        "final_loss",
    ):
        assert key in card
    r = CliRunner().invoke(app, ["train-prior", str(out), "--preset", "nope"])
    assert r.exit_code != 0


def test_train_prior_patch_cli_gives_a_prior_of_any_size(tmp_path):
    """``--patch``: crops of 1/4, 1/2 and the full resolution with coordinate channels, on the
    generic corpus; the exported prior denoises odd and non-square images."""
    import recon.priors.train as T
    from recon.priors import load
    from recon.priors.patches import PatchNetworkDenoiser

    out = tmp_path / "patch"
    args = ["train-prior", str(out), "--patch", "--data", "generic", "--resolution", "16"]
    sets = ["--set", "unet.base=8", "--set", "unet.mults=[1,2]", "--set", "checkpoint_every=2"]
    sets += ["--set", "sample_grid=2", "--steps", "2", "--batch-size", "4", "--threads", "1"]
    pool = T.GENERIC_POOL
    T.GENERIC_POOL = 8  # a small pool of corpus images for the test
    try:
        r = CliRunner().invoke(app, [*args, *sets])
    finally:
        T.GENERIC_POOL = pool
    assert r.exit_code == 0, r.output
    card = json.loads((out / "model_card.json").read_text())
    assert card["recipe"]["patch_sizes"] == [4, 8, 16] and card["architecture"]["coords"]
    assert any("dead leaves" in line for line in card["training_data"])
    den = load(out)
    assert isinstance(den, PatchNetworkDenoiser) and not hasattr(den, "shape")
    for shape in [(1, 1, 13, 9), (2, 1, 40, 24)]:
        y = den(torch.rand(shape), torch.full((shape[0],), 0.2))
        assert y.shape == shape and torch.isfinite(y).all()


def test_init_fine_tunes_from_exported_weights(tiny_data, tmp_path):
    """``init`` starts the network and its EMA from an exported prior: with a learning rate of
    0 the exported weights come back unchanged (AdamW's decay scales with it); weights of
    another architecture are refused in one line naming the first mismatch."""
    from safetensors.torch import load_file

    from recon.config import ConfigError

    train_prior(_cfg(tiny_data, steps=4), tmp_path / "a", progress=False)
    exported = tmp_path / "a" / "prior.safetensors"
    cfg = _cfg(tiny_data, steps=2, init=str(exported), lr=1e-12, warmup=0)
    train_prior(cfg, tmp_path / "b", progress=False)
    a, b = load_file(str(exported)), load_file(str(tmp_path / "b" / "prior.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-9), k
    fresh = _cfg(tiny_data, steps=2, lr=1e-12, warmup=0)
    train_prior(fresh, tmp_path / "c", progress=False)
    c = load_file(str(tmp_path / "c" / "prior.safetensors"))
    assert any(not torch.allclose(a[k], c[k]) for k in a)  # init mattered
    wide = TINY.model_copy(update={"base": TINY.base * 2})
    with pytest.raises(ConfigError, match="do not fit"):
        train_prior(_cfg(tiny_data, unet=wide, init=str(exported)), tmp_path / "d", progress=False)


def test_on_dark_objects_sit_on_a_dark_background():
    """recon.corpus.on_dark: a quarter of generic-dark's images; each keeps a dark margin (the
    background level at most 0.03 over at least a fifth of the image) and lies in [0, 1]; the
    same (seed, index) gives the same image."""
    from recon.corpus import DARK_PARTS, generic_image, on_dark

    assert abs(sum(p for p, _, _ in DARK_PARTS.values()) - 1) < 1e-12
    assert DARK_PARTS["on_dark"][0] == 0.25
    for i in range(12):
        img = on_dark(48, generator=torch.Generator().manual_seed(i))
        assert img.shape == (1, 48, 48) and 0 <= float(img.min()) and float(img.max()) <= 1
        assert float((img <= 0.03).float().mean()) > 0.2, i
    assert torch.equal(
        generic_image(32, 5, parts=DARK_PARTS), generic_image(32, 5, parts=DARK_PARTS)
    )


def test_a_truncated_checkpoint_is_one_line_naming_fresh(tiny_data, tmp_path):
    """A checkpoint cut short (a full disk, a copy interrupted) failed every rerun with an
    internal error; it is a user error naming the file and --fresh."""
    from recon.config import ConfigError

    out = tmp_path / "t"
    train_prior(_cfg(tiny_data, steps=2), out, progress=False)
    ckpt = out / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ConfigError, match=r"checkpoint\.safetensors.*--fresh"):
        train_prior(_cfg(tiny_data, steps=4), out, progress=False)


def test_a_refused_run_leaves_no_folder(tiny_data, tmp_path):
    """A run that made its folder and fails before its first checkpoint removes it; a
    folder that existed (a resumable run) is kept."""
    from recon.errors import UserError

    out = tmp_path / "new"
    with pytest.raises(UserError, match="not found"):
        train_prior(_cfg(tmp_path / "missing.h5", steps=2), out, progress=False)
    assert not out.exists()
    bad = _cfg(tiny_data, steps=2, batch_size=6, accumulate=4)
    with pytest.raises(ValueError, match="split"):
        train_prior(bad, out, progress=False)
    assert not out.exists()
    train_prior(_cfg(tiny_data, steps=2), out, progress=False)
    with pytest.raises(UserError):
        train_prior(_cfg(tiny_data, steps=4, lr=1e-4), out, progress=False)
    assert (out / "checkpoint.safetensors").is_file()


def test_train_prior_takes_a_device_like_every_command(tiny_data, tmp_path):
    """--device is a device, not a hint: cpu trains the same weights as the default; a CUDA
    device is refused in one line only where there is none (then nothing is made)."""
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from recon.cli.main import app
    from recon.errors import UserError

    train_prior(_cfg(tiny_data, steps=2), tmp_path / "a", progress=False)
    train_prior(_cfg(tiny_data, steps=2), tmp_path / "b", progress=False, device="cpu")
    wa, wb = (load_file(str(tmp_path / n / "prior.safetensors")) for n in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    if not torch.cuda.is_available():
        r = CliRunner().invoke(app, ["train-prior", str(tmp_path / "c"), "--device", "cuda"])
        assert isinstance(r.exception, UserError) and "CUDA is not available" in str(r.exception)
        assert not (tmp_path / "c").exists()
