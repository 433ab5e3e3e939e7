"""The mathematics of the total-correlation VAEs (genlab/models/tcvae.py) and of the VAE's capacity
annealing: the TC estimators against a closed form, permute_dims, the KL decomposition identity, short
training runs, and the capacity schedule (off = the plain VAE, bit for bit)."""

import math

import pytest
import torch
from conftest import SPECS, tiny_model

import genlab
from genlab.data import TensorDataset
from genlab.distributions import LOG_2PI, diag_gaussian_log_prob
from genlab.models.tcvae import kl_decomposition, log_importance_weights, permute_dims, total_correlation
from genlab.train import TrainConfig, Trainer


def _correlated_posteriors(n: int, s: float, rho: float) -> tuple[torch.Tensor, float]:
    """N posterior means drawn from a 2-D Gaussian with correlation rho, and the closed-form TC of the
    aggregate posterior q(z) = (1/N) sum_n N(mu_n, s^2 I) ~ N(0, cov(mu) + s^2 I): -0.5 log det R."""
    c = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
    mus = torch.randn(n, 2, dtype=torch.float64) @ torch.linalg.cholesky(c).T
    cov = torch.cov(mus.T) + s**2 * torch.eye(2, dtype=torch.float64)
    sd = cov.diagonal().sqrt()
    return mus, float(-0.5 * torch.logdet(cov / sd[:, None] / sd[None]))


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_tc_estimator_converges_to_the_gaussian_closed_form_as_the_batch_grows(estimator):
    n, s = 8192, 0.1  # narrow posteriors: a small batch sees little of q(z), so the bias is visible
    mus, true_tc = _correlated_posteriors(n, s, 0.9)
    logvar = torch.full((1, 2), 2 * math.log(s), dtype=torch.float64)
    bias = {}
    for b in (16, 128, 1024):
        estimates = []
        for _ in range(4096 // b):
            mu = mus[torch.randperm(n)[:b]]
            z = mu + s * torch.randn_like(mu)
            estimates.append(float(total_correlation(z, mu, logvar.expand_as(mu), n, estimator)))
        bias[b] = sum(estimates) / len(estimates) - true_tc
    assert abs(bias[16]) > abs(bias[128]) > abs(bias[1024]), bias
    assert abs(bias[1024]) < 0.1 and abs(bias[16]) > 0.2, (true_tc, bias)
    # mws over-weights each sample's own posterior (TC too high), mss's log of an unbiased q(z) is low (Jensen)
    assert (bias[16] > 0) == (estimator == "mws"), bias


def test_mss_weights_are_a_mixture_over_the_data():
    """Each row of the stratified weights sums to one: own 1/N, the others (N-1)/N."""
    for m, n in ((2, 10), (5, 5), (7, 1000)):
        w = log_importance_weights(m, n, "mss", torch.zeros((), dtype=torch.float64)).exp()
        assert torch.allclose(w.sum(1), torch.ones(m, dtype=torch.float64))
        assert torch.allclose(w.diagonal(), torch.full((m,), 1 / n, dtype=torch.float64))
    with pytest.raises(ValueError, match="dataset_size >= the batch size"):
        log_importance_weights(8, 4, "mss", torch.zeros(()))


def test_permute_dims_keeps_marginals_and_destroys_dependence():
    z = torch.randn(4000, 1, dtype=torch.float64)
    z = torch.cat([z, 0.99 * z + 0.1 * torch.randn_like(z), -z], 1)  # strongly dependent columns
    p = permute_dims(z, generator=torch.Generator().manual_seed(0))
    for j in range(3):
        assert torch.equal(p[:, j].sort().values, z[:, j].sort().values)  # a permutation of the column
    corr = torch.corrcoef(p.T)
    assert torch.corrcoef(z.T)[0, 1] > 0.99
    assert (corr - torch.eye(3, dtype=torch.float64)).abs().max() < 0.06, corr


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_decomposition_sums_to_the_sampled_kl_and_unit_weights_give_the_elbo(estimator):
    spec = SPECS["bin-img"]
    model = tiny_model("betatcvae", spec, alpha=1.0, beta=1.0, gamma=1.0, estimator=estimator, dataset_size=100)
    x = torch.randint(0, 2, (12, *spec.shape)).double()
    mu, logvar = model.posterior(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    mi, tc, dwkl = kl_decomposition(z, mu, logvar, 100, estimator)
    sampled_kl = diag_gaussian_log_prob(z, mu, logvar) - (-0.5 * (z.pow(2) + LOG_2PI).sum(-1))
    assert torch.allclose(mi + tc + dwkl, sampled_kl, atol=1e-10)
    # alpha = beta = gamma = 1: the loss is -ELBO with the sampled KL, on the same minibatch and noise
    model.train()
    torch.manual_seed(5)
    out = model.loss({"x": x})
    torch.manual_seed(5)
    mu, logvar, z, rec, kl = model.elbo_terms({"x": x})
    sampled_kl = diag_gaussian_log_prob(z, mu, logvar) + 0.5 * (z.pow(2) + LOG_2PI).sum(-1)
    assert torch.allclose(out["loss"], (sampled_kl - rec).mean(), atol=1e-10)
    assert torch.allclose(out["mi"] + out["tc"] + out["dwkl"], sampled_kl.mean(), atol=1e-10)
    # the sampled KL is unbiased for the analytic one the ELBO uses
    many = torch.stack([model.elbo_terms({"x": x})[2] for _ in range(2000)])  # z draws
    kls = diag_gaussian_log_prob(many, mu, logvar) + 0.5 * (many.pow(2) + LOG_2PI).sum(-1)
    assert torch.allclose(kls.mean(0), kl, atol=0.1), (kls.mean(0), kl)


def test_mss_without_dataset_size_is_a_one_line_error():
    model = tiny_model("betatcvae", SPECS["vec"], estimator="mss")
    with pytest.raises(ValueError, match="dataset_size") as info:
        model.loss({"x": torch.randn(4, 2, dtype=torch.float64)})
    assert "\n" not in str(info.value)
    tiny_model("betatcvae", SPECS["vec"]).loss({"x": torch.randn(4, 2, dtype=torch.float64)})  # mws: no N needed


def test_the_trainer_tells_mss_the_training_set_size():
    data = _toy_data(48)
    model = genlab.build_model("betatcvae", data.spec, z_dim=2, hidden=[8], estimator="mss")
    cfg = TrainConfig(steps=2, batch_size=16, progress=False, eval_every=0, sample_every=0)
    Trainer(model, data, None, cfg, None).fit()
    assert model.dataset_size == 48
    given = genlab.build_model("betatcvae", data.spec, z_dim=2, hidden=[8], estimator="mss", dataset_size=1000)
    Trainer(given, data, None, cfg, None)
    assert given.dataset_size == 1000  # an explicit N (e.g. the full data behind a subsample) wins


def _toy_data(n: int = 64) -> TensorDataset:
    """Binary 4x4 images of two independent factors (a bright row and a bright column)."""
    g = torch.Generator().manual_seed(0)
    r, c = torch.randint(0, 4, (n,), generator=g), torch.randint(0, 4, (n,), generator=g)
    x = torch.zeros(n, 1, 4, 4)
    x[torch.arange(n), 0, r, :] = 1.0
    x[torch.arange(n), 0, :, c] = 1.0
    return TensorDataset({"x": x}, SPECS["bin-img"])


@pytest.mark.parametrize(
    "name,kwargs",
    [("betatcvae", {"estimator": "mws"}), ("betatcvae", {"estimator": "mss", "dataset_size": 64}), ("factorvae", {})],
)
def test_a_short_training_run_lowers_the_loss(name, kwargs):
    data = _toy_data()
    model = genlab.build_model(name, data.spec, z_dim=2, hidden=[32], **kwargs)

    def mean_loss() -> dict[str, float]:
        model.eval()
        torch.manual_seed(1)
        with torch.no_grad():
            runs = [model.loss(data[:]) for _ in range(10)]
        return {k: sum(float(r[k]) for r in runs) / len(runs) for k in runs[0]}

    before = mean_loss()
    cfg = TrainConfig(steps=150, batch_size=32, lr=3e-3, progress=False, eval_every=0, sample_every=0)
    Trainer(model, data, None, cfg, None).fit()
    after = mean_loss()
    assert after["loss"] < before["loss"] - 1.0, (before, after)
    assert set(after) >= ({"mi", "tc", "dwkl"} if name == "betatcvae" else {"tc", "disc", "disc_acc"})
    assert all(math.isfinite(v) for v in after.values())


def test_factorvae_groups_and_disc_loss():
    model = tiny_model("factorvae", SPECS["vec"])
    groups = model.parameter_groups()
    assert list(groups) == ["loss", "disc"]  # the VAE steps before D changes
    assert {id(p) for p in groups["disc"]} == {id(p) for p in model.disc.parameters()}
    assert model.optimizer_settings() == {"disc": {"default_lr": 1e-4, "default_betas": (0.5, 0.9)}}
    # a discriminator that outputs logit 0 is at chance: disc loss log 2, tc estimate 0
    with torch.no_grad():
        for p in model.disc.parameters():
            p.zero_()
    out = model.loss({"x": torch.randn(8, 2, dtype=torch.float64)})
    assert torch.allclose(out["disc"], torch.tensor(math.log(2.0), dtype=torch.float64))
    assert float(out["tc"]) == 0.0


def _old_vae_loss(model, batch):
    """The VAE's objective before capacity annealing existed: (beta(step) kl - rec).mean()."""
    _, _, _, rec, kl = model.elbo_terms(batch)
    return (model.current_beta() * kl - rec).mean()


def test_capacity_off_is_bit_identical_to_the_plain_vae():
    spec, x = SPECS["img17"], {"x": torch.rand(6, 1, 8, 8, dtype=torch.float64)}
    torch.manual_seed(0)
    plain = tiny_model("vae", spec, beta=4.0, warmup_steps=3).train()
    torch.manual_seed(0)
    off = tiny_model("vae", spec, beta=4.0, warmup_steps=3, capacity_max=0.0, capacity_steps=50).train()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), off.state_dict().values()))
    for _ in range(5):
        torch.manual_seed(7)
        expected = _old_vae_loss(plain, x)
        torch.manual_seed(7)
        a = plain.loss(x)
        torch.manual_seed(7)
        b = off.loss(x)
        assert set(a) == set(b) == {"loss", "elbo", "recon_nll", "kl", "beta"}
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert torch.equal(a["loss"], expected)


def test_capacity_target_follows_the_schedule():
    spec, x = SPECS["vec"], {"x": torch.randn(6, 2, dtype=torch.float64)}
    model = tiny_model("vae", spec, beta=10.0, capacity_max=5.0, capacity_steps=4).train()
    for step in range(7):
        c = 5.0 * min(1.0, step / 4)
        assert model.current_capacity() == c
        torch.manual_seed(step)
        _, _, _, rec, kl = model.elbo_terms(x)
        torch.manual_seed(step)
        out = model.loss(x)
        assert float(out["capacity"]) == c
        assert torch.allclose(out["loss"], -rec.mean() + 10.0 * (kl.mean() - c).abs(), atol=1e-12)
    model.eval()
    assert model.current_capacity() == 5.0 and "capacity" in model.loss(x)
    with pytest.raises(ValueError, match="capacity_max >= 0"):
        tiny_model("vae", spec, capacity_max=-1.0)
