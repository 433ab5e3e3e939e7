"""IWAE training (Burda et al., ICLR 2016) as the VAE's ``iwae_k`` option, against mathematics on a
linear-Gaussian model whose log p(x) is known in closed form:

p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I)  =>  p(x) = N(b, W W^T + s^2 I), and the exact posterior is
N(M^-1 W^T (x - b) / s^2, M^-1), M = I + W^T W / s^2 (diagonal when W's columns are orthogonal).

    ELBO = E[log w]  <=  IWAE-k = E[log (1/k) sum_i w_i]  <=  IWAE-(k+1)  <=  log p(x)
"""

import math

import pytest
import torch
from test_vae_math import D, S
from test_vae_math import linear_vae as exact_linear_vae

from genlab import DataSpec, build_model
from genlab.distributions import LOG_2PI


def linear_vae(perturb: float, iwae_k: int = 1):
    """The linear Gaussian VAE of tests/test_vae_math.py (exact log p(x) known) with ``iwae_k``, and
    its decoder's W [D, Z] and b [D]."""
    m, exact = exact_linear_vae(perturb, iwae_k=iwae_k)
    dec = m.dec[0]
    return m, exact, dec.weight[:D].detach().clone(), dec.bias[:D].detach().clone()


def test_k1_is_the_elbo_loss_for_the_same_noise():
    """iwae_k=1 trains on -(log p(x|z) - KL) with z = mu + sigma eps and the analytic KL, computed here
    by hand from the Gaussian formulas with the same eps."""
    m, exact, W, b = linear_vae(perturb=0.3, iwae_k=1)
    x = exact.sample((8,))
    torch.manual_seed(5)
    loss = m.loss({"x": x})["loss"]
    mu, logvar = m.posterior(x)
    torch.manual_seed(5)
    eps = torch.randn_like(mu)
    z = mu + torch.exp(0.5 * logvar) * eps
    mean = z @ W.T + b
    log_px_z = (-0.5 * ((x - mean) / S) ** 2 - math.log(S) - 0.5 * LOG_2PI).sum(-1)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)
    assert torch.allclose(loss, -(log_px_z - kl).mean(), atol=1e-10)
    # The k=1 importance weight on the same eps is the single-sample ELBO with a sampled KL:
    # log p(x|z) + log p(z) - log q(z|x), whose expectation over eps is the ELBO above.
    torch.manual_seed(5)
    log_w = m.log_weights(x, None, 1)[0]
    log_pz = (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
    log_qz = (-0.5 * eps**2 - 0.5 * logvar - 0.5 * LOG_2PI).sum(-1)
    assert torch.allclose(log_w, log_px_z + log_pz - log_qz, atol=1e-10)


def test_iwae_loss_is_log_px_with_the_exact_posterior():
    """With q = p(z|x) every weight p(x, z)/q(z|x) equals p(x): the k-sample loss is -log p(x) for any
    k and any draw."""
    for k in (1, 3, 8):
        m, exact, _, _ = linear_vae(perturb=0.0, iwae_k=k)
        x = exact.sample((16,))
        assert torch.allclose(m.iwae_loss({"x": x}, k)["loss"], -exact.log_prob(x).mean(), atol=1e-8)


def test_k_sample_bound_between_elbo_and_log_px_and_increasing():
    m, exact, _, _ = linear_vae(perturb=0.4)
    torch.manual_seed(1)
    x = exact.sample((16,))
    log_px = exact.log_prob(x).mean().item()
    torch.manual_seed(2)
    reps = 400
    est = {}
    with torch.no_grad():
        for k in (1, 2, 5, 20):
            m.iwae_k = k
            draws = torch.tensor([-m.loss({"x": x})["loss"].item() for _ in range(reps)], dtype=torch.float64)
            est[k] = (draws.mean().item(), draws.std().item() / math.sqrt(reps))
    elbo = est[1][0]
    ks = sorted(est)
    for lo, hi in zip(ks, ks[1:]):
        # strictly increasing in expectation: each step by more than 3 standard errors
        assert est[hi][0] - est[lo][0] > 3 * math.hypot(est[hi][1], est[lo][1])
    for k in ks:
        assert elbo - 3 * est[1][1] <= est[k][0] <= log_px + 3 * est[k][1]
    assert elbo < log_px - 0.05  # a loose ELBO, so the ordering is not vacuous


def test_iwae_training_options():
    spec = DataSpec(name="v", kind="vector", shape=(3,), value_range=None)
    with pytest.raises(ValueError, match="capacity"):
        build_model("vae", spec, iwae_k=3, capacity_max=5.0)
    m = build_model("vae", spec, z_dim=2, hidden=[8], iwae_k=3, warmup_steps=10)
    out = m.loss({"x": torch.randn(4, 3)})
    out["loss"].backward()
    assert int(m.train_step) == 1 and "elbo" not in out  # during warm-up the weights are not the ELBO's
    assert all(p.grad is not None for p in m.parameters())
