"""The VAE against closed-form mathematics on a linear-Gaussian model.

p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I)  =>  p(x) = N(b, W W^T + s^2 I) exactly, and the exact
posterior is N(M^-1 W^T (x - b) / s^2, M^-1) with M = I + W^T W / s^2 (diagonal when W's columns are
orthogonal, so a diagonal-Gaussian encoder can represent it and the ELBO is then tight).
"""

import math

import torch

from genlab import DataSpec, build_model

D, Z, S = 4, 2, 0.5


def linear_vae(perturb: float = 0.0, **opts):
    torch.manual_seed(0)
    spec = DataSpec(name="lin", kind="vector", shape=(D,), value_range=None)
    m = build_model("vae", spec, z_dim=Z, hidden=(), likelihood="gaussian", **opts).double()
    q, _ = torch.linalg.qr(torch.randn(D, Z, dtype=torch.float64))
    W = q * torch.tensor([2.0, 0.7], dtype=torch.float64)  # orthogonal columns
    b = torch.randn(D, dtype=torch.float64) * 0.3
    with torch.no_grad():
        dec = m.dec[0]  # Linear(Z, 2D): rows [0:D] mean, [D:2D] log-scale
        dec.weight.zero_()
        dec.weight[:D] = W
        dec.bias[:D] = b
        dec.bias[D:] = math.log(S)
        Minv = torch.linalg.inv(torch.eye(Z, dtype=torch.float64) + W.T @ W / S**2)
        A = Minv @ W.T / S**2  # posterior mean = A (x - b)
        enc = m.enc_head
        enc.weight.zero_()
        enc.weight[:Z] = A + perturb * torch.randn(Z, D, dtype=torch.float64)
        enc.bias[:Z] = -A @ b
        enc.bias[Z:] = torch.log(torch.diagonal(Minv)) + perturb
    cov = W @ W.T + S**2 * torch.eye(D, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(b, covariance_matrix=cov)
    return m, exact


def test_elbo_is_tight_with_the_exact_posterior():
    m, exact = linear_vae(perturb=0.0)
    x = exact.sample((64,))
    elbo = m.log_prob(x, k=1)
    assert torch.allclose(elbo, exact.log_prob(x), atol=1e-8)


def test_elbo_below_exact_and_iwae_increases_towards_it():
    m, exact = linear_vae(perturb=0.4)
    torch.manual_seed(1)
    x = exact.sample((32,))
    lp = exact.log_prob(x).mean()
    torch.manual_seed(2)
    bounds = [m.log_prob(x, k=k).mean() for k in (1, 10, 100, 1000)]
    assert bounds[0] < lp - 0.05  # a clearly loose ELBO
    for lo, hi in zip(bounds, bounds[1:]):
        assert hi > lo
    assert bounds[-1] <= lp + 1e-3
    assert lp - bounds[-1] < 0.5 * (lp - bounds[0])  # most of the gap closed at k=1000
    # The exact identity log p(x) = ELBO + KL(q || p(z|x)) holds per example.
    mu, logvar = m.posterior(x)
    W, b = m.dec[0].weight[:D].detach(), m.dec[0].bias[:D].detach()
    Minv = torch.linalg.inv(torch.eye(Z, dtype=torch.float64) + W.T @ W / S**2)
    post_mu = (x - b) @ (Minv @ W.T / S**2).T
    q = torch.distributions.MultivariateNormal(mu, torch.diag_embed(logvar.exp()))
    p = torch.distributions.MultivariateNormal(post_mu, covariance_matrix=Minv)
    kl = torch.distributions.kl_divergence(q, p)
    elbo_exact = exact.log_prob(x) - kl
    torch.manual_seed(3)
    draws = torch.stack([m.log_prob(x, k=1) for _ in range(2000)]).detach()
    stderr = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - elbo_exact).abs() < 5 * stderr + 1e-9).all()


def test_reparameterized_gradient_matches_closed_form():
    """grad of E_q[log p(x|z)] w.r.t. (mu, logvar) by reparameterization (as in VAE.loss) against
    the analytic derivative of E_q[-|x - W z - b|^2 / (2 s^2)] = -(|x - W mu - b|^2 + sum_j v_j |W_j|^2) / (2 s^2)."""
    m, exact = linear_vae(perturb=0.3)
    x = exact.sample((1,))
    W, b = m.dec[0].weight[:D].detach(), m.dec[0].bias[:D].detach()
    mu0, logvar0 = (t.detach() for t in m.posterior(x))
    mu = mu0.clone().requires_grad_(True)
    logvar = logvar0.clone().requires_grad_(True)
    n = 200_000
    torch.manual_seed(4)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(n, Z, dtype=torch.float64)
    rec = m.lik.log_prob(m.decoder_params(z), x.expand(n, D)).mean()
    g_mu, g_lv = torch.autograd.grad(rec, (mu, logvar))
    r = x - mu0 @ W.T - b
    true_mu = (r @ W) / S**2
    true_lv = -0.5 * logvar0.exp() * (W * W).sum(0) / S**2
    assert torch.allclose(g_mu, true_mu, rtol=0.03, atol=0.02)
    assert torch.allclose(g_lv, true_lv, rtol=0.03, atol=0.02)
