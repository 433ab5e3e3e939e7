"""The discretized logistic mixture (PixelCNN++, Salimans et al. 2017, eq. 2) against mathematics,
and PixelCNN / VAE with it as their output distribution."""

import math

import pytest
import torch

from genlab import DataSpec, build_model
from genlab.distributions import (
    Likelihood,
    choose_likelihood,
    discretized_logistic_log_prob,
    discretized_logistic_mixture_log_pmf,
    discretized_logistic_mixture_log_prob,
    discretized_logistic_mixture_mean,
    sample_discretized_logistic_mixture,
)


def random_params(n: int, k: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=dtype) * 2
    means = torch.rand(n, k, generator=g, dtype=dtype) * 1.6 - 0.3  # some beyond the edges
    log_scales = torch.rand(n, k, generator=g, dtype=dtype) * 9 - 7.5  # from below the clamp to e^1.5
    return logits, means, log_scales


@pytest.mark.parametrize("levels", [2, 17, 256])
@pytest.mark.parametrize("k", [1, 5])
def test_masses_sum_to_one(levels, k):
    params = random_params(200, k, seed=levels + k)
    total = discretized_logistic_mixture_log_pmf(*params, levels).exp().sum(-1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    # The pmf and the pointwise log_prob agree on every level.
    grid = torch.arange(levels, dtype=torch.float32) / (levels - 1)
    pointwise = discretized_logistic_mixture_log_prob(
        *(p[:, None, :].expand(-1, levels, -1) for p in params), grid.expand(200, -1), levels
    )
    assert torch.allclose(pointwise, discretized_logistic_mixture_log_pmf(*params, levels), atol=1e-6)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_one_component_is_the_logistic_cdf_difference(levels):
    """P(level i) = F((i + 1/2)/(L-1)) - F((i - 1/2)/(L-1)) with F the logistic CDF, F(-inf) = 0 and
    F(+inf) = 1 at the edges, computed here in float64 from the CDF itself."""
    mean, log_scale = torch.tensor(0.37, dtype=torch.float64), torch.tensor(-2.1, dtype=torch.float64)
    edges = (torch.arange(levels + 1, dtype=torch.float64) - 0.5) / (levels - 1)
    cdf = torch.sigmoid((edges - mean) / log_scale.exp())
    cdf[0], cdf[-1] = 0.0, 1.0
    by_hand = cdf[1:] - cdf[:-1]
    pmf = discretized_logistic_mixture_log_pmf(
        torch.zeros(1, dtype=torch.float64), mean.view(1), log_scale.view(1), levels
    ).exp()
    assert torch.allclose(pmf, by_hand, rtol=1e-9, atol=1e-12)
    # the single logistic of genlab.distributions is the same thing
    grid = torch.arange(levels, dtype=torch.float64) / (levels - 1)
    assert torch.allclose(discretized_logistic_log_prob(mean, log_scale, grid, levels).exp(), by_hand, atol=1e-12)


def test_mixture_is_the_weighted_sum_of_components():
    logits, means, log_scales = random_params(50, 3, seed=7, dtype=torch.float64)
    x = torch.randint(0, 17, (50,), dtype=torch.float64) / 16
    comps = torch.stack([discretized_logistic_log_prob(means[:, j], log_scales[:, j], x, 17) for j in range(3)], -1)
    by_hand = (logits.softmax(-1) * comps.exp()).sum(-1).log()
    assert torch.allclose(discretized_logistic_mixture_log_prob(logits, means, log_scales, x, 17), by_hand)


def test_tiny_bins_and_far_tails_are_finite_and_accurate():
    """A scale much wider than a bin (the midpoint case: density x width) and a level far in a tail
    (log mass ~ -1000 nats, where sigma(b) - sigma(a) underflows) in float32 against float64."""
    levels = 256
    mean = torch.tensor([0.5, 0.5, 0.01, 0.99])
    log_scale = torch.tensor([6.0, 3.0, -7.0, -7.0])
    x = torch.tensor([100, 128, 200, 3], dtype=torch.float32) / 255
    lp32 = discretized_logistic_log_prob(mean, log_scale, x, levels)
    lp64 = discretized_logistic_log_prob(mean.double(), log_scale.double(), x.double(), levels)
    assert torch.isfinite(lp32).all()
    assert torch.allclose(lp32.double(), lp64, rtol=1e-5, atol=1e-4)
    # wide logistic: mass ~ density at the centre x width, s = e^6
    s = math.exp(6.0)
    z = (100 / 255 - 0.5) / s
    expect = math.log(math.exp(-z) / (s * (1 + math.exp(-z)) ** 2) / 255)
    assert abs(lp64[0].item() - expect) < 1e-6
    g = torch.autograd.grad(discretized_logistic_log_prob(mean.requires_grad_(), log_scale, x, levels).sum(), mean)[0]
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("levels,k", [(17, 3), (2, 2), (256, 1)])
def test_samples_follow_the_pmf(levels, k):
    logits, means, log_scales = (p[:1] for p in random_params(1, k, seed=3 * levels + k))
    log_scales = log_scales.clamp(min=-3.0)  # spread over several levels
    n = 40_000
    draws = sample_discretized_logistic_mixture(
        *(p.expand(n, -1) for p in (logits, means, log_scales)), levels, torch.Generator().manual_seed(0)
    )
    ids = torch.round(draws * (levels - 1)).long()
    assert torch.allclose(draws, ids.float() / (levels - 1))  # on the grid
    freq = torch.bincount(ids, minlength=levels).double() / n
    pmf = discretized_logistic_mixture_log_pmf(logits, means, log_scales, levels)[0].exp().double()
    tv = 0.5 * (freq - pmf).abs().sum().item()
    # E[TV] <= sum_i sqrt(p_i (1 - p_i) / n) / 2; allow 3 times that bound
    bound = 0.5 * (pmf * (1 - pmf) / n).sqrt().sum().item()
    assert tv < 3 * bound + 1e-3, (tv, bound)


def test_mean_is_the_expectation_over_levels():
    logits, means, log_scales = random_params(40, 4, seed=11, dtype=torch.float64)
    for levels in (2, 17, 256):
        pmf = discretized_logistic_mixture_log_pmf(logits, means, log_scales, levels).exp()
        grid = torch.arange(levels, dtype=torch.float64) / (levels - 1)
        expect = (pmf * grid).sum(-1)
        assert torch.allclose(discretized_logistic_mixture_mean(logits, means, log_scales, levels), expect, atol=1e-10)


def test_likelihood_layout_and_choice():
    spec = DataSpec(name="img", kind="image", shape=(1, 4, 4), levels=17)
    lik = choose_likelihood(spec, "logistic_mixture", mixtures=3)
    assert lik == Likelihood("logistic_mixture", 17, 3) and lik.n_params == 9 and lik.discrete
    assert choose_likelihood(spec).kind == "categorical"  # auto never picks the mixture
    params = torch.randn(2, 9, 1, 4, 4)
    x = torch.randint(0, 17, (2, 1, 4, 4)).float() / 16
    lp = lik.log_prob(params, x)
    lg, mu, ls = params[:, :3], params[:, 3:6], params[:, 6:]
    by_hand = discretized_logistic_mixture_log_prob(lg.movedim(1, -1), mu.movedim(1, -1), ls.movedim(1, -1), x, 17)
    assert torch.allclose(lp, by_hand.flatten(1).sum(1))
    cont = DataSpec(name="v", kind="vector", shape=(3,), value_range=None)
    with pytest.raises(ValueError, match="levels"):
        choose_likelihood(cont, "logistic_mixture")


SPECS = {
    "gray17": DataSpec(name="gray17", kind="image", shape=(1, 5, 5), levels=17),
    "rgb256": DataSpec(name="rgb256", kind="image", shape=(3, 4, 4), levels=256),
    "bin": DataSpec(name="bin", kind="image", shape=(1, 4, 4), levels=2),
}


def _batch(spec, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, spec.levels, (n, *spec.shape), generator=g).float() / (spec.levels - 1)


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("gated", [True, False])
def test_pixelcnn_mixture_is_a_normalized_causal_model(spec_name, gated):
    spec = SPECS[spec_name]
    torch.manual_seed(0)
    m = build_model("pixelcnn", spec, output="logistic_mixture", mixtures=2, channels=6, n_layers=1, gated=gated)
    x = _batch(spec)
    out = m.loss({"x": x})
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    lp = m.log_prob(x)
    assert lp.shape == (3,) and torch.allclose(-lp.mean() / spec.dim, out["loss"].detach(), rtol=1e-5)
    # Causality: the parameters of sub-pixel (k, i, j) do not depend on it or anything later.
    c, h, w = spec.shape
    xi = x[:1].clone().requires_grad_(True)
    params = m(xi)  # (1, 3K, C, H, W)
    for k, i, j in [(c - 1, h // 2, w // 2), (0, 1, 0)]:
        (g,) = torch.autograd.grad(params[0, :, k, i, j].sum(), xi, retain_graph=True)
        later = torch.zeros_like(g, dtype=torch.bool)
        later[0, :, i, j + 1 :] = True
        later[0, :, i + 1 :] = True
        later[0, k:, i, j] = True
        assert g[later].abs().max() == 0
    # Samples lie on the levels, and with a fixed generator they repeat.
    s1 = m.sample(2, generator=torch.Generator().manual_seed(5))
    s2 = m.sample(2, generator=torch.Generator().manual_seed(5))
    assert s1.shape == (2, *spec.shape) and torch.equal(s1, s2)
    assert torch.allclose(s1 * (spec.levels - 1), torch.round(s1 * (spec.levels - 1)))


def test_pixelcnn_mixture_normalizes_over_all_images():
    """Summing exp(log p(x)) over every binary 2x2 image (16 of them) gives 1."""
    spec = DataSpec(name="b", kind="image", shape=(1, 2, 2), levels=2)
    torch.manual_seed(1)
    m = build_model("pixelcnn", spec, output="logistic_mixture", mixtures=3, channels=4, n_layers=1, first_kernel=3)
    ids = torch.tensor([[(n >> b) & 1 for b in range(4)] for n in range(16)], dtype=torch.float32)
    total = m.log_prob(ids.view(16, 1, 2, 2)).exp().sum()
    assert abs(total.item() - 1) < 1e-5


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_vae_mixture_decoder(spec_name):
    spec = SPECS[spec_name]
    torch.manual_seed(0)
    m = build_model("vae", spec, z_dim=2, hidden=[16], likelihood="logistic_mixture", mixtures=2)
    x = _batch(spec)
    out = m.loss({"x": x})
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert m.log_prob(x, k=4).shape == (3,)
    z = torch.randn(2, 2)
    mean = m.decode(z)
    assert mean.shape == (2, *spec.shape) and mean.min() >= 0 and mean.max() <= 1
    draw = m.decode(z, mean=False, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(draw * (spec.levels - 1), torch.round(draw * (spec.levels - 1)))
    assert m.sample(2).shape == (2, *spec.shape)


@pytest.mark.parametrize("gated", [True, False])
def test_pixelcnn_dropout_keeps_causality_and_is_off_in_eval(gated):
    spec = SPECS["rgb256"]
    torch.manual_seed(0)
    m = build_model("pixelcnn", spec, channels=6, n_layers=2, gated=gated, dropout=0.5)
    x = _batch(spec, n=1).requires_grad_(True)
    m.train()
    out = m(x)
    c, h, w = spec.shape
    (g,) = torch.autograd.grad(out[0, :, 1, 2, 1].sum(), x)
    later = torch.zeros_like(g, dtype=torch.bool)
    later[0, :, 2, 2:] = True
    later[0, :, 3:] = True
    later[0, 1:, 2, 1] = True
    assert g[later].abs().max() == 0
    m.eval()
    assert torch.equal(m(x), m(x))  # no dropout at evaluation
    with pytest.raises(ValueError, match="dropout"):
        build_model("pixelcnn", spec, dropout=1.0)
