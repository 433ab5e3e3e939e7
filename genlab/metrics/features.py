"""Feature networks for sample-based metrics (FID, KID, precision/recall, MMD, C2ST, mode coverage).

FID's Inception network was trained on ImageNet photos; on 8x8 digits or binary sprites its
features mean little, and it needs a download. genlab instead trains, for each data set with labels
(``"y"``) or generative factors (``"factors"``), a small classifier once and caches it; its
penultimate layer (post-ReLU, ``feature_dim`` units) gives the features, and its class head says
which class a sample looks like (mode collapse = classes no sample falls in).

Cache: ``$GENLAB_CACHE`` (default ``~/.cache/genlab``) / ``features/featnet-<hash>.safetensors``,
where the hash covers the training data's bytes, the architecture and the training settings, so a
changed data set or recipe never reuses stale weights. Weights are safetensors written atomically.

Fallbacks:
    * ``"random"`` (unlabeled data): a fixed, untrained random network, seed 0 -- images: one 3x3
      conv (C -> 64 channels, Kaiming-normal weights, zero bias) + ReLU + adaptive average pooling
      to 4x4 (1,024 features); vectors: random ReLU features ReLU(W x + b) with W ~ N(0, 1/D),
      b ~ N(0, 1), 256 units, concatenated with x itself. Random features are a weaker but
      documented, reproducible, training-free measure (Naeem et al. 2020 discuss random embeddings).
    * ``"inception"``: torch-fidelity's InceptionV3 (Heusel et al. 2017), only if torch-fidelity is
      importable *and* its weights are already on disk; otherwise one clear error. Never downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import CheckpointError, load_tensors, save_tensors
from ..data.base import TensorDataset
from ..data.spec import DataSpec
from ..nn import ConvEncoder
from .threads import single_thread

FEATNET_VERSION = 1


class FeatureNetworkError(ValueError):
    """A feature network cannot be built (no labels, no weights on disk, ...); one-line message."""


class FeatureExtractor(Protocol):
    """What the metrics need: ``features(x) -> [N, F]``; ``predict(x) -> [N]`` class ids or None."""

    name: str
    num_classes: int | None

    def features(self, x: Tensor) -> Tensor: ...
    def predict(self, x: Tensor) -> Tensor | None: ...


def cache_dir() -> Path:
    """``$GENLAB_CACHE`` or ``~/.cache/genlab``."""
    return Path(os.environ.get("GENLAB_CACHE") or Path.home() / ".cache" / "genlab")


# --- the trained classifier -------------------------------------------------------------------
class ClassifierNet(nn.Module):
    """Small classifier: x [B, *shape] -> penultimate features [B, feature_dim] -> logits per head.

    Images: a 3x3 stem conv then :class:`~genlab.nn.ConvEncoder` (stride-2 stages down to 4x4);
    vectors: an MLP. One linear head per target (``"y"`` and each factor), so factor data sets get
    a multi-task classifier whose features know every factor.
    """

    def __init__(self, shape: tuple[int, ...], head_sizes: list[int], feature_dim: int = 128, width: int = 32) -> None:
        super().__init__()
        if len(shape) == 3:
            c, h, w = shape
            self.body: nn.Module = nn.Sequential(
                nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), ConvEncoder((width, h, w), feature_dim, 2 * width)
            )
        else:
            d = int(np.prod(shape))
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(d, 4 * width), nn.ReLU(), nn.Linear(4 * width, feature_dim)
            )
        self.heads = nn.ModuleList(nn.Linear(feature_dim, k) for k in head_sizes)

    def features(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x))

    def forward(self, x: Tensor) -> list[Tensor]:
        f = self.features(x)
        return [head(f) for head in self.heads]


def _targets(data: TensorDataset) -> list[tuple[str, int, Tensor]]:
    """(name, number of classes, [N] long) for every label the data set carries."""
    out: list[tuple[str, int, Tensor]] = []
    if "y" in data.tensors and data.tensors["y"].dim() == 1:
        y = data.tensors["y"].long()
        out.append(("y", int(data.spec.num_classes or int(y.max()) + 1), y))
    if "factors" in data.tensors:
        f = data.tensors["factors"].long()
        sizes = data.spec.factor_sizes or tuple(int(v) + 1 for v in f.max(0).values)
        names = data.spec.factor_names or tuple(f"factor{i}" for i in range(f.shape[1]))
        out += [(str(n), int(s), f[:, i]) for i, (n, s) in enumerate(zip(names, sizes)) if s > 1]
    return out


def _content_hash(x: Tensor, targets: list[tuple[str, int, Tensor]], recipe: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(recipe, sort_keys=True).encode())
    h.update(str(tuple(x.shape)).encode())
    h.update(x.detach().cpu().float().contiguous().numpy().tobytes())
    for name, k, t in targets:
        h.update(f"{name}:{k}".encode())
        h.update(t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


class ClassifierFeatures:
    """A trained :class:`ClassifierNet` as a :class:`FeatureExtractor` (``predict`` uses head 0)."""

    def __init__(self, net: ClassifierNet, meta: dict[str, Any]) -> None:
        self.net = net.eval()
        self.meta = meta
        self.name = f"classifier-{meta['hash'][:8]}"
        self.num_classes = meta["head_sizes"][0]
        self.accuracy: float = float(meta.get("holdout_accuracy", float("nan")))

    @torch.no_grad()
    def features(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """x [N, *shape] in the data's range -> [N, feature_dim] float64."""
        return torch.cat(
            [self.net.features(x[i : i + batch_size].float()).double() for i in range(0, len(x), batch_size)]
        )

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """[N] class ids of the first target (``"y"`` if present, else the first factor)."""
        return torch.cat([self.net(x[i : i + batch_size].float())[0].argmax(-1) for i in range(0, len(x), batch_size)])


def train_classifier(
    data: TensorDataset,
    *,
    feature_dim: int = 128,
    width: int = 32,
    steps: int = 400,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    max_examples: int = 20000,
    cache: bool = True,
) -> ClassifierFeatures:
    """Train (or load from the cache) the feature classifier of a labelled data set.

    ``data`` should be the training split. 10% of it (seeded) is held out to report the
    classifier's accuracy (``.accuracy``, stored in the cache metadata); the rest trains it with
    AdamW, small Gaussian pixel noise as augmentation (so samples slightly off the data's levels
    do not fall off the features' manifold), ``steps`` steps. Deterministic for a given seed.
    Raises :class:`FeatureNetworkError` if the data set has neither labels nor factors.
    """
    targets = _targets(data)
    if not targets:
        raise FeatureNetworkError(
            f"data set {data.spec.name!r} has no labels ('y') or factors to train a feature classifier on; "
            "use features='random'"
        )
    x = data.tensors["x"][:max_examples].float().cpu()
    targets = [(n, k, t[:max_examples].cpu()) for n, k, t in targets]
    recipe = {
        "version": FEATNET_VERSION,
        "shape": list(data.spec.shape),
        "feature_dim": feature_dim,
        "width": width,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "heads": [[n, k] for n, k, _ in targets],
    }
    key = _content_hash(x, targets, recipe)
    path = cache_dir() / "features" / f"featnet-{key}.safetensors"
    head_sizes = [k for _, k, _ in targets]
    net = ClassifierNet(tuple(data.spec.shape), head_sizes, feature_dim, width)
    if cache and path.exists():
        try:
            tensors, meta = load_tensors(path)
            net.load_state_dict(tensors)
            return ClassifierFeatures(net, meta)
        except (CheckpointError, RuntimeError):
            pass  # a damaged cache entry is retrained and overwritten
    with single_thread():  # small net; one thread is also bit-reproducible
        net, acc, n_train = _fit(
            x, targets, head_sizes, tuple(data.spec.shape), feature_dim, width, steps, batch_size, lr, seed
        )
    meta = {
        "hash": key,
        "recipe": recipe,
        "head_sizes": head_sizes,
        "holdout_accuracy": acc,
        "data": data.spec.name,
        "n_train": n_train,
    }
    if cache:
        save_tensors({k: v.contiguous() for k, v in net.state_dict().items()}, path, meta)
    return ClassifierFeatures(net, meta)


def _fit(
    x: Tensor,
    targets: list[tuple[str, int, Tensor]],
    head_sizes: list[int],
    shape: tuple[int, ...],
    feature_dim: int,
    width: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> tuple[ClassifierNet, float, int]:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ClassifierNet(shape, head_sizes, feature_dim, width)
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(x), generator=gen)
        n_hold = max(1, len(x) // 10)
        hold, tr = perm[:n_hold], perm[n_hold:]
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        net.train()
        with torch.enable_grad():
            for _ in range(steps):
                idx = tr[torch.randint(len(tr), (min(batch_size, len(tr)),), generator=gen)]
                xb = x[idx] + 0.03 * torch.randn(x[idx].shape, generator=gen)
                logits = net(xb)
                loss = sum(nn.functional.cross_entropy(lg, t[idx]) for lg, (_, _, t) in zip(logits, targets))
                opt.zero_grad()
                loss.backward()  # type: ignore[union-attr]
                opt.step()
                sched.step()
        net.eval()
        with torch.no_grad():
            acc = float((net(x[hold])[0].argmax(-1) == targets[0][2][hold]).float().mean())
    return net, acc, int(len(tr))


# --- the training-free fallback ---------------------------------------------------------------
class RandomFeatures:
    """A fixed random network (seed 0; see the module docstring) as a :class:`FeatureExtractor`."""

    num_classes = None

    def __init__(self, spec: DataSpec, seed: int = 0, channels: int = 64, units: int = 256) -> None:
        self.spec, self.name = spec, f"random-seed{seed}"
        gen = torch.Generator().manual_seed(seed)
        if len(spec.shape) == 3:
            c = spec.shape[0]
            # Kaiming-normal: unit-variance pre-activations for inputs of unit scale.
            self.weight = torch.randn(channels, c, 3, 3, generator=gen, dtype=torch.float64) * (2.0 / (9 * c)) ** 0.5
        else:
            d = spec.dim
            self.weight = torch.randn(d, units, generator=gen, dtype=torch.float64) / d**0.5
            self.bias = torch.randn(units, generator=gen, dtype=torch.float64)

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """x [N, *shape] -> [N, F] float64 (images: F = channels * 16; vectors: F = D + units)."""
        x = x.double().cpu()
        if len(self.spec.shape) == 3:
            h = torch.relu(nn.functional.conv2d(x, self.weight, padding=1))
            return nn.functional.adaptive_avg_pool2d(h, 4).flatten(1)
        flat = x.flatten(1)
        return torch.cat([flat, torch.relu(flat @ self.weight + self.bias)], 1)

    def predict(self, x: Tensor) -> None:
        return None


# --- optional Inception (torch-fidelity), never downloaded ------------------------------------
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"


def inception_features() -> FeatureExtractor:
    """torch-fidelity's InceptionV3 pool3 (2,048 features) if the package is importable and its
    weights file is already on disk (torch hub cache or ``$GENLAB_CACHE``); else a one-line
    :class:`FeatureNetworkError`. genlab never downloads (and so never hangs offline)."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # type: ignore[import-not-found]
    except ImportError:
        raise FeatureNetworkError(
            "features='inception' needs torch-fidelity (pip install torch-fidelity) and its weights on disk; "
            "use features='classifier' or 'random'"
        ) from None
    candidates = [cache_dir() / INCEPTION_WEIGHTS, Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS]
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        raise FeatureNetworkError(
            f"Inception weights {INCEPTION_WEIGHTS} not found in {', '.join(str(p.parent) for p in candidates)}; "
            "genlab does not download them (copy the file there, or use features='classifier')"
        )
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(found)).eval()

    class _Inception:
        name, num_classes = "inception-v3", None

        @torch.no_grad()
        def features(self, x: Tensor) -> Tensor:
            # torch-fidelity expects uint8 RGB [N, 3, H, W]; gray images are repeated to 3 channels.
            u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
            if u8.shape[1] == 1:
                u8 = u8.repeat(1, 3, 1, 1)
            return torch.cat([net(u8[i : i + 64])[0].double() for i in range(0, len(u8), 64)])

        def predict(self, x: Tensor) -> None:
            return None

    return _Inception()


def feature_extractor(data: TensorDataset, kind: str = "auto", **train_kw: Any) -> FeatureExtractor:
    """The feature network for ``data`` (the training split): ``"classifier"`` (trained and
    cached), ``"random"``, ``"inception"``, or ``"auto"`` = classifier when the data set has labels
    or factors, else random."""
    if kind == "auto":
        kind = "classifier" if _targets(data) else "random"
    if kind == "classifier":
        return train_classifier(data, **train_kw)
    if kind == "random":
        return RandomFeatures(data.spec)
    if kind == "inception":
        return inception_features()
    raise ValueError(f"unknown feature network {kind!r}; expected auto, classifier, random or inception")
