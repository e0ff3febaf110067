"""Operator contract tests over every registered operator, plus custom operators and masks."""

from __future__ import annotations

import pytest
import torch

from recon import operators as O
from recon.linalg import batch_norm

SMALL = {
    "inpainting": dict(img_size=(1, 12, 12), keep_ratio=0.4),
    "super_resolution": dict(img_size=(1, 16, 16), factor=4),
    "mri": dict(img_size=(16, 16), acceleration=4, center_fraction=0.125),
    "mri_multicoil": dict(img_size=(16, 16), acceleration=4, center_fraction=0.125, n_coils=4),
    "ct": dict(img_size=(16, 16), n_angles=12),
}

VARIANTS = [
    ("inpainting", {}),
    ("inpainting", dict(mask="box")),
    ("super_resolution", dict(filter="box", factor=2)),
    ("super_resolution", {}),
    ("mri", {}),
    ("mri", dict(mask="random")),
    ("mri", dict(mask="vd2d", acceleration=3)),
    ("mri_multicoil", {}),
    ("ct", {}),
    ("ct", dict(geometry="limited_angle", angle_range=90.0, n_detectors=20)),
]


def test_registry_covers_every_kind():
    assert set(O.OPERATORS) == set(SMALL)


def _make(name, extra=None, **kw):
    cfg_cls, _ = O.OPERATORS[name]
    cfg = cfg_cls(**{**SMALL[name], **(extra or {}), **kw})
    return cfg, O.build(cfg)


@pytest.mark.parametrize(("name", "extra"), VARIANTS)
def test_adjointness_float32(name, extra):
    cfg, p = _make(name, extra)
    err = O.adjointness_error(p, (3, *O.input_shape(cfg)))
    print(f"{name} {extra}: float32 relative adjointness error {err:.2e}")
    assert err < 1e-4


@pytest.mark.parametrize(("name", "extra"), VARIANTS)
def test_adjointness_float64(name, extra):
    cfg, p = _make(name, extra)
    p = O.cast(p, torch.float64)
    err = O.adjointness_error(p, (3, *O.input_shape(cfg)), dtype=torch.float64)
    print(f"{name} {extra}: float64 relative adjointness error {err:.2e}")
    assert err < 1e-10


@pytest.mark.parametrize(("name", "extra"), VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_unchanged(name, extra, dtype, gen):
    cfg, p = _make(name, extra)
    p = O.cast(p, dtype)
    before = {k: v.clone() for k, v in p.state_dict().items()}
    x = torch.rand((2, *O.input_shape(cfg)), generator=gen, dtype=dtype)
    x_copy = x.clone()
    y = p.A(x)
    xa = p.A_adjoint(y)
    xd = p.A_dagger(y)
    assert y.dtype == dtype and xa.dtype == dtype and xd.dtype == dtype
    assert xa.shape == x.shape and xd.shape == x.shape
    assert torch.equal(x, x_copy)
    after = p.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"{name}: buffer {k} changed by a call"


@pytest.mark.parametrize(("name", "extra"), VARIANTS)
def test_a_dagger_consistency(name, extra, gen):
    """A A^+ y = y for y in the range of A (the defining property of a pseudo-inverse)."""
    cfg, p = _make(name, extra)
    p = O.cast(p, torch.float64)
    x = torch.rand((2, *O.input_shape(cfg)), generator=gen, dtype=torch.float64)
    y = p.A(x)
    rel = batch_norm(p.A(p.A_dagger(y)) - y) / batch_norm(y)
    # closed forms are exact; CT and multi-coil run a fixed number of CG steps (truncation error)
    tol = 1e-2 if name in ("ct", "mri_multicoil") else 1e-10
    assert float(rel.max()) < tol


def test_noise_is_gaussian_with_sigma_y(gen):
    _, p = _make("mri", sigma_y=0.05)
    assert O.noise_sigma(p) == pytest.approx(0.05)
    _, p2 = _make("mri", sigma_y=0.0)
    assert O.noise_sigma(p2) == 0.0
    assert p.noise_model is not p2.noise_model


def test_per_sample_inpainting_masks(gen):
    _, p = _make("inpainting", n_masks=3)
    assert p.mask.shape == (3, 1, 12, 12)
    assert not torch.equal(p.mask[0], p.mask[1])
    x = torch.rand(3, 1, 12, 12, generator=gen)
    y = p.A(x)
    for i in range(3):
        single = O.build(O.InpaintingConfig(img_size=(1, 12, 12), mask="given"), mask=p.mask[i])
        assert torch.equal(single.A(x[i : i + 1]), y[i : i + 1])


def test_per_sample_mri_masks_independent_of_count():
    m3 = O.make_mask("random", (16, 32), acceleration=4, center_fraction=0.08, seed=5, n_masks=3)
    m5 = O.make_mask("random", (16, 32), acceleration=4, center_fraction=0.08, seed=5, n_masks=5)
    assert torch.equal(m3, m5[:3])
    _, p = _make("mri", mask="random", n_masks=3)
    x = torch.randn(3, 2, 16, 16)
    y = p.A(x)
    for i in range(3):
        single = O.build(O.MRIConfig(img_size=(16, 16), mask="given"), mask=p.mask[i, 0])
        assert torch.allclose(single.A(x[i : i + 1]), y[i : i + 1])


@pytest.mark.parametrize("kind", ["random", "equispaced"])
@pytest.mark.parametrize("acc", [2, 4, 8, 12])
def test_cartesian_mask_fastmri_semantics(kind, acc):
    w = 368
    cf = 0.08 if acc <= 4 else 0.04
    fracs = []
    for seed in range(20):
        m = O.make_mask(kind, (8, w), acceleration=acc, center_fraction=cf, seed=seed)
        cols = m[0].bool()
        assert bool((m == m[0]).all()), "a 1-D mask is constant along rows"
        n_low = round(w * cf)
        pad = (w - n_low + 1) // 2
        assert bool(cols[pad : pad + n_low].all()), "the ACS block is always sampled"
        fracs.append(float(cols.float().mean()))
    mean = sum(fracs) / len(fracs)
    # random: E[fraction] = 1/R exactly; equispaced hits 1/R up to rounding of the spacing
    assert abs(mean - 1 / acc) < (0.02 if kind == "random" else 0.01)


def test_vd2d_mask_density():
    m = O.make_mask("vd2d", (64, 64), acceleration=4, center_fraction=0.1, seed=0)
    assert abs(float(m.mean()) - 0.25) < 0.03
    assert m[32, 32] == 1.0
    # denser near the centre than at the edge
    assert float(m[24:40, 24:40].mean()) > float(m[:8].mean())


def test_mask_too_large_centre_is_rejected():
    with pytest.raises(ValueError, match="center_fraction"):
        O.make_mask("equispaced", (8, 32), acceleration=12, center_fraction=0.3, seed=0)


def test_from_functions_wrong_adjoint_raises():
    w = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    with pytest.raises(O.AdjointError, match=r"relative error .* = \d\.\d+e[+-]\d+"):
        O.from_functions(lambda x: x @ w.T, lambda y: 2.0 * (y @ w), img_size=(7,))


def test_from_functions_correct_and_autograd_adjoint(gen):
    w = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    p1 = O.from_functions(lambda x: x @ w.T, lambda y: y @ w, img_size=(7,), dtype=torch.float64)
    p2 = O.from_functions(lambda x: x @ w.T, img_size=(7,), sigma_y=0.1)
    assert O.noise_sigma(p2) == pytest.approx(0.1)
    y = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    with torch.no_grad():  # the autograd adjoint must work inside samplers' no_grad
        assert torch.allclose(p1.A_adjoint(y), p2.A_adjoint(y))
    assert O.adjointness_error(p2, (3, 7), dtype=torch.float64) < 1e-12


def test_from_functions_on_images(gen):
    def blur(x):
        return 0.5 * x + 0.25 * (torch.roll(x, 1, -1) + torch.roll(x, -1, -1))

    p = O.from_functions(blur, blur, img_size=(1, 8, 8))
    assert O.adjointness_error(p, (2, 1, 8, 8)) < 1e-6


def test_from_matrix(gen):
    m = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    p = O.from_matrix(m, sigma_y=0.2)
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    assert torch.allclose(p.A(x), x @ m.T)
    assert O.adjointness_error(p, (4, 6), dtype=torch.float64) < 1e-14
    y = p.A(x)
    assert torch.allclose(p.A(p.A_dagger(y)), y)
    assert torch.allclose(O.operator_matrix(p, (6,)), m)
    assert O.noise_sigma(p) == pytest.approx(0.2)


def test_operator_matrix_matches_calls(gen):
    _, p = _make("super_resolution", filter="box", factor=2)
    p = O.cast(p, torch.float64)
    a = O.operator_matrix(p, (1, 16, 16))
    x = torch.randn(2, 1, 16, 16, generator=gen, dtype=torch.float64)
    assert torch.allclose(x.reshape(2, -1) @ a.T, p.A(x).reshape(2, -1))


def test_box_superresolution_is_block_mean():
    _, p = _make("super_resolution", filter="box", factor=2)
    x = torch.arange(16.0 * 16).reshape(1, 1, 16, 16)
    ref = torch.nn.functional.avg_pool2d(x, 2)
    assert torch.allclose(p.A(x), ref)


def test_birdcage_maps_normalised():
    s = O.birdcage_maps(8, (32, 32))
    assert s.shape == (8, 32, 32) and s.is_complex()
    assert torch.allclose((s.abs() ** 2).sum(0), torch.ones(32, 32), atol=1e-5)


@pytest.mark.parametrize("estimator", sorted(O.COIL_ESTIMATORS))
def test_estimated_coil_maps_recover_smooth_maps(estimator):
    """Both estimators recover smooth maps inside the object, up to the per-pixel common phase
    that coil maps are defined up to (ESPIRiT's gauge differs from the birdcage maps')."""
    h = w = 48
    true = O.birdcage_maps(6, (h, w))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    img = torch.exp(-(xx**2 + yy**2) / 0.8)  # smooth, real, positive
    coil_imgs = true * img
    k = torch.fft.fftshift(
        torch.fft.fft2(torch.fft.ifftshift(coil_imgs, dim=(-2, -1)), norm="ortho"), dim=(-2, -1)
    )
    est = O.COIL_ESTIMATORS[estimator](k[None], 12)[0]
    phase = torch.sgn((true.conj() * est).sum(0))  # the common phase, per pixel
    inner = (yy.abs() < 0.6) & (xx.abs() < 0.6)
    err = (est * phase.conj() - true).abs()[:, inner].max()
    assert float(err) < 0.05
    # and the operator built from them reconstructs a fully sampled scan
    cfg = O.MultiCoilMRIConfig(
        img_size=(h, w),
        coil_maps="estimated",
        mask="equispaced",
        acceleration=2,
        center_fraction=0.25,
        coil_estimator=estimator,
    )
    kspace = torch.stack([k.real, k.imag])[None]  # (1, 2, N, H, W)
    p = O.build(cfg, kspace=kspace)
    assert p.coil_maps.shape[-2:] == (h, w)


def _kspace(coil_imgs: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal k-space of complex coil images (..., H, W)."""
    k = torch.fft.fft2(torch.fft.ifftshift(coil_imgs, dim=(-2, -1)), norm="ortho")
    return torch.fft.fftshift(k, dim=(-2, -1))


def test_smooth_coil_maps_hold_up_to_the_edge_of_the_field_of_view():
    """An object that fills the field of view (a photograph): the low-resolution ratio is wrong
    near the edges, where the periodic window wraps the other edge in; the smooth fit is not.
    Error of the maps weighted by the image (what the forward model sees), 8 coils, 12-line ACS."""
    from recon.corpus import photo_crop

    h, w = 48, 40  # non-square
    true = O.birdcage_maps(8, (h, w)).to(torch.complex128)
    img = 0.2 + photo_crop(64, generator=torch.Generator().manual_seed(0))[0, :h, :w].double()
    k = _kspace(true * img)[None]
    err = {}
    for name in ("lowres", "smooth"):
        est = O.COIL_ESTIMATORS[name](k, 12)[0]
        assert est.shape == true.shape
        err[name] = float(((est - true) * img).abs().norm() / (true * img).abs().norm())
    smooth = O.COIL_ESTIMATORS["smooth"](k, 12)[0]
    norm = smooth.abs().pow(2).sum(0)
    kept = norm > 0  # cropped only where the low-resolution image is dark
    assert kept.float().mean() > 0.9
    assert torch.allclose(norm[kept], torch.ones_like(norm[kept]))
    assert err["smooth"] < 0.5 * err["lowres"], err  # measured 0.075 vs 0.20


def test_smooth_coil_maps_per_sample_and_any_size():
    """A sample's maps do not depend on its batch-mates; odd sizes; the 2-channel real form."""
    g = torch.Generator().manual_seed(1)
    k = torch.randn(3, 4, 33, 27, dtype=torch.complex64, generator=g)
    batch = O.COIL_ESTIMATORS["smooth"](k, 7)
    assert batch.shape == k.shape and batch.dtype == torch.complex64
    for i in range(3):
        torch.testing.assert_close(batch[i], O.COIL_ESTIMATORS["smooth"](k[i : i + 1], 7)[0])
    real = O.COIL_ESTIMATORS["smooth"](torch.stack([k.real, k.imag], 1), 7)
    torch.testing.assert_close(real, batch)


@pytest.mark.parametrize(("name", "extra"), VARIANTS)
def test_mean_row_norm_sq_is_the_mean_squared_row_norm(name, extra):
    """``mean_row_norm_sq`` estimates ``||A||_F^2 / m`` (Hutchinson, fixed probes) within 5 of
    its standard errors ``sqrt(2 / K) ||A^T A||_F / m`` (K probes); it is below ``||A||^2`` (far
    below on CT) and depends on the operator only."""
    cfg, p = _make(name, extra)
    shape = O.input_shape(cfg)
    p = O.cast(p, torch.float64)
    a = O.operator_matrix(p, shape)
    m = a.shape[0]
    exact = float((a**2).sum()) / m
    se = (2 / O._common.RHO_PROBES) ** 0.5 * float(torch.linalg.matrix_norm(a.T @ a)) / m
    like = torch.zeros(1, *shape, dtype=torch.float64)
    est = O.mean_row_norm_sq(p, like)
    assert abs(est - exact) < 5 * se, (est, exact, se)
    assert est == O.mean_row_norm_sq(p, like)
    assert est <= float(torch.linalg.matrix_norm(a, 2)) ** 2 + 5 * se


def test_ct_geometry_and_fbp(gen):
    w = 32
    cfg = O.CTConfig(img_size=(w, w), n_angles=90)
    p = O.build(cfg)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, w), torch.linspace(-1, 1, w), indexing="ij")
    disc = ((xx**2 + yy**2) < 0.4).float()[None, None]
    y = p.A(disc)
    assert y.shape == (1, 1, 46, 90)  # ceil(sqrt(2) * 32) detector cells
    # line integral through the centre of a disc of radius sqrt(0.4) (in half-FOV units):
    # chord 2 sqrt(0.4) half-FOVs = sqrt(0.4) FOV widths
    assert float(y.max()) == pytest.approx(0.4**0.5, rel=0.08)
    rec = p.fbp(y)
    assert float(((rec - disc) ** 2).mean().sqrt()) < 0.15
    limited = O.build(
        O.CTConfig(img_size=(w, w), geometry="limited_angle", n_angles=10, angle_range=60.0)
    )
    assert float(limited.tomo.angles.max()) < 60.0


def test_ct_preconditioner_is_fbp_and_flattens_the_spectrum(gen):
    """CT's ``metric_sqrt`` M is self-adjoint and positive semi-definite and acts per row;
    ``A^T M^2`` is filtered back-projection up to a constant, and the spectrum of the
    preconditioned ``A^T M^2 A`` is much flatter than that of ``A^T A`` (the reason DPS and
    RED-Diff use it). Operators without M are returned as they are."""
    w, na = 16, 30
    p = O.cast(O.build(O.CTConfig(img_size=(w, w), n_angles=na)), torch.float64)
    y_shape = (1, p.n_detectors, na)
    a, b = (torch.randn(3, *y_shape, generator=gen, dtype=torch.float64) for _ in range(2))
    ma = p.metric_sqrt(a)
    assert ma.shape == a.shape
    assert float((ma * b).sum()) == pytest.approx(float((a * p.metric_sqrt(b)).sum()), abs=1e-9)
    assert float((ma * a).sum()) > 0
    torch.testing.assert_close(p.metric_sqrt(a[1:2]), ma[1:2], rtol=0, atol=1e-12)
    q, qa = O.preconditioned(p, a)
    assert torch.equal(qa, ma)
    g, f = q.A_adjoint(qa), p.fbp(a)
    assert float((g * f).sum() / (g.norm() * f.norm())) > 0.999
    eye = torch.eye(w * w, dtype=torch.float64).reshape(-1, 1, w, w)

    def spread(op):  # median squared singular value over the largest, of the matrix of op.A
        s = torch.linalg.svdvals(op.A(eye).reshape(w * w, -1)) ** 2
        return float(s[len(s) // 2] / s[0])

    assert spread(q) > 10 * spread(p)  # measured 0.46 vs 0.025
    _, mri = _make("mri")
    y = torch.randn(2, 3, generator=gen)
    assert O.preconditioned(mri, y)[0] is mri and O.preconditioned(mri, y)[1] is y


def test_cast_keeps_complex_coil_maps():
    _, p = _make("mri_multicoil")
    p64 = O.cast(p, torch.float64)
    assert p64.coil_maps.dtype == torch.complex128
    assert torch.allclose(p64.coil_maps, p.coil_maps.to(torch.complex128))
    assert p.coil_maps.dtype == torch.complex64  # the original is untouched


# -- readout oversampling (fastMRI raw k-space on the encoded grid) ---------------------------

FASTMRI_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <studyInformation><studyTime>00:00:00</studyTime></studyInformation>
  <acquisitionSystemInformation><systemVendor>SIEMENS</systemVendor>
    <receiverChannels>15</receiverChannels></acquisitionSystemInformation>
  <encoding>
    <trajectory>cartesian</trajectory>
    <encodedSpace><matrixSize><x>640</x><y>372</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>280</x><y>140</y><z>4.5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>320</x><y>320</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm></reconSpace>
    <encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>371</maximum>
      <center>186</center></kspace_encoding_step_1></encodingLimits>
  </encoding>
</ismrmrdHeader>
"""


def test_ismrmrd_header_gives_encoded_and_recon_grids_as_array_axes():
    from recon.io import ismrmrd_header, parse_ismrmrd_header

    got = parse_ismrmrd_header(FASTMRI_HEADER.encode() + b"\0\0")
    assert got == {"encoded": (640, 372), "recon": (320, 320)}
    assert parse_ismrmrd_header(ismrmrd_header((64, 37), (32, 30))) == {
        "encoded": (64, 37),
        "recon": (32, 30),
    }
    assert parse_ismrmrd_header(b"<not xml") == {}


@pytest.mark.parametrize(
    "big,small,box",
    [
        ((640, 372), (320, 320), (160, 26)),
        ((641, 373), (320, 320), (160, 26)),
        ((640, 368), (321, 319), (159, 24)),
    ],
)
def test_center_crop_geometry_is_fastmri_and_pad_is_its_adjoint(big, small, box):
    assert O.crop_box(big, small) == box
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *small, generator=g, dtype=torch.float64)
    y = torch.randn(2, *big, generator=g, dtype=torch.float64)
    lhs = (O.center_pad(x, big) * y).sum()
    rhs = (x * O.center_crop(y, small)).sum()
    assert abs(float(lhs - rhs)) < 1e-10 * float(lhs.abs() + 1)
    assert torch.equal(O.center_crop(O.center_pad(x, big), small), x)
    with pytest.raises(ValueError):
        O.crop_box(small, big)


@pytest.mark.parametrize("name", ["mri", "mri_multicoil"])
@pytest.mark.parametrize("enc,img", [((64, 40), (32, 32)), ((65, 43), (31, 30))])
def test_oversampled_mri_adjoint_and_full_sampling_round_trip(name, enc, img):
    kw = dict(img_size=img, encoded_size=enc, acceleration=4, center_fraction=0.2)
    cfg = O.MRIConfig(**kw) if name == "mri" else O.MultiCoilMRIConfig(**kw, n_coils=4)
    ph = O.cast(O.build(cfg), torch.float64)
    assert isinstance(ph, O.Embedded)
    assert O.adjointness_error(ph, (2, 2, *img), dtype=torch.float64) < 1e-10
    x = torch.randn(2, 2, *img, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = ph.A(x)
    assert y.shape[-2:] == enc and ph.mask.shape[-2:] == enc
    # fully sampled, single-coil: A^T A = P^T F^H F P = I, so A^T recovers the image exactly
    if name == "mri":
        full = O.cast(
            O.build(cfg.model_copy(update={"mask": "given"}), mask=torch.ones(enc)), torch.float64
        )
        assert torch.allclose(full.A_adjoint(full.A(x)), x, atol=1e-10)
    assert torch.allclose(O.norm_sq(ph, x), torch.ones(2, dtype=torch.float64), atol=5e-3)


def test_espirit_refuses_an_acs_too_narrow_to_calibrate():
    """A 4-line ACS gives ESPIRiT no eigenvalue above its crop anywhere: a clear error naming
    the way out, not an all-zero operator (whose reconstruction would be zero)."""
    from recon.errors import UserError

    maps = O.birdcage_maps(4, (16, 16))
    k = torch.fft.fftshift(torch.fft.fft2(maps * 0.5, norm="ortho"), dim=(-2, -1))
    with pytest.raises(UserError, match="coil_estimator smooth"):
        O.espirit_maps(k[None], 4)


def test_coil_estimator_names_agree():
    """The config's choices, the registry and the help text name the same estimators."""
    import typing

    from recon.operators.mri_multicoil import COIL_ESTIMATOR_HELP, CoilEstimator

    assert set(typing.get_args(CoilEstimator)) == set(O.COIL_ESTIMATORS)
    assert all(f"{name} (" in COIL_ESTIMATOR_HELP for name in O.COIL_ESTIMATORS)
