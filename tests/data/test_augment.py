"""Image augmentations in plain torch (metaunsup.data.augment)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from metaunsup.data.augment import (
    Augment,
    affine,
    affine_matrices,
    elastic,
    elastic_displacement,
    gaussian_noise,
    pixel_dropout,
    random_affine,
    random_affine_matrices,
    random_erasing,
    random_resized_crop,
    random_resized_crop_matrices,
    warp,
)
from metaunsup.errors import ConfigError, DataError

ATOL = 1e-5


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=gen(seed))


# ----------------------------------------------------------------------------- identity


def test_identity_pipeline_returns_input_and_draws_nothing():
    x = images(2, 3, 1, 28, 28)
    g = gen()
    state = g.get_state()
    aug = Augment()
    assert aug.is_identity and not aug.geometric
    assert aug(x, g) is x
    assert torch.equal(g.get_state(), state)
    assert Augment.preset("identity").is_identity


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, g: affine(x),
        lambda x, g: random_affine(x, g),
        lambda x, g: random_resized_crop(x, g, scale=(1, 1), ratio=(1, 1)),
        lambda x, g: elastic(x, g, alpha=0.0),
        lambda x, g: gaussian_noise(x, g, 0.0),
        lambda x, g: pixel_dropout(x, g, 0.0),
        lambda x, g: random_erasing(x, g, p=0.0),
        lambda x, g: warp(x, torch.eye(3, dtype=torch.float64)),
        lambda x, g: warp(x, displacement=torch.zeros(6, 9, 7, 2)),
    ],
)
def test_identity_parameters_give_back_the_input(fn):
    x = images(2, 3, 2, 9, 7)  # non-square, two channels, two leading dims
    out = fn(x, gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, x, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("size", [28, 7, 8])
@pytest.mark.parametrize("quarter", [1, 2, -1])
def test_rotation_by_quarter_turns_matches_rot90(size, quarter):
    x = images(3, 2, size, size)
    out = affine(x, angle=90.0 * quarter)
    torch.testing.assert_close(out, torch.rot90(x, quarter, dims=(-2, -1)), atol=ATOL, rtol=0)


def test_flip_and_integer_shift_are_exact():
    x = images(4, 1, 6, 9)
    torch.testing.assert_close(affine(x, flip=True), torch.flip(x, dims=(-1,)), atol=ATOL, rtol=0)
    right_down = affine(x, translate=(2.0, 1.0))
    torch.testing.assert_close(right_down[..., 1:, 2:], x[..., :-1, :-2], atol=ATOL, rtol=0)
    assert right_down[..., :1, :].abs().max() < ATOL and right_down[..., :2].abs().max() < ATOL


def test_per_image_parameters():
    x = images(3, 1, 8, 8)
    out = affine(x, angle=torch.tensor([0.0, 90.0, 180.0]))
    torch.testing.assert_close(out[0], x[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(out[1], torch.rot90(x[1], 1, dims=(-2, -1)), atol=ATOL, rtol=0)
    torch.testing.assert_close(out[2], torch.rot90(x[2], 2, dims=(-2, -1)), atol=ATOL, rtol=0)
    with pytest.raises(ConfigError):
        affine(x, angle=torch.zeros(2))


def test_composed_matrices_equal_sequential_warps():
    """warp(x, A @ B) reads through B then A: the same as warping by A, then by B."""
    x = images(2, 1, 10, 10)
    a = affine_matrices(angle=90.0)
    b = affine_matrices(translate=(2.0, -1.0))
    once = warp(x, a @ b)
    twice = warp(warp(x, a), b)
    torch.testing.assert_close(once, twice, atol=ATOL, rtol=0)


def test_zoom_crop_matrix():
    """A centred crop of half the side doubles the picture about its centre."""
    g = gen()
    m = random_resized_crop_matrices(500, (28, 28), g, scale=(0.25, 0.25), ratio=(1, 1))
    torch.testing.assert_close(m[:, 0, 0], torch.full((500,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(m[:, 1, 1], torch.full((500,), 0.5, dtype=torch.float64))
    # The box stays inside the image: |centre| <= (1 - 0.5) * 14 pixels, and spreads over it.
    assert m[:, :2, 2].abs().max() <= 7.0 + 1e-9
    assert m[:, :2, 2].abs().max() > 6.0


def test_random_affine_parameter_ranges():
    g = gen()
    m = random_affine_matrices(2000, (28, 28), g, scale=(0.8, 1.25))
    det = torch.linalg.det(m[:, :2, :2])  # sampling matrix = inverse forward: det = 1/s²
    assert det.min() >= 1 / 1.25**2 - 1e-9 and det.max() <= 1 / 0.8**2 + 1e-9
    m = random_affine_matrices(2000, (28, 28), g, degrees=30.0)
    angle = torch.rad2deg(torch.atan2(m[:, 1, 0], m[:, 0, 0]))  # inverse rotation: -angle
    assert angle.abs().max() <= 30.0 + 1e-6 and angle.abs().max() > 29.0
    assert abs(float(angle.mean())) < 2.0
    m = random_affine_matrices(2000, (20, 10), g, translate=0.1)
    assert m[:, 0, 2].abs().max() <= 1.0 + 1e-9  # 0.1 * W pixels
    assert m[:, 1, 2].abs().max() <= 2.0 + 1e-9  # 0.1 * H pixels
    m = random_affine_matrices(4000, (8, 8), g, flip_p=0.25)
    flipped = (m[:, 0, 0] < 0).double().mean()
    assert abs(float(flipped) - 0.25) < 0.03


def test_elastic_displacement_is_smooth_and_centred():
    g = gen()
    d = elastic_displacement(200, (28, 28), g, alpha=34.0, sigma=4.0)
    assert d.shape == (200, 28, 28, 2)
    assert abs(float(d.mean())) < 0.05
    assert 0.3 < float(d.std()) < 3.0
    # Neighbouring pixels move together (a smooth field), unlike white noise.
    a, b = d[:, :, :-1].reshape(-1), d[:, :, 1:].reshape(-1)
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.9


# ----------------------------------------------------------------------------- photometric


def test_noise_dropout_erasing_statistics():
    x = torch.full((400, 1, 16, 16), 0.5)
    g = gen()
    noisy = gaussian_noise(x, g, 0.1)
    assert abs(float((noisy - x).std()) - 0.1) < 0.005
    dropped = pixel_dropout(x, g, 0.2)
    assert abs(float((dropped == 0).float().mean()) - 0.2) < 0.01
    erased = random_erasing(x, g, p=0.5, scale=(0.1, 0.2), ratio=(1.0, 1.0), value=0.0)
    frac = (erased == 0).float().mean(dim=(1, 2, 3))  # erased area per image
    hit = frac > 0
    assert abs(float(hit.float().mean()) - 0.5) < 0.08
    assert float(frac[hit].min()) >= 0.08 and float(frac[hit].max()) <= 0.23  # rounding to pixels


def test_erasing_covers_all_channels():
    x = torch.ones(50, 3, 8, 8)
    out = random_erasing(x, gen(), p=1.0, value=0.0)
    assert torch.equal(out[:, 0] == 0, out[:, 1] == 0)
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)


# ----------------------------------------------------------------------------- the pipeline


@pytest.mark.parametrize("name", ["28x28", "28x28-strong"])
def test_presets_keep_shape_range_and_are_deterministic(name):
    x = images(2, 5, 1, 28, 28)
    aug = Augment.preset(name)
    a = aug(x, gen(1))
    b = aug(x, gen(1))
    c = aug(x, gen(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_each_image_gets_its_own_draw():
    x = images(1, 1, 28, 28).expand(6, 1, 28, 28)
    out = Augment.preset("28x28")(x, gen())
    diffs = [(out[i] - out[0]).abs().max() for i in range(1, 6)]
    assert min(diffs) > 0.05


def test_small_digits_and_channels():
    x = images(7, 3, 8, 8)
    out = Augment.for_shape((3, 8, 8), strong=True)(x, gen())
    assert out.shape == x.shape
    assert Augment.for_shape((1, 8, 8)) == Augment.preset("8x8")


def test_pipeline_geometry_is_one_warp():
    """Crop then affine in the pipeline equals warping once by the product of the matrices."""
    x = images(4, 1, 12, 12)
    aug = Augment(crop_scale=(0.5, 1.0), degrees=30.0, translate=0.1, clamp=None)
    out = aug(x, gen(3))
    g = gen(3)
    crop = random_resized_crop_matrices(4, (12, 12), g, scale=(0.5, 1.0), ratio=aug.crop_ratio)
    aff = random_affine_matrices(4, (12, 12), g, degrees=30.0, translate=0.1)
    torch.testing.assert_close(out, warp(x, crop @ aff), atol=ATOL, rtol=0)


def test_vector_preset_works_on_tables_and_geometry_needs_images():
    x = torch.randn(10, 64)
    out = Augment.for_shape((64,))(x, gen())
    assert out.shape == x.shape and float(out.min()) < 0  # no clamp for tables
    with pytest.raises(DataError):
        Augment(degrees=10.0)(x, gen())
    with pytest.raises(DataError):
        Augment(noise_std=0.1)(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), gen())


def test_config_round_trip_and_validation():
    for name in ("identity", "28x28", "28x28-strong", "8x8", "8x8-strong", "vector"):
        aug = Augment.preset(name)
        cfg = json.loads(json.dumps(aug.config()))
        assert Augment.from_config(cfg) == aug
    over = Augment.from_config({"preset": "28x28", "degrees": 5})
    assert over.degrees == 5.0 and over.shear == Augment.preset("28x28").shear
    with pytest.raises(ConfigError, match="unknown augmentation option"):
        Augment.from_config({"rotation": 3})
    with pytest.raises(ConfigError, match="unknown augmentation preset"):
        Augment.preset("nope")
    bad = [
        {"degrees": -1},
        {"translate": 2.0},
        {"scale": (0.0, 1.0)},
        {"crop_scale": (0.5, 1.5)},
        {"dropout_p": 1.5},
        {"padding_mode": "wrap"},
        {"scale": (1.2, 1.0)},
        {"noise_std": math.nan},
    ]
    for kwargs in bad:
        with pytest.raises(ConfigError):
            Augment(**kwargs)


def test_for_shape_scales_elastic_with_the_image():
    small, big = Augment.for_shape((1, 28, 28)), Augment.for_shape((1, 56, 56))
    assert big.elastic_sigma == pytest.approx(2 * small.elastic_sigma)
    assert big.elastic_alpha == pytest.approx(4 * small.elastic_alpha)
