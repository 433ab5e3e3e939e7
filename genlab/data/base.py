"""An in-memory data set: a dict of tensors batched by index (no per-item DataLoader)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from .spec import DataSpec

SPLITS = ("train", "val", "test", "all")


class InvalidDataError(ValueError):
    """Raised for malformed user data: the message is one line naming the bad value."""


class TensorDataset:
    """A split of a data set held as one tensor per key, all with the same first dimension.

    ``ds[idx]`` with an int, slice or index tensor returns a batch dict (``"x"`` plus optional
    ``"y"``, ``"factors"``, ``"text"``). ``.spec`` describes the examples.
    """

    def __init__(self, tensors: dict[str, Tensor], spec: DataSpec, split: str = "train") -> None:
        if "x" not in tensors:
            raise ValueError("a data set needs an 'x' tensor")
        n = len(tensors["x"])
        for k, v in tensors.items():
            if len(v) != n:
                raise ValueError(f"tensor {k!r} has {len(v)} rows but 'x' has {n}")
        self.tensors = tensors
        self.spec = spec
        self.split = split

    def __len__(self) -> int:
        return len(self.tensors["x"])

    def __getitem__(self, idx: int | slice | Tensor) -> dict[str, Tensor]:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return {k: v[idx] for k, v in self.tensors.items()}

    def batches(self, batch_size: int) -> Iterator[dict[str, Tensor]]:
        """Consecutive batches in order, the last one possibly smaller (for evaluation)."""
        for i in range(0, len(self), batch_size):
            yield self[slice(i, i + batch_size)]

    def __repr__(self) -> str:
        return f"TensorDataset({self.spec.name!r}, split={self.split!r}, n={len(self)}, shape={self.spec.shape})"


def split_indices(n: int, split: str, fractions: tuple[float, float] = (0.8, 0.1), seed: int = 0) -> np.ndarray:
    """Deterministic train/val/test indices for ``n`` examples: a seeded permutation cut at
    ``fractions`` (train, val; test gets the rest). ``split="all"`` returns every index in order."""
    check_split(split)
    check_seed(seed)
    if split == "all":
        return np.arange(n)
    perm = np.random.default_rng(int(seed)).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    cuts = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
    return np.sort(cuts[split])


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def check_seed(seed: object) -> None:
    """A seed option must be a non-negative integer (a string or float from ``--data-opt`` is refused)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidDataError(f"seed={seed!r} is invalid; expected a non-negative integer")


def discrete_to_float(x: np.ndarray, levels: int) -> Tensor:
    """Integer levels 0..L-1 -> float32 tensor level/(L-1) in [0, 1] (how models see discrete images)."""
    return torch.from_numpy(np.asarray(x, dtype=np.float32) / float(levels - 1))
