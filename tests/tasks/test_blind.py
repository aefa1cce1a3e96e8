"""tasks.blind: faithfulness to BasicSR / Real-ESRGAN / BSRGAN, the parameter distributions, determinism, errors.

The Real-ESRGAN kernels, noise and ``filter2D`` are checked against BasicSR's own code from the test-only dependency
``basicsr-fixed`` (the dev extra). Its ``degradations.py`` and ``img_process_util.py`` are loaded as plain files:
importing the ``basicsr`` package would run its ``__init__``, which imports the whole toolbox (lmdb, the training
code). BSRGAN is not on PyPI, so its kernel and noise math is transcribed here from cszn/BSRGAN
``utils/utils_blindsr.py`` (lines cited at each use); OpenCV (a BasicSR dependency) is its resize and JPEG codec.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import tasks
from tasks import blind
from tasks.errors import InputError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _load_basicsr(module: str):
    """BasicSR's ``basicsr/<module>.py`` as a standalone module, or a skip naming the dev extra."""
    pytest.importorskip("cv2", reason="OpenCV comes with basicsr-fixed (pip install -e '.[dev]')")
    spec = importlib.util.find_spec("basicsr")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("basicsr-fixed (the reference BasicSR) is not installed: pip install -e '.[dev]'")
    path = Path(list(spec.submodule_search_locations)[0]) / f"{module}.py"
    mod_spec = importlib.util.spec_from_file_location(f"_basicsr_ref_{module.replace('/', '_')}", path)
    mod = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(mod)
    except ImportError as err:  # the original basicsr 1.4.2 (the bench extra) imports a module torchvision removed
        pytest.skip(f"the installed basicsr is not basicsr-fixed ({err}); pip install --force-reinstall basicsr-fixed")
    return mod


@pytest.fixture(scope="module")
def ref():
    return _load_basicsr("data/degradations")


# -------------------------------------------------------------------------------- kernels against BasicSR

_SHAPED = [  # (size, sigma_x, sigma_y, theta, beta)
    (21, 0.2, 0.2, 0.0, 0.5), (7, 3.0, 0.7, 1.1, 1.0), (13, 1.3, 2.9, -2.5, 4.0), (21, 2.2, 0.4, 3.1, 1.7),
    (9, 0.6, 1.8, -0.3, 0.8), (15, 2.9, 2.9, 0.4, 2.0),
]


@pytest.mark.parametrize("size,sx,sy,theta,beta", _SHAPED)
def test_bivariate_kernels_equal_basicsr(ref, size, sx, sy, theta, beta):
    for iso in (True, False):
        ours = blind.bivariate_gaussian(size, sx, sy, theta, iso).numpy()
        np.testing.assert_allclose(ours, ref.bivariate_Gaussian(size, sx, sy, theta, isotropic=iso), atol=1e-6)
        ours = blind.bivariate_generalized_gaussian(size, sx, sy, theta, beta, iso).numpy()
        theirs = ref.bivariate_generalized_Gaussian(size, sx, sy, theta, beta, isotropic=iso)
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
        ours = blind.bivariate_plateau(size, sx, sy, theta, beta, iso).numpy()
        np.testing.assert_allclose(ours, ref.bivariate_plateau(size, sx, sy, theta, beta, isotropic=iso), atol=1e-6)


@pytest.mark.parametrize("size", [7, 11, 13, 21])
@pytest.mark.parametrize("omega", [math.pi / 5, math.pi / 3, 2.0, math.pi])
def test_sinc_kernel_equals_basicsr(ref, size, omega):
    np.testing.assert_allclose(blind.circular_lowpass_kernel(omega, size).numpy(),
                               ref.circular_lowpass_kernel(omega, size, pad_to=0), atol=1e-6)
    np.testing.assert_allclose(blind.circular_lowpass_kernel(omega, size, pad_to=21).numpy(),
                               ref.circular_lowpass_kernel(omega, size, pad_to=21), atol=1e-6)


def test_filter2d_equals_basicsr():
    util = _load_basicsr("utils/img_process_util")
    x = torch.rand(1, 3, 40, 33, generator=_gen(0))
    k = blind.bivariate_gaussian(21, 2.0, 0.5, 0.7, isotropic=False).float()
    torch.testing.assert_close(blind.filter2d(x, k), util.filter2D(x, k[None]), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------ noise against BasicSR


@pytest.mark.parametrize("gray", [False, True])
def test_gaussian_noise_equals_basicsr(ref, gray):
    img = torch.rand(1, 3, 24, 20, generator=_gen(1))
    torch.manual_seed(7)  # BasicSR draws from the global RNG: gray field first (when any), then colour
    theirs = ref.generate_gaussian_noise_pt(img, torch.tensor([17.5]), torch.tensor([float(gray)]))
    ours = blind.gaussian_noise(img, 17.5, gray, _gen(7))
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("gray", [False, True])
def test_poisson_noise_equals_basicsr(ref, gray):
    img = torch.randint(0, 256, (1, 3, 24, 20), generator=_gen(2)).float() / 255
    torch.manual_seed(11)
    theirs = ref.generate_poisson_noise_pt(img, torch.tensor([1.7]), torch.tensor([float(gray)]))
    ours = blind.poisson_noise(img, 1.7, gray, _gen(11))
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


# ----------------------------------------------------------------- BSRGAN math (transcribed) and OpenCV


def _bsrgan_anisotropic(ksize, theta, l1, l2):
    """cszn/BSRGAN utils_blindsr.py lines 64-96 (anisotropic_Gaussian, gm_blur_kernel)."""
    v = np.dot(np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]), np.array([1.0, 0.0]))
    vv = np.array([[v[0], v[1]], [v[1], -v[0]]])
    cov = vv @ np.diag([l1, l2]) @ np.linalg.inv(vv)
    center = ksize / 2.0 + 0.5
    k = np.zeros([ksize, ksize])
    for y in range(ksize):
        for x in range(ksize):
            k[y, x] = stats.multivariate_normal.pdf([x - center + 1, y - center + 1], mean=[0, 0], cov=cov)
    return k / k.sum()


def _bsrgan_fspecial(hsize, sigma):
    """utils_blindsr.py lines 188-199 (fspecial_gaussian)."""
    siz = (hsize - 1.0) / 2.0
    x, y = np.meshgrid(np.arange(-siz, siz + 1), np.arange(-siz, siz + 1))
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def _bsrgan_shift(k, sf):
    """utils_blindsr.py lines 99-125 (shift_pixel); scipy's interp2d is gone, its linear mode is this bilinear."""
    from scipy.interpolate import RegularGridInterpolator

    h, w = k.shape
    shift = (sf - 1) * 0.5
    xv, yv = np.arange(0, w, 1.0), np.arange(0, h, 1.0)
    x1, y1 = np.clip(xv + shift, 0, w - 1), np.clip(yv + shift, 0, h - 1)
    f = RegularGridInterpolator((yv, xv), k, method="linear")
    yy, xx = np.meshgrid(y1, x1, indexing="ij")
    return f(np.stack([yy, xx], -1))


@pytest.mark.parametrize("size,theta,l1,l2", [(7, 0.3, 6.0, 1.0), (25, 2.9, 0.05, 7.9), (15, 1.57, 3.3, 3.3)])
def test_bsrgan_anisotropic_kernel_equals_reference(size, theta, l1, l2):
    np.testing.assert_allclose(blind.bsrgan_anisotropic_gaussian(size, theta, l1, l2).numpy(),
                               _bsrgan_anisotropic(size, theta, l1, l2), atol=1e-6)


@pytest.mark.parametrize("size,sigma", [(7, 0.2), (25, 2.8), (13, 1.0)])
def test_bsrgan_gaussian_and_shift_equal_reference(size, sigma):
    k = _bsrgan_fspecial(size, sigma)
    np.testing.assert_allclose(blind.bsrgan_fspecial_gaussian(size, sigma).numpy(), k, atol=1e-6)
    for sf in (2, 4):
        shifted = _bsrgan_shift(k, sf)
        np.testing.assert_allclose(blind.bsrgan_shift_kernel(torch.from_numpy(k), sf).numpy(),
                                   shifted / shifted.sum(), atol=1e-6)


def test_bsrgan_correlated_noise_covariance_equals_reference():
    from scipy.linalg import orth

    rng = np.random.RandomState(0)
    diag, a = rng.rand(3), rng.rand(3, 3)
    L = 25 / 255.0  # utils_blindsr.py lines 371-375
    u = orth(a)
    theirs = np.abs(L**2 * (u.T @ np.diag(diag) @ u))
    ours = blind._correlated_cov(25, diag.tolist(), a.tolist()).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    x = torch.full((1, 3, 200, 200), 0.5)
    noise = blind._bsrgan_noise(x, ("correlated", 9, diag.tolist(), a.tolist()), 25, _gen(0)) - x
    _, s, vh = np.linalg.svd(theirs)  # numpy multivariate_normal('svd'): covariance of z @ (sqrt(s) vh)
    t = np.sqrt(s)[:, None] * vh
    np.testing.assert_allclose(np.cov(noise.reshape(3, -1).numpy()), t.T @ t, atol=1.5e-4)  # 5 standard errors


@pytest.mark.parametrize("mode,flag", [("linear", 1), ("cubic", 2), ("area", 3)])
def test_cv2_resize_equals_opencv(mode, flag):
    cv2 = pytest.importorskip("cv2", reason="OpenCV comes with basicsr-fixed (pip install -e '.[dev]')")
    x = torch.rand(1, 3, 45, 52, generator=_gen(3))
    img = x[0].permute(1, 2, 0).numpy().copy()
    for h, w in ((17, 23), (45 // 2, 52 // 2), (30, 40)):
        theirs = cv2.resize(img, (w, h), interpolation=flag)
        ours = blind.cv2_resize(x, (h, w), mode)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_jpeg_is_a_real_codec_like_opencv():
    cv2 = pytest.importorskip("cv2", reason="OpenCV comes with basicsr-fixed (pip install -e '.[dev]')")
    skdata = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skdata.astronaut()[100:228, 150:278]).permute(2, 0, 1)[None].float() / 255
    for q in (30, 60, 95):
        ours = blind.jpeg_roundtrip(img, q)
        bgr = np.ascontiguousarray((img[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)[..., ::-1])
        _, enc = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), q])  # BSRGAN add_JPEG_noise
        theirs = torch.from_numpy(cv2.imdecode(enc, 1)[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        assert (ours - theirs).abs().mean() * 255 < 0.5  # same libjpeg family: near-identical decodes
        assert (ours - img).abs().mean() * 255 > 0.5  # and a real loss of detail


# ------------------------------------------------------------------------- parameter distributions


def _ref_realesrgan_kernel(ref, stage: str):
    """Real-ESRGAN realesrgan_dataset.py lines 129-149 (152-172 for stage 2), BasicSR kernels, numpy/random RNG."""
    sigma = (0.2, 3.0) if stage == "" else (0.2, 1.5)  # train_realesrgan_x4plus.yml lines 50, 58
    size = random.choice([2 * v + 1 for v in range(3, 11)])
    if np.random.uniform() < 0.1:
        omega = np.random.uniform(np.pi / 3, np.pi) if size < 13 else np.random.uniform(np.pi / 5, np.pi)
        k = ref.circular_lowpass_kernel(omega, size, pad_to=False)
    else:
        k = ref.random_mixed_kernels(list(blind.KERNEL_TYPES), [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], size, sigma,
                                     sigma, [-math.pi, math.pi], [0.5, 4], [1, 2], noise_range=None)
    return np.pad(k, (21 - size) // 2)


def _kernel_stats(k: np.ndarray) -> tuple[float, ...]:
    """Summaries that separate the kernel families and widths: spread E[r^2], anisotropy (the ratio of the second-
    moment matrix's eigenvalues: exactly 1 for isotropic kernels), tail weight E[r^4] / E[r^2]^2, and the peak."""
    k = np.abs(k)  # sinc kernels have negative lobes: moments of |k| stay positive
    ax = np.arange(21) - 10.0
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    m = np.array([[(k * xx * xx).sum(), (k * xx * yy).sum()], [(k * xx * yy).sum(), (k * yy * yy).sum()]])
    ev = np.linalg.eigvalsh(m)
    r2 = xx * xx + yy * yy
    spread = float((k * r2).sum())
    tail = float((k * r2 * r2).sum() / spread**2) if spread > 0 else 0.0  # 0: an exact delta (beta 4, sigma 0.2)
    return spread, float(ev[1] / max(ev[0], 1e-12)), tail, float(k.max())


def test_realesrgan_kernel_distribution_equals_reference(ref):
    n = 3000
    random.seed(0)
    np.random.seed(0)
    theirs = {s: np.array([_kernel_stats(_ref_realesrgan_kernel(ref, s)) for _ in range(n)]) for s in ("", "2")}
    p, g = blind.RealESRGANParams(), _gen(0)
    ours = {"": [], "2": []}
    while len(ours["2"]) < n:  # kernel2 is None when the second blur is skipped, independently of its draw
        d = blind.sample_realesrgan(p, g)
        for s, spec in (("", d.kernel1), ("2", d.kernel2)):
            if spec is not None:
                ours[s].append(_kernel_stats(np.pad(blind.build_kernel(spec).numpy(), (21 - spec.size) // 2)))
    for s in ("", "2"):
        o = np.array(ours[s])
        for j in range(o.shape[1]):
            assert stats.ks_2samp(o[:, j], theirs[s][:, j]).pvalue > 1e-3, (s, j)


def _binom_ok(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)) + 1


def _uniform_ok(values: np.ndarray, lo: float, hi: float) -> bool:
    return stats.kstest(values, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3


def test_realesrgan_draws_follow_the_published_config():
    """10k draws against the distributions of train_realesrgan_x4plus.yml lines 14-31 and feed_data lines 84-163."""
    n, g = 10_000, _gen(1)
    draws = [blind.sample_realesrgan(blind.RealESRGANParams(), g) for _ in range(n)]
    for key, probs, rng in (("resize1", (0.2, 0.7, 0.1), (0.15, 1.5)), ("resize2", (0.3, 0.4, 0.3), (0.3, 1.2))):
        f = np.array([getattr(d, key)[0] for d in draws])
        up, down = f[f > 1], f[f < 1]
        assert _binom_ok(len(up), n, probs[0]) and _binom_ok(len(down), n, probs[1])
        assert _uniform_ok(up, 1, rng[1]) and _uniform_ok(down, rng[0], 1)
        modes = [getattr(d, key)[1] for d in draws]
        assert all(_binom_ok(modes.count(m), n, 1 / 3) for m in ("area", "bilinear", "bicubic"))
    for key, sig, poi in (("noise1", (1, 30), (0.05, 3)), ("noise2", (1, 25), (0.05, 2.5))):
        kinds = [getattr(d, key) for d in draws]
        gauss = np.array([lvl for k, lvl, _ in kinds if k == "gaussian"])
        pois = np.array([lvl for k, lvl, _ in kinds if k == "poisson"])
        assert _binom_ok(len(gauss), n, 0.5) and _uniform_ok(gauss, *sig) and _uniform_ok(pois, *poi)
        assert _binom_ok(sum(gray for *_, gray in kinds), n, 0.4)
    for key in ("jpeg1", "jpeg2"):  # quality histogram: uniform on [30, 95]
        q = np.array([getattr(d, key) for d in draws])
        counts, _ = np.histogram(q, bins=13, range=(30, 95))
        assert stats.chisquare(counts).pvalue > 1e-3 and q.min() >= 30 and q.max() < 95
    assert _binom_ok(sum(d.kernel2 is not None for d in draws), n, 0.8)
    assert _binom_ok(sum(d.sinc is not None for d in draws), n, 0.8)
    assert _binom_ok(sum(d.resize_first for d in draws), n, 0.5)
    omegas = np.array([d.sinc.omega for d in draws if d.sinc is not None])
    assert _uniform_ok(omegas, math.pi / 3, math.pi)


def _ref_bsrgan_draws(sf: int = 4) -> dict:
    """The random calls of degradation_bsrgan (utils_blindsr.py lines 458-514, with add_blur 335-343,
    add_Gaussian_noise 363-375 and add_JPEG_noise 413), in the reference's own order, without the images."""
    out = {"down1": False, "blur": [], "down2_resize": None, "noise": None, "jpeg": None}
    if sf == 4 and random.random() < 0.25:
        np.random.rand()
        out["down1"] = True
        sf = 2
    order = random.sample(range(7), 7)
    i2, i3 = order.index(2), order.index(3)
    if i2 > i3:
        order[i2], order[i3] = order[i3], order[i2]
    out["order"] = order
    for i in order:
        if i in (0, 1):
            if random.random() < 0.5:
                random.random(), random.random()
                out["blur"].append(("aniso", 2 * random.randint(2, 11) + 3))
                random.random()
            else:
                out["blur"].append(("iso", 2 * random.randint(2, 11) + 3, (2.0 + 0.2 * sf) * random.random()))
        elif i == 2:
            out["down2_resize"] = random.random() < 0.75
            out["down2"] = random.uniform(1, 2 * sf) if out["down2_resize"] else random.uniform(0.1, 0.6 * sf)
            random.choice([1, 2, 3])
        elif i == 3:
            random.choice([1, 2, 3])
        elif i == 4:
            level, rnum = random.randint(2, 25), np.random.rand()
            out["noise"] = (level, "color" if rnum > 0.6 else "gray" if rnum < 0.4 else "correlated")
        elif i == 5 and random.random() < 0.9:
            out["jpeg"] = random.randint(30, 95)
        elif i == 6:
            random.random()
    out["final_jpeg"] = random.randint(30, 95)
    return out


def test_bsrgan_draws_equal_the_reference_distribution():
    n = 10_000
    random.seed(0)
    np.random.seed(0)
    theirs = [_ref_bsrgan_draws() for _ in range(n)]
    g, p = _gen(2), blind.BSRGANParams()
    ours = [blind.sample_bsrgan(p, 4, g) for _ in range(n)]

    def same_share(a: list, b: list) -> None:  # two-sample test of a category histogram
        cats = sorted(set(a) | set(b), key=str)
        table = np.array([[a.count(c) for c in cats], [b.count(c) for c in cats]])
        table = table[:, table.sum(0) > 0]
        assert table.shape[1] == 1 or stats.chi2_contingency(table).pvalue > 1e-3, (cats, table)

    same_share([d.down1 is not None for d in ours], [t["down1"] for t in theirs])
    for step in range(7):  # where each step lands in the shuffled order
        same_share([d.order.index(step) for d in ours], [t["order"].index(step) for t in theirs])
    assert all(d.order.index(2) < d.order.index(3) for d in ours)
    same_share([b[0] for d in ours for b in (d.blur1, d.blur2)], [b[0] for t in theirs for b in t["blur"]])
    same_share([b[1] for d in ours for b in (d.blur1, d.blur2)], [b[1] for t in theirs for b in t["blur"]])
    iso_o = [b[2] for d in ours for b in (d.blur1, d.blur2) if b[0] == "iso"]
    iso_t = [b[2] for t in theirs for b in t["blur"] if b[0] == "iso"]
    assert stats.ks_2samp(iso_o, iso_t).pvalue > 1e-3
    same_share([d.down2[0] == "resize" for d in ours], [t["down2_resize"] for t in theirs])
    assert stats.ks_2samp([d.down2[1] for d in ours if d.down2[0] == "resize"],
                          [t["down2"] for t in theirs if t["down2_resize"]]).pvalue > 1e-3
    same_share([d.noise[0] for d in ours], [t["noise"][1] for t in theirs])
    same_share([d.noise[1] for d in ours], [t["noise"][0] for t in theirs])
    same_share([d.jpeg for d in ours], [t["jpeg"] for t in theirs])  # None = skipped, else the quality
    same_share([d.final_jpeg for d in ours], [t["final_jpeg"] for t in theirs])


# ---------------------------------------------------------------------------- pipelines and the tasks


@pytest.mark.parametrize("name", ["realsr_x2", "realsr_x4", "bsrgan_x4"])
def test_blind_tasks_are_deterministic_and_sized(name):
    task = tasks.get_task(name)
    assert task.kind == "sr" and task.pipeline in blind.PIPELINES and task.scale == int(name[-1])
    hr = torch.rand(3, 3, 64, 52, generator=_gen(0))
    a, b, c = task.degrade(hr, _gen(1)), task.degrade(hr, _gen(1)), task.degrade(hr, _gen(2))
    assert a.shape == (3, 3, 64 // task.scale, 52 // task.scale) and a.dtype == hr.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a * 255, (a * 255).round(), atol=1e-4, rtol=0)  # on the uint8 grid, as saved LQ
    # batched == per image, each with the generator seeded from the batch generator
    for i, seed in enumerate(blind.image_seeds(3, _gen(1))):
        assert torch.equal(a[i : i + 1], blind.degrade_image(hr[i : i + 1], task.pipeline, task.scale, _gen(seed)))


def test_odd_and_tiny_sizes_give_hr_over_scale():
    for h, w in ((50, 37), (9, 13)):
        hr = torch.rand(1, 3, h, w, generator=_gen(h))
        for pipe in blind.PIPELINES:
            for seed in range(4):
                assert blind.degrade(hr, pipe, 4, _gen(seed)).shape[-2:] == (h // 4, w // 4)


def test_params_override_and_validation():
    p = dataclasses.replace(blind.RealESRGANParams(), final_sinc_prob=0.0, second_blur_prob=0.0)
    draws = [blind.sample_realesrgan(p, _gen(s)) for s in range(20)]
    assert all(d.sinc is None and d.kernel2 is None for d in draws)
    q = blind.RealESRGANParams.from_dict({"jpeg_range": [90, 95], "noise_range": [1, 2]})
    assert q.jpeg_range == (90.0, 95.0) and q.blur_sigma == (0.2, 3.0)
    with pytest.raises(InputError, match="unknown RealESRGANParams option.*jpeg_rang"):
        blind.RealESRGANParams.from_dict({"jpeg_rang": [30, 95]})
    with pytest.raises(InputError, match="kernel_prob"):
        blind.RealESRGANParams(kernel_prob=(0.5, 0.5, 0, 0, 0, 0.5))
    with pytest.raises(InputError, match="unknown kernel types"):
        blind.RealESRGANParams(kernel_list=("iso", "box", "a", "b", "c", "d"))
    with pytest.raises(InputError, match="jpeg_range"):
        blind.BSRGANParams(jpeg_range=(0, 95))
    assert blind.BSRGANParams.from_dict({"jpeg_prob": 0.0}).jpeg_prob == 0.0
    with pytest.raises(InputError, match="RGB"):
        blind.degrade(torch.rand(1, 1, 32, 32), "bsrgan", 4, _gen(0))
    with pytest.raises(InputError, match="takes BSRGANParams"):
        blind.degrade(torch.rand(1, 3, 32, 32), "bsrgan", 4, _gen(0), blind.RealESRGANParams())
    with pytest.raises(InputError, match="unknown blind pipeline"):
        blind.degrade(torch.rand(1, 3, 32, 32), "realesr", 4, _gen(0))


def test_stronger_settings_degrade_more():
    """A sanity check of the wiring: the default pipeline loses far more than a near-identity setting."""
    hr = torch.from_numpy(pytest.importorskip("skimage.data").astronaut()[::4, ::4].copy()).permute(2, 0, 1)[None]
    hr = hr.float() / 255  # (1, 3, 128, 128)
    mild = blind.RealESRGANParams(
        blur_sigma=(0.2, 0.21), blur_sigma2=(0.2, 0.21), sinc_prob=0, sinc_prob2=0, final_sinc_prob=0,
        kernel_prob=(1, 0, 0, 0, 0, 0), kernel_prob2=(1, 0, 0, 0, 0, 0), resize_prob=(0, 0, 1),
        resize_prob2=(0, 0, 1), noise_range=(0, 0.01), noise_range2=(0, 0.01), gaussian_noise_prob=1,
        gaussian_noise_prob2=1, jpeg_range=(99, 100), jpeg_range2=(99, 100),
    )
    ref_lr = tasks.imresize(hr, 1 / 4)
    err = {}
    for label, p in (("mild", mild), ("default", blind.RealESRGANParams())):
        err[label] = np.mean([(blind.degrade(hr, "realesrgan", 4, _gen(s), p) - ref_lr).abs().mean().item()
                              for s in range(6)])
    assert 2 * err["mild"] < err["default"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_generator_is_deterministic():
    hr = torch.rand(2, 3, 64, 64, generator=_gen(0)).cuda()
    for name in ("realsr_x4", "bsrgan_x4"):
        g = lambda: torch.Generator(device="cuda").manual_seed(5)  # noqa: E731
        a, b = tasks.get_task(name).degrade(hr, g()), tasks.get_task(name).degrade(hr, g())
        assert a.device == hr.device and a.shape == (2, 3, 16, 16) and torch.equal(a, b)
