"""``genlab.evaluate``: the metrics that apply to a model, chosen from its declared capabilities.

Likelihood metrics need ``log_prob`` (``likelihood`` exact or bound); the IWAE bound needs a bound
model whose ``log_prob`` takes ``k`` (``capabilities.iwae``); ``recon`` needs
``capabilities.reconstruct``; disentanglement needs ``capabilities.encode``. Sample-based metrics
need ``capabilities.sample`` on image or vector data and run on a feature network
(:mod:`genlab.metrics.features`): so every family -- VAE, flow, autoregressive, GAN -- is compared
on the same footing. Multimodal models (``capabilities.modalities``) on data whose factors can be read
back from every modality get cross-modal ``coherence`` (:mod:`genlab.metrics.coherence`); every
multimodal model gets ``modalities`` (:mod:`genlab.metrics.multimodal_quality`): per-modality and
conditional likelihoods, FID/KID of its images, a linear probe of its shared latent.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data.base import TensorDataset
from .metrics.likelihood import likelihood_metrics
from .protocol import GenerativeModel

#: dynamic: a text file's split read by a copy of an LM that keeps learning from what it has scored.
LIKELIHOOD_METRICS = ("likelihood", "iwae", "dynamic", "recon")
#: fid: FID (+ fid_reference, the real-vs-real floor); kid: KID mean/std; pr: precision/recall;
#: dc: density/coverage; classes: classes covered (mode collapse); mmd: kernel two-sample test;
#: c2st: classifier two-sample test; memorization: nearest-train vs nearest-held-out audit.
SAMPLE_METRICS = ("fid", "kid", "pr", "dc", "classes", "mmd", "c2st", "memorization")
#: disentanglement: MIG, DCI and SAP of the encoder's codes against the data's ground-truth factors
#: (+ BetaVAE / FactorVAE scores on shapes, whose factors can be set and rendered).
#: transfer: latent attribute edits of captions by a sentence model (shapes-captions), parsed back
#: (:func:`genlab.swap.caption_transfer`): success, changed, kept per factor, swap and shift.
REPRESENTATION_METRICS = ("disentanglement", "transfer")
#: coherence: cross-modal, multi-source and joint coherence of a multimodal model (Shi et al. 2019).
#: modalities: per-modality bounds (bits per token / sample / dim), conditional estimates log p(x_t | x_s),
#: FID/KID of the image modality's joint samples, linear probe of the shared latent per factor.
MULTIMODAL_METRICS = ("coherence", "modalities")
#: summary: accuracy of each fact of a model's summaries by where it was stated (text, image, both),
#: fused against text-only and image-only (:mod:`genlab.metrics.summarization`; shapes-summary).
SUMMARY_METRICS = ("summary",)
AVAILABLE = LIKELIHOOD_METRICS + SAMPLE_METRICS + REPRESENTATION_METRICS + MULTIMODAL_METRICS + SUMMARY_METRICS
#: Examples encoded for the disentanglement metrics (disentanglement_lib's usual 10,000).
MAX_DISENTANGLEMENT_EXAMPLES = 10000
#: Simulated-observation budget of the BetaVAE and FactorVAE scores in ``evaluate`` (disentanglement_lib
#: uses batch 64, 10,000 / 5,000 points and 10,000 variance examples: ~2.3M images, hours on a CPU).
#: This one encodes 2 x 32 x 300 + 32 x 300 + 2,000 = 30,800 images.
SIMULATOR_BUDGET = {"batch_size": 32, "num_train": 200, "num_eval": 100, "num_variance_estimate": 2000}


def applicable_metrics(model: GenerativeModel) -> list[str]:
    """The metric names that make sense for ``model``, from ``model.likelihood`` and
    ``model.capabilities``: ``likelihood`` unless it has none, ``iwae`` for bound models whose
    ``log_prob`` takes ``k``, ``recon`` if it can reconstruct, ``disentanglement`` for encoders on
    data with ground-truth factors, the sample-based metrics if it can sample images or vectors
    (``classes`` only for labelled data), ``coherence`` for multimodal models on data whose
    factors every modality's reader recovers (``shapes-captions``, ``shapes-av``), ``modalities``
    for every multimodal model that samples, and ``summary`` for models that summarize an image and a
    caption on data that records where each fact is stated (``shapes-summary``)."""
    caps = model.capabilities
    out = []
    if model.likelihood != "none":
        out.append("likelihood")
        # a bound model's IWAE-k; a flow on discrete data: k dequantization draws inside the log
        if caps.iwae and (model.likelihood == "bound" or getattr(model, "levels", None)):
            out.append("iwae")
        if getattr(model, "variable_length", False) and not getattr(model, "conditional", False):
            out.append("dynamic")  # on a text file's split (checked with the data: streamable)
    if caps.reconstruct:
        out.append("recon")
    spec = model.spec
    if spec.factor_sizes and caps.encode:
        out.append("disentanglement")
    sentences = getattr(model, "data_key", "x") == "text"
    if caps.encode and caps.decode and sentences and "caption_factor_names" in spec.extra:
        out.append("transfer")  # a sentence model on captions: edit an attribute, parse the caption back
    if caps.sample and spec.kind in ("image", "vector") and not spec.dtype.startswith("int"):
        labelled = bool(spec.num_classes or spec.factor_sizes)
        out += [m for m in SAMPLE_METRICS if m != "classes" or labelled]
    if caps.modalities and caps.sample:
        from .metrics.coherence import has_factor_readers

        if has_factor_readers(spec):
            out.append("coherence")
    if caps.modalities and caps.sample:  # joint models: each modality's own bound needs p(x_m)
        out.append("modalities")
    if caps.generates("summary") and {"x", "text"} <= set(caps.modalities) and "source_factors" in spec.extra:
        out.append("summary")  # summaries of an image + caption, on data that says where each fact is
    return out


def _resolve_reference(
    dataset: TensorDataset, reference: TensorDataset | Callable[[], TensorDataset] | None
) -> TensorDataset | None:
    """The training split: given, the data set itself if it is the train split, or the built-in
    data set's train split by name; None for user data evaluated without one."""
    if callable(reference):
        return reference()
    if reference is not None:
        return reference
    if dataset.split == "train":
        return dataset
    from .data import list_datasets, load_dataset

    if dataset.spec.name in list_datasets():
        train = load_dataset(dataset.spec.name, "train")
        # A split loaded with options (size=16, ...) is not described by the default train split: a
        # feature network or factor reader trained on the latter would silently misread the former.
        shapes = {k: tuple(v.shape[1:]) for k, v in dataset.tensors.items()}
        if {k: tuple(v.shape[1:]) for k, v in train.tensors.items() if k in shapes} != shapes:
            raise ValueError(
                f"the default {dataset.spec.name!r} train split does not match this {dataset.split} split's shapes "
                f"{shapes} (loaded with options?): pass reference=load_dataset({dataset.spec.name!r}, 'train', "
                "**the same options)"
            )
        return train
    return None


def disentanglement_metrics(
    model: GenerativeModel,
    dataset: TensorDataset,
    *,
    max_examples: int = MAX_DISENTANGLEMENT_EXAMPLES,
    batch_size: int = 256,
    seed: int = 0,
    simulator_budget: dict[str, int] | None = None,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Disentanglement scores (:mod:`genlab.metrics.disentanglement`) of ``model.encode``.

    On a seeded random subset of at most ``max_examples`` examples of ``dataset`` (which must hold
    ``"factors"``): ``mig``, ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness``
    and ``sap`` (the paper's SAP: held-out accuracy gaps of 1-D classifiers), plus
    ``disentanglement_examples``. On the built-in ``shapes`` data set, whose factors can be set and
    rendered (:class:`~genlab.metrics.disentanglement.ShapesSimulator`, at the data's image size),
    also ``betavae_score`` and ``factorvae_score`` (held-out accuracies; chance 1/5) with
    ``simulator_budget`` (keys ``batch_size``, ``num_train``, ``num_eval``, ``num_variance_estimate``;
    default :data:`SIMULATOR_BUDGET`, about 31,000 encoded images, well under a minute on a CPU for a
    small encoder), except for conditional models, whose encoder needs a label the simulator does
    not give. With ``out_dir``: ``mi-heatmap.png``, the factor x latent mutual information
    normalized by each factor's entropy (``mi_heatmap_png``: its path)."""
    from .encode import encode_dataset
    from .metrics.disentanglement import (
        ShapesSimulator,
        betavae_score,
        dci,
        factorvae_score,
        mig,
        mutual_information_matrix,
        sap,
    )

    if "factors" not in dataset.tensors:
        raise ValueError(f"data set {dataset.spec.name!r} has no ground-truth factors for disentanglement metrics")
    budget = dict(SIMULATOR_BUDGET, **(simulator_budget or {}))
    unknown = set(budget) - set(SIMULATOR_BUDGET)
    if unknown:
        raise ValueError(f"unknown simulator_budget keys {sorted(unknown)}; expected {sorted(SIMULATOR_BUDGET)}")
    n = min(len(dataset), max_examples)
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(dataset), n, replace=False)))
    sub = TensorDataset({k: v[idx] for k, v in dataset.tensors.items()}, dataset.spec, dataset.split)
    enc = encode_dataset(model, sub, batch_size=batch_size)
    scores = dci(enc["z"], enc["factors"], seed=seed)
    out: dict[str, Any] = {
        "mig": mig(enc["z"], enc["factors"]),
        "dci_disentanglement": scores["disentanglement"],
        "dci_completeness": scores["completeness"],
        "dci_informativeness": scores["informativeness"],
        "sap": sap(enc["z"], enc["factors"], seed=seed) if enc["z"].shape[1] >= 2 else 0.0,
        "disentanglement_examples": n,
    }
    if dataset.spec.name == "shapes" and not getattr(model, "conditional", False):
        sim = ShapesSimulator(size=int(dataset.spec.shape[-1]))

        def represent(x: np.ndarray) -> np.ndarray:
            data = TensorDataset({"x": torch.from_numpy(x)}, dataset.spec, dataset.split)
            return encode_dataset(model, data, batch_size=batch_size)["z"]

        common = {k: budget[k] for k in ("batch_size", "num_train", "num_eval")}
        out["betavae_score"] = betavae_score(represent, sim, seed=seed, **common)
        out["factorvae_score"] = factorvae_score(
            represent, sim, seed=seed, num_variance_estimate=budget["num_variance_estimate"], **common
        )
    if out_dir is not None:
        from .viz import plot_heatmap

        mi = mutual_information_matrix(enc["z"], enc["factors"], normalize=True)
        names = dataset.spec.factor_names or [f"factor {k}" for k in range(mi.shape[0])]
        png = plot_heatmap(
            mi,
            list(names),
            [f"z{j}" for j in range(mi.shape[1])],
            Path(out_dir) / "mi-heatmap.png",
            title=f"I(factor; latent) / H(factor), {n} examples",
            xlabel="latent dimension",
            ylabel="factor",
            colorbar_label="normalized mutual information",
        )
        out["mi_heatmap_png"] = str(png)
    return out


@torch.no_grad()
def token_reconstruction(model: GenerativeModel, dataset: TensorDataset, *, batch_size: int = 256) -> dict[str, float]:
    """How well a sentence model reconstructs token sequences (a squared error means nothing for
    token ids): ``recon_exact``, the fraction of sequences given back whole, and
    ``recon_token_accuracy``, the fraction of the non-padding positions given back."""
    key = getattr(model, "data_key", "x")
    vocab = tuple(model.spec.modality(key).vocab or ())
    pad = vocab.index("<pad>") if "<pad>" in vocab else -1
    exact = right = total = n = 0
    for batch in dataset.batches(batch_size):
        batch = {kk: v.to(model.device) for kk, v in batch.items()}
        target = batch[key]
        rec = model.reconstruct(batch["x"], model.condition(batch)).to(target.device)
        keep = target != pad
        same = (rec == target) | ~keep
        exact += int(same.all(1).sum())
        right += int((same & keep).sum())
        total += int(keep.sum())
        n += len(target)
    return {"recon_exact": exact / max(n, 1), "recon_token_accuracy": right / max(total, 1)}


TRANSFER_FACTORS = ("shape", "scale", "colour")


def transfer_metrics(
    model: GenerativeModel, train: TensorDataset | None, test: TensorDataset, *, n: int = 500, seed: int = 0
) -> dict[str, Any]:
    """Attribute transfer of a sentence model on captions (:func:`genlab.swap.caption_transfer` on
    ``n`` test captions, class means and dims from 2,000 ``train`` captions): for each factor in
    :data:`TRANSFER_FACTORS` and each mode (``swap``: the 3 most informative latents, ``shift``: the
    class-mean difference), ``transfer/<factor>/<mode>/<success|changed|kept>`` (fractions) and
    ``.../dims`` (swap), plus ``transfer/reconstructed`` and ``transfer/<factor>/chance``."""
    from .swap import caption_transfer, encode_examples

    if train is None:
        raise ValueError("metric 'transfer' needs the captions' training split for its class means")
    codes = encode_examples(model, train, 2000)  # once for the 6 edits below
    out: dict[str, Any] = {}
    for factor in TRANSFER_FACTORS:
        for mode in ("swap", "shift"):
            r = caption_transfer(model, train, test, factor, mode=mode, n=n, seed=seed, train_codes=codes)
            for key in ("success", "changed", "kept"):
                out[f"transfer/{factor}/{mode}/{key}"] = r[key]
            if mode == "swap":
                out[f"transfer/{factor}/swap/dims"] = r["dims"]
        out[f"transfer/{factor}/chance"] = r["chance"]
        out["transfer/reconstructed"] = r["reconstructed"]
    return out


@torch.no_grad()
def draw_samples(
    model: GenerativeModel, n: int, dataset: TensorDataset, *, seed: int = 0, chunk: int = 500
) -> torch.Tensor:
    """[n, *shape] samples on the CPU; a conditional model gets class labels drawn (seeded, with
    replacement) from ``dataset``'s labels, so its samples follow the data's class frequencies."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    cond = None
    if model.conditional:
        labels = dataset.tensors.get("cond", dataset.tensors.get("y"))
        if labels is None:
            raise ValueError(
                f"conditional model: data set {dataset.spec.name!r} has no 'y' or 'cond' to draw conditions from"
            )
        idx = torch.from_numpy(np.random.default_rng(seed).integers(0, len(labels), n))
        cond = labels[idx].to(model.device)
    parts = [
        model.sample(min(chunk, n - i), None if cond is None else cond[i : i + chunk], generator=gen).cpu()
        for i in range(0, n, chunk)
    ]
    return torch.cat(parts).float()


def sample_metrics(
    samples: torch.Tensor,
    dataset: TensorDataset,
    chosen: Sequence[str],
    *,
    reference: TensorDataset | None = None,
    features: str = "auto",
    seed: int = 0,
    permutations: int = 500,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The sample-based metrics of ``chosen`` for ``samples`` [N, *shape] against ``dataset`` (the
    evaluated split); ``reference`` (the training split) trains the feature classifier and is the
    'train' side of the memorization audit. Usable for any source of samples (not only models)."""
    from .metrics import features as F
    from .metrics.fid import density_coverage, frechet_distance, kid, precision_recall
    from .metrics.memorization import memorization_audit
    from .metrics.twosample import c2st, mmd_test

    ref = reference if reference is not None else dataset
    fx = F.feature_extractor(ref, features)  # "auto": a classifier for labelled data, else random features
    out: dict[str, Any] = {"n_samples": len(samples), "features": fx.name}
    if isinstance(fx, F.ClassifierFeatures):
        out["feature_classifier_accuracy"] = fx.accuracy
    real_x = dataset.tensors["x"].float()
    real, fake = fx.features(real_x), fx.features(samples)
    if "fid" in chosen:
        out["fid"] = frechet_distance(real, fake)
        if reference is not None and reference is not dataset:
            # What a perfect model scores at these sample sizes: FID is biased upwards at small N.
            idx = torch.from_numpy(
                np.random.default_rng(seed).choice(len(reference), min(len(samples), len(reference)), replace=False)
            )
            out["fid_reference"] = frechet_distance(real, fx.features(reference.tensors["x"][idx].float()))
    if "kid" in chosen:
        out["kid_mean"], out["kid_std"] = kid(real, fake, seed=seed)
    if "pr" in chosen:
        out["precision"], out["recall"] = precision_recall(real, fake)
    if "dc" in chosen:
        out["density"], out["coverage"] = density_coverage(real, fake)
    if "classes" in chosen:
        pred = fx.predict(samples)
        if pred is None:
            raise ValueError(
                f"metric 'classes' needs a classifier feature network; features={fx.name!r} has no class head"
            )
        k = int(fx.num_classes)
        hist = torch.bincount(pred.cpu(), minlength=k).double()
        real_hist = torch.bincount(fx.predict(real_x).cpu(), minlength=k).double()  # classifier errors cancel
        p, q = hist / hist.sum(), real_hist / real_hist.sum()
        # A class is covered if it gets at least 10% of the samples the data's frequency predicts.
        out["classes_covered"] = int((hist >= 0.1 * q * len(samples)).logical_and(q > 0).sum())
        out["classes_total"] = int((q > 0).sum())
        out["class_tv"] = float(0.5 * (p - q).abs().sum())
        out["class_histogram"] = [int(v) for v in hist]
    if "mmd" in chosen:
        out["mmd2"], out["mmd_p_value"] = mmd_test(real, fake, permutations=permutations, seed=seed)
    if "c2st" in chosen:
        out["c2st_accuracy"] = c2st(real, fake, seed=seed)
    if "memorization" in chosen:
        if reference is None or reference is dataset:
            raise ValueError(
                "metric 'memorization' needs the training split (reference=...) distinct from the evaluated split"
            )
        train_x = reference.tensors["x"].float()
        audit = memorization_audit(samples, train_x, real_x)
        closest, nearest = audit.pop("closest_samples"), audit.pop("closest_train")
        out.update({f"mem_{k}": v for k, v in audit.items()})
        if out_dir is not None and samples.dim() == 4:  # images: the top copies next to their originals
            from .viz import save_copy_pairs

            png = save_copy_pairs(samples[closest], train_x[nearest], Path(out_dir) / "memorization.png")
            out["memorization_png"] = str(png)
    return out


@torch.no_grad()
def evaluate(
    model: GenerativeModel,
    dataset: TensorDataset,
    metrics: Sequence[str] | None = None,
    *,
    k: int = 100,
    batch_size: int = 256,
    seed: int = 0,
    n_samples: int = 1000,
    reference: TensorDataset | Callable[[], TensorDataset] | None = None,
    features: str = "auto",
    permutations: int = 500,
    out_dir: str | os.PathLike | None = None,
    dynamic_lr: float | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset``; returns a flat JSON-safe dict.

    ``likelihood``: mean log-likelihood in nats per example and bits/dim (``log_prob_nats``,
    ``bpd``); for bound models this is the ELBO (k=1: ``elbo_nats``, ``elbo_bpd``).
    ``iwae``: the IWAE-k bound (``iwae_nats``, ``iwae_bpd``, ``iwae_k``), tighter than the ELBO.
    ``dynamic`` (an LM on a text file's split; not in the defaults: one backward pass per
    :data:`DYNAMIC_STRIDE` tokens): ``dynamic_bpd`` of :func:`dynamic_metrics`, step ``dynamic_lr``
    (default :data:`DYNAMIC_LR`).
    ``recon``: the mean squared reconstruction error per example, summed over dimensions, in the
    [0, 1] data units (``recon_mse``), and per dimension (``recon_mse_per_dim``); for token data
    (sentence models) ``recon_exact`` and ``recon_token_accuracy`` (:func:`token_reconstruction`).
    Sample-based (``n_samples`` draws against ``dataset``; see :func:`sample_metrics`): ``fid``,
    ``fid_reference``, ``kid_mean``/``kid_std``, ``precision``/``recall``, ``density``/``coverage``,
    ``classes_covered``/``classes_total``/``class_tv``, ``mmd2``/``mmd_p_value``,
    ``c2st_accuracy``, ``mem_*`` (and ``memorization.png`` in ``out_dir``). ``reference`` is the
    training split (default: the built-in data set's train split); ``features`` picks the feature
    network (``auto``, ``classifier``, ``random``, ``inception``). ``disentanglement`` (encoders on
    data with ground-truth factors, e.g. ``shapes``): see :func:`disentanglement_metrics`
    (``mi-heatmap.png`` in ``out_dir``).
    Multimodal models: ``coherence`` (:func:`genlab.metrics.coherence.flatten_coherence` keys, on
    ``n_samples`` examples) and ``modalities``
    (:func:`genlab.metrics.multimodal_quality.modality_quality`, with ``k`` importance samples on
    ``n_samples`` examples and ``n_samples`` joint samples): ``modality/<m>/nats`` and
    ``modality/<m>/bits_per_token|bits_per_sample|bits_per_dim``, ``joint/...``,
    ``conditional/<s>-><t>/nats|<unit>|gain_nats``, ``fid/<m>``, ``fid_reference/<m>``, ``kid/<m>``,
    ``probe/<sources>/<factor>``, ``probe_baseline/<factor>``. ``summary`` (summarizers on
    ``shapes-summary``; :func:`genlab.metrics.summarization.summarization_report` on ``n_samples``
    examples): ``summary/conditions/<fused|text_only|image_only>/<colour|shape|position>/<source>``,
    ``.../all_correct``, ``.../absent_from_text``, ``summary/fusion_gain`` and the like.
    """
    applicable = applicable_metrics(model)
    chosen = default_metrics(model) if metrics is None else list(metrics)
    for m in chosen:
        if m not in AVAILABLE:
            raise ValueError(f"unknown metric {m!r}; expected one of {', '.join(AVAILABLE)}")
        if m == "coherence" and m not in applicable:
            raise ValueError(
                "metric 'coherence' needs a multimodal model on data whose factors can be read back from every "
                f"modality (shapes-captions, shapes-av); {type(model).__name__} on {model.spec.name!r} is not"
            )
        if m == "disentanglement" and m not in applicable and not model.spec.factor_sizes:
            raise ValueError(
                "metric 'disentanglement' needs data with ground-truth factors (e.g. shapes); "
                f"data set {model.spec.name!r} has none"
            )
        if m not in applicable:
            raise ValueError(
                f"metric {m!r} does not apply to {type(model).__name__} (applicable: {', '.join(applicable)})"
            )
    model.eval()
    torch.manual_seed(seed)
    out: dict[str, Any] = {"n_examples": len(dataset), "likelihood_kind": model.likelihood}
    resolved: list[TensorDataset | None] = []

    def train_split() -> TensorDataset | None:  # loaded once, when a metric first needs it
        if not resolved:
            resolved.append(_resolve_reference(dataset, reference))
        return resolved[0]

    if "likelihood" in chosen:
        kw = {"k": 1} if model.likelihood == "bound" and "iwae" in applicable else {}
        m = likelihood_metrics(model, dataset, batch_size=batch_size, **kw)
        name = "elbo" if model.likelihood == "bound" else "log_prob"
        out[f"{name}_nats"], out[f"{name}_bpd"] = -m["nll"], m["bpd"]
        if streamable(model, dataset):
            out.update(stream_metrics(model, dataset, batch_size=batch_size))
    if "dynamic" in chosen:
        out.update(dynamic_metrics(model, dataset, lr=DYNAMIC_LR if dynamic_lr is None else dynamic_lr))
    if "iwae" in chosen:
        m = likelihood_metrics(model, dataset, k=k, batch_size=max(1, batch_size // 4))
        out.update(iwae_k=k, iwae_nats=-m["nll"], iwae_bpd=m["bpd"])
    if "recon" in chosen and model.spec.modality(getattr(model, "data_key", "x")).kind == "tokens":
        out.update(token_reconstruction(model, dataset, batch_size=batch_size))
    elif "recon" in chosen:
        se, n = 0.0, 0
        for batch in dataset.batches(batch_size):
            batch = {kk: v.to(model.device) for kk, v in batch.items()}
            rec = model.reconstruct(batch["x"], model.condition(batch))
            se += float((rec - batch["x"]).pow(2).flatten(1).sum(1).double().sum())
            n += len(batch["x"])
        out["recon_mse"] = se / max(n, 1)
        out["recon_mse_per_dim"] = out["recon_mse"] / dataset.spec.dim
    if "disentanglement" in chosen:
        out.update(disentanglement_metrics(model, dataset, batch_size=batch_size, seed=seed, out_dir=out_dir))
    if "transfer" in chosen:
        out.update(transfer_metrics(model, train_split(), dataset, n=n_samples, seed=seed))
    if "coherence" in chosen:
        from .metrics.coherence import cross_modal_coherence, flatten_coherence

        res = cross_modal_coherence(
            model,
            dataset,
            reference=train_split(),
            n_examples=n_samples,
            seed=seed,
            batch_size=batch_size,
        )
        out.update(flatten_coherence(res))
    if "modalities" in chosen:
        from .metrics.multimodal_quality import modality_quality

        out.update(
            modality_quality(
                model,
                dataset,
                reference=train_split(),
                k=k,
                n_examples=n_samples,
                n_samples=n_samples,
                features=features,
                batch_size=max(1, batch_size // 4),
                seed=seed,
                image_metrics=sample_metrics,  # the one FID/KID (metrics may not import evaluate)
            )
        )
    if "summary" in chosen:
        from .metrics.summarization import flatten_report, summarization_report

        out.update(
            flatten_report(summarization_report(model, dataset, n_examples=n_samples, seed=seed, batch_size=batch_size))
        )
    wanted = [m for m in chosen if m in SAMPLE_METRICS]
    if wanted:
        samples = draw_samples(model, n_samples, dataset, seed=seed)
        ref = train_split()
        if (ref is None or ref is dataset) and "memorization" in wanted:
            if metrics is not None:
                raise ValueError("metric 'memorization' needs the training split: pass reference=<train TensorDataset>")
            wanted.remove("memorization")  # user data without a known train split: skip quietly
        out.update(
            sample_metrics(
                samples,
                dataset,
                wanted,
                reference=ref,
                features=features,
                seed=seed,
                permutations=permutations,
                out_dir=out_dir,
            )
        )
    return out


def default_metrics(model: GenerativeModel) -> list[str]:
    """The metrics ``evaluate`` computes when none are named: every applicable one, except the
    disentanglement scores of a model without a latent-variable posterior (``likelihood`` not
    ``"bound"``: a flow's, an autoregressive model's or an LM's ``encode`` is a feature map, not a
    prior-matched code, and scoring it takes minutes nobody asked for), and ``dynamic`` (a backward
    pass every few tokens of the split); name them to get them anyway."""
    return [
        m
        for m in applicable_metrics(model)
        if m != "dynamic" and (m != "disentanglement" or model.likelihood == "bound")
    ]


# --- a text file's split scored as one stream ------------------------------------------------------
def streamable(model: GenerativeModel, dataset: TensorDataset) -> bool:
    """Whether ``dataset`` is a text file's split (token blocks cut contiguously from one stream,
    ``spec.extra["tokenizer"]``) and ``model`` an unconditional exact autoregressive model whose
    ``log_prob`` takes any length T <= the block length (``model.variable_length``): then
    :func:`stream_metrics` can score each block given the text before it."""
    spec = dataset.spec
    return (
        getattr(model, "variable_length", False)
        and model.likelihood == "exact"
        and spec.kind == "tokens"
        and "tokenizer" in spec.extra
        and not getattr(model, "conditional", False)
    )


def stream_windows(tokens: Tensor, stride: int) -> tuple[Tensor, list[tuple[int, int]]]:
    """The stream of ``tokens`` [N, T] (flattened, N*T) and its scoring windows in order, as
    (start, context) pairs: T tokens every ``stride`` (the last one ends at the stream's end), each
    scoring the tokens after its first ``context``, which the previous window scored."""
    t = tokens.shape[1]
    if not 1 <= stride <= t:
        raise ValueError(f"stride must be in 1..{t} (the block length); got {stride}")
    stream = tokens.reshape(-1)
    starts = list(range(0, len(stream) - t + 1, stride))
    if starts[-1] + t < len(stream):
        starts.append(len(stream) - t)
    ends = [0] + [p + t for p in starts[:-1]]
    return stream, [(p, end - p) for p, end in zip(starts, ends)]


@torch.no_grad()
def stream_log_prob(model: GenerativeModel, tokens: Tensor, stride: int, batch_size: int = 64) -> tuple[float, int]:
    """Total log-probability (nats) of the stream ``tokens`` long [N, T] (its blocks in order, read
    as one sequence of N*T tokens) under a causal model, and the tokens scored (all N*T).

    Windows of T tokens start every ``stride`` tokens (the last one ends at the stream's end); each
    scores only the tokens the previous window did not, given the c tokens before them in the window,
    by the chain rule: log p(w[c:] | w[:c]) = log_prob(w) - log_prob(w[:c]). So every token after the
    first window has at least T - stride tokens of context, where block-by-block scoring gives the
    first token of each block none. ``stride = T`` is block-by-block scoring exactly."""
    t = tokens.shape[1]
    stream, windows = stream_windows(tokens, stride)
    jobs: dict[int, list[int]] = {}  # context length c -> window starts scored with it
    for p, c in windows:
        jobs.setdefault(c, []).append(p)
    device = getattr(model, "device", torch.device("cpu"))
    total = 0.0
    for c, ps in jobs.items():
        for i in range(0, len(ps), batch_size):
            w = torch.stack([stream[p : p + t] for p in ps[i : i + batch_size]]).to(device)
            lp = model.log_prob(w).double()
            if c > 0:
                lp = lp - model.log_prob(w[:, :c]).double()
            total += float(lp.sum())
    return total, len(stream)


def stream_metrics(
    model: GenerativeModel, dataset: TensorDataset, *, stride: int | None = None, batch_size: int = 64
) -> dict[str, Any]:
    """``stream_bpd`` (bits per token; bits per character for a char tokenizer) of a text file's split
    scored as one stream (:func:`stream_log_prob`, ``stride`` T/2 by default: every token after the
    first window sees at least T/2 tokens before it), ``stream_context`` (that least context). This is
    the figure to set beside a compressor's cost of the same text, which carries context across
    blocks; ``log_prob_bpd`` scores each block from an empty context."""
    x = dataset.tensors[getattr(model, "data_key", "x")]
    t = x.shape[1]
    stride = max(1, t // 2) if stride is None else stride
    model.eval()
    total, n = stream_log_prob(model, x, stride, batch_size)
    return {"stream_bpd": -total / (n * math.log(2)), "stream_context": t - stride}


#: Dynamic evaluation's settings (:func:`dynamic_log_prob`): step size, RMS decay and the new tokens
#: per update, chosen on the validation splits of two real texts (README, "Autoregressive models").
DYNAMIC_LR = 1e-4
DYNAMIC_BETA = 0.999
DYNAMIC_STRIDE = 8


def dynamic_log_prob(
    model: GenerativeModel,
    tokens: Tensor,
    stride: int = DYNAMIC_STRIDE,
    *,
    lr: float = DYNAMIC_LR,
    beta: float | None = DYNAMIC_BETA,
    progress: bool = False,
) -> tuple[float, int]:
    """Total log-probability (nats) of the stream ``tokens`` [N, T] under dynamic evaluation
    (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models"), and the tokens scored.

    The windows are those of :func:`stream_log_prob` (T tokens every ``stride``), read in order.
    Each window's new tokens are scored with the current weights, and only then do the weights
    take one step on that score: g = grad of the mean NLL of the new tokens, v <- beta v + (1 - beta)
    g^2, theta <- theta - lr g / (sqrt(v / (1 - beta^s)) + 1e-8) at step s (RMSprop with Adam's bias
    correction; plain SGD with ``beta=None``). Krause et al. normalize by the training gradients'
    RMS instead; that divides by near-zero for the (tied) embedding of a character the training text
    lacks, and diverged on a test text that has one. Every token is predicted from the text before it
    alone, so the product of the predictions is a normalized distribution over streams (tested: it
    sums to 1 over every stream of a small space): the code length of an adaptive model, as a
    compressor's is. ``model`` is left unchanged (a copy adapts); ``lr = 0`` gives
    :func:`stream_log_prob`'s value. ``progress``: a progress bar on stderr (one update per window)."""
    import copy

    if not lr >= 0 or (beta is not None and not 0 <= beta < 1):
        raise ValueError(f"dynamic evaluation needs lr >= 0 and beta in [0, 1) or None; got lr={lr}, beta={beta}")
    t = tokens.shape[1]
    stream, windows = stream_windows(tokens, stride)
    length = len(stream)
    adapt = copy.deepcopy(model)
    adapt.eval()
    params = [p for p in adapt.parameters() if p.requires_grad]
    sq = [torch.zeros_like(p) for p in params] if beta is not None else []
    device = getattr(model, "device", torch.device("cpu"))
    total = 0.0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=length, desc="dynamic evaluation", unit="tok", dynamic_ncols=True, file=sys.stderr)
    for step, (p, c) in enumerate(windows, 1):
        w = stream[p : p + t].to(device)[None]
        with torch.set_grad_enabled(lr > 0):  # no graph for lr = 0 (the fixed weights)
            lp = adapt.log_prob(w).double().sum()
            if c > 0:
                lp = lp - adapt.log_prob(w[:, :c]).double().sum()
            total += float(lp.detach())
            if lr > 0:
                grads = torch.autograd.grad(-lp / (t - c), params, allow_unused=True)
        if lr > 0:
            with torch.no_grad():
                for i, (q, g) in enumerate(zip(params, grads)):
                    if g is None:
                        continue
                    if beta is None:
                        q.sub_(lr * g)
                        continue
                    sq[i].mul_(beta).addcmul_(g, g, value=1 - beta)
                    q.sub_(lr * g / ((sq[i] / (1 - beta**step)).sqrt() + 1e-8))
        if bar is not None:
            bar.update(t - c)
            bar.set_postfix(bits_per_token=f"{-total / ((p + t) * math.log(2)):.3f}")
    if bar is not None:
        bar.close()
    return total, length


def dynamic_metrics(
    model: GenerativeModel,
    dataset: TensorDataset,
    *,
    lr: float = DYNAMIC_LR,
    stride: int = DYNAMIC_STRIDE,
) -> dict[str, Any]:
    """``dynamic_bpd`` (bits per token; bits per character for a char tokenizer): a text file's split
    read as one stream by a copy of ``model`` that keeps learning from the text it has scored
    (:func:`dynamic_log_prob`), with its ``dynamic_lr`` and ``dynamic_stride`` (new tokens per update).
    It is the figure to set beside an adaptive compressor's (gzip, xz), which also learns the text as
    it reads it; ``stream_bpd`` is the same stream with the trained weights fixed."""
    if not streamable(model, dataset):
        raise ValueError(
            "metric 'dynamic' reads a text file's split as one stream with an unconditional autoregressive LM "
            f"(genlab train transformer --data FILE.txt); {type(model).__name__} on {dataset.spec.name!r} is not"
        )
    x = dataset.tensors[getattr(model, "data_key", "x")]
    stride = min(stride, x.shape[1])
    total, n = dynamic_log_prob(model, x, stride, lr=lr, progress=sys.stderr.isatty())
    return {"dynamic_bpd": -total / (n * math.log(2)), "dynamic_lr": lr, "dynamic_stride": stride}


# --- eval.json: later evaluations add to it --------------------------------------------------------
#: Keys that say what an eval.json describes: a later evaluation merges into the file only if they
#: agree (``model_sha256``, when both have it, stands for the run folder: the same weights give the
#: same numbers wherever the folder lies); otherwise the earlier numbers are of another model or
#: split, and the file is replaced.
EVAL_IDENTITY = ("split", "data")


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (hex) of the model's state dict: every parameter and buffer's name, dtype, shape
    and bytes, in order. Equal fingerprints mean the same weights, so the same metric values."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: any dtype, bf16 too
    return h.hexdigest()


def merge_eval(previous: Mapping[str, Any] | None, result: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``result`` merged into an earlier eval dict: the earlier keys that ``result`` does not
    write are kept (an ``eval --metrics fid`` after a full eval keeps the likelihood numbers), the
    ones it writes are replaced. Only when both describe the same model and data (see
    :data:`EVAL_IDENTITY`); else ``result`` alone. Returns (merged, notes): one line per reason an
    earlier file was not merged into."""
    if previous is None:
        return dict(result), []
    if not isinstance(previous, Mapping):
        raise ValueError("the earlier file is not a JSON object of metrics")
    fp_old, fp_new = previous.get("model_sha256"), result.get("model_sha256")
    same_model = (
        fp_old == fp_new if fp_old is not None and fp_new is not None else previous.get("run") == result.get("run")
    )
    differ = [k for k in EVAL_IDENTITY if previous.get(k) != result.get(k)]
    if not same_model:
        differ.insert(0, "model_sha256" if fp_old is not None and fp_new is not None else "run")
    if differ:
        what = ", ".join(f"{k} {previous.get(k)!r} -> {result.get(k)!r}" for k in differ)
        return dict(result), [f"the earlier evaluation is of another model or data ({what}): replaced, not merged"]
    return {**previous, **result}, []


def write_eval(
    result: Mapping[str, Any], path: str | os.PathLike, *, model: torch.nn.Module | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Write an evaluation (``result``, as :func:`evaluate` returns it plus the caller's keys such
    as ``run``, ``split``, ``data``) to the JSON file ``path``, merged into what an earlier evaluation
    of the same model wrote there (:func:`merge_eval`): a later ``eval --metrics fid`` adds FID
    and keeps the likelihood numbers. With ``model``, its :func:`model_fingerprint` is stored as
    ``model_sha256`` and decides "the same model". Non-finite floats are written as null; the file
    is replaced atomically (a crash leaves the old or the new file, never half of one). A file at
    ``path`` that is not an earlier evaluation raises ValueError and is left as it is. Returns
    (what was written, notes on an earlier evaluation that was replaced rather than merged)."""
    from .checkpoint import finite_or_null, write_json

    path = Path(path)
    result = dict(result)
    if model is not None:
        result["model_sha256"] = model_fingerprint(model)
    previous: Any = None
    if path.exists():
        # A file genlab eval did not write (the user's own JSON at --out) is refused, never replaced.
        try:
            previous = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{str(path)!r} exists and is not an eval.json of genlab eval ({type(e).__name__}); "
                "choose another --out or remove it"
            ) from None
        if not isinstance(previous, Mapping) or not {"split", "data"} <= set(previous):
            raise ValueError(
                f"{str(path)!r} exists and is not an eval.json of genlab eval (no split/data keys); "
                "choose another --out or remove it"
            )
    merged, notes = merge_eval(previous, result)
    merged = finite_or_null(merged)
    write_json(merged, path)
    return merged, notes


def bits_unit(spec: Any, key: str = "x") -> str:
    """The name of ``*_bpd``'s unit for the data a model scores: ``bits/dim`` (per sub-pixel) for
    images, ``bits/char`` or ``bits/token`` for text (by its tokenizer), ``bits/sample`` for audio;
    2-D and other vectors ``bits/dim`` (their ``*_nats`` are the density's natural reading).
    ``key``: the scored modality of a multimodal spec (a language model on captions: ``"text"``)."""
    if getattr(spec, "kind", None) == "multimodal" and key in (spec.modalities or {}):
        spec = spec.modality(key)
    kind = getattr(spec, "kind", None)
    if kind == "tokens":
        return "bits/char" if spec.extra.get("tokenizer") == "char" else "bits/token"
    return {"audio": "bits/sample"}.get(kind, "bits/dim")


#: Units of the eval.json keys that are not per-modality bits (see ``genlab eval --help``).
_UNITS = (
    ("baseline/*/bits_per_char", "bits/char"),
    ("*/bits_per_token", "bits/token"),
    ("*/bits_per_sample", "bits/sample"),
    ("*/bits_per_dim", "bits/dim"),
    ("*_nats", "nats/example"),
    ("*/nats", "nats/example"),
    ("*gain_nats", "nats/example"),
    ("kid*", "kernel units (MMD^2, not x1000)"),
    ("fid*", "feature units^2"),
    ("recon_mse", "squared error/example, data in [0, 1]"),
    ("recon_mse_per_dim", "squared error/dim, data in [0, 1]"),
    ("mem_mean_dist_*", "data units"),
    ("mem_near_copy_threshold", "data units"),
)
_FRACTIONS = (
    "precision",
    "recall",
    "coverage",
    "c2st_accuracy",
    "mmd_p_value",
    "class_tv",
    "mem_*",
    "recon_exact",
    "recon_token_accuracy",
    "feature_classifier_accuracy",
)


def metric_unit(key: str, spec: Any, data_key: str = "x") -> str:
    """The unit of eval.json entry ``key`` for a model of ``spec`` (scoring modality ``data_key``):
    per-modality bits for ``*_bpd``/``stream_bpd``/``baseline/*/bpd`` (:func:`bits_unit`), nats for
    log-likelihoods, ``fraction`` for rates and accuracies in [0, 1]; ``""`` for counts, names and
    keys without a unit. ``genlab eval`` prints it beside each number and ``genlab demo`` in its table."""
    import fnmatch

    if key.endswith("_bpd") or key.endswith("/bpd"):
        return bits_unit(spec, data_key)
    for pattern, unit in _UNITS:
        if fnmatch.fnmatchcase(key, pattern):
            return unit
    if any(fnmatch.fnmatchcase(key, p) for p in _FRACTIONS):
        return "fraction"
    return ""
