"""Metrics on plain arrays/tensors and on models.

Likelihood (:mod:`.likelihood`), sample quality on features (:mod:`.fid`: FID, KID,
precision/recall, density/coverage), two-sample tests (:mod:`.twosample`: MMD permutation test,
C2ST), disentanglement (:mod:`.disentanglement`: MIG, DCI, SAP, BetaVAE / FactorVAE scores),
cross-modal coherence of multimodal models (:mod:`.coherence`), the feature networks they run on
(:mod:`.features`) and the memorization audit (:mod:`.memorization`).
"""

from .coherence import coherence, cross_modal_coherence, joint_coherence
from .disentanglement import (
    ShapesSimulator,
    betavae_score,
    dci,
    factorvae_score,
    mig,
    mutual_information_matrix,
    sap,
)
from .features import FeatureNetworkError, RandomFeatures, cache_dir, feature_extractor, train_classifier
from .fid import density_coverage, frechet_distance, kid, precision_recall
from .likelihood import bits_per_dim, likelihood_metrics
from .memorization import memorization_audit
from .twosample import c2st, c2st_p_value, mmd_test

__all__ = [
    "FeatureNetworkError",
    "RandomFeatures",
    "ShapesSimulator",
    "betavae_score",
    "bits_per_dim",
    "c2st",
    "c2st_p_value",
    "cache_dir",
    "coherence",
    "cross_modal_coherence",
    "dci",
    "density_coverage",
    "factorvae_score",
    "feature_extractor",
    "frechet_distance",
    "joint_coherence",
    "kid",
    "likelihood_metrics",
    "memorization_audit",
    "mig",
    "mmd_test",
    "mutual_information_matrix",
    "precision_recall",
    "sap",
    "train_classifier",
]
