"""Active diffusion subsampling: the entropy estimate, the policy on a closed-form case, and
the acquisition bookkeeping (masks only grow, no repeats, inputs untouched)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from recon import operators as O
from recon.active import active_subsampling, candidate_index, gmm_entropy
from recon.priors import GaussianPrior
from recon.schedules import karras

F64 = torch.float64


def test_gmm_entropy_matches_brute_force_and_is_stable():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(5, 2, 3, 4, generator=g, dtype=F64)
    idx = candidate_index((3, 4), "lines")
    ent, _ = gmm_entropy(pred, idx, 4, 0.7)
    for col in range(4):
        p = pred[..., col].reshape(5, -1)
        d = ((p[:, None] - p[None]) ** 2).sum(-1)
        want = -torch.log(torch.exp(-d / (2 * 0.49)).mean(1)).mean()
        assert float(ent[col]) == float(want) or abs(float(ent[col] - want)) < 1e-12
    # huge spreads: the positive-exponent form of the official code overflows; this does not
    big, _ = gmm_entropy(1e6 * pred, idx, 4, 1e-3)
    assert bool(torch.isfinite(big).all()) and float(big.max()) <= math.log(5) + 1e-9
    auto, s_auto = gmm_entropy(pred, idx, 4, None, torch.tensor([True, False, False, False]))
    assert s_auto > 0 and auto[0] == -math.inf and bool(torch.isfinite(auto[1:]).all())


def test_gmm_entropy_chunked_equals_unchunked():
    """Bounded memory: particles taken in blocks (as small as one) give the same entropies
    and automatic s as all pairs at once."""
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(7, 3, 2, 6, 5, generator=g, dtype=F64)  # N, coils, re/im, H, W
    idx = candidate_index((6, 5), "lines")
    full, s_full = gmm_entropy(pred, idx, 5, None)
    row = 2 * pred[0].numel() * 7 * 8  # bytes of one particle's block
    for max_bytes in (1, row, 3 * row, 10**9):
        ent, s = gmm_entropy(pred, idx, 5, None, max_bytes=max_bytes)
        assert torch.allclose(ent, full, rtol=0, atol=1e-12) and abs(s - s_full) < 1e-12


def _inpainting_setup(variances, seed=0):
    shape = (1, 4, 4)
    prior = GaussianPrior(torch.full(shape, 0.5, dtype=F64), variances, shape=shape)
    x_true = prior.sample(1, generator=torch.Generator().manual_seed(seed))

    def make_physics(mask):
        cfg = O.InpaintingConfig(img_size=shape, mask="given")
        return O.cast(O.build(cfg, mask=mask.clone()), F64)

    def measure(mask):
        return mask * x_true

    return prior, shape, make_physics, measure


def test_policy_picks_the_largest_prior_variances_first():
    """Independent Gaussian pixels: a pixel's predicted-measurement spread (and so its entropy)
    grows with its variance, and acquiring one pixel tells nothing about the others; so the
    policy acquires the pixels in decreasing order of prior variance (closed form)."""
    var = torch.full((16,), 0.01, dtype=F64)
    top = [5, 10, 3]
    var[top] = torch.tensor([1.0, 0.4, 0.15], dtype=F64)
    prior, shape, make_physics, measure = _inpainting_setup(var)
    res = active_subsampling(
        prior,
        karras(30, sigma_max=10.0).to(F64),
        make_physics=make_physics,
        measure=measure,
        initial_mask=torch.zeros(shape, dtype=F64),
        x_shape=shape,
        budget=3,
        candidates="pixels",
        window=(0.2, 0.8),
        n_particles=64,
        zeta=0.1,
        vp_scale=None,
        generator=torch.Generator().manual_seed(1),
    )
    assert res.order == top


def test_acquisition_bookkeeping():
    """Masks only grow, nothing is acquired twice, the initial mask and operator are untouched,
    and the final mask is the initial one plus the acquired candidates."""
    var = torch.linspace(0.01, 0.2, 16, dtype=F64)
    prior, shape, make_physics, measure = _inpainting_setup(var)
    init = torch.zeros(shape, dtype=F64)
    init[..., 0, :] = 1.0  # the first row is already measured
    init_copy = init.clone()
    physics0 = make_physics(init)
    state0 = {k: v.clone() for k, v in physics0.state_dict().items()}
    masks = []

    def recording_measure(mask):
        masks.append(mask.clone())
        return measure(mask)

    res = active_subsampling(
        prior,
        karras(20, sigma_max=10.0).to(F64),
        make_physics=make_physics,
        measure=recording_measure,
        initial_mask=init,
        x_shape=shape,
        budget=6,
        per_round=2,
        candidates="pixels",
        n_particles=8,
        zeta=0.1,
        vp_scale=None,
        generator=torch.Generator().manual_seed(2),
    )
    assert torch.equal(init, init_copy)
    for k, v in physics0.state_dict().items():
        assert torch.equal(v, state0[k])
    assert len(res.order) == 6 and len(set(res.order)) == 6
    assert not set(res.order) & set(range(4))  # row 0 was measured
    for a, b in itertools.pairwise(masks):
        assert bool((b >= a).all()) and float(b.sum()) == float(a.sum()) + 2
    want = init.clone().reshape(-1)
    want[res.order] = 1.0
    assert torch.equal(res.mask.reshape(-1), want)
    assert len(res.rounds) == 3 and all(len(r["chosen"]) == 2 for r in res.rounds)
    assert res.reconstruction.shape == (1, *shape) and res.samples.shape == (8, *shape)


def test_mri_lines_single_and_multicoil():
    """k-space columns as candidates: the ACS lines count as acquired, new lines are distinct
    columns, and the reconstruction is finite (single- and multi-coil)."""
    h = w = 8
    shape = (2, h, w)
    prior = GaussianPrior(
        torch.zeros(shape, dtype=F64), torch.full((2 * h * w,), 0.05, dtype=F64), shape=shape
    )
    x_true = prior.sample(1, generator=torch.Generator().manual_seed(0))
    acs = torch.zeros(h, w, dtype=F64)
    acs[:, 3:5] = 1.0
    for cfg in (
        O.MRIConfig(img_size=(h, w), mask="given"),
        O.MultiCoilMRIConfig(img_size=(h, w), mask="given", n_coils=3),
    ):

        def make_physics(mask, cfg=cfg):
            return O.cast(O.build(cfg, mask=mask.clone()), F64)

        def measure(mask, make_physics=make_physics):
            return make_physics(mask).A(x_true)

        res = active_subsampling(
            prior,
            karras(12, sigma_max=5.0).to(F64),
            make_physics=make_physics,
            measure=measure,
            initial_mask=acs,
            x_shape=shape,
            budget=3,
            candidates="lines",
            n_particles=6,
            zeta=0.1,
            vp_scale=None,
            generator=torch.Generator().manual_seed(0),
        )
        assert len(set(res.order)) == 3 and not {3, 4} & set(res.order)
        assert float(res.mask.sum()) == h * 5
        assert bool(torch.isfinite(res.reconstruction).all())


def test_hard_consistency_replaces_measured_kspace():
    """Single-coil MRI, noiseless: with ``hard_consistency`` every final particle reproduces
    the acquired k-space exactly and keeps its own values elsewhere; a multi-coil operator
    (rows not orthonormal) is refused with a clear error."""
    h = w = 8
    shape = (2, h, w)
    prior = GaussianPrior(
        torch.zeros(shape, dtype=F64), torch.full((2 * h * w,), 0.05, dtype=F64), shape=shape
    )
    x_true = prior.sample(1, generator=torch.Generator().manual_seed(0))
    acs = torch.zeros(h, w, dtype=F64)
    acs[:, 3:5] = 1.0
    kw = dict(
        initial_mask=acs,
        x_shape=shape,
        budget=2,
        n_particles=4,
        zeta=0.1,
        vp_scale=None,
    )
    for cfg, ok in (
        (O.MRIConfig(img_size=(h, w), mask="given"), True),
        (O.MultiCoilMRIConfig(img_size=(h, w), mask="given", n_coils=3), False),
    ):

        def make_physics(mask, cfg=cfg):
            return O.cast(O.build(cfg, mask=mask.clone()), F64)

        def run(hard, make_physics=make_physics):
            return active_subsampling(
                prior,
                karras(12, sigma_max=5.0).to(F64),
                make_physics=make_physics,
                measure=lambda m: make_physics(m).A(x_true),
                hard_consistency=hard,
                generator=torch.Generator().manual_seed(0),
                **kw,
            )

        if not ok:
            with pytest.raises(ValueError, match=r"orthonormal operator rows|SVD"):
                run(True)
            continue
        soft, hard = run(False), run(True)
        phys = make_physics(hard.mask)
        y = phys.A(x_true)
        assert torch.allclose(phys.A(hard.samples), y.expand_as(phys.A(hard.samples)), atol=1e-10)
        # unmeasured k-space is the sampler's own (same stream: the same particles before)
        rest = make_physics(1 - hard.mask)
        assert torch.allclose(rest.A(hard.samples), rest.A(soft.samples), atol=1e-10)
        assert not torch.allclose(hard.samples, soft.samples, atol=1e-6)


def test_entropy_ties_are_broken_by_spread_then_index():
    """Saturated entropies (equal to within 1e-9) are ordered by the candidates' particle
    spread, then by index; a strictly larger entropy still wins."""
    from recon.active import candidate_spread, select_candidates

    ent = torch.tensor([2.0, 2.0 + 1e-12, 2.0, 1.0, 2.5, -math.inf], dtype=torch.float64)
    spread = torch.tensor([1.0, 3.0, 3.0, 9.0, 0.0, 99.0], dtype=torch.float64)
    assert select_candidates(ent, spread, 6) == [4, 1, 2, 0, 3, 5]
    assert select_candidates(ent, torch.zeros(6, dtype=torch.float64), 3) == [4, 0, 1]
    # spread: per-entry particle variance summed per candidate
    pred = torch.tensor([[[[0.0, 1.0], [2.0, 0.0]]], [[[2.0, 1.0], [0.0, 0.0]]]])  # (2, 1, 2, 2)
    index = torch.tensor([[0, 1], [0, 1]])
    assert torch.allclose(candidate_spread(pred, index, 2), torch.tensor([2.0, 0.0]))


def test_acquisition_resume_is_keyed_by_schedule_and_prior(tmp_path):
    """A Python caller's finished slices are kept under a fingerprint of everything they
    depend on: rerunning the same acquisition reuses them, while another schedule (same step
    count) or another prior's weights (same type) gets a folder of its own."""
    from typer.testing import CliRunner

    from recon.active import acquire_file
    from recon.cli.main import app

    scan, out = tmp_path / "full.h5", tmp_path / "out.h5"
    args = ["simulate", "phantoms:2:16", "-o", str(scan), "--operator", "mri", "--mask", "full"]
    assert CliRunner().invoke(app, args).exit_code == 0
    shape = (2, 16, 16)

    def prior(m):
        return GaussianPrior(torch.full(shape, m), torch.full((512,), 0.04), shape=shape)

    def stop(done, total):
        if done:
            raise KeyboardInterrupt

    def folders():
        rows = tmp_path / ".out.h5.rows"
        return {p.name for p in rows.iterdir()} if rows.is_dir() else set()

    def interrupted(den, sigmas):
        with pytest.raises(KeyboardInterrupt):
            acquire_file(
                str(scan),
                str(out),
                den,
                sigmas,
                acceleration=4,
                center_fraction=0.125,
                n_particles=2,
                on_slice=stop,
            )
        return folders()

    first = interrupted(prior(0.5), karras(4, sigma_max=5.0))
    assert len(first) == 1
    assert interrupted(prior(0.5), karras(4, sigma_max=5.0)) == first
    assert len(interrupted(prior(0.5), karras(4, sigma_max=4.0))) == 2
    assert len(interrupted(prior(0.4), karras(4, sigma_max=5.0))) == 3
