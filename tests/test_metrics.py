"""The evaluation suite against mathematics: FID closed forms, KID unbiasedness, the MMD test's size
and power, C2ST, k-NN precision/recall and coverage, the memorization audit, the cached feature net."""

import math

import numpy as np
import pytest
import torch

import genlab
from genlab.metrics import (
    FeatureNetworkError,
    RandomFeatures,
    c2st,
    density_coverage,
    frechet_distance,
    kid,
    memorization_audit,
    mmd_test,
    precision_recall,
    train_classifier,
)
from genlab.metrics.fid import gaussian_frechet, mmd2_unbiased, polynomial_kernel


def exact_gaussian_sample(mean, cov, n, seed):
    """n points whose empirical mean and unbiased covariance equal ``mean`` and ``cov`` exactly."""
    x = np.random.default_rng(seed).normal(size=(n, len(mean)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # whiten: cov = I
    return mean + x @ np.linalg.cholesky(cov).T


def test_fid_of_a_set_against_itself_is_zero():
    a = np.random.default_rng(0).normal(size=(500, 16)) * np.linspace(0.1, 3, 16)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.from_numpy(a), a.copy()) == pytest.approx(0.0, abs=1e-8)


def test_fid_equals_the_gaussian_closed_form():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2; diagonal: sum over dimensions; general: via scipy's sqrtm.
    assert gaussian_frechet(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == pytest.approx(
        9 + 1
    )
    va, vb = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    closed = 2**2 + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert gaussian_frechet(np.array([2.0, 0, 0]), np.diag(va), np.zeros(3), np.diag(vb)) == pytest.approx(
        closed, rel=1e-10
    )
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    c1 = (lambda a: a @ a.T + 0.1 * np.eye(5))(rng.normal(size=(5, 5)))
    c2 = (lambda a: a @ a.T + 0.1 * np.eye(5))(rng.normal(size=(5, 5)))
    ref = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2)))
    assert gaussian_frechet(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-8)
    # On samples with exactly these moments, frechet_distance gives the closed form too.
    a, b = exact_gaussian_sample(m1, c1, 400, 2), exact_gaussian_sample(m2, c2, 300, 3)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)


def test_kid_is_unbiased():
    # Same distribution: the mean over independent replicates is 0 within its standard error,
    # while the biased (V-statistic) estimate with the diagonal kept is clearly positive.
    rng = np.random.default_rng(0)
    vals, biased = [], []
    for _ in range(300):
        a, b = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
        vals.append(kid(a, b, subsets=1, subset_size=40)[0])
        kxx, kyy, kxy = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
        biased.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    vals, biased = np.array(vals), np.array(biased)
    se = vals.std() / math.sqrt(len(vals))
    assert abs(vals.mean()) < 3 * se
    assert biased.mean() > 10 * se
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 1.0
    mean, std = kid(a, b, subsets=20)
    assert mean > 5 * std > 0  # shifted: clearly positive, and subsets differ (std > 0)
    assert mmd2_unbiased(np.ones((3, 3)), np.ones((3, 3)), np.ones((3, 3))) == pytest.approx(0.0)


def test_mmd_permutation_test_size_and_power():
    rng = np.random.default_rng(0)
    p_null = [
        mmd_test(rng.normal(size=(30, 2)), rng.normal(size=(30, 2)), permutations=200, seed=s)[1] for s in range(100)
    ]
    assert np.mean(np.array(p_null) <= 0.05) <= 0.12  # false-positive rate ~ alpha = 0.05
    assert 0.35 < np.mean(p_null) < 0.65  # p-values ~ uniform under the null
    p_alt = [
        mmd_test(rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + [1.0, 0.0], permutations=200, seed=s)[1]
        for s in range(20)
    ]
    assert np.mean(np.array(p_alt) <= 0.05) >= 0.95  # power ~ 1
    stat, p = mmd_test(torch.zeros(5, 3), torch.ones(5, 3), permutations=50)
    assert stat > 0 and p == pytest.approx(1 / 51 * (1 + 0), abs=0.1)


def test_c2st_chance_and_power():
    rng = np.random.default_rng(0)
    same = [c2st(rng.normal(size=(150, 3)), rng.normal(size=(150, 3)), seed=s, steps=150) for s in range(4)]
    # A mean shift of 6 sd: the Bayes classifier's accuracy is Phi(3) = 0.9987.
    shifted = [
        c2st(rng.normal(size=(150, 3)), rng.normal(size=(150, 3)) + [6.0, 0, 0], seed=s, steps=150) for s in range(4)
    ]
    assert abs(np.mean(same) - 0.5) < 0.07
    assert np.mean(shifted) > 0.97


def test_precision_recall_density_coverage():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 2))
    assert precision_recall(real, real) == (1.0, 1.0)
    assert density_coverage(real, real)[1] == 1.0
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    # Mode dropping: fakes only on the left half of the real data -> fidelity kept, diversity lost.
    left = real[real[:, 0] < 0]
    p, r = precision_recall(real, left)
    d, c = density_coverage(real, left)
    assert p == 1.0 and 0.3 < r < 0.7
    assert 0.3 < c < 0.7 and d > 0.8
    same = rng.normal(size=(400, 2))
    d, c = density_coverage(real, same)
    assert 0.8 < d < 1.2 and c > 0.9  # matching distributions: density ~ 1, coverage high


def test_memorization_audit_flags_copies(tmp_path):
    rng = np.random.default_rng(0)
    train = torch.from_numpy(rng.random((300, 1, 4, 4)))
    held = torch.from_numpy(rng.random((200, 1, 4, 4)))
    fresh = torch.from_numpy(rng.random((500, 1, 4, 4)))
    copies = train[torch.from_numpy(rng.integers(0, 300, 500))] + 0.001
    ok = memorization_audit(fresh, train, held)
    bad = memorization_audit(copies, train, held, top=8)
    assert ok["closer_to_train_null"] == 300 / 500
    assert abs(ok["closer_to_train"] - 0.6) < 0.07 and abs(ok["copy_auc"] - 0.5) < 0.07
    assert ok["near_copy_fraction"] < 0.12  # the null rate is copy_quantile = 0.05
    assert bad["closer_to_train"] == 1.0 and bad["near_copy_fraction"] == 1.0 and bad["copy_auc"] > 0.99
    assert len(bad["closest_samples"]) == len(bad["closest_train"]) == 8
    d = (copies[bad["closest_samples"]] - train[bad["closest_train"]]).flatten(1).norm(dim=1)
    assert torch.allclose(d, torch.full_like(d, 0.004), atol=1e-9)  # each copy's original is its nearest


@pytest.mark.slow  # trains the digits feature classifier (~13 s)
def test_feature_classifier_is_cached_by_content(cache):
    train = genlab.load_dataset("digits", "train")
    fx = train_classifier(train)
    assert fx.accuracy > 0.85
    files = list((cache / "features").glob("featnet-*.safetensors"))
    assert len(files) >= 1 and fx.meta["hash"] in " ".join(f.name for f in files)
    again = train_classifier(train)  # loaded, not retrained: identical features
    x = train.tensors["x"][:50]
    assert torch.equal(fx.features(x), again.features(x)) and fx.features(x).shape == (50, 128)
    test = genlab.load_dataset("digits", "test")
    assert (fx.predict(test.tensors["x"]) == test.tensors["y"]).float().mean() > 0.85
    from genlab.metrics.features import _content_hash, _targets

    other = genlab.load_dataset("digits", "val")  # different content -> different cache key
    recipe = fx.meta["recipe"]
    assert _content_hash(other.tensors["x"], _targets(other), recipe) != fx.meta["hash"]


def test_feature_fallbacks(monkeypatch):
    spec = genlab.DataSpec(name="u", kind="image", shape=(1, 8, 8))
    x = torch.rand(10, 1, 8, 8)
    f1, f2 = RandomFeatures(spec).features(x), RandomFeatures(spec).features(x)
    assert torch.equal(f1, f2) and f1.shape == (10, 64 * 16)
    unlabeled = genlab.data.base.TensorDataset({"x": x}, spec)
    with pytest.raises(FeatureNetworkError, match="no labels"):
        train_classifier(unlabeled)
    assert genlab.metrics.feature_extractor(unlabeled).name.startswith("random")
    import sys

    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # not importable -> one clear line
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    with pytest.raises(FeatureNetworkError, match="torch-fidelity") as e:
        genlab.metrics.feature_extractor(unlabeled, "inception")
    assert "\n" not in str(e.value)


def _digits_vae():
    test = genlab.load_dataset("digits", "test")
    torch.manual_seed(0)
    return genlab.build_model("vae", test.spec, z_dim=4, hidden=(32,)), test


def test_evaluate_chooses_metrics_from_capabilities():
    from genlab.evaluate import applicable_metrics

    vae, test = _digits_vae()
    assert {"likelihood", "iwae", "recon", "fid", "classes", "memorization"} <= set(applicable_metrics(vae))
    with pytest.raises(ValueError, match="unknown metric"):
        genlab.evaluate(vae, test, ["nope"])


@pytest.mark.slow  # FID, precision/recall and class coverage on the digits classifier (~13 s to train)
def test_evaluate_computes_the_chosen_metrics(cache, tmp_path):
    vae, test = _digits_vae()
    res = genlab.evaluate(
        vae, test, ["likelihood", "fid", "pr", "classes", "memorization"], n_samples=200, out_dir=tmp_path
    )
    for key in ["elbo_nats", "fid", "fid_reference", "precision", "recall", "classes_covered", "mem_closer_to_train"]:
        assert key in res
    assert res["fid"] > res["fid_reference"] >= 0  # an untrained VAE is worse than real data
    assert (tmp_path / "memorization.png").exists()


def test_default_reference_must_match_the_evaluated_split():
    """A split loaded with options (here 16x16 images) cannot be scored against features trained on
    the default train split: evaluate says so instead of silently misreading it."""
    from genlab.evaluate import _resolve_reference

    test = genlab.load_dataset("shapes-captions", "test", size=16, n=8)
    with pytest.raises(ValueError, match="pass reference="):
        _resolve_reference(test, None)
    train = genlab.load_dataset("shapes-captions", "train", size=16, n=8)
    assert _resolve_reference(test, train) is train
