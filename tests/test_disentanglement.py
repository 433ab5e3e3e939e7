"""MIG and DCI against representations built to have known scores."""

import numpy as np
import pytest

from genlab.metrics import dci, mig
from genlab.metrics.disentanglement import dci_scores, mutual_information


def factors(n=20000, sizes=(3, 6, 10), seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in sizes], 1)


def test_mutual_information_known_values():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 100000)
    assert mutual_information(a, a) == pytest.approx(np.log(4), abs=1e-3)  # I(a; a) = H(a)
    assert mutual_information(a, rng.integers(0, 4, 100000)) < 1e-3  # independent
    assert mutual_information(a, a % 2) == pytest.approx(np.log(2), abs=1e-3)  # I = H(a mod 2)


def test_mig_is_one_for_one_code_per_factor_and_zero_for_noise():
    f = factors()
    rng = np.random.default_rng(1)
    codes = np.concatenate(
        [f[:, [2, 0, 1]] * 0.5 + 3.0, rng.normal(size=(len(f), 2))], 1
    )  # permuted, rescaled, + 2 nuisance dims
    assert mig(codes, f) == pytest.approx(1.0, abs=0.01)
    assert mig(rng.normal(size=(len(f), 5)), f) < 0.01


def test_mig_is_zero_when_a_factor_is_copied_into_two_codes():
    f = factors()[:, :1]
    codes = np.concatenate([f, f * 2.0], 1).astype(float)
    assert mig(codes, f) == pytest.approx(0.0, abs=1e-9)


def test_dci_scores_of_known_importance_matrices():
    assert dci_scores(np.eye(3)) == pytest.approx((1.0, 1.0))  # one code per factor
    d, c = dci_scores(np.ones((3, 3)))  # every code equally important for every factor
    assert d == pytest.approx(0.0) and c == pytest.approx(0.0)
    # one code holds both factors: not disentangled (H_2 = 1), but each factor is complete
    d, c = dci_scores(np.array([[1.0, 1.0], [0.0, 0.0]]))
    assert d == pytest.approx(0.0) and c == pytest.approx(1.0)


def test_dci_on_codes():
    f = factors(n=3000, sizes=(3, 5))
    rng = np.random.default_rng(2)
    good = dci(f[:, ::-1] + 0.01 * rng.normal(size=f.shape), f)
    assert good["disentanglement"] > 0.9 and good["completeness"] > 0.9 and good["informativeness"] > 0.99
    noise = dci(rng.normal(size=(len(f), 2)), f)
    assert noise["informativeness"] < 0.45  # chance: (1/3 + 1/5) / 2 = 0.27


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="integer class indices"):
        mig(np.zeros((10, 2)), np.full((10, 1), 0.5))
    with pytest.raises(ValueError, match="factors must be"):
        mig(np.zeros((10, 2)), np.zeros((9, 1)))
    with pytest.raises(ValueError, match="two most informative"):
        mig(np.zeros((10, 1)), np.zeros((10, 1)))


def test_evaluate_offers_disentanglement_for_encoders_on_factor_data():
    import genlab
    from genlab.evaluate import applicable_metrics

    train = genlab.load_dataset("shapes", "train", n=300, size=16)
    test = genlab.load_dataset("shapes", "test", n=200, size=16)
    vae = genlab.build_model("vae", train.spec, z_dim=4)
    assert "disentanglement" in applicable_metrics(vae)
    assert "disentanglement" not in applicable_metrics(
        genlab.build_model("vae", genlab.load_dataset("digits", "train").spec)
    )
    res = genlab.evaluate(vae, test, metrics=["disentanglement"])
    assert res["disentanglement_examples"] == 200
    for k in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness"):
        assert 0.0 <= res[k] <= 1.0, (k, res[k])
