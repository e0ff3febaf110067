"""Results never move with the batch, a resume or the ranks, with a network prior too.

A network's kernels choose their algorithm by the shape of the call, so on a CPU a row computed
alone and the same row computed beside others differ by about 1e-7. recon's network denoisers
call the network in calls of a shape fixed by one row's size (:func:`recon.priors.base.
fixed_calls`), which makes every comparison below exact (``torch.equal``). The two-rank check
with a network prior is in ``tests/test_distributed.py``.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from recon import operators as O
from recon.config import RunConfig, validate
from recon.distributed import RowStore
from recon.pipeline import rows_folder, run
from recon.priors import EDMDenoiser
from recon.priors.base import call_rows, fixed_calls
from recon.priors.patches import PatchNetworkDenoiser, tile_rows
from recon.priors.train import FORMAT
from recon.priors.unet import UNet, UNetConfig
from recon.samplers import SAMPLERS
from recon.schedules import karras
from recon.simulate import simulate

TINY = UNetConfig(channels=1, base=8, mults=(1, 2), blocks=1, attention=True)
TINY_PATCH = TINY.model_copy(update={"coords": True})
FAST = {"mcgdiff": {"n_particles": 4}, "fps": {"n_particles": 4}, "afdps": {"n_particles": 4}}
NETWORK_SAMPLERS = sorted(n for n, s in SAMPLERS.items() if s.uses_prior and s.kind != "exact")


def _net(cfg: UNetConfig, seed: int = 0) -> UNet:
    """A UNet with every weight random (its zero-initialised output layer would make the
    network's contribution exactly zero, hiding any dependence on the call)."""
    torch.manual_seed(seed)
    net = UNet(cfg).eval().requires_grad_(False)
    for p in net.parameters():
        p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.fixture(scope="module")
def whole():
    return EDMDenoiser(_net(TINY))


@pytest.fixture(scope="module")
def patches():
    return PatchNetworkDenoiser(_net(TINY_PATCH), tile=8, stride=4)


def _rows_alone_equal(den, x, s) -> tuple[bool, float]:
    with torch.no_grad():
        batch = den(x, s)
        alone = torch.cat([den(x[i : i + 1], s[i : i + 1]) for i in range(x.shape[0])])
    return torch.equal(batch, alone), float((batch - alone).abs().max())


@pytest.mark.parametrize("kind", ["whole", "patches"])
def test_network_denoisers_give_each_row_the_same_bits_in_any_batch(kind, request):
    den = request.getfixturevalue(kind)
    g = torch.Generator().manual_seed(1)
    size = 8 if kind == "whole" else 20  # 20 x 20 in 8 x 8 tiles: 16 tiles per row
    x = torch.rand(5, 1, size, size, generator=g)
    s = torch.linspace(0.05, 2.0, 5)
    same, diff = _rows_alone_equal(den, x, s)
    assert same, diff
    # the arithmetic is the same: one unsplit call of everything agrees to float32 rounding
    one_call = EDMDenoiser(den.net, call_rows=0) if kind == "whole" else None
    if one_call is not None:
        with torch.no_grad():
            assert torch.allclose(one_call(x, s), den(x, s), atol=1e-5)


def test_one_call_as_given_is_what_moved_with_the_batch(whole):
    """Not vacuous: on this machine the same network called as given (``call_rows=0``, what
    recon did before) gives a row other bits beside batch-mates than alone."""
    g = torch.Generator().manual_seed(1)
    x, s = torch.rand(5, 1, 8, 8, generator=g), torch.linspace(0.05, 2.0, 5)
    same, _ = _rows_alone_equal(EDMDenoiser(whole.net, call_rows=0), x, s)
    if same:
        pytest.skip("this CPU's kernels give the same bits for every call shape")
    assert not same


def test_fixed_calls_pads_and_drops_and_sizes_from_one_row():
    seen = []

    def fn(a, b):
        seen.append(a.shape[0])
        return a * 2 + b[:, None]

    a, b = torch.arange(10.0).reshape(5, 2), torch.arange(5.0)
    assert torch.equal(fixed_calls(fn, 4, a, b), a * 2 + b[:, None])
    assert seen == [4, 4]  # 5 rows: one full call and one padded to 4
    assert call_rows(torch.zeros(3, 1, 32, 32)) == call_rows(torch.zeros(1, 1, 32, 32)) == 4
    assert call_rows(torch.zeros(1, 1, 8, 8)) == 16 and call_rows(torch.zeros(1, 3, 64, 64)) == 1
    assert [tile_rows(n, 16) for n in (1, 4, 9, 16, 49, 81, 17)] == [4, 4, 9, 16, 10, 9, 9]


@pytest.mark.parametrize("name", NETWORK_SAMPLERS)
def test_every_sampler_with_a_network_prior_is_batch_invariant(name, whole):
    """Each sampler family (DDS, DPS, RED-Diff, DAPS, STSL, the SMC clouds) with a network
    prior: a row's draw among batch-mates equals, bit for bit, the same row alone."""
    cfg = O.InpaintingConfig(img_size=(1, 8, 8), keep_ratio=0.5, sigma_y=0.05)
    physics = O.build(cfg)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 8, 8, generator=g)
    y = physics.A(x) + 0.05 * physics.mask * torch.randn(x.shape, generator=g)
    sigmas = karras(5, sigma_min=0.02, sigma_max=10.0)
    fn, kw = SAMPLERS[name].fn, FAST.get(name, {})

    def draw(rows, seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return fn(whole, y[rows], physics, sigmas, generator=gens, **kw)

    batch = draw(slice(0, 3), [11, 12, 13])
    alone = draw(slice(1, 2), [12])
    assert torch.equal(batch[1:2], alone), float((batch[1:2] - alone).abs().max())


def _tiny_patch_prior(path):
    net = _net(TINY_PATCH)
    meta = {
        "format": FORMAT,
        "unet": TINY_PATCH.model_dump_json(),
        "sigma_data": "0.5",
        "resolution": "8",
        "tile": "8",
        "name": "tiny",
    }
    save_file(dict(net.state_dict()), str(path), metadata=meta)
    return path


@pytest.mark.parametrize(
    ("sampler", "prior_name"), [("dds", None), ("dps", None), ("dds", "generic-patch")]
)
def test_pipeline_with_a_network_prior_is_invariant_to_batch_size_and_resume(
    sampler, prior_name, tmp_path
):
    """A run with a patch network prior (a tiny random one, and the default bundled one)
    gives the same bits with ``batch_size`` 1 and 4, and when interrupted after its first
    chunk and resumed."""
    from recon.phantoms import random_phantoms

    scan = simulate(
        random_phantoms(3, 16, seed=5),
        O.MRIConfig(img_size=(16, 16), acceleration=4, center_fraction=0.25, sigma_y=0.01),
        tmp_path / "scan.h5",
        seed=0,
    )
    source = prior_name or str(_tiny_patch_prior(tmp_path / "p.safetensors"))
    prior = {"kind": "network", "source": source}
    base = {
        "input": str(scan),
        "prior": {**prior, "complex": True},
        "sampler": {"name": sampler},
        "schedule": {"name": "karras", "n_steps": 6, "sigma_max": 5.0},
        "n_samples": 2,
    }
    one = run(validate(RunConfig, {**base, "batch_size": 1}))
    four = run(validate(RunConfig, {**base, "batch_size": 4}))
    assert torch.equal(one.reconstruction, four.reconstruction)
    assert torch.equal(one.std, four.std)

    cfg = validate(RunConfig, {**base, "batch_size": 4, "output": str(tmp_path / "o.h5")})

    def stop(done: int, total: int) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, on_rows=stop)
    assert len(RowStore(rows_folder(cfg)).load()) == 4
    resumed = run(cfg)
    assert torch.equal(resumed.reconstruction, one.reconstruction)
