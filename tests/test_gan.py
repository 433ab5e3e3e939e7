"""GANs against mathematics: the optimal discriminator's value 2 JSD - log 4, the gradient penalty,
the n_critic schedule through the Trainer, learning a 1-D Gaussian, and evaluation of a GAN run."""

import math

import pytest
import torch

import genlab
from genlab import DataSpec, TrainConfig, Trainer
from genlab.data.base import TensorDataset
from genlab.models.gan import discriminator_value, gradient_penalty, jsd_estimate


def jsd(p, q):
    m = (p + q) / 2
    return 0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum()


def test_trained_discriminator_value_approaches_2jsd_minus_log4():
    # A discrete space of K points embedded as one-hot vectors; p_data and p_G are known.
    torch.manual_seed(0)
    k = 6
    p_data = torch.tensor([0.30, 0.25, 0.20, 0.15, 0.05, 0.05], dtype=torch.float64)
    p_gen = torch.tensor([0.05, 0.10, 0.15, 0.20, 0.25, 0.25], dtype=torch.float64)
    spec = DataSpec(name="discrete", kind="vector", shape=(k,), value_range=None)
    model = genlab.build_model("dcgan", spec, hidden=(32,)).double()
    params = model.parameter_groups()["discriminator"]
    opt = torch.optim.Adam(params, lr=1e-2)
    eye = torch.eye(k, dtype=torch.float64)
    for _ in range(400):  # minibatch SGD on -V, as in training, with samples of the two laws
        real = eye[torch.multinomial(p_data, 512, replacement=True)]
        fake = eye[torch.multinomial(p_gen, 512, replacement=True)]
        opt.zero_grad()
        model.discriminator_loss(real, fake)["discriminator"].backward()
        opt.step()
    with torch.no_grad():
        logits = model.discriminate(eye)  # exact expectations over the K points
        v = (p_data * -torch.nn.functional.softplus(-logits)).sum() + (
            p_gen * -torch.nn.functional.softplus(logits)
        ).sum()
        d_star = p_data / (p_data + p_gen)
    target = 2 * jsd(p_data, p_gen) - math.log(4)
    assert float(v) == pytest.approx(float(target), abs=5e-3)  # V(G, D*) = 2 JSD - log 4
    assert float(v) <= float(target) + 1e-3  # and no discriminator does better
    assert torch.allclose(torch.sigmoid(logits), d_star, atol=0.03)  # D* = p_data / (p_data + p_G)
    assert float(jsd_estimate(v)) == pytest.approx(float(jsd(p_data, p_gen)), abs=3e-3)
    # The logged jsd_est is the same formula applied to the batch's V.
    with torch.no_grad():
        out = model.discriminator_loss(eye[:3], eye[3:])
    assert float(out["jsd_est"]) == pytest.approx((math.log(4) - float(out["discriminator"])) / 2)


def test_gradient_penalty_of_linear_critics():
    # f(x) = w.x has gradient w everywhere: penalty (||w|| - 1)^2.
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    for norm in (1.0, 2.0, 0.5):
        w = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64) / 5 * norm
        assert float(gradient_penalty(lambda v, w=w: v @ w, x, y)) == pytest.approx((norm - 1) ** 2, abs=1e-12)
    with torch.no_grad():  # usable inside evaluation code as well
        assert float(gradient_penalty(lambda v: (v**2).sum(1), x, y)) >= 0
    assert float(discriminator_value(torch.zeros(4), torch.zeros(4))) == pytest.approx(-math.log(4))


def _blob_data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    spec = DataSpec(name="blob", kind="vector", shape=(1,), value_range=None)
    return TensorDataset({"x": 3.0 + 0.5 * torch.randn(n, 1, generator=g)}, spec)


def test_n_critic_schedule_through_the_trainer():
    data = _blob_data()
    torch.manual_seed(0)
    model = genlab.build_model("wgan_gp", data.spec, hidden=(16,), n_critic=3)
    trainer = Trainer(model, data, None, TrainConfig(steps=1, batch_size=32, progress=False))
    g_updates, d_updates = [], []
    for _ in range(7):
        g0 = [p.detach().clone() for p in model.parameter_groups()["generator"]]
        d0 = [p.detach().clone() for p in model.parameter_groups()["discriminator"]]
        losses = trainer.train_step(trainer.train_data[trainer._next_indices()])
        g_updates.append(any(not torch.equal(a, b) for a, b in zip(g0, model.parameter_groups()["generator"])))
        d_updates.append(any(not torch.equal(a, b) for a, b in zip(d0, model.parameter_groups()["discriminator"])))
        assert ("generator" in losses) == g_updates[-1] and "wasserstein_est" in losses
    assert d_updates == [True] * 7
    assert g_updates == [True, False, False, True, False, False, True]  # one G step per 3 D steps
    assert all(opt.param_groups[0]["betas"] == (0.0, 0.9) for opt in trainer.optimizers.values())  # the paper's


def test_dcgan_learns_a_gaussian_and_selects_by_validation_fd(tmp_path):
    data, val = _blob_data(1024, 0), _blob_data(256, 1)
    torch.manual_seed(0)
    model = genlab.build_model("dcgan", data.spec, hidden=(32, 32), z_dim=4, lr_g=2e-3, lr_d=2e-3)
    cfg = TrainConfig(steps=600, batch_size=128, eval_every=200, sample_every=0, checkpoint_every=0, progress=False)
    Trainer(model, data, val, cfg, out_dir=tmp_path).fit()
    s = model.eval().sample(2000, generator=torch.Generator().manual_seed(0))
    assert abs(float(s.mean()) - 3.0) < 0.25 and 0.25 < float(s.std()) < 1.0
    import json

    val_rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"val"' in ln]
    assert list(val_rows[0])[2] == "val_fd" and "val_jsd_est" in val_rows[0]


def _conditional_dcgan():
    train = genlab.load_dataset("digits", "train")
    torch.manual_seed(0)
    return genlab.build_model("dcgan", train.spec, conditional=True, channels=8), train


def test_conditional_gan_has_a_projection_discriminator_and_no_encoder():
    model, train = _conditional_dcgan()
    assert model.disc_embed is not None  # projection discriminator
    x = train.tensors["x"][:4]
    d0, d1 = (
        model.discriminate(x, torch.zeros(4, dtype=torch.long)),
        model.discriminate(x, torch.ones(4, dtype=torch.long)),
    )
    assert not torch.allclose(d0, d1)  # the class enters D through <embed(c), phi(x)>
    from genlab.evaluate import applicable_metrics

    metrics = applicable_metrics(model)
    assert "likelihood" not in metrics and {"fid", "classes", "memorization"} <= set(metrics)
    with pytest.raises(NotImplementedError, match="no encoder"):
        model.encode(x)


@pytest.mark.slow  # the digits feature classifier behind FID and class coverage trains for ~13 s
def test_evaluation_of_a_conditional_gan(cache):
    model, _ = _conditional_dcgan()
    res = genlab.evaluate(model, genlab.load_dataset("digits", "test"), ["fid", "classes"], n_samples=200)
    assert res["likelihood_kind"] == "none" and res["classes_total"] == 10
    assert 0 <= res["classes_covered"] <= 10 and res["fid"] > 0
