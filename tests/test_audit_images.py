"""Audits of likelihood and image models (issue 15): loss-threshold membership inference, bias
amplification with the ``correlate`` option of shapes-captions, PULSE-style latent search."""

import math

import numpy as np
import pytest
import torch

from genlab import DataSpec
from genlab.audit.amplification import amplification_audit, amplification_audit_model
from genlab.audit.hallucination import downscale, hallucination_audit, latent_search, project_sphere
from genlab.audit.membership import auc_score, membership_audit, membership_from_scores, tpr_at_fpr
from genlab.config import parse_assignments
from genlab.data import InvalidDataError, TensorDataset, load_dataset
from genlab.data.shapes import CAPTION_GRID, caption_factors, caption_tokens, correlate_factors
from genlab.protocol import GenerativeModel

VEC = DataSpec(name="vec8", kind="vector", shape=(8,), value_range=None)


class Parzen(GenerativeModel):
    """An exact-likelihood model that memorizes: a Gaussian kernel density on its training set."""

    likelihood = "exact"

    def __init__(self, train: torch.Tensor, sigma: float = 0.05) -> None:
        super().__init__(VEC)
        self.register_buffer("points", train.double())
        self.sigma = sigma

    def log_prob(self, x, cond=None):
        d2 = torch.cdist(x.double(), self.points).pow(2)
        dim = x.shape[1]
        log_k = -d2 / (2 * self.sigma**2) - 0.5 * dim * math.log(2 * math.pi * self.sigma**2)
        return torch.logsumexp(log_k, 1) - math.log(len(self.points))


def _vec_data(n: int, seed: int) -> TensorDataset:
    return TensorDataset({"x": torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))}, VEC)


# --- membership -----------------------------------------------------------------------------------


def test_auc_and_tpr_match_brute_force():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert auc_score(pos, neg) == pytest.approx(brute)
    neg = np.arange(100.0)
    assert tpr_at_fpr(np.array([98.5, 99.5, 50.0, 10.0]), neg, 0.01) == 0.5  # threshold 98: 1 % (99) above it
    assert tpr_at_fpr(neg, neg, 0.001) is None  # 0.1 % of 100 negatives cannot be resolved


def test_memorizing_model_is_detected_and_identical_sets_are_not():
    train, held = _vec_data(300, 0), _vec_data(300, 1)
    model = Parzen(train.tensors["x"])
    out = membership_audit(model, train, held, n=300, n_boot=200)
    assert out["auc"] > 0.99 and out["auc_ci"][0] > 0.95
    assert out["tpr_at_fpr"]["0.01"] > 0.9 and out["likelihood"] == "exact"
    assert out["null_auc_ci"][0] <= 0.5 <= out["null_auc_ci"][1]
    assert out["generalization_gap"] > 0
    same = membership_audit(model, train, train, n=300, n_boot=200)
    assert same["auc"] == pytest.approx(0.5) and same["auc_ci"][0] <= 0.5 <= same["auc_ci"][1]
    fair = membership_from_scores(np.random.default_rng(2).normal(size=500), np.random.default_rng(3).normal(size=500))
    assert abs(fair["auc"] - 0.5) < 0.06 and abs(fair["null_auc"] - 0.5) < 0.08  # ~3 standard errors


def test_membership_errors_are_one_line():
    with pytest.raises(ValueError, match="n=2"):
        membership_audit(Parzen(torch.zeros(3, 8)), _vec_data(10, 0), _vec_data(10, 1), n=2)
    with pytest.raises(ValueError, match="NaN"):
        membership_from_scores([0.0, float("nan")], [0.0] * 4)


# --- bias amplification ------------------------------------------------------------------------------


def _rows(n: int, p: float, seed: int, split: str = "train") -> np.ndarray:
    """Captioned factors [n, 5] of n random grid rows with colour tied to shape with probability p."""
    idx = np.random.default_rng(seed).choice(CAPTION_GRID.num_combinations, n, replace=False)
    return caption_factors(correlate_factors(CAPTION_GRID.index_to_factors(idx), f"colour:shape:{p}", seed, split))


def test_amplification_zero_positive_negative():
    train = _rows(3000, 0.5, 0)
    same = amplification_audit(train[np.random.default_rng(1).integers(0, 3000, 3000)], train, "colour", "shape")
    lo, hi = same["amplification_ci"]
    assert lo <= 0 <= hi and len(same["pairs"]) == 3  # square-red, ellipse-green, heart-blue
    more = amplification_audit(_rows(3000, 0.8, 2), train, "colour", "shape", n_boot=200)
    assert more["amplification"] == pytest.approx(0.3 * 6 / 7, abs=0.04) and more["amplification_ci"][0] > 0
    less = amplification_audit(_rows(3000, 0.0, 3), train, 2, 0, n_boot=200)
    assert less["amplification"] == pytest.approx(-0.5 * 6 / 7, abs=0.04) and less["amplification_ci"][1] < 0
    unread = _rows(100, 0.5, 4)
    unread[:10, 2] = -1
    assert amplification_audit(unread, train, n_boot=20)["n_unreadable"] == 10


def test_amplification_errors_name_the_bad_value():
    train = _rows(50, 0.5, 0)
    with pytest.raises(ValueError, match="'hue'"):
        amplification_audit(train, train, "hue", "shape")
    with pytest.raises(ValueError, match="same factor"):
        amplification_audit(train, train, "shape", 0)


def test_correlate_option_rate_and_p0_identity():
    plain = load_dataset("shapes-captions", "train", n=600)
    p0 = load_dataset("shapes-captions", "train", **parse_assignments(["n=600", "correlate=colour:shape:0"], "x"))
    for k in plain.tensors:
        assert torch.equal(plain.tensors[k], p0.tensors[k])
    n, p = 4000, 0.6
    f = correlate_factors(CAPTION_GRID.index_to_factors(np.arange(0, n * 997, 997)), f"colour:shape:{p}", 0, "train")
    rate, expected = float(np.mean(f[:, 5] == f[:, 0])), p + (1 - p) / 7
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    again = correlate_factors(CAPTION_GRID.index_to_factors(np.arange(0, n * 997, 997)), "colour:shape:0.6", 0, "train")
    assert np.array_equal(f, again)  # deterministic
    assert np.array_equal(
        np.delete(f, 5, 1), np.delete(CAPTION_GRID.index_to_factors(np.arange(0, n * 997, 997)), 5, 1)
    )
    for bad, msg in (("colour:shape", "TARGET"), ("colour:shape:1.5", "1.5"), ("hue:shape:0.5", "'hue'")):
        with pytest.raises(InvalidDataError, match=msg):
            load_dataset("shapes-captions", "train", n=10, correlate=bad)


class CaptionSampler(GenerativeModel):
    """Samples captions whose colour follows shape with probability p (a stand-in caption model)."""

    def __init__(self, spec: DataSpec, p: float) -> None:
        super().__init__(spec)
        self.data_key, self.p = "text", p

    def sample(self, n, cond=None, *, generator=None):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        idx = np.random.default_rng(seed).choice(CAPTION_GRID.num_combinations, n, replace=False)
        return torch.from_numpy(
            caption_tokens(
                correlate_factors(CAPTION_GRID.index_to_factors(idx), f"colour:shape:{self.p}", seed, "train")
            )
        )


def test_amplification_of_a_caption_model():
    train = load_dataset("shapes-captions", "train", n=1500, correlate="colour:shape:0.5")
    out = amplification_audit_model(CaptionSampler(train.spec, 0.9), train, n=1500, n_boot=100)
    assert out["modalities"] == ["text"] and out["correlate"] == "colour:shape:0.5"
    res = out["by_modality"]["text"]
    assert res["n_unreadable"] == 0 and res["amplification_ci"][0] > 0.2
    with pytest.raises(ValueError, match="'mean'"):
        amplification_audit_model(CaptionSampler(train.spec, 0.9), train, n=10, sample_options={"mean": True})


# --- hallucination by latent search ----------------------------------------------------------------------


def test_latent_search_fits_a_linear_decoder_on_the_sphere():
    # G(z) = reshape(W z + b) on 1x4x4 images, z in R^8: downscale(G(z)) is 4 linear equations in 8
    # unknowns, so the solution set meets the sphere in a 3-sphere: many exact, distinct answers.
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(16, 8, generator=gen) * 0.1, torch.full((16,), 0.5)

    def decoder(z):
        return (z @ w.T + b).view(-1, 1, 4, 4)

    z_true = project_sphere(torch.randn(3, 8, generator=gen))
    truth = decoder(z_true)
    x_lr = downscale(truth, 2)
    z, x_hr, err = latent_search(decoder, 8, x_lr, 2, restarts=6, steps=400, lr=0.05)
    assert torch.allclose(z.norm(dim=-1), torch.full((3, 6), math.sqrt(8)), atol=1e-4)
    assert float(err.max()) < 1e-3
    assert torch.allclose(downscale(x_hr.flatten(0, 1), 2), x_lr.repeat_interleave(6, 0), atol=1e-3)
    data = TensorDataset({"x": truth.detach()}, DataSpec(name="lin", kind="image", shape=(1, 4, 4)))
    out = hallucination_audit(
        GenerativeModel(data.spec),
        data,
        factor=2,
        n_images=3,
        restarts=6,
        steps=400,
        eps=1e-3,
        delta=0.01,
        decoder=decoder,
        z_dim=8,
    )
    assert out["fit_fraction"] == 1.0 and out["mean_distinct"] > 1 and out["class_changed"] is None
    with pytest.raises(ValueError, match="divisible"):
        downscale(truth, 3)


@pytest.mark.slow
def test_hallucination_with_a_trained_vae_writes_a_picture(tmp_path):
    import genlab
    from genlab.train import TrainConfig

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = genlab.build_model("vae", train.spec, z_dim=4)
    genlab.Trainer(model, train, config=TrainConfig(steps=100, batch_size=64, eval_every=0, threads=1)).fit()
    out = hallucination_audit(
        model.eval(), test, train, factor=4, n_images=2, restarts=4, steps=100, eps=0.1, out_dir=tmp_path
    )
    assert (tmp_path / "hallucination.png").exists() and 0 <= out["fit_fraction"] <= 1
    assert out["class_changed"] is None or 0 <= out["class_changed"] <= 1


@pytest.mark.parametrize("name", ["vae", "realnvp", "dcgan"])
def test_latent_decoder_of_each_decoder_family_is_differentiable(name):
    import genlab
    from genlab.audit.hallucination import latent_decoder

    spec = DataSpec(name="img17", kind="image", shape=(1, 8, 8), levels=17, num_classes=3)
    torch.manual_seed(0)
    model = genlab.build_model(name, spec).eval()
    x = torch.randint(0, 17, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float() / 16
    decoder, d = latent_decoder(model, x)
    z = torch.randn(3, d, requires_grad=True)
    out = decoder(z)
    assert out.shape == (3, 1, 8, 8)
    out.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    _, _, err = latent_search(decoder, d, downscale(x, 4), 4, restarts=2, steps=3)
    assert err.shape == (2, 2) and torch.isfinite(err).all()
