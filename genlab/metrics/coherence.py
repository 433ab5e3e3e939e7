"""Cross-modal coherence of multimodal generative models.

Shi, Siddharth, Paige & Torr, "Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep
Generative Models", NeurIPS 2019, section 4: a translation x_s -> x_t is *coherent* when a reader
of modality t finds in it the same content as the source holds; cross-coherence is the fraction of
coherent translations, and joint coherence the fraction of jointly generated samples whose
modalities agree with each other. Here "content" is the ground-truth generative factors of the
built-in multimodal data sets (``shapes-captions``, ``shapes-av``), compared on the factors both
modalities determine:

    modality   reader                                              factors it determines
    text       ``parse_caption(decode_caption(ids))``, exact       shape, scale, colour, region_x, region_y
    audio      ``decode_audio_batch``, exact on the data           shape, scale, colour, region_x
    x (image)  a small classifier, trained once and cached         shape, scale, colour, region_x, region_y

A caption that does not parse is unreadable: it matches nothing. The image reader
(:func:`train_image_reader`) classifies :func:`image_reader_features` -- the image cropped around
the object, its scale- and rotation-invariant moments, area, mean colour and centroid -- with the
multi-head classifier of :mod:`genlab.metrics.features` (one softmax per factor, trained and cached
by content hash there). On the test split of ``shapes-captions`` it reads colour 100 %, shape
~97.5 %, scale ~98 % and each region ~98 % of real images correctly; :func:`cross_modal_coherence`
reports each reader's accuracy on the evaluated real data (``reader_accuracy``), the ceiling of
any coherence measured with it.

The plain-array core is :func:`coherence` (factors read from outputs vs the factors they should
have, per factor and all factors at once, with the chance level beside) and :func:`joint_coherence`;
:func:`cross_modal_coherence` drives a model through them. Chance is what the same outputs score
when each is held against the factors of another, random source (the expectation over every
pairing i != j, computed exactly from the two marginals): a translator that ignores its source
scores it, whatever its marginal distribution; ``chance_uniform`` (the product of 1/size over the
compared factors) is the figure for uniformly random outputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.base import InvalidDataError, TensorDataset
from ..data.shapes import (
    CAPTION_FACTOR_NAMES,
    CAPTION_FACTOR_SIZES,
    CAPTION_GRID,
    caption_factors,
    decode_caption,
    parse_caption,
)
from ..data.shapes_av import AUDIO_FACTOR_NAMES, AUDIO_FACTOR_SIZES, decode_audio_batch
from ..data.spec import DataSpec

#: Translations per source example and source examples used by default (the sample budget).
N_EXAMPLES = 1000
#: Image reader: training steps, learning rate (the classifier of :mod:`.features` on moment features).
READER_STEPS, READER_LR = 1000, 3e-3


# --- the plain-array core ---------------------------------------------------------------------------


def _as_int2d(a: np.ndarray | Tensor | Sequence[Any], what: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be [N, K] factor indices; got shape {arr.shape}")
    if arr.size and not np.array_equal(arr, np.round(arr)):
        raise ValueError(f"{what} must be integer factor indices (negative: unreadable)")
    return arr.astype(np.int64)


def _shuffled_agreement(pred: np.ndarray, true: np.ndarray, matched: np.ndarray) -> float:
    """Mean of match(pred_i, true_j) over all ordered pairs i != j, exactly: from the counts of each
    distinct readable row in both, minus the pairs i == j (``matched``); rows with a negative entry
    match nothing."""
    n = len(pred)
    if n < 2:
        return float("nan")
    vp, vt = pred[(pred >= 0).all(1)], true[(true >= 0).all(1)]
    if not len(vp) or not len(vt):
        return 0.0
    _, inv = np.unique(np.concatenate([vp, vt]), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    k = int(inv.max()) + 1
    cross = float(np.bincount(inv[: len(vp)], minlength=k) @ np.bincount(inv[len(vp) :], minlength=k))
    return (cross - float(matched.sum())) / (n * (n - 1))


def coherence(
    pred: np.ndarray | Tensor | Sequence[Any],
    true: np.ndarray | Tensor | Sequence[Any],
    *,
    factor_names: Sequence[str] | None = None,
    factor_sizes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Coherence of outputs with what they should show: ``pred`` [N, K] factors read from N outputs
    (translations, or one modality of joint samples), ``true`` [N, K] the factors each should have
    (its source's ground truth, or another modality's reading); integer factor indices, negative =
    unreadable (matches nothing). 1-D inputs are one factor.

    Returns ``coherence`` (fraction of rows equal on all K factors), ``per_factor`` {name: fraction},
    ``chance`` and ``chance_per_factor`` (the same outputs against random other rows: the exact mean
    over all pairs i != j), ``chance_uniform`` (product of 1/size; only with ``factor_sizes``),
    ``readable`` (fraction of ``pred`` rows without an unreadable factor), ``factors`` (the names
    compared) and ``n``.
    """
    p, t = _as_int2d(pred, "pred"), _as_int2d(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"pred and true must have the same shape [N, K]; got {p.shape} and {t.shape}")
    n, k = p.shape
    if k == 0:
        raise ValueError("no factors to compare (K = 0)")
    names = [f"factor{i}" for i in range(k)] if factor_names is None else [str(s) for s in factor_names]
    if len(names) != k or (factor_sizes is not None and len(factor_sizes) != k):
        raise ValueError(f"factor_names/factor_sizes must have K = {k} entries")
    match = (p == t) & (p >= 0) & (t >= 0)  # [N, K]
    out: dict[str, Any] = {
        "coherence": float(match.all(1).mean()) if n else float("nan"),
        "per_factor": {nm: float(match[:, i].mean()) if n else float("nan") for i, nm in enumerate(names)},
        "chance": _shuffled_agreement(p, t, match.all(1)),
        "chance_per_factor": {
            nm: _shuffled_agreement(p[:, i : i + 1], t[:, i : i + 1], match[:, i]) for i, nm in enumerate(names)
        },
        "readable": float((p >= 0).all(1).mean()) if n else float("nan"),
        "factors": names,
        "n": int(n),
    }
    if factor_sizes is not None:
        out["chance_uniform"] = float(np.prod([1.0 / int(s) for s in factor_sizes]))
    return out


def joint_coherence(
    reads: Mapping[str, np.ndarray | Tensor],
    factor_names: Mapping[str, Sequence[str]],
    *,
    permutations: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Agreement between the modalities of N jointly generated samples: ``reads[m]`` [N, K_m] are the
    factors read from modality m, ``factor_names[m]`` name its columns.

    Returns ``coherence`` (fraction of samples in which, for every factor two or more modalities
    determine, all of those modalities read the same value), ``chance`` (the same with each
    modality's samples shuffled independently: exact for two modalities, else the mean over
    ``permutations`` seeded shuffles), ``factors`` (the factors compared) and ``pairs``: for each
    pair of modalities ``"a+b"`` sharing factors, :func:`coherence` of a's reading against b's.
    """
    keys = list(reads)
    arr = {m: _as_int2d(reads[m], f"reads[{m!r}]") for m in keys}
    if len(keys) < 2 or len({len(a) for a in arr.values()}) != 1:
        raise ValueError(f"need readings of >= 2 modalities with the same N; got {[(m, len(arr[m])) for m in keys]}")
    names = {m: [str(s) for s in factor_names[m]] for m in keys}
    shared = [f for f in dict.fromkeys(f for m in keys for f in names[m]) if sum(f in names[m] for m in keys) >= 2]
    if not shared:
        raise ValueError("the modalities determine no factor in common")
    pairs = {}
    for a, b in itertools.combinations(keys, 2):
        common = [f for f in names[a] if f in names[b]]
        if common:
            pa = arr[a][:, [names[a].index(f) for f in common]]
            pb = arr[b][:, [names[b].index(f) for f in common]]
            pairs[f"{a}+{b}"] = coherence(pa, pb, factor_names=common)

    def agree(rows: dict[str, np.ndarray]) -> np.ndarray:
        ok = np.ones(len(rows[keys[0]]), dtype=bool)
        for f in shared:
            cols = [rows[m][:, names[m].index(f)] for m in keys if f in names[m]]
            ok &= (cols[0] >= 0) & np.all([c == cols[0] for c in cols[1:]], 0)
        return ok

    n = len(arr[keys[0]])
    if len(keys) == 2:
        chance = next(iter(pairs.values()))["chance"]
    else:
        rng = np.random.default_rng(seed)
        chance = float(
            np.mean(
                [
                    agree({m: (a if i == 0 else a[rng.permutation(n)]) for i, (m, a) in enumerate(arr.items())}).mean()
                    for _ in range(permutations)
                ]
            )
        )
    return {
        "coherence": float(agree(arr).mean()) if n else float("nan"),
        "chance": chance,
        "factors": shared,
        "pairs": pairs,
        "n": int(n),
    }


# --- factor readers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FactorReader:
    """Reads generative factors back from one modality: ``read(x [N, *shape]) -> int64 [N, K]`` in
    the order of ``factor_names`` (negative = unreadable)."""

    modality: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    read: Callable[[Tensor], np.ndarray]


def image_reader_features(x: Tensor) -> Tensor:
    """Images [N, C, H, W] in [0, 1] (one object on a dark background) -> features [N, 13 + C] float32.

    The object's centre is the per-axis median of the pixels brighter than 0.5 (of the brightest
    pixels if none is), robust to a few stray pixels; the (H/2) x (W/2) window around it is cropped
    and its intensity I (the maximum over channels) summarised by: log area (sum of I over H*W),
    the normalised central moments' rotation invariants (Hu's first four), the raw second- and
    third-order normalised moments (they carry orientation, which moves a heart's centroid), the
    centroid as fractions of H and W, and the I-weighted mean colour. Each is scaled to a spread of
    about 1 on ``shapes-captions``, so the classifier's input noise (0.03) blurs none of them.
    """
    x = torch.nan_to_num(x.detach().float().cpu(), nan=0.0).clamp(0, 1)
    n, c, h, w = x.shape
    ch, cw = max(h // 2, 2), max(w // 2, 2)
    inten = x.amax(1)  # (N, H, W)
    mask = inten > 0.5
    mask = torch.where(mask.flatten(1).any(1)[:, None, None], mask, inten >= inten.flatten(1).amax(1)[:, None, None])

    def median_index(counts: Tensor) -> Tensor:  # first index where the cumulative count reaches half
        cum = counts.cumsum(1)
        return (cum < cum[:, -1:] / 2).sum(1)

    iy, ix = median_index(mask.sum(2).float()), median_index(mask.sum(1).float())
    py, px = ch // 2, cw // 2
    padded = torch.nn.functional.pad(x, (px, cw - px, py, ch - py))
    rows = (iy[:, None] + torch.arange(ch)[None])[:, :, None].expand(n, ch, cw)  # padded coordinates
    cols = (ix[:, None] + torch.arange(cw)[None])[:, None, :].expand(n, ch, cw)
    crop = padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)  # (N,C,ch,cw)
    i = crop.amax(1)  # (N, ch, cw)
    m00 = i.sum((1, 2)).clamp_min(1e-6)
    gy = torch.arange(ch, dtype=torch.float32)[None, :, None]
    gx = torch.arange(cw, dtype=torch.float32)[None, None, :]
    cy, cx = (i * gy).sum((1, 2)) / m00, (i * gx).sum((1, 2)) / m00
    dy, dx = gy - cy[:, None, None], gx - cx[:, None, None]

    def eta(p: int, q: int) -> Tensor:  # scale-invariant normalised central moment
        return (i * dx**p * dy**q).sum((1, 2)) / m00 ** (1 + (p + q) / 2)

    n20, n02, n11, n30, n03, n21, n12 = eta(2, 0), eta(0, 2), eta(1, 1), eta(3, 0), eta(0, 3), eta(2, 1), eta(1, 2)
    hu1 = n20 + n02
    hu2 = (n20 - n02) ** 2 + 4 * n11**2
    hu3 = (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2
    hu4 = (n30 + n12) ** 2 + (n21 + n03) ** 2
    abs_y = (iy - py + cy + 0.5) / h  # centroid in image coordinates, as fractions
    abs_x = (ix - px + cx + 0.5) / w
    colour = (crop * i[:, None]).sum((2, 3)) / m00[:, None]
    feats = [
        2 * torch.log(m00 / (h * w) * 1024),
        60 * hu1,
        200 * hu2,
        100 * hu3.sqrt(),
        100 * hu4.sqrt(),
        30 * (n20 - n02),
        60 * n11,
        300 * n30,
        300 * n03,
        300 * n21,
        300 * n12,
        20 * abs_y,
        20 * abs_x,
    ]
    return torch.cat([torch.stack(feats, 1), 3 * colour], 1)


class ImageFactorReader:
    """A trained image reader: images [N, C, H, W] -> factor indices [N, K] (see :func:`train_image_reader`)."""

    def __init__(self, classifier: Any, factor_names: Sequence[str], factor_sizes: Sequence[int]) -> None:
        self.classifier = classifier  # a genlab.metrics.features.ClassifierFeatures
        self.factor_names, self.factor_sizes = tuple(factor_names), tuple(int(s) for s in factor_sizes)

    @torch.no_grad()
    def __call__(self, x: Tensor, batch_size: int = 4096) -> np.ndarray:
        out = []
        for start in range(0, len(x), batch_size):
            logits = self.classifier.net(image_reader_features(x[start : start + batch_size]))
            out.append(torch.stack([lg.argmax(-1) for lg in logits], 1))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.factor_names)), dtype=np.int64)


def train_image_reader(
    train: TensorDataset,
    factors: np.ndarray | Tensor,
    factor_names: Sequence[str],
    factor_sizes: Sequence[int],
    *,
    steps: int = READER_STEPS,
    lr: float = READER_LR,
    seed: int = 0,
    cache: bool = True,
) -> ImageFactorReader:
    """Train (or load from the cache) a reader of ``factors`` [N, K] from the images ``train.tensors["x"]``
    (the training split): :func:`genlab.metrics.features.train_classifier` -- its multi-head classifier,
    held-out check, seeding and cache (``$GENLAB_CACHE/features/featnet-<content hash>``) -- on
    :func:`image_reader_features` of at most 20,000 images. About 10 s on one CPU thread."""
    from .features import train_classifier

    f = torch.as_tensor(np.asarray(factors), dtype=torch.long)[:20000]
    feats = image_reader_features(train.tensors["x"][: len(f)])
    spec = DataSpec(
        name=f"{train.spec.name}-image-reader",
        kind="vector",
        shape=(int(feats.shape[1]),),
        value_range=None,
        factor_names=tuple(factor_names),
        factor_sizes=tuple(int(s) for s in factor_sizes),
    )
    clf = train_classifier(
        TensorDataset({"x": feats, "factors": f}, spec, "train"), steps=steps, lr=lr, seed=seed, cache=cache
    )
    return ImageFactorReader(clf, factor_names, factor_sizes)


# --- readers and ground truth of the built-in multimodal data sets --------------------------------------


def has_factor_readers(spec: DataSpec) -> bool:
    """Whether genlab can read factors back from every modality of data sets like ``spec``
    (``shapes-captions``, ``shapes-av``: the caption-set factors)."""
    return "caption_factor_names" in spec.extra and tuple(spec.factor_names or ()) == CAPTION_GRID.factor_names


def true_factors(factors: np.ndarray | Tensor) -> np.ndarray:
    """Ground-truth factor rows of ``shapes-captions``/``shapes-av`` [N, 6] -> the captioned factors
    [N, 5] (shape, scale, colour, region_x, region_y) the readers compare against."""
    return caption_factors(factors.cpu().numpy() if isinstance(factors, Tensor) else np.asarray(factors))


def _read_captions(ids: Tensor) -> np.ndarray:
    out = np.full((len(ids), len(CAPTION_FACTOR_NAMES)), -1, dtype=np.int64)
    for i, row in enumerate(ids.detach().cpu().numpy()):
        try:
            parsed = parse_caption(decode_caption(row))
        except InvalidDataError:
            continue  # not a caption: unreadable, matches nothing
        out[i] = [parsed[k] for k in CAPTION_FACTOR_NAMES]
    return out


def factor_readers(
    spec: DataSpec, train: TensorDataset | None = None, *, cache: bool = True
) -> dict[str, FactorReader]:
    """The :class:`FactorReader` of every modality of ``spec`` (``has_factor_readers`` must hold).

    The image reader is trained on ``train`` (the training split; see :func:`train_image_reader`)
    when it first reads, so asking for the readers costs nothing; without ``train`` it cannot read."""
    if not has_factor_readers(spec):
        raise ValueError(
            f"data set {spec.name!r} has no factor readers for coherence; expected shapes-captions or shapes-av"
        )
    keys = spec.modality_keys
    readers: dict[str, FactorReader] = {}
    if "x" in keys:
        trained: list[ImageFactorReader] = []

        def read_images(x: Tensor) -> np.ndarray:
            if not trained:
                if train is None or "factors" not in train.tensors:
                    raise ValueError(
                        "the image factor reader learns from the training split: pass train=<TensorDataset>"
                    )
                fac = true_factors(train.tensors["factors"])
                trained.append(train_image_reader(train, fac, CAPTION_FACTOR_NAMES, CAPTION_FACTOR_SIZES, cache=cache))
            return trained[0](x)

        readers["x"] = FactorReader("x", CAPTION_FACTOR_NAMES, CAPTION_FACTOR_SIZES, read_images)
    if "text" in keys:
        readers["text"] = FactorReader("text", CAPTION_FACTOR_NAMES, CAPTION_FACTOR_SIZES, _read_captions)
    if "audio" in keys:
        readers["audio"] = FactorReader(
            "audio",
            AUDIO_FACTOR_NAMES,
            AUDIO_FACTOR_SIZES,
            lambda a: decode_audio_batch(torch.nan_to_num(a.detach().cpu().double()).clamp(-1, 1)),
        )
    return readers


# --- driving a model ----------------------------------------------------------------------------------


def _subsets(keys: Sequence[str], largest: int) -> list[tuple[str, ...]]:
    return [s for r in range(1, largest + 1) for s in itertools.combinations(keys, r)]


@torch.no_grad()
def cross_modal_coherence(
    model: Any,
    dataset: TensorDataset,
    *,
    reference: TensorDataset | None = None,
    readers: Mapping[str, FactorReader] | None = None,
    n_examples: int = N_EXAMPLES,
    n_per_source: int = 1,
    seed: int = 0,
    batch_size: int = 250,
    mean: bool = False,
    more_sources: bool = True,
) -> dict[str, Any]:
    """Cross-modal, multi-source and joint coherence of a multimodal ``model`` (Shi et al. 2019).

    Inputs: ``model`` with ``capabilities.modalities`` (its batch keys), ``translate(source, targets,
    n=, generator=, mean=)`` and ``sample(n, generator=)``; ``dataset`` the evaluated split (holding
    those keys and the ``"factors"`` rows of ``shapes-captions``/``shapes-av``, whose captioned factors
    are the ground truth); ``reference`` the training split the image reader learns from (default:
    ``dataset``); ``readers`` to replace the built-in :func:`factor_readers` (their factor names must
    be among the captioned factors).

    Budget: ``n_examples`` source examples (a seeded subset of ``dataset``), ``n_per_source``
    translations of each for every source set -- each single modality and, with ``more_sources``,
    each set of two or more (``{text, audio} -> x`` against ``text -> x``: does adding a modality
    help?), every modality outside the set a target -- and ``n_examples`` joint samples. Draws, not
    means, unless ``mean``.

    Returns a dict: ``directions`` {``"text->x"``, ``"text+audio->x"``, ...: :func:`coherence` of the
    target's reading of each translation against its source's ground truth, on the factors the target
    and at least one source determine, plus ``sources`` and ``target``}; ``joint``
    (:func:`joint_coherence` of the joint samples); ``reader_accuracy`` {modality: :func:`coherence`
    of its reader on the real examples: the ceiling of coherence measured with it}; ``n_examples``,
    ``n_per_source``. :func:`flatten_coherence` turns it into ``eval.json`` keys.
    """
    keys = tuple(model.capabilities.modalities)
    if len(keys) < 2:
        raise ValueError(f"coherence needs a multimodal model; {type(model).__name__} models one modality")
    if "factors" not in dataset.tensors:
        raise ValueError(f"data set {dataset.spec.name!r} has no ground-truth factors to measure coherence against")
    missing = [k for k in keys if k not in dataset.tensors]
    if missing:
        raise ValueError(f"data set {dataset.spec.name!r} has no modality {missing[0]!r} of the model")
    if n_examples < 2 or n_per_source < 1:
        raise ValueError(f"need n_examples >= 2 and n_per_source >= 1; got {n_examples}, {n_per_source}")
    if readers is None:
        readers = factor_readers(dataset.spec, reference if reference is not None else dataset)
    lacking = [k for k in keys if k not in readers]
    if lacking:
        raise ValueError(f"no factor reader for modality {lacking[0]!r}")
    model.eval()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    n = min(n_examples, len(dataset))
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(dataset), n, replace=False)))
    data = {k: dataset.tensors[k][idx] for k in keys}
    truth_all = true_factors(dataset.tensors["factors"][idx])
    truth_names = list(readers[keys[0]].factor_names)
    for k in keys[1:]:
        truth_names += [f for f in readers[k].factor_names if f not in truth_names]
    truth = truth_all[:, [CAPTION_FACTOR_NAMES.index(f) for f in truth_names]]
    gen = torch.Generator(device=model.device).manual_seed(seed)

    def to_model(v: Tensor) -> Tensor:
        return v.to(model.device, dtype) if v.is_floating_point() else v.to(model.device)

    def read(key: str, x: Tensor) -> np.ndarray:
        return np.asarray(readers[key].read(x.cpu()), dtype=np.int64).reshape(len(x), -1)

    def cols(key: str, names: Sequence[str]) -> list[int]:
        return [readers[key].factor_names.index(f) for f in names]

    directions: dict[str, Any] = {}
    for sources in _subsets(keys, len(keys) - 1 if more_sources else 1):
        targets = [k for k in keys if k not in sources]
        outs: dict[str, list[Tensor]] = {t: [] for t in targets}
        for start in range(0, n, batch_size):
            src = {s: to_model(data[s][start : start + batch_size]) for s in sources}
            res = model.translate(src, targets, n=n_per_source, generator=gen, mean=mean)
            for t in targets:
                outs[t].append(res[t].detach().cpu())
        for t in targets:
            known = {f for s in sources for f in readers[s].factor_names}
            names = [f for f in readers[t].factor_names if f in known]
            if not names:  # the sources determine nothing the target shows
                continue
            pred = read(t, torch.cat(outs[t]))[:, cols(t, names)]
            true = np.repeat(truth[:, [truth_names.index(f) for f in names]], n_per_source, axis=0)  # example-major
            sizes = [readers[t].factor_sizes[readers[t].factor_names.index(f)] for f in names]
            directions[f"{'+'.join(sources)}->{t}"] = {
                **coherence(pred, true, factor_names=names, factor_sizes=sizes),
                "sources": list(sources),
                "target": t,
            }
    joint_parts: dict[str, list[Tensor]] = {k: [] for k in keys}
    for start in range(0, n, batch_size):
        s = model.sample(min(batch_size, n - start), generator=gen, **({"mean": True} if mean else {}))
        for k in keys:
            joint_parts[k].append(s[k].detach().cpu())
    joint = joint_coherence(
        {k: read(k, torch.cat(joint_parts[k])) for k in keys},
        {k: readers[k].factor_names for k in keys},
        seed=seed,
    )
    accuracy = {}
    for k in keys:
        names = list(readers[k].factor_names)
        accuracy[k] = coherence(
            read(k, data[k]),
            truth[:, [truth_names.index(f) for f in names]],
            factor_names=names,
            factor_sizes=readers[k].factor_sizes,
        )
    return {
        "directions": directions,
        "joint": joint,
        "reader_accuracy": accuracy,
        "n_examples": n,
        "n_per_source": n_per_source,
    }


def flatten_coherence(result: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`cross_modal_coherence`'s result as flat ``eval.json`` keys:

    ``coherence/text->x`` (all factors), ``coherence/text->x/<factor>``, ``chance/text->x``,
    ``factors/text->x`` (the compared factors, comma-separated), ``readable/x->text`` (the fraction
    of outputs the target's reader could read: captions that parse) for every direction (``text+audio->x``
    for several sources); ``coherence/joint``, ``chance/joint``, ``factors/joint``,
    ``coherence/joint/x+text``, ``chance/joint/x+text``; ``reader_accuracy/x`` and
    ``reader_accuracy/x/<factor>`` per modality; ``coherence_examples``, ``coherence_per_source``."""
    out: dict[str, Any] = {}
    for name, d in result["directions"].items():
        out[f"coherence/{name}"] = d["coherence"]
        out[f"chance/{name}"] = d["chance"]
        out[f"factors/{name}"] = ",".join(d["factors"])
        out[f"readable/{name}"] = d["readable"]
        out.update({f"coherence/{name}/{f}": v for f, v in d["per_factor"].items()})
    j = result["joint"]
    out.update(
        {"coherence/joint": j["coherence"], "chance/joint": j["chance"], "factors/joint": ",".join(j["factors"])}
    )
    for pair, d in j["pairs"].items():
        out[f"coherence/joint/{pair}"] = d["coherence"]
        out[f"chance/joint/{pair}"] = d["chance"]
    for k, d in result["reader_accuracy"].items():
        out[f"reader_accuracy/{k}"] = d["coherence"]
        out.update({f"reader_accuracy/{k}/{f}": v for f, v in d["per_factor"].items()})
    out["coherence_examples"] = result["n_examples"]
    out["coherence_per_source"] = result["n_per_source"]
    return out
