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
    for k in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap"):
        assert 0.0 <= res[k] <= 1.0, (k, res[k])
    assert 0.0 <= res["betavae_score"] <= 1.0 and 0.0 <= res["factorvae_score"] <= 1.0


def test_disentanglement_metrics_write_the_mi_heatmap(tmp_path):
    import genlab
    from genlab.evaluate import disentanglement_metrics

    test = genlab.load_dataset("shapes", "test", n=200, size=16)
    vae = genlab.build_model("vae", test.spec, z_dim=3)
    budget = dict(batch_size=8, num_train=20, num_eval=10, num_variance_estimate=100)
    res = disentanglement_metrics(vae, test, simulator_budget=budget, out_dir=tmp_path)
    assert res["mi_heatmap_png"] == str(tmp_path / "mi-heatmap.png") and (tmp_path / "mi-heatmap.png").stat().st_size
    assert {"sap", "betavae_score", "factorvae_score"} <= set(res)
    with pytest.raises(ValueError, match="unknown simulator_budget"):
        disentanglement_metrics(vae, test, simulator_budget={"batches": 3})


# --- SAP, BetaVAE / FactorVAE scores, MI matrix ---------------------------------------------------

from genlab.metrics.disentanglement import (  # noqa: E402
    ShapesSimulator,
    _sample_factors,
    betavae_score,
    factorvae_score,
    mutual_information_matrix,
    sap,
)


class FactorSimulator:
    """Observations are the factors themselves (float), so no rendering is needed."""

    factor_sizes = (4, 5, 6)

    def sample(self, n, rng, fix=None):
        f = _sample_factors(self.factor_sizes, n, rng, fix)
        return f, f.astype(np.float64)


def rotation(k, seed=3):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(k, k)))
    return q


SIM = FactorSimulator()
STD = np.sqrt((np.array(SIM.factor_sizes) ** 2 - 1) / 12.0)  # std of a uniform factor index
ROT = rotation(3)
REPRESENT = {
    "perfect": lambda x: x + 1e-3 * np.random.default_rng(len(x)).normal(size=x.shape),
    "rotated": lambda x: (x / STD) @ ROT,
    "noise": lambda x: np.random.default_rng(len(x) + int(x.sum())).normal(size=(len(x), 3)),
}
BUDGET = dict(batch_size=32, num_train=300, num_eval=200)


def test_sap_is_high_for_one_code_per_factor_and_low_for_rotations_and_noise():
    f = factors(n=5000)
    rng = np.random.default_rng(4)
    perfect = f[:, [1, 2, 0]] + 0.01 * rng.normal(size=f.shape)
    assert sap(perfect, f, chance_corrected=True) > 0.95
    raw = sap(perfect, f)  # the paper's score: 1 - (the best other code's accuracy ~ 1 / classes)
    assert raw == pytest.approx(np.mean([1 - 1 / 3, 1 - 1 / 6, 1 - 1 / 10]), abs=0.05)
    rotated = ((f - f.mean(0)) / f.std(0)) @ rotation(3)
    assert sap(rotated, f, chance_corrected=True) < 0.5
    assert sap(rng.normal(size=(len(f), 3)), f, chance_corrected=True) < 0.05


def test_sap_is_zero_when_two_codes_carry_a_factor_equally():
    f = factors(n=5000, sizes=(6,))
    codes = np.concatenate([f, 3.0 * f + 1.0], 1).astype(float)
    assert sap(codes, f) == pytest.approx(0.0, abs=1e-9)


def test_mig_is_zero_when_one_code_encodes_two_factors():
    f = factors(n=20000, sizes=(4, 5))
    rng = np.random.default_rng(5)
    both = (f[:, 0] * 5 + f[:, 1]).astype(float)  # one code holds both factors exactly
    codes = np.concatenate([both[:, None], rng.normal(size=(len(f), 2))], 1)
    # the joint code has full information about each factor, but bins=20 over 20 values keeps it exact
    mi = mutual_information_matrix(codes, f, normalize=True)
    assert mi[:, 0] == pytest.approx([1.0, 1.0], abs=0.01) and mi[:, 1:].max() < 0.01
    # ...so MIG is ~1, not ~0: it rewards each factor having one dominant code and does not see that the
    # code is shared (a known blind spot: DCI disentanglement is the score for that). Two codes that each
    # hold the same mixture, however, tie for every factor:
    assert mig(codes, f) > 0.95
    codes = np.concatenate([both[:, None], both[:, None] * -2.0, rng.normal(size=(len(f), 2))], 1)
    assert mig(codes, f) == pytest.approx(0.0, abs=1e-9)


def test_mutual_information_matrix_matches_mig():
    f = factors(n=5000)
    codes = f[:, [2, 0, 1]] + 0.01 * np.random.default_rng(6).normal(size=f.shape)
    m = mutual_information_matrix(codes, f)
    assert m.shape == (3, 3) and np.argmax(m, 1).tolist() == [1, 2, 0]
    h = np.array([mutual_information(f[:, k], f[:, k]) for k in range(3)])
    gaps = np.sort(m, 1)[:, ::-1]
    assert mig(codes, f) == pytest.approx(float(np.mean((gaps[:, 0] - gaps[:, 1]) / h)))


@pytest.mark.parametrize("score", [betavae_score, factorvae_score])
def test_simulator_scores_on_perfect_rotated_and_noise_codes(score):
    kw = dict(BUDGET, num_variance_estimate=2000) if score is factorvae_score else BUDGET
    got = {name: score(rep, SIM, **kw) for name, rep in REPRESENT.items()}
    assert got["perfect"] >= 0.99, got
    assert got["noise"] < 0.55, got  # chance 1/3 (FactorVAE's majority vote per code: a bit above)
    assert got["noise"] + 0.2 < got["rotated"] < 0.9, got  # measured: BetaVAE 0.75, FactorVAE 0.81


def test_factorvae_score_prunes_constant_codes():
    assert factorvae_score(lambda x: np.zeros((len(x), 3)), SIM, **BUDGET, num_variance_estimate=100) == 0.0


def test_shapes_simulator_renders_what_load_shapes_renders():
    import genlab

    data = genlab.load_dataset("shapes", "test", n=50, size=16)
    sim = ShapesSimulator(size=16)

    class Replay:  # a generator that yields exactly the data set's factors
        def integers(self, lo, hi, n):
            return replay.pop(0)

    replay = [data.tensors["factors"][:, k].numpy() for k in range(5)]
    f, x = sim.sample(50, Replay())
    assert np.array_equal(f, data.tensors["factors"].numpy())
    assert x.dtype == np.float32 and np.array_equal(x, data.tensors["x"].numpy())
    f, x = sim.sample(20, np.random.default_rng(0), fix=(0, 2))
    assert (f[:, 0] == 2).all() and x.shape == (20, 1, 16, 16)


def test_new_scores_name_bad_inputs():
    with pytest.raises(ValueError, match="two most predictive"):
        sap(np.zeros((10, 1)), np.zeros((10, 1)))
    with pytest.raises(ValueError, match="num_train must be"):
        betavae_score(REPRESENT["perfect"], SIM, num_train=0)
    with pytest.raises(ValueError, match="fixed value"):
        SIM.sample(3, np.random.default_rng(0), fix=(0, 9))
    with pytest.raises(ValueError, match="image size"):
        ShapesSimulator(size=2)
