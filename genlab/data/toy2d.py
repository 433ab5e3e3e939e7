"""2-D toy densities with the generators and scaling of the FFJORD paper's toy data.

Each toy is a distribution on R^2 sampled i.i.d. with a seeded ``numpy.random.Generator``:
moons, circles, 8gaussians, checkerboard, pinwheel, 2spirals, rings. Shapes, noise levels and
scale factors follow FFJORD's ``toy_data.py`` so plots and NLLs compare with the literature; where
FFJORD placed points on an evenly spaced grid of angles (moons, circles, rings, via scikit-learn's
generators) or split the batch into equal parts (pinwheel arms, spiral arms, rings), we draw the
angle and the component at random instead, which is the same distribution in the limit and makes
every sample i.i.d. (a requirement for a density and a held-out NLL to mean anything).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import InvalidDataError, TensorDataset, check_split
from .spec import DataSpec

TOY_NAMES = ("moons", "circles", "8gaussians", "checkerboard", "pinwheel", "2spirals", "rings")

#: Default number of samples per split; ``n`` overrides it.
DEFAULT_SIZES = {"train": 20000, "val": 2000, "test": 5000}
# Each split draws from its own stream so that train/val/test never share samples and changing
# the size of one split leaves the others untouched.
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def _check_name(name: str) -> None:
    if name not in TOY_NAMES:
        raise InvalidDataError(f"unknown 2-D toy {name!r}; expected one of {', '.join(TOY_NAMES)}")


def _moons(n: int, rng: np.random.Generator) -> np.ndarray:
    # scikit-learn's make_moons(noise=0.1): two interleaved half circles, then FFJORD's *2 + (-1, -0.2).
    upper = rng.random(n) < 0.5
    t = rng.random(n) * math.pi
    x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    pts = np.stack([x, y], 1) + rng.normal(scale=0.1, size=(n, 2))
    return pts * 2.0 + np.array([-1.0, -0.2])


def _circles(n: int, rng: np.random.Generator) -> np.ndarray:
    # make_circles(factor=0.5, noise=0.08): unit circle and a circle of radius 0.5, then *3.
    radius = np.where(rng.random(n) < 0.5, 1.0, 0.5)
    t = rng.random(n) * 2 * math.pi
    pts = radius[:, None] * np.stack([np.cos(t), np.sin(t)], 1) + rng.normal(scale=0.08, size=(n, 2))
    return pts * 3.0


def _rings(n: int, rng: np.random.Generator) -> np.ndarray:
    # Four concentric circles of radius 0.25, 0.5, 0.75, 1 (equal weight), *3, then noise 0.08.
    radius = 0.25 * rng.integers(1, 5, size=n)
    t = rng.random(n) * 2 * math.pi
    pts = 3.0 * radius[:, None] * np.stack([np.cos(t), np.sin(t)], 1)
    return pts + rng.normal(scale=0.08, size=(n, 2))


def _eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    # Centres at radius 4 on the 8 compass directions, std 0.5, everything divided by 1.414 (sic:
    # FFJORD divides by the literal 1.414, not sqrt(2), and we keep it for comparability).
    angles = rng.integers(0, 8, size=n) * (math.pi / 4)
    centres = 4.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return (centres + 0.5 * rng.standard_normal((n, 2))) / 1.414


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    # Uniform on the 8 dark squares of a 4x4 board of unit cells on [-2, 2]^2 (cells whose integer
    # coordinates have an even sum), then *2: 8 squares of area 4 on [-4, 4]^2, density 1/32.
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, size=n) * 2 + (np.floor(x1) % 2)
    return np.stack([x1, x2], 1) * 2.0


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    # Five arms: radial N(1, 0.3), tangential N(0, 0.1), each point rotated by its arm's angle plus
    # 0.25 * exp(radial coordinate), which bends the arms; then *2.
    arm = rng.integers(0, 5, size=n)
    feats = rng.standard_normal((n, 2)) * np.array([0.3, 0.1])
    feats[:, 0] += 1.0
    angle = arm * (2 * math.pi / 5) + 0.25 * np.exp(feats[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    # Row vector times [[c, -s], [s, c]], as FFJORD's einsum("ti,tij->tj") does.
    x = feats[:, 0] * c + feats[:, 1] * s
    y = -feats[:, 0] * s + feats[:, 1] * c
    return 2.0 * np.stack([x, y], 1)


def _two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    # Angle t = sqrt(U) * 3*pi (540 degrees); arm 1 is (-t cos t, t sin t) + U[0, 0.5)^2 jitter,
    # arm 2 its point reflection; divide by 3 and add N(0, 0.1) noise.
    t = np.sqrt(rng.random(n)) * (540 * 2 * math.pi / 360)
    x = -np.cos(t) * t + rng.random(n) * 0.5
    y = np.sin(t) * t + rng.random(n) * 0.5
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    pts = sign[:, None] * np.stack([x, y], 1) / 3.0
    return pts + rng.normal(scale=0.1, size=(n, 2))


_GENERATORS = {
    "moons": _moons,
    "circles": _circles,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
    "rings": _rings,
}


def sample_toy(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` i.i.d. points of toy ``name`` as a float32 array [n, 2] (FFJORD's units, roughly
    within [-4, 4]^2), using ``rng`` as the only source of randomness."""
    _check_name(name)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InvalidDataError(f"number of samples n={n!r} is invalid; expected an integer >= 0")
    return _GENERATORS[name](int(n), rng).astype(np.float32)


def toy_entropy(name: str) -> float | None:
    """Differential entropy of toy ``name`` in nats where it is known in closed form, else None.

    Only checkerboard qualifies: it is uniform on 8 squares of area 4, so h = ln 32 = 3.466 nats and
    a perfect model's test NLL approaches it. The others are noisy curves or Gaussian mixtures whose
    entropy has no closed form (8gaussians is close to ln 8 + ln(2*pi*e*0.3536^2) = 2.124 nats
    because its components barely overlap, but not exactly, so it returns None).
    """
    _check_name(name)
    return math.log(32.0) if name == "checkerboard" else None


def load_toy(name: str, split: str = "train", n: int | None = None, seed: int = 0) -> TensorDataset:
    """One split of a 2-D toy as ``"x"`` float32 [N, 2]. Default sizes: train 20,000, val 2,000,
    test 5,000 (``n`` overrides); split ``s`` uses the seed ``3*seed + {train: 0, val: 1, test: 2}``,
    so splits differ and are reproducible. ``"all"`` concatenates train, val and test (the first
    ``n`` rows if ``n`` is given). The spec's ``extra["entropy_nats"]`` holds :func:`toy_entropy`."""
    _check_name(name)
    check_split(split)
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise InvalidDataError(f"number of samples n={n!r} is invalid; expected a positive integer")
    if split == "all":
        parts = [_split_points(name, s, None, seed) for s in ("train", "val", "test")]
        pts = np.concatenate(parts)
        if n is not None:
            if n > len(pts):
                raise InvalidDataError(f"n={n} exceeds the {len(pts)} points of split 'all' of toy {name!r}")
            pts = pts[:n]
    else:
        pts = _split_points(name, split, n, seed)
    spec = DataSpec(
        name=name,
        kind="vector",
        shape=(2,),
        value_range=None,
        levels=None,
        extra={"entropy_nats": toy_entropy(name)},
    )
    return TensorDataset({"x": torch.from_numpy(pts)}, spec, split)


def _split_points(name: str, split: str, n: int | None, seed: int) -> np.ndarray:
    rng = np.random.default_rng(3 * int(seed) + _SPLIT_OFFSET[split])
    return sample_toy(name, DEFAULT_SIZES[split] if n is None else n, rng)
