"""Image augmentations in plain torch, batched over any leading dimensions and seeded.

Unsupervised meta-learning makes its own tasks from unlabeled images, and two of its recipes need
random but label-preserving changes of an image: UMTRA (Khodadadeh, Bölöni & Shah 2019) builds
the query of a task from augmented copies of its support images, and SimCLR (Chen et al. 2020)
learns an embedding by matching two augmented views of each image. This module provides those
changes without torchvision:

* geometric: :func:`random_resized_crop`, :func:`random_affine` (rotation, translation, scale,
  shear and horizontal flip in one matrix) and :func:`elastic` (smoothed random displacement
  fields, Simard, Steinkraus & Platt 2003);
* photometric: :func:`gaussian_noise`, :func:`pixel_dropout` and :func:`random_erasing`
  (Zhong et al. 2020, "cutout" when the erased value is 0);
* :class:`Augment`: a composable, serialisable pipeline with presets for 28×28 grayscale
  images (MNIST, Omniglot) and the 8×8 digits of scikit-learn.

Conventions
-----------
* Images are ``[..., C, H, W]`` floating tensors; every leading dimension is a batch dimension
  and every image gets its own random parameters.
* Randomness comes only from the ``torch.Generator`` passed in (never the global RNG); the
  parameters are drawn on the generator's device and moved to the images', so a CPU generator
  gives the same parameters for images on any device.
* Geometric transforms are expressed as *sampling* matrices in pixel units about the image
  centre (``3×3``, mapping an output pixel position to the input position it reads, with ``x``
  to the right and ``y`` down). They compose by matrix product, so :class:`Augment` warps a
  whole batch with a single ``F.grid_sample`` call however many geometric steps it has.
* Positive angles rotate the picture counter-clockwise, as :func:`torch.rot90` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from metaunsup.errors import ConfigError, DataError

__all__ = [
    "Augment",
    "affine",
    "affine_matrices",
    "elastic",
    "elastic_displacement",
    "gaussian_noise",
    "pixel_dropout",
    "random_affine",
    "random_affine_matrices",
    "random_erasing",
    "random_resized_crop",
    "random_resized_crop_matrices",
    "warp",
]

Range = tuple[float, float]


# ----------------------------------------------------------------------------- helpers


def _flatten_images(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x [..., C, H, W]`` as ``[N, C, H, W]`` plus the leading shape to restore."""
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"images must be a tensor of shape [..., C, H, W], got {shape}")
    if not x.is_floating_point():
        raise DataError(
            f"images must be floating point (see metaunsup.data.to_float), got {x.dtype}"
        )
    lead = tuple(x.shape[:-3])
    return x.reshape(-1, *x.shape[-3:]), lead


def _check_range(name: str, value: Sequence[float], low: float | None = None) -> Range:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair of numbers (low, high), got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a > b:
        raise ConfigError(f"{name} must be finite with low <= high, got {(a, b)}")
    if low is not None and a < low:
        raise ConfigError(f"{name} must be >= {low}, got {(a, b)}")
    return a, b


def _check_nonneg(name: str, value: float, high: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (high is not None and v > high):
        bound = f"in [0, {high}]" if high is not None else ">= 0"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")
    return v


def _pixel_to_normalized(size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """``float64 [2]``: half sizes ``(W/2, H/2)``; normalized = pixel / half."""
    h, w = size
    return torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64, device=device)


def _base_grid(size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """``float64 [H, W, 2]`` pixel-centre positions ``(x, y)`` relative to the image centre.

    These are the positions ``F.grid_sample(..., align_corners=False)`` reads at the identity,
    in pixel units: pixel ``j`` of a row sits at ``j + 0.5 - W/2``.
    """
    h, w = size
    xs = torch.arange(w, dtype=torch.float64, device=device) + 0.5 - w / 2.0
    ys = torch.arange(h, dtype=torch.float64, device=device) + 0.5 - h / 2.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


# ----------------------------------------------------------------------------- the warp


def warp(
    x: torch.Tensor,
    matrices: torch.Tensor | None = None,
    displacement: torch.Tensor | None = None,
    *,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Resample every image through its own sampling matrix and displacement field, in one call.

    The output pixel at position ``p`` (pixel units about the image centre) reads the input at
    ``M @ (p + d(p))``: the displacement ``d`` acts on the output grid, then the matrix ``M``
    maps into the input. With neither, ``x`` comes back unchanged.

    Parameters
    ----------
    x:
        ``[..., C, H, W]`` floating images; ``N`` = the product of the leading dimensions.
    matrices:
        ``[N, 3, 3]`` (or ``[3, 3]`` / ``[1, 3, 3]`` for all) sampling matrices in pixel
        units, e.g. from :func:`affine_matrices` or products of several.
    displacement:
        ``[N, H, W, 2]`` per-pixel displacements ``(dx, dy)`` in pixels, e.g. from
        :func:`elastic_displacement`.
    mode, padding_mode:
        Passed to :func:`torch.nn.functional.grid_sample` (``"bilinear"``/``"nearest"``;
        ``"zeros"``, ``"border"`` or ``"reflection"``). Pixels read from outside the image are 0
        with ``"zeros"``, the background of ink-on-black images.

    Returns
    -------
    ``[..., C, H, W]`` in the dtype and on the device of ``x``.
    """
    flat, lead = _flatten_images(x)
    if matrices is None and displacement is None:
        return x
    n, _, h, w = flat.shape
    dev, dt = flat.device, flat.dtype
    half = _pixel_to_normalized((h, w), dev)
    m: torch.Tensor | None = None
    if matrices is not None:
        m = matrices.to(device=dev, dtype=torch.float64)
        if m.shape in ((3, 3), (1, 3, 3)):
            m = m.expand(n, 3, 3)
        if m.shape != (n, 3, 3):
            raise DataError(
                f"matrices must have shape [{n}, 3, 3], [1, 3, 3] or [3, 3], got {tuple(m.shape)}"
            )
    if displacement is None:
        assert m is not None  # checked above: matrices, a displacement or both
        # Only matrices: the same map in normalized coordinates, theta = S^-1 M S.
        theta = m[:, :2, :2] * (half.view(1, 1, 2) / half.view(1, 2, 1))
        theta = torch.cat([theta, (m[:, :2, 2] / half).unsqueeze(-1)], dim=-1)
        grid = F.affine_grid(theta.to(dt), [n, 1, h, w], align_corners=False)
    else:
        if displacement.shape != (n, h, w, 2):
            raise DataError(
                f"displacement must have shape {(n, h, w, 2)}, got {tuple(displacement.shape)}"
            )
        grid = _base_grid((h, w), dev).to(dt) + displacement.to(device=dev, dtype=dt)
        if m is not None:
            lin, shift = m[:, :2, :2].to(dt), m[:, :2, 2].to(dt)
            grid = torch.einsum("nij,nhwj->nhwi", lin, grid) + shift[:, None, None, :]
        grid = grid / half.to(dt)
    out = F.grid_sample(flat, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    return out.reshape(*lead, *out.shape[1:])


# ----------------------------------------------------------------------------- matrices


def affine_matrices(
    angle: torch.Tensor | float = 0.0,
    translate: tuple[torch.Tensor | float, torch.Tensor | float] = (0.0, 0.0),
    scale: torch.Tensor | float = 1.0,
    shear: tuple[torch.Tensor | float, torch.Tensor | float] = (0.0, 0.0),
    flip: torch.Tensor | bool = False,
) -> torch.Tensor:
    """Sampling matrices of affine transforms of the picture, in pixel units about its centre.

    The picture is first flipped left-right (where ``flip``), scaled by ``scale``, sheared by
    ``shear = (sx, sy)`` degrees (x then y), rotated counter-clockwise by ``angle`` degrees,
    then moved by ``translate = (tx, ty)`` pixels (right, down). The returned matrix is the
    inverse of that forward map: it tells each output pixel where to read.

    Every argument is a number or a ``[N]`` tensor (broadcast together).

    Returns
    -------
    ``float64 [N, 3, 3]`` (``N = 1`` for all-scalar arguments).
    """
    parts = [angle, translate[0], translate[1], scale, shear[0], shear[1]]
    vals = [torch.as_tensor(p, dtype=torch.float64).reshape(-1) for p in parts]
    fl = torch.as_tensor(flip).reshape(-1)
    dev = next((v.device for v in (*vals, fl) if v.device.type != "cpu"), torch.device("cpu"))
    vals = [v.to(dev) for v in vals]
    n = max(max(v.numel() for v in vals), fl.numel())
    a, tx, ty, s, shx, shy = (v.expand(n) for v in vals)
    if bool((s <= 0).any()):
        raise ConfigError("scale must be positive")
    sign = torch.where(fl.to(dev).expand(n).bool(), -1.0, 1.0).to(torch.float64)
    th = torch.deg2rad(a)
    cos, sin = torch.cos(th), torch.sin(th)
    zero, one = torch.zeros_like(a), torch.ones_like(a)

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    # Forward maps (input position -> output position); y points down, so a counter-clockwise
    # turn of the picture is [[cos, sin], [-sin, cos]].
    flip_scale = mat([[sign * s, zero, zero], [zero, s, zero], [zero, zero, one]])
    shear_m = mat(
        [
            [one, torch.tan(torch.deg2rad(shx)), zero],
            [torch.tan(torch.deg2rad(shy)), one, zero],
            [zero, zero, one],
        ]
    )
    rot = mat([[cos, sin, zero], [-sin, cos, zero], [zero, zero, one]])
    move = mat([[one, zero, tx], [zero, one, ty], [zero, zero, one]])
    forward = move @ rot @ shear_m @ flip_scale
    return torch.linalg.inv(forward)


def random_affine_matrices(
    n: int,
    size: tuple[int, int],
    generator: torch.Generator,
    *,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: Sequence[float] = (1.0, 1.0),
    shear: float = 0.0,
    flip_p: float = 0.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``float64 [n, 3, 3]`` sampling matrices of random affine transforms.

    See :func:`affine_matrices` for what the parameters mean.

    Per image: angle uniform in ``[-degrees, degrees]``; shift uniform in
    ``[-translate*W, translate*W]`` × ``[-translate*H, translate*H]`` pixels; scale uniform in
    ``scale``; x and y shear each uniform in ``[-shear, shear]`` degrees; a left-right flip with
    probability ``flip_p``. Always draws ``7 * n`` uniforms (disabled parts included), so the
    stream a generator goes through depends only on ``n``.
    """
    degrees = _check_nonneg("degrees", degrees)
    translate = _check_nonneg("translate", translate, 1.0)
    lo, hi = _check_range("scale", scale)
    if lo <= 0:
        raise ConfigError(f"scale must be positive, got {(lo, hi)}")
    shear = _check_nonneg("shear", shear, 89.0)
    flip_p = _check_nonneg("flip_p", flip_p, 1.0)
    h, w = size
    dev = torch.device(device) if device is not None else generator.device
    u = torch.rand((n, 7), generator=generator, dtype=torch.float64, device=generator.device)
    u = u.to(dev)
    return affine_matrices(
        angle=(2 * u[:, 0] - 1) * degrees,
        translate=((2 * u[:, 1] - 1) * translate * w, (2 * u[:, 2] - 1) * translate * h),
        scale=lo + (hi - lo) * u[:, 3],
        shear=((2 * u[:, 4] - 1) * shear, (2 * u[:, 5] - 1) * shear),
        flip=u[:, 6] < flip_p,
    )


def random_resized_crop_matrices(
    n: int,
    size: tuple[int, int],
    generator: torch.Generator,
    *,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``float64 [n, 3, 3]`` sampling matrices that crop a random box and resize it to the image.

    Per image, the box covers a fraction of the area uniform in ``scale`` with a width/height
    ratio log-uniform in ``ratio`` (as in Szegedy et al. 2015 and SimCLR); sides longer than the
    image are clipped to it (instead of torchvision's rejection loop), and the box's position is
    uniform among those inside the image. Draws ``4 * n`` uniforms.
    """
    s_lo, s_hi = _check_range("crop scale", scale)
    if s_lo <= 0 or s_hi > 1:
        raise ConfigError(f"crop scale must lie in (0, 1], got {(s_lo, s_hi)}")
    r_lo, r_hi = _check_range("crop ratio", ratio)
    if r_lo <= 0:
        raise ConfigError(f"crop ratio must be positive, got {(r_lo, r_hi)}")
    h, w = size
    dev = torch.device(device) if device is not None else generator.device
    u = torch.rand((n, 4), generator=generator, dtype=torch.float64, device=generator.device)
    u = u.to(dev)
    area = s_lo + (s_hi - s_lo) * u[:, 0]
    log_r = math.log(r_lo) + (math.log(r_hi) - math.log(r_lo)) * u[:, 1]
    r = torch.exp(log_r)
    fw = torch.sqrt(area * r).clamp(max=1.0)  # box width as a fraction of W
    fh = torch.sqrt(area / r).clamp(max=1.0)
    cx = (2 * u[:, 2] - 1) * (1 - fw) * (w / 2.0)  # box centre, pixels about the image centre
    cy = (2 * u[:, 3] - 1) * (1 - fh) * (h / 2.0)
    m = torch.zeros((n, 3, 3), dtype=torch.float64, device=dev)
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = fw, fh, 1.0
    m[:, 0, 2], m[:, 1, 2] = cx, cy
    return m


def _gaussian_matrix(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """``float32 [size, size]``: filtering a length-``size`` signal with a normalised Gaussian
    kernel of ``2*ceil(3*sigma)+1`` taps, zero padding (a banded Toeplitz matrix)."""
    radius = max(1, math.ceil(3 * sigma))
    pos = torch.arange(size, dtype=torch.float32, device=device)
    offset = pos.view(-1, 1) - pos.view(1, -1)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    norm = torch.exp(-0.5 * (taps / sigma) ** 2).sum()
    k = torch.exp(-0.5 * (offset / sigma) ** 2) / norm
    return torch.where(offset.abs() <= radius, k, torch.zeros_like(k))


def elastic_displacement(
    n: int,
    size: tuple[int, int],
    generator: torch.Generator,
    *,
    alpha: float,
    sigma: float,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``float32 [n, H, W, 2]`` random smooth displacement fields, in pixels.

    Simard, Steinkraus & Platt (2003): each pixel's ``(dx, dy)`` uniform in ``[-1, 1]``,
    smoothed by a Gaussian of standard deviation ``sigma`` pixels (separable, zero padding,
    kernel ``2*ceil(3*sigma)+1`` wide), times ``alpha``. Smoothing shrinks the field a lot, so
    ``alpha`` is large (e.g. ``alpha=34, sigma=4`` for MNIST in that paper).
    """
    alpha = _check_nonneg("elastic alpha", alpha)
    sigma = _check_nonneg("elastic sigma", sigma)
    h, w = size
    dev = torch.device(device) if device is not None else generator.device
    field = torch.rand(
        (n * 2, h, w), generator=generator, dtype=torch.float32, device=generator.device
    ).to(dev)
    field = field * 2 - 1
    if sigma > 0:
        # Zero-padded separable Gaussian filtering as two small matrix products, K_h @ f @ K_w^T
        # (one batched matmul each, far faster on CPU than a 1-channel convolution).
        field = _gaussian_matrix(h, sigma, dev) @ field.view(n * 2, h, w)
        field = field @ _gaussian_matrix(w, sigma, dev).T
    return (field * alpha).view(n, 2, h, w).permute(0, 2, 3, 1).contiguous()


# ----------------------------------------------------------------------------- functions


def affine(
    x: torch.Tensor,
    angle: torch.Tensor | float = 0.0,
    translate: tuple[torch.Tensor | float, torch.Tensor | float] = (0.0, 0.0),
    scale: torch.Tensor | float = 1.0,
    shear: tuple[torch.Tensor | float, torch.Tensor | float] = (0.0, 0.0),
    flip: torch.Tensor | bool = False,
    *,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Deterministic affine transform of ``[..., C, H, W]`` images (see :func:`affine_matrices`).

    Arguments are numbers (the same for every image) or ``[N]`` tensors (one per image, ``N``
    the product of the leading dimensions). ``affine(x, angle=90)`` on square images equals
    ``torch.rot90(x, 1, dims=(-2, -1))`` up to rounding.
    """
    m = affine_matrices(angle, translate, scale, shear, flip)
    n = _flatten_images(x)[0].shape[0]
    if m.shape[0] not in (1, n):
        raise ConfigError(f"got {m.shape[0]} sets of affine parameters for {n} images")
    return warp(x, m.expand(n, 3, 3), padding_mode=padding_mode)


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: Sequence[float] = (1.0, 1.0),
    shear: float = 0.0,
    flip_p: float = 0.0,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Each image of ``[..., C, H, W]`` through its own random affine transform.

    See :func:`random_affine_matrices` for the distribution of the parameters. With all of them
    at their identity values (the defaults) the images come back unchanged up to rounding.
    """
    flat, _ = _flatten_images(x)
    m = random_affine_matrices(
        flat.shape[0],
        (int(flat.shape[-2]), int(flat.shape[-1])),
        generator,
        degrees=degrees,
        translate=translate,
        scale=scale,
        shear=shear,
        flip_p=flip_p,
        device=flat.device,
    )
    return warp(x, m, padding_mode=padding_mode)


def random_resized_crop(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Each image cropped to a random box and resized back to ``H × W`` (bilinear).

    See :func:`random_resized_crop_matrices`; ``scale=(1, 1), ratio=(1, 1)`` is the identity.
    """
    flat, _ = _flatten_images(x)
    m = random_resized_crop_matrices(
        flat.shape[0],
        (int(flat.shape[-2]), int(flat.shape[-1])),
        generator,
        scale=scale,
        ratio=ratio,
        device=flat.device,
    )
    return warp(x, m, padding_mode=padding_mode)


def elastic(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    alpha: float = 34.0,
    sigma: float = 4.0,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Elastic deformation of each image (Simard et al. 2003; see :func:`elastic_displacement`).

    ``alpha=0`` is the identity.
    """
    flat, _ = _flatten_images(x)
    d = elastic_displacement(
        flat.shape[0],
        (int(flat.shape[-2]), int(flat.shape[-1])),
        generator,
        alpha=alpha,
        sigma=sigma,
        device=flat.device,
    )
    return warp(x, displacement=d, padding_mode=padding_mode)


def gaussian_noise(x: torch.Tensor, generator: torch.Generator, std: float) -> torch.Tensor:
    """``x`` plus independent Gaussian noise of standard deviation ``std`` (any shape)."""
    std = _check_nonneg("noise std", std)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
    return x + std * noise.to(x.device)


def pixel_dropout(x: torch.Tensor, generator: torch.Generator, p: float) -> torch.Tensor:
    """``x`` with each element set to 0 independently with probability ``p`` (any shape).

    UMTRA's Omniglot augmentation zeroes random pixels of the character images.
    """
    p = _check_nonneg("dropout p", p, 1.0)
    u = torch.rand(x.shape, generator=generator, dtype=torch.float32, device=generator.device)
    return x.masked_fill(u.to(x.device) < p, 0.0)


def random_erasing(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    p: float = 0.5,
    scale: Sequence[float] = (0.02, 0.33),
    ratio: Sequence[float] = (0.3, 3.3),
    value: float = 0.0,
) -> torch.Tensor:
    """With probability ``p``, fill a random box of each image (all channels) with ``value``.

    Random erasing (Zhong et al. 2020); with ``value=0`` it is "cutout". Per image the box
    covers a fraction of the area uniform in ``scale``, with width/height log-uniform in
    ``ratio`` (sides clipped to the image), at a uniform position inside the image. Draws
    ``5 * N`` uniforms.
    """
    p = _check_nonneg("erase p", p, 1.0)
    s_lo, s_hi = _check_range("erase scale", scale, 0.0)
    r_lo, r_hi = _check_range("erase ratio", ratio)
    if r_lo <= 0 or s_hi > 1:
        raise ConfigError(
            f"erase scale must lie in [0, 1] and ratio be positive, got {scale}, {ratio}"
        )
    flat, lead = _flatten_images(x)
    n, _, h, w = flat.shape
    dev = flat.device
    u = torch.rand((n, 5), generator=generator, dtype=torch.float64, device=generator.device)
    u = u.to(dev)
    area = (s_lo + (s_hi - s_lo) * u[:, 1]) * (h * w)
    r = torch.exp(math.log(r_lo) + (math.log(r_hi) - math.log(r_lo)) * u[:, 2])
    eh = torch.sqrt(area / r).round().clamp(1, h).long()
    ew = torch.sqrt(area * r).round().clamp(1, w).long()
    top = torch.floor(u[:, 3] * (h - eh + 1)).long()
    left = torch.floor(u[:, 4] * (w - ew + 1)).long()
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + eh).view(-1, 1, 1))
        & (cols >= left.view(-1, 1, 1))
        & (cols < (left + ew).view(-1, 1, 1))
        & (u[:, 0] < p).view(-1, 1, 1)
    )
    out = flat.masked_fill(inside.unsqueeze(1), float(value))
    return out.reshape(*lead, *out.shape[1:])


# ----------------------------------------------------------------------------- the pipeline


@dataclass(frozen=True)
class Augment:
    """A seeded augmentation pipeline, applied to a whole batch at once.

    Steps, in this order (each off at its default, so ``Augment()`` is the identity):

    1. geometric, in **one** ``grid_sample`` call: random resized crop (``crop_scale``,
       ``crop_ratio``), then a random affine transform (``degrees``, ``translate``, ``scale``,
       ``shear``, ``flip_p``), then an elastic deformation (``elastic_alpha``,
       ``elastic_sigma``) — the sampling matrices are multiplied and the displacement field
       added to the grid, so the image is interpolated once;
    2. ``dropout_p``: zero random pixels; 3. ``noise_std``: add Gaussian noise;
    4. ``erase_p``: random erasing / cutout (``erase_scale``, ``erase_ratio``, ``erase_value``);
    5. ``clamp``: clip to a range (``(0, 1)`` by default; ``None`` to keep values as they are).

    Geometric steps and erasing need images ``[..., C, H, W]``; dropout and noise alone work on
    any shape (e.g. tables ``[..., d]``). The identity pipeline returns its input itself.

    Use :meth:`preset` / :meth:`for_shape` for the defaults chosen for 28×28 grayscale images
    and 8×8 digits, or set fields directly; :meth:`config` / :meth:`from_config` round-trip
    through JSON or TOML.

    Example
    -------
    >>> aug = Augment.preset("28x28")
    >>> g = torch.Generator().manual_seed(0)
    >>> views = aug(images, g)  # images [B, n, 1, 28, 28] -> same shape, each image its own draw
    """

    crop_scale: Range | None = None
    crop_ratio: Range = (3 / 4, 4 / 3)
    degrees: float = 0.0
    translate: float = 0.0
    scale: Range = (1.0, 1.0)
    shear: float = 0.0
    flip_p: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0
    dropout_p: float = 0.0
    noise_std: float = 0.0
    erase_p: float = 0.0
    erase_scale: Range = (0.02, 0.2)
    erase_ratio: Range = (0.3, 3.3)
    erase_value: float = 0.0
    padding_mode: str = "zeros"
    clamp: Range | None = (0.0, 1.0)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.crop_scale is not None:
            lo, hi = _check_range("crop_scale", self.crop_scale)
            if lo <= 0 or hi > 1:
                raise ConfigError(f"crop_scale must lie in (0, 1], got {(lo, hi)}")
            set_(self, "crop_scale", (lo, hi))
        ratio = _check_range("crop_ratio", self.crop_ratio)
        if ratio[0] <= 0:
            raise ConfigError(f"crop_ratio must be positive, got {ratio}")
        set_(self, "crop_ratio", ratio)
        set_(self, "degrees", _check_nonneg("degrees", self.degrees))
        set_(self, "translate", _check_nonneg("translate", self.translate, 1.0))
        scale = _check_range("scale", self.scale)
        if scale[0] <= 0:
            raise ConfigError(f"scale must be positive, got {scale}")
        set_(self, "scale", scale)
        set_(self, "shear", _check_nonneg("shear", self.shear, 89.0))
        for name in ("flip_p", "dropout_p", "erase_p"):
            set_(self, name, _check_nonneg(name, getattr(self, name), 1.0))
        for name in ("elastic_alpha", "elastic_sigma", "noise_std"):
            set_(self, name, _check_nonneg(name, getattr(self, name)))
        e_scale = _check_range("erase_scale", self.erase_scale, 0.0)
        e_ratio = _check_range("erase_ratio", self.erase_ratio)
        if e_scale[1] > 1 or e_ratio[0] <= 0:
            raise ConfigError("erase_scale must lie in [0, 1] and erase_ratio be positive")
        set_(self, "erase_scale", e_scale)
        set_(self, "erase_ratio", e_ratio)
        set_(self, "erase_value", float(self.erase_value))
        if self.padding_mode not in ("zeros", "border", "reflection"):
            raise ConfigError(
                f"padding_mode must be 'zeros', 'border' or 'reflection', got {self.padding_mode!r}"
            )
        if self.clamp is not None:
            set_(self, "clamp", _check_range("clamp", self.clamp))

    # -- what is on ---------------------------------------------------------------------

    @property
    def _affine_on(self) -> bool:
        return bool(
            self.degrees or self.translate or self.scale != (1.0, 1.0) or self.shear or self.flip_p
        )

    @property
    def geometric(self) -> bool:
        """Whether a geometric step (crop, affine, elastic) is on: these need images."""
        return self.crop_scale is not None or self._affine_on or self.elastic_alpha > 0

    @property
    def is_identity(self) -> bool:
        """Whether the pipeline leaves every input unchanged (and draws no random numbers)."""
        return not (self.geometric or self.dropout_p or self.noise_std or self.erase_p)

    # -- applying -------------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment every example of ``x`` with its own random draw.

        Parameters
        ----------
        x:
            Floating ``[..., C, H, W]`` images (or ``[..., d]`` when only dropout and noise
            are on).
        generator:
            The source of randomness; the same generator state gives the same output.

        Returns
        -------
        A new tensor of the shape, dtype and device of ``x`` (``x`` itself for the identity).
        """
        if self.is_identity:
            return x
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise DataError("Augment expects a floating tensor (see metaunsup.data.to_float)")
        out = x
        if self.geometric or self.erase_p:
            _flatten_images(x)  # validates the image shape
        if self.geometric:
            out = self._warp(out, generator)
        if self.dropout_p:
            out = pixel_dropout(out, generator, self.dropout_p)
        if self.noise_std:
            out = gaussian_noise(out, generator, self.noise_std)
        if self.erase_p:
            out = random_erasing(
                out,
                generator,
                p=self.erase_p,
                scale=self.erase_scale,
                ratio=self.erase_ratio,
                value=self.erase_value,
            )
        if self.clamp is not None:
            out = out.clamp(*self.clamp)
        return out

    def _warp(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flat, _ = _flatten_images(x)
        n, size, dev = flat.shape[0], (int(flat.shape[-2]), int(flat.shape[-1])), flat.device
        m = None
        if self.crop_scale is not None:
            m = random_resized_crop_matrices(
                n, size, generator, scale=self.crop_scale, ratio=self.crop_ratio, device=dev
            )
        if self._affine_on:
            a = random_affine_matrices(
                n,
                size,
                generator,
                degrees=self.degrees,
                translate=self.translate,
                scale=self.scale,
                shear=self.shear,
                flip_p=self.flip_p,
                device=dev,
            )
            # The crop reads the input, the affine reads the crop: input <- crop <- affine.
            m = a if m is None else m @ a
        d = None
        if self.elastic_alpha > 0:
            d = elastic_displacement(
                n,
                size,
                generator,
                alpha=self.elastic_alpha,
                sigma=self.elastic_sigma,
                device=dev,
            )
        return warp(x, m, d, padding_mode=self.padding_mode)

    # -- configs and presets --------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (pairs as lists); :meth:`from_config` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Augment:
        """An :class:`Augment` from a dict such as :meth:`config` returns (or a TOML table).

        A ``"preset"`` key starts from that preset; the other keys override its fields.
        Unknown keys raise :class:`~metaunsup.errors.ConfigError`.
        """
        if not isinstance(config, Mapping):
            raise ConfigError(f"an augmentation config must be a table/dict, got {config!r}")
        values = dict(config)
        base = cls.preset(values.pop("preset")) if "preset" in values else cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown augmentation option(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(known))}"
            )
        merged = {**asdict(base), **values}
        for k, v in merged.items():
            if isinstance(v, list):
                merged[k] = tuple(v)
        return cls(**merged)

    @classmethod
    def preset(cls, name: str) -> Augment:
        """A named pipeline.

        ``"identity"``
            Nothing.
        ``"28x28"``
            Label-preserving changes for 28×28 grayscale characters and digits (UMTRA-style
            queries): rotation ±10°, shift ±10 %, scale 0.9–1.1, shear ±10°, a mild elastic
            deformation (alpha 20, sigma 4 pixels) and 5 % pixel dropout.
        ``"28x28-strong"``
            For contrastive learning (SimCLR-style views): random resized crop (area 50–100 %),
            rotation ±15°, shift ±10 %, scale 0.9–1.1, shear ±10°, elastic (alpha 30,
            sigma 4), Gaussian noise 0.05 and cutout with probability 0.3.
        ``"8x8"`` / ``"8x8-strong"``
            The same ideas for 8×8 digits: no elastic deformation (too few pixels to be
            smooth), smaller boxes and noise.
        ``"vector"``
            For tables ``[..., d]``: 20 % feature dropout and Gaussian noise 0.05, no clamp.

        These values were chosen by hand to keep digits and characters recognisable; they are
        starting points, not tuned results.
        """
        presets: dict[str, dict[str, Any]] = {
            "identity": {},
            "28x28": dict(
                degrees=10.0,
                translate=0.1,
                scale=(0.9, 1.1),
                shear=10.0,
                elastic_alpha=20.0,
                elastic_sigma=4.0,
                dropout_p=0.05,
            ),
            "28x28-strong": dict(
                crop_scale=(0.5, 1.0),
                degrees=15.0,
                translate=0.1,
                scale=(0.9, 1.1),
                shear=10.0,
                elastic_alpha=30.0,
                elastic_sigma=4.0,
                noise_std=0.05,
                erase_p=0.3,
                erase_scale=(0.02, 0.15),
            ),
            "8x8": dict(degrees=10.0, translate=0.08, scale=(0.9, 1.1), shear=8.0, noise_std=0.02),
            "8x8-strong": dict(
                crop_scale=(0.6, 1.0),
                degrees=15.0,
                translate=0.1,
                scale=(0.9, 1.1),
                shear=10.0,
                noise_std=0.05,
                erase_p=0.2,
                erase_scale=(0.02, 0.1),
            ),
            "vector": dict(dropout_p=0.2, noise_std=0.05, clamp=None),
        }
        if name not in presets:
            raise ConfigError(
                f"unknown augmentation preset {name!r}; choose one of: {', '.join(presets)}"
            )
        return cls(**presets[name])

    @classmethod
    def for_shape(cls, example_shape: Sequence[int], strong: bool = False) -> Augment:
        """The preset that suits examples of ``example_shape``.

        Images ``(C, H, W)`` with ``min(H, W) >= 16`` get ``"28x28"`` (``"28x28-strong"`` when
        ``strong``), with the elastic field scaled to the image (``sigma`` by ``H / 28``,
        ``alpha`` by its square, so displacements grow like the image); smaller images get
        ``"8x8"`` / ``"8x8-strong"``; anything else ``"vector"``.
        """
        shape = tuple(int(s) for s in example_shape)
        if len(shape) != 3:
            return cls.preset("vector")
        h, w = shape[1:]
        if min(h, w) >= 16:
            base = cls.preset("28x28-strong" if strong else "28x28")
            factor = h / 28.0
            cfg = base.config()
            cfg["elastic_alpha"] = base.elastic_alpha * factor**2  # displacement ~ alpha/sigma
            cfg["elastic_sigma"] = base.elastic_sigma * factor
            return cls.from_config(cfg)
        return cls.preset("8x8-strong" if strong else "8x8")
