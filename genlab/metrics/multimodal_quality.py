"""Per-modality quality of multimodal generative models: what each modality alone is worth, how much
each modality tells about another, how good the generated images are, and what the shared latent knows.

For a multimodal model (``capabilities.modalities``: its batch keys, e.g. ``x`` image, ``text``
caption tokens, ``audio`` clip) on a split of its data, :func:`modality_quality` reports

1. **Marginal bounds.** log p(x_m) >= IWAE-k = E log (1/k) sum_i p(z_i) p(x_m | z_i) / q_m(z_i | x_m)
   for each modality m alone (``model.log_prob({m: x_m}, k=k)``; Burda et al. 2016), in nats per
   example and in the modality's natural unit (:func:`modality_unit`): bits per token for token ids,
   bits per sample for audio, bits per dimension for images and vectors -- all -log p / (D ln 2) with
   D the modality's number of values (tokens: every position of the caption, padding included, since
   the model scores each), plus the dequantization term D ln L of :func:`~.likelihood.bits_per_dim`
   for a density (``model.discrete`` False) on data with L levels. genlab's multimodal VAEs return
   masses on the levels (``discrete=True``), so no offset applies to them. The joint bound over all
   modalities is reported on the same examples with the same k (``joint/...``), so that
   joint - sum of marginals estimates how much the modalities share.
2. **Conditional estimates.** log p(x_t | x_S) ~= log (1/k) sum_i p(x_t | z_i), z_i ~ q_S(z | x_S)
   (``model.log_prob({S..., t: x_t}, given=S, k=k)``) for every ordered pair of modalities (and, with
   ``more_sources``, every larger source set S) in nats and the target's unit, beside the target's
   marginal bound. This is an *estimate*, not a bound: the encoder's q_S replaces the posterior
   p(z | x_S) (see :mod:`genlab.models.multimodal`); it is exact only when q_S is. The difference
   conditional - marginal (``gain_nats``) estimates the pointwise mutual information
   log p(x_t | x_S) / p(x_t), averaged over examples: how many nats the source saves on the target.
   Both sides are estimates with their own biases: the marginal is a lower bound, loose by the IWAE
   gap; the conditional is, by Jensen, below log E_{q_S}[p(x_t | z)] in expectation, and far below it
   when q_S is much broader than where p(x_t | z) is large (a 1,000-sample clip given a caption) and k
   is small. A negative gain therefore says the estimate needs more k (or a better q_S), not that the
   source hurts. ``gain_nats_se`` is the gain's standard error over examples (not over the draws).
3. **Image quality.** FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) of the image modality of
   ``n_samples`` joint samples (``model.sample(n)[m]``) against the evaluated split's real images, on
   genlab's local feature network (:mod:`.features`; ``features="auto"``: a classifier trained on the
   training split's images and labels/factors, else random features), with the real-vs-real
   ``fid_reference`` beside it (the FID of as many training images: the floor at this sample size),
   exactly as :func:`genlab.evaluate.sample_metrics` computes them for single-modality models.
4. **Linear probe of the shared latent.** For each source set -- each modality alone and all together --
   ``model.encode(subset)`` (the posterior mean of the shared z) of up to ``probe_examples`` training
   examples trains one multinomial logistic regression per ground-truth factor (scikit-learn, on
   standardized codes), scored on the evaluated split's codes (held-out accuracy), with the
   majority-class baseline (the training split's most frequent value, scored on the same test labels).
   Factors: the captioned factors of ``shapes-captions``/``shapes-av`` (shape, scale, colour, region_x,
   region_y; as :mod:`.coherence` reads them), else the data's own ``"factors"`` rows; data without
   factors (user image-caption folders) get the note ``probe/skipped`` instead.

Budget (the defaults, as ``genlab eval`` runs them with ``--n-samples 1000 --k 100``): ``n_examples``
evaluated examples (a seeded subset) for the bounds and the probe's test side, each scored by
M + 1 + M(M - 1) (+ larger sources) importance-sampled log_probs of k draws; ``n_samples`` joint
samples for FID/KID; ``probe_examples`` encoded training examples per source set. On one CPU thread a
default-sized ``mvae`` on 32x32 ``shapes-av`` spends about 0.1 s per example on each estimate that
decodes the image at k=100 (5 of its 13: x, joint, text->x, audio->x, text+audio->x), about ten minutes
for 1,000 examples (the others take a tenth of that); a GPU makes it seconds. ``--k 10`` divides it by ten.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.base import TensorDataset
from ..data.spec import DataSpec
from .likelihood import multimodal_bits_per_dim

#: Evaluated examples for the bounds and the probe's test codes; joint samples for FID/KID.
N_EXAMPLES, N_SAMPLES = 1000, 1000
#: Training examples encoded per source set for the linear probe.
PROBE_EXAMPLES = 5000
#: Iterations of the probe's L-BFGS and its inverse regularization strength (scikit-learn's C).
PROBE_MAX_ITER, PROBE_C = 1000, 1.0


# --- units ------------------------------------------------------------------------------------------


def modality_unit(spec: DataSpec) -> str:
    """The natural unit of a single-modality spec: ``bits_per_token`` (tokens), ``bits_per_sample``
    (audio) or ``bits_per_dim`` (images, vectors)."""
    return {"tokens": "bits_per_token", "audio": "bits_per_sample"}.get(spec.kind, "bits_per_dim")


def modality_bits(log_prob_nats: float, spec: DataSpec, keys: Sequence[str], discrete: bool) -> float:
    """A log-likelihood (nats per example) of the modalities ``keys`` of ``spec`` in bits per value:
    (-log p + offset) / (D ln 2), D = their number of values (tokens, audio samples, pixels), the
    offset D ln L of a density on L-level data (never for tokens, never for a mass); the conventions of
    :func:`~.likelihood.multimodal_bits_per_dim`, which this calls. For one token modality of T
    positions: -log p / (T ln 2) bits per token."""
    return multimodal_bits_per_dim(log_prob_nats, spec, tuple(keys), discrete)


# --- the linear probe -------------------------------------------------------------------------------


def linear_probe(
    train_codes: np.ndarray | Tensor,
    train_labels: np.ndarray | Tensor,
    test_codes: np.ndarray | Tensor,
    test_labels: np.ndarray | Tensor,
    *,
    c: float = PROBE_C,
    max_iter: int = PROBE_MAX_ITER,
) -> tuple[float, float]:
    """Held-out accuracy of a multinomial logistic regression from codes [N, Z] to one factor [N]
    (integer classes), and the majority-class baseline: the accuracy on ``test_labels`` of always
    predicting the most frequent training label. Codes are standardized with the training codes'
    mean and standard deviation; L2 regularization ``c`` (scikit-learn's C), L-BFGS (deterministic)."""
    from sklearn.linear_model import LogisticRegression

    def arr(a: np.ndarray | Tensor) -> np.ndarray:
        return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)

    xtr, xte = arr(train_codes).astype(np.float64), arr(test_codes).astype(np.float64)
    ytr, yte = arr(train_labels).astype(np.int64).ravel(), arr(test_labels).astype(np.int64).ravel()
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1] or len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError(
            f"need codes [N, Z] with one label each and the same Z; got train {xtr.shape} / {ytr.shape}, "
            f"test {xte.shape} / {yte.shape}"
        )
    if not len(xtr) or not len(xte):
        raise ValueError("the linear probe needs at least one training and one test example")
    if not (np.isfinite(xtr).all() and np.isfinite(xte).all()):
        raise ValueError("codes hold NaN or inf values")
    values, counts = np.unique(ytr, return_counts=True)
    majority = values[counts.argmax()]
    baseline = float((yte == majority).mean())
    if len(values) == 1:  # one class seen: the probe can only predict it
        return baseline, baseline
    mu, sd = xtr.mean(0), xtr.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)  # a constant code dimension stays 0
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit((xtr - mu) / sd, ytr)
    return float((clf.predict((xte - mu) / sd) == yte).mean()), baseline


def probe_targets(dataset: TensorDataset) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """The factors [N, K] the probe predicts and their names: the captioned factors of
    ``shapes-captions``/``shapes-av`` (:func:`.coherence.true_factors`), else the data's own
    ``"factors"`` rows (named by the spec); None for data without factors."""
    from .coherence import CAPTION_FACTOR_NAMES, has_factor_readers, true_factors

    if "factors" not in dataset.tensors:
        return None
    if has_factor_readers(dataset.spec):
        return true_factors(dataset.tensors["factors"]), tuple(CAPTION_FACTOR_NAMES)
    f = dataset.tensors["factors"].long().cpu().numpy()
    names = dataset.spec.factor_names or tuple(f"factor{i}" for i in range(f.shape[1]))
    return f, tuple(names)


# --- driving a model ----------------------------------------------------------------------------------


def _seeded_subset(n_total: int, n: int, seed: int) -> Tensor:
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n_total, min(n, n_total), replace=False)))


def _source_sets(keys: Sequence[str], more_sources: bool) -> list[tuple[str, ...]]:
    largest = len(keys) - 1 if more_sources else 1
    return [s for r in range(1, largest + 1) for s in itertools.combinations(keys, r)]


class _Driver:
    """Feeds a model batches of a fixed set of examples, on its device and in its float dtype."""

    def __init__(self, model: Any, data: dict[str, Tensor], batch_size: int) -> None:
        self.model, self.data, self.batch_size = model, data, max(1, int(batch_size))
        self.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        self.n = len(next(iter(data.values())))

    def batches(self, keys: Sequence[str]) -> list[dict[str, Tensor]]:
        def put(v: Tensor) -> Tensor:
            return v.to(self.model.device, self.dtype) if v.is_floating_point() else v.to(self.model.device)

        return [
            {m: put(self.data[m][i : i + self.batch_size]) for m in keys} for i in range(0, self.n, self.batch_size)
        ]

    def log_prob(self, keys: Sequence[str], given: Sequence[str], k: int | None) -> np.ndarray:
        """[n] float64 per-example log_prob of the modalities ``keys`` (``given``: conditioned on those)."""
        kw: dict[str, Any] = {} if k is None else {"k": k}
        if given:
            kw["given"] = list(given)
        return np.concatenate(
            [self.model.log_prob(b, **kw).double().cpu().numpy().reshape(-1) for b in self.batches(keys)]
        )

    def encode(self, keys: Sequence[str]) -> np.ndarray:
        return np.concatenate([self.model.encode(b).double().cpu().numpy() for b in self.batches(keys)])


def _bounds(model: Any, spec: DataSpec, drv: _Driver, k: int | None, more_sources: bool) -> dict[str, Any]:
    keys = tuple(model.capabilities.modalities)
    discrete = bool(getattr(model, "discrete", False))
    out: dict[str, Any] = {}

    def put(prefix: str, lp: np.ndarray, targets: tuple[str, ...]) -> float:
        mean = float(lp.mean())
        unit = modality_unit(spec.modality(targets[0])) if len(targets) == 1 else "bits_per_dim"
        out[f"{prefix}/nats"] = mean
        out[f"{prefix}/{unit}"] = modality_bits(mean, spec, targets, discrete)
        return mean

    marginal = {}
    for m in keys:
        marginal[m] = drv.log_prob((m,), (), k)
        put(f"modality/{m}", marginal[m], (m,))
        out[f"modality/{m}/dims"] = spec.modality(m).dim
    put("joint", drv.log_prob(keys, (), k), keys)
    for sources in _source_sets(keys, more_sources):
        for t in (t for t in keys if t not in sources):
            name = f"conditional/{'+'.join(sources)}->{t}"
            lp = drv.log_prob((*sources, t), sources, k)
            put(name, lp, (t,))
            gain = lp - marginal[t]  # per example: an estimate of the pointwise mutual information
            out[f"{name}/gain_nats"] = float(gain.mean())
            out[f"{name}/gain_nats_se"] = float(gain.std(ddof=1) / math.sqrt(len(gain))) if len(gain) > 1 else math.nan
    return out


def _view(dataset: TensorDataset, key: str) -> TensorDataset:
    """Modality ``key`` of a multimodal split as a single-modality data set (``"x"`` = that modality),
    with the split's labels and factors, so the feature networks of :mod:`.features` train on it."""
    spec = dataset.spec
    sub = dataclasses.replace(
        spec.modality(key),
        name=f"{spec.name}/{key}",
        num_classes=spec.num_classes,
        class_names=spec.class_names,
        factor_names=spec.factor_names,
        factor_sizes=spec.factor_sizes,
    )
    tensors = {"x": dataset.tensors[key], **{t: dataset.tensors[t] for t in ("y", "factors") if t in dataset.tensors}}
    return TensorDataset(tensors, sub, dataset.split)


@torch.no_grad()
def _image_quality(
    model: Any,
    dataset: TensorDataset,
    reference: TensorDataset | None,
    n_samples: int,
    features: str,
    batch_size: int,
    seed: int,
    sample_metrics: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    keys = tuple(model.capabilities.modalities)
    images = [m for m in keys if dataset.spec.modality(m).kind == "image"]
    if not images:
        return {}
    gen = torch.Generator(device=model.device).manual_seed(seed)
    parts: dict[str, list[Tensor]] = {m: [] for m in images}
    for start in range(0, n_samples, batch_size):
        s = model.sample(min(batch_size, n_samples - start), generator=gen)
        for m in images:
            parts[m].append(s[m].detach().float().cpu())
    out: dict[str, Any] = {"modalities_samples": n_samples}
    for m in images:
        ref = None if reference is None or reference is dataset else _view(reference, m)
        res = sample_metrics(
            torch.cat(parts[m]), _view(dataset, m), ["fid", "kid"], reference=ref, features=features, seed=seed
        )
        out[f"fid/{m}"] = res["fid"]
        if "fid_reference" in res:
            out[f"fid_reference/{m}"] = res["fid_reference"]
        out[f"kid/{m}"], out[f"kid_std/{m}"] = res["kid_mean"], res["kid_std"]
        out[f"features/{m}"] = res["features"]
        if "feature_classifier_accuracy" in res:
            out[f"feature_classifier_accuracy/{m}"] = res["feature_classifier_accuracy"]
    return out


@torch.no_grad()
def _probe(
    model: Any,
    dataset: TensorDataset,
    reference: TensorDataset | None,
    test_idx: Tensor,
    probe_examples: int,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    keys = tuple(model.capabilities.modalities)
    train_set = dataset if reference is None else reference
    test_t, train_t = probe_targets(dataset), probe_targets(train_set)
    if test_t is None or train_t is None:
        lacking = dataset if test_t is None else train_set
        return {"probe/skipped": f"data set {lacking.spec.name!r} ({lacking.split}) has no ground-truth factors"}
    (test_f, names), (train_f, _) = test_t, train_t
    if train_set is dataset:  # one split: disjoint seeded halves-ish, the test side as large as asked
        perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(dataset)))
        n_test = min(len(test_idx), len(dataset) // 2)
        test_idx, train_idx = perm[:n_test], perm[n_test : n_test + probe_examples]
    else:
        train_idx = _seeded_subset(len(train_set), probe_examples, seed)
    if not len(train_idx) or not len(test_idx):
        return {"probe/skipped": f"too few examples for a held-out probe ({len(dataset)} in the split)"}
    train_drv = _Driver(model, {m: train_set.tensors[m][train_idx] for m in keys}, batch_size)
    test_drv = _Driver(model, {m: dataset.tensors[m][test_idx] for m in keys}, batch_size)
    ytr, yte = train_f[train_idx.numpy()], test_f[test_idx.numpy()]
    out: dict[str, Any] = {"probe_train_examples": len(train_idx), "probe_test_examples": len(test_idx)}
    for sources in [(m,) for m in keys] + [keys]:
        ztr, zte = train_drv.encode(sources), test_drv.encode(sources)
        for j, f in enumerate(names):
            acc, base = linear_probe(ztr, ytr[:, j], zte, yte[:, j])
            out[f"probe/{'+'.join(sources)}/{f}"] = acc
            out[f"probe_baseline/{f}"] = base
    return out


@torch.no_grad()
def modality_quality(
    model: Any,
    dataset: TensorDataset,
    *,
    reference: TensorDataset | None = None,
    k: int | None = 100,
    n_examples: int = N_EXAMPLES,
    n_samples: int = N_SAMPLES,
    probe_examples: int = PROBE_EXAMPLES,
    features: str = "auto",
    batch_size: int = 64,
    seed: int = 0,
    more_sources: bool = True,
    image_metrics: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Per-modality bounds, conditional estimates, image FID/KID and a linear probe of the shared
    latent of a multimodal ``model`` on ``dataset`` (the evaluated split); see the module docstring.

    ``model``: ``capabilities.modalities`` (its batch keys), ``log_prob(dict, k=, given=)``,
    ``sample(n, generator=)`` -> dict, ``encode(dict)`` -> [B, Z]; parts whose capability the model
    lacks (``likelihood == "none"``, no ``sample``, no ``encode``) are left out with a note key
    (``modality/skipped`` ...). ``reference``: the training split (trains the feature network and the
    probe; None: ``dataset`` itself, the probe then trains and tests on disjoint halves of it).
    ``k``: importance samples (None: the model's default); ``batch_size``: examples per log_prob call
    (each decodes k latents per example).

    Returns a flat JSON-safe dict (log-likelihoods in nats per example are log p, the bits are costs):
    ``modality/<m>/nats``, ``modality/<m>/<unit>`` (``bits_per_token``, ``bits_per_sample``,
    ``bits_per_dim``), ``modality/<m>/dims``; ``joint/nats``, ``joint/bits_per_dim``;
    ``conditional/<s>-><t>/nats``, ``conditional/<s>-><t>/<unit of t>``, ``.../gain_nats`` (conditional -
    marginal of t: the pointwise mutual information estimate), ``.../gain_nats_se`` (``<s>`` a
    ``+``-joined source set for more than one source); per image modality ``fid/<m>``,
    ``fid_reference/<m>`` (real vs real; absent when ``dataset`` is the reference), ``kid/<m>``,
    ``kid_std/<m>``, ``features/<m>``, ``feature_classifier_accuracy/<m>``; ``probe/<source set>/<factor>``
    (held-out accuracy), ``probe_baseline/<factor>`` (majority class), ``probe_train_examples``,
    ``probe_test_examples`` or ``probe/skipped`` (a reason); and the budget ``modalities_examples``,
    ``modalities_k``, ``modalities_samples``. FID/KID need ``image_metrics``, the
    ``genlab.evaluate.sample_metrics`` function that :func:`genlab.evaluate` passes (metrics may not
    import evaluate); without it they are skipped with a ``fid/skipped`` note.
    """
    keys = tuple(model.capabilities.modalities)
    if len(keys) < 2:
        raise ValueError(f"per-modality quality needs a multimodal model; {type(model).__name__} models one modality")
    missing = [m for m in keys if m not in dataset.tensors]
    if missing:
        raise ValueError(f"data set {dataset.spec.name!r} has no modality {missing[0]!r} of the model")
    if n_examples < 2 or n_samples < 2 or probe_examples < 2 or (k is not None and k < 1):
        raise ValueError(
            f"need n_examples, n_samples, probe_examples >= 2 and k >= 1; got {n_examples}, {n_samples}, "
            f"{probe_examples}, {k}"
        )
    if reference is not None:
        lacking = [m for m in keys if m not in reference.tensors]
        if lacking:
            raise ValueError(f"reference data set {reference.spec.name!r} has no modality {lacking[0]!r}")
    model.eval()
    caps = model.capabilities
    idx = _seeded_subset(len(dataset), n_examples, seed)
    out: dict[str, Any] = {"modalities_examples": len(idx)}
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # log_prob draws from the global generator
        torch.manual_seed(seed)
        if model.likelihood == "none":
            out["modality/skipped"] = f"{type(model).__name__} has no log_prob"
        else:
            kk = k if caps.iwae else None
            out["modalities_k"] = kk if kk is not None else getattr(model, "iwae_k", 1)
            drv = _Driver(model, {m: dataset.tensors[m][idx] for m in keys}, batch_size)
            out.update(_bounds(model, dataset.spec, drv, kk, more_sources))
    if not caps.sample:
        out["fid/skipped"] = f"{type(model).__name__} cannot sample"
    elif image_metrics is None:
        out["fid/skipped"] = "no image_metrics given (genlab.evaluate passes its sample_metrics)"
    else:
        out.update(_image_quality(model, dataset, reference, n_samples, features, batch_size, seed, image_metrics))
    if caps.encode:
        out.update(_probe(model, dataset, reference, idx, probe_examples, batch_size, seed))
    else:
        out["probe/skipped"] = f"{type(model).__name__} has no encoder"
    return out
