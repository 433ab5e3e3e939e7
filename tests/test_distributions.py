"""Decoder likelihoods and bits/dim against their definitions."""

import math

import pytest
import torch

from genlab.data.spec import DataSpec
from genlab.distributions import Likelihood, choose_likelihood, discretized_logistic_log_prob
from genlab.metrics import bits_per_dim


@pytest.mark.parametrize("kind,levels", [("bernoulli", 2), ("categorical", 5), ("logistic", 17), ("logistic", 256)])
def test_discrete_likelihoods_sum_to_one_over_levels(kind, levels):
    lik = Likelihood(kind, levels)
    torch.manual_seed(0)
    params = torch.randn(1, lik.n_params, 3, dtype=torch.float64) * 2  # 3 independent dims
    grid = torch.arange(levels, dtype=torch.float64) / (levels - 1)
    # Sum over all levels of one dimension at a time: per-dim mass must total 1.
    for d in range(3):
        x = torch.zeros(levels, 3, dtype=torch.float64)
        x[:, d] = grid
        p = params.expand(levels, -1, -1).clone()
        lp = lik.log_prob(p, x)  # [levels]
        others = lik.log_prob(params, torch.zeros(1, 3, dtype=torch.float64)) - lik.log_prob(
            params[:, :, d : d + 1], torch.zeros(1, 1, dtype=torch.float64)
        )
        assert torch.logsumexp(lp - others, 0).item() == pytest.approx(0.0, abs=1e-9)


def test_gaussian_likelihood_integrates_to_one():
    lik = Likelihood("gaussian")
    params = torch.tensor([[[0.3], [math.log(0.2)]]], dtype=torch.float64)
    xs = torch.linspace(-3, 3, 20001, dtype=torch.float64)[:, None]
    dens = lik.log_prob(params.expand(len(xs), -1, -1), xs).exp()
    assert torch.trapezoid(dens, xs[:, 0]).item() == pytest.approx(1.0, abs=1e-6)


def test_discretized_logistic_tail_is_stable():
    x = torch.tensor([0.5], dtype=torch.float64)
    lp = discretized_logistic_log_prob(
        torch.tensor([-40.0], dtype=torch.float64), torch.tensor([-7.0], dtype=torch.float64), x, 256
    )
    assert torch.isfinite(lp).all()


def test_bits_per_dim_of_uniform_models_is_exactly_log2_levels():
    spec = DataSpec(name="img", kind="image", shape=(3, 4, 4), levels=256)
    d = spec.dim
    assert bits_per_dim(-d * math.log(256), spec, discrete=True) == pytest.approx(8.0)
    # Uniform density on [0,1]^D (log p = 0) of uniformly dequantized 8-bit data is also 8 bits/dim.
    assert bits_per_dim(0.0, spec, discrete=False) == pytest.approx(8.0)
    digits = DataSpec(name="digits", kind="image", shape=(1, 8, 8), levels=17)
    assert bits_per_dim(-64 * math.log(17), digits, discrete=True) == pytest.approx(math.log2(17))  # 4.09


def test_choose_likelihood_from_spec():
    mk = lambda levels: DataSpec(name="a", kind="image", shape=(1, 2, 2), levels=levels)
    assert choose_likelihood(mk(2)).kind == "bernoulli"
    assert choose_likelihood(mk(17)).kind == "categorical"
    assert choose_likelihood(mk(256)).kind == "logistic"
    assert choose_likelihood(mk(None)).kind == "gaussian"
    with pytest.raises(ValueError, match="continuous"):
        choose_likelihood(mk(None), "categorical")
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        choose_likelihood(mk(2), "poisson")
